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
// A test that hangs fails after 3 minutes instead of blocking the run; the
// whole run is bounded too (the suite takes about a minute on 2 cores), so a
// stuck child process fails CI quickly and visibly rather than using its budget.
const args = [
  '--import',
  'tsx',
  '--test',
  '--test-reporter=spec',
  '--test-concurrency=2',
  '--test-timeout=180000',
  ...process.argv.slice(2),
  ...files,
];
const RUN_LIMIT_MS = 12 * 60 * 1000;
const result = spawnSync(process.execPath, args, {
  cwd: root,
  stdio: 'inherit',
  timeout: RUN_LIMIT_MS,
  killSignal: 'SIGKILL',
});
if (result.error?.code === 'ETIMEDOUT' || result.signal === 'SIGKILL') {
  console.error(`run-tests: the test run exceeded ${RUN_LIMIT_MS / 60000} minutes and was stopped`);
  process.exit(1);
}
process.exit(result.status ?? 1);
