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
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
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

const sources = [
  ...findTests(join(root, 'shared')),
  ...findTests(join(root, 'services')),
  ...findTests(join(root, 'deploy')),
]
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

// A test file still running after REPORT_AFTER_S gets a diagnostic report
// (node's --report-on-signal: JavaScript and native stacks, libuv handles)
// before the 3-minute timeout kills it, so a hang says where it is. Every
// node process the run starts gets the handler through NODE_OPTIONS.
const REPORT_AFTER_S = Number(process.env.RUN_TESTS_REPORT_AFTER_S ?? 150);
const reportDir = join(root, OUT, 'reports');
mkdirSync(reportDir, { recursive: true });
const env = {
  ...process.env,
  NODE_OPTIONS: [
    process.env.NODE_OPTIONS ?? '',
    '--report-on-signal',
    '--report-signal=SIGUSR2',
    `--report-directory=${reportDir}`,
  ].join(' '),
};

// The runner's output passes through unchanged; it is read only for the files that timed out,
// so what the watchdog saw of them can be said (below).
const runStarted = Date.now();
const runner = spawn(process.execPath, args, { cwd: root, stdio: ['inherit', 'pipe', 'inherit'], env });
const timedOut = new Set();
let outputTail = '';
// The line before, across chunks: the runner writes a file's ✖ line and its
// "test timed out" line separately, and a chunk may end between the two.
let previousLine = '';
runner.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  const text = outputTail + chunk.toString();
  const lines = text.split('\n');
  outputTail = lines.pop() ?? '';
  for (const line of lines) {
    const file = /^✖ (.+\.test\.js) \(/.exec(previousLine)?.[1];
    if (file && /test timed out/.test(line)) timedOut.add(relative(root, file));
    previousLine = line;
  }
});
const firstSeen = new Map();
const reported = new Set();
/** Every test-file process the watchdog saw: when first and last, and the processes it had started. */
const seen = new Map();
/** The runner's children that run a compiled test file (Linux /proc; elsewhere nothing is watched). */
function testFileProcesses() {
  const found = [];
  let pids;
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return found;
  }
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== runner.pid) continue;
      const file = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
        .split('\0')
        .find((a) => a.endsWith('.test.js'));
      if (file !== undefined) found.push({ pid: Number(pid), file: relative(root, file) });
    } catch {
      // The process ended meanwhile.
    }
  }
  return found;
}

/** The processes `pid` started (pid and command line), from /proc. */
function childrenOf(pid) {
  const out = [];
  let pids;
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return out;
  }
  for (const p of pids) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== pid) continue;
      out.push(`${p} ${readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ').trim().slice(0, 120)}`);
    } catch {
      // Ended meanwhile.
    }
  }
  return out;
}
const watchdog = setInterval(() => {
  const now = Date.now();
  for (const { pid, file } of testFileProcesses()) {
    const key = `${pid} ${file}`;
    if (!firstSeen.has(key)) firstSeen.set(key, now);
    const entry = seen.get(file) ?? { pid, first: now, last: now, children: new Set() };
    entry.last = now;
    for (const child of childrenOf(pid)) entry.children.add(child);
    seen.set(file, entry);
    if (reported.has(key) || now - firstSeen.get(key) < REPORT_AFTER_S * 1000) continue;
    reported.add(key);
    try {
      process.kill(pid, 'SIGUSR2');
      console.error(
        `run-tests: ${file} has run for ${REPORT_AFTER_S} s; diagnostic report of pid ${pid} in ${reportDir}`,
      );
    } catch {
      // It ended meanwhile.
    }
  }
}, 5000);
const limit = setTimeout(() => {
  console.error(`run-tests: the test run exceeded ${RUN_LIMIT_MS / 60000} minutes and was stopped`);
  runner.kill('SIGKILL');
}, RUN_LIMIT_MS);
// 'close', not 'exit': the runner's last output (the failure summary) is read before the report.
runner.on('close', (code, signal) => {
  clearInterval(watchdog);
  clearTimeout(limit);
  // A file that timed out with no live process seen for it points at the runner's side (its child
  // gone, the runner still waiting on its output), not at the test.
  for (const file of timedOut) {
    const e = seen.get(file);
    console.error(
      e === undefined
        ? `run-tests: ${file} timed out, and the watchdog (every 5 s) never saw a process running it`
        : `run-tests: ${file} timed out; its process ${e.pid} was seen from ${((e.first - runStarted) / 1000).toFixed(0)} s to ${((e.last - runStarted) / 1000).toFixed(0)} s of the run, having started: ${[...e.children].join('; ') || 'no process'}`,
    );
  }
  const reports = readdirSync(reportDir).filter((name) => name.endsWith('.json'));
  for (const name of reports) summarizeReport(join(reportDir, name));
  for (const key of reported) {
    const [pid, file] = key.split(' ');
    if (!reports.some((name) => name.includes(`.${pid}.`))) {
      // The report is written from the main thread: none means it never got there.
      console.error(`run-tests: ${file} (pid ${pid}) wrote no report: its main thread was blocked outside JavaScript`);
    }
  }
  process.exit(signal === null ? (code ?? 1) : 1);
});

/** The few lines of a diagnostic report that tell where a process was stuck. */
function summarizeReport(path) {
  try {
    const report = JSON.parse(readFileSync(path, 'utf8'));
    const js = report.javascriptStack ?? {};
    const handles = (report.libuv ?? []).filter((h) => h.is_active).map((h) => h.type);
    console.error(
      [
        `run-tests: report ${relative(root, path)}: ${report.header?.commandLine?.join(' ') ?? ''}`,
        `  javascript: ${js.message ?? ''}`,
        ...(js.stack ?? []).slice(0, 12).map((line) => `    ${line}`),
        `  active libuv handles: ${handles.join(', ') || 'none'}`,
        `  threads' native stacks: in the report (nativeStack, workers)`,
      ].join('\n'),
    );
  } catch (error) {
    console.error(`run-tests: could not read ${path}: ${error}`);
  }
}
