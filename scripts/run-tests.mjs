#!/usr/bin/env node
// Runs every *.test.ts under shared/ and services/*/ with node's own test
// runner, from compiled JavaScript.
//
// Why compiled: on Node 20, a TypeScript loader given with `--import tsx`
// registers its hooks with `module.register()`, which runs them on a separate
// loader thread; the main thread then blocks (Atomics.wait) on every import
// until that thread answers. On busy 2-core machines test processes were seen
// stuck there for good, idle, before their first test (issue 11). Compiled
// tests have no loader thread, so that wait cannot happen; they also start
// faster, because nothing is transpiled per process.
//
// Steps: `tsc -b` (the packages' dist/, which the relay processes and the
// lrelay CLI the tests start are run from), then `tsc -p tsconfig.test.json`
// into .test-build/ (tests, test-support, bench and scripts, with the sources
// they import), then `node --test` on the compiled test files.
//
// Usage: node scripts/run-tests.mjs [FILTER...] [-- NODE_TEST_FLAGS...]
//   FILTER  keeps the test files whose path contains it (e.g. `cli.test`)
//   flags after `--` (or any argument starting with `-`) go to node, e.g. --test-only
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
// TEST_BUILD_DIR lets two runs share a checkout (a folder inside it, so that
// node_modules and the repository root are found from the compiled files).
const OUT = process.env.TEST_BUILD_DIR ?? '.test-build';
if (!/^\.test-build[\w.-]*$/.test(OUT)) {
  console.error(`run-tests: TEST_BUILD_DIR must be a folder name starting with .test-build (got ${OUT})`);
  process.exit(2);
}
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

function findTests(dir, out = []) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) findTests(path, out);
    else if (name.endsWith('.test.ts') && path.includes('/test/')) out.push(relative(root, path));
  }
  return out;
}

function step(what, args) {
  const started = Date.now();
  const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`run-tests: ${what} failed (exit ${result.status ?? result.signal})`);
    process.exit(1);
  }
  console.log(`run-tests: ${what} done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

const filters = [];
const nodeFlags = [];
let afterDashes = false;
for (const arg of process.argv.slice(2)) {
  if (arg === '--') afterDashes = true;
  else if (afterDashes || arg.startsWith('-')) nodeFlags.push(arg);
  else filters.push(arg);
}

const sources = [...findTests(join(root, 'shared')), ...findTests(join(root, 'services'))]
  .sort()
  .filter((file) => filters.length === 0 || filters.some((f) => file.includes(f)));
if (sources.length === 0) {
  console.error(`run-tests: no test files found${filters.length ? ` matching ${filters.join(', ')}` : ''}`);
  process.exit(1);
}

step('build (tsc -b)', [tsc, '-b']);
// A fresh folder each run, so a deleted or renamed test cannot linger as JS.
rmSync(join(root, OUT), { recursive: true, force: true });
step(`compile tests (tsc -p tsconfig.test.json -> ${OUT}/)`, [tsc, '-p', 'tsconfig.test.json', '--outDir', OUT]);

const files = sources.map((file) => join(OUT, file.replace(/\.ts$/, '.js')));
const missing = files.filter((file) => !existsSync(join(root, file)));
if (missing.length > 0) {
  console.error(`run-tests: tsc did not emit ${missing.join(', ')}`);
  process.exit(1);
}

// A test file that hangs fails after 3 minutes instead of blocking the run; the
// whole run is bounded too (the suite takes about 3 minutes on 2 cores), so a
// stuck child process fails CI quickly and visibly rather than using its budget.
const args = [
  '--enable-source-maps',
  '--test',
  '--test-reporter=spec',
  '--test-concurrency=2',
  '--test-timeout=180000',
  ...nodeFlags,
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
