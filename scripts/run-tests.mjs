#!/usr/bin/env node
// Runs every *.test.ts under shared/ and services/*/ with node's own test
// runner (TypeScript through tsx). Node 20's `--test` does not expand globs,
// hence this small launcher. Extra arguments go to node (e.g. --test-only).
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

function findTests(dir, out = []) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) findTests(path, out);
    else if (name.endsWith('.test.ts') && path.includes('/test/')) out.push(relative(root, path));
  }
  return out;
}

const files = [...findTests(join(root, 'shared')), ...findTests(join(root, 'services'))].sort();
if (files.length === 0) {
  console.error('run-tests: no test files found');
  process.exit(1);
}
const args = [
  '--import',
  'tsx',
  '--test',
  '--test-reporter=spec',
  '--test-concurrency=2',
  ...process.argv.slice(2),
  ...files,
];
const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
process.exit(result.status ?? 1);
