/**
 * The `lrelay` CLI without a relay: keygen, whoami, usage errors and their
 * exit codes. Each case spawns the real (compiled) entry point, so argument
 * parsing, stderr format and exit status are tested as a user sees them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readKeyFile } from '@libertaria/identity/node';
import { LRELAY_ENTRY, REPO_ROOT, repoPath } from '../../../test-support/paths.js';

const root = REPO_ROOT;
const entry = LRELAY_ENTRY;
const shim = repoPath('shared/cli/bin/lrelay.js');

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], options: { input?: string; viaShim?: boolean } = {}): Promise<CliResult> {
  const argv = options.viaShim ? [shim, ...args] : [entry, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    // A hung CLI fails here with its output, not as a bare test timeout; 60 s is
    // many times a run's length, for loaded CI machines.
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`lrelay ${args.join(' ')} did not exit within 60 s; stdout: ${stdout}; stderr: ${stderr}`));
    }, 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

const DID = /^did:libertaria:z[1-9A-HJ-NP-Za-km-z]+$/;

/** One `error: CODE: message` line (plus the usage text for exit 2), never a stack trace. */
function assertError(result: CliResult, exitCode: number, code: string, message?: RegExp): void {
  assert.equal(result.code, exitCode, `exit status; stderr: ${result.stderr}`);
  const [first, ...rest] = result.stderr.trimEnd().split('\n');
  assert.match(first ?? '', new RegExp(`^error: ${code}: `));
  if (message) assert.match(first ?? '', message);
  assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
  if (exitCode === 2) assert.match(rest[0] ?? '', /^usage: lrelay keygen/);
  else assert.equal(rest.length, 0, `only one line on stderr: ${result.stderr}`);
  assert.equal(result.stdout, '');
}

describe('lrelay CLI (no relay needed)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lrelay-cli-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keygen writes a 0600 key file, prints its DID, and whoami prints the same DID', async () => {
    const file = join(dir, 'alice.json');
    const made = await run(['keygen', '--out', file]);
    assert.equal(made.code, 0, made.stderr);
    assert.equal(made.stderr, '');
    const did = made.stdout.trim();
    assert.match(did, DID);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await readKeyFile(file)).did, did);
    const who = await run(['whoami', '--key', file]);
    assert.equal(who.code, 0, who.stderr);
    assert.equal(who.stdout, `${did}\n`);
  });

  it('keygen refuses to overwrite an existing file', async () => {
    const file = join(dir, 'existing.json');
    await writeFile(file, 'precious');
    assertError(await run(['keygen', '--out', file]), 1, 'INVALID_KEY_FILE', /already exists/);
    assert.equal(await readFile(file, 'utf8'), 'precious');
  });

  it('whoami reports an unreadable or invalid key file', async () => {
    assertError(await run(['whoami', '--key', join(dir, 'missing.json')]), 1, 'INVALID_KEY_FILE', /ENOENT/);
    const junk = join(dir, 'junk.json');
    await writeFile(junk, '{"type":"libertaria-identity"}');
    assertError(await run(['whoami', '--key', junk]), 1, 'INVALID_KEY_FILE');
  });

  it('prints the usage for --help and exits 0', async () => {
    const result = await run(['--help']);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /^usage: lrelay keygen --out FILE\n/);
    assert.match(
      result.stdout,
      /lrelay listen --relay URL\[,URL\.\.\.\] --key FILE \[--count N\] \[--timeout SECONDS\]/,
    );
  });

  const relay = 'ws://127.0.0.1:9';
  const to = 'did:libertaria:z6WsMUE5qST6hrvvvbNRDxTGe9xtQwW5ig5try9u487Rw';
  const usageCases: [string, string[], string, RegExp][] = [
    ['no command', [], 'USAGE', /no command/],
    ['an unknown command', ['frobnicate'], 'USAGE', /unknown command "frobnicate"/],
    ['an unknown option', ['whoami', '--key', 'k', '--bogus'], 'USAGE', /--bogus/],
    ['a positional argument', ['whoami', 'extra'], 'USAGE', /extra/],
    ['a missing --out', ['keygen'], 'USAGE', /--out is required/],
    ['a missing --key', ['whoami'], 'USAGE', /--key is required/],
    ['a missing value', ['whoami', '--key'], 'USAGE', /--key/],
    ['send without --relay', ['send', '--key', 'k', '--to', to, '--text', 'x'], 'USAGE', /--relay is required/],
    ['send without --to', ['send', '--relay', relay, '--key', 'k', '--text', 'x'], 'USAGE', /--to is required/],
    ['send without text', ['send', '--relay', relay, '--key', 'k', '--to', to], 'USAGE', /exactly one of/],
    [
      'send with --text and --stdin',
      ['send', '--relay', relay, '--key', 'k', '--to', to, '--text', 'x', '--stdin'],
      'USAGE',
      /exactly one of/,
    ],
    [
      'send with a bad relay URL',
      ['send', '--relay', 'http://h:1', '--key', 'k', '--to', to, '--text', 'x'],
      'INVALID_RELAY_URL',
      /scheme "http"/,
    ],
    [
      'send with a tcp URL without port',
      ['send', '--relay', `${relay},tcp://h`, '--key', 'k', '--to', to, '--text', 'x'],
      'INVALID_RELAY_URL',
      /explicit port/,
    ],
    [
      'send with a bad DID',
      ['send', '--relay', relay, '--key', 'k', '--to', 'bob', '--text', 'x'],
      'INVALID_DID',
      /did:/,
    ],
    ['listen with --count 0', ['listen', '--relay', relay, '--key', 'k', '--count', '0'], 'USAGE', /--count/],
    ['listen with --count x', ['listen', '--relay', relay, '--key', 'k', '--count', 'x'], 'USAGE', /--count/],
    ['listen with --timeout -1', ['listen', '--relay', relay, '--key', 'k', '--timeout=-1'], 'USAGE', /--timeout/],
    ['listen with a boolean given a value', ['send', '--fast=yes'], 'USAGE', /--fast/],
    [
      'listen with --handshake-timeout 0',
      ['listen', '--relay', relay, '--key', 'k', '--handshake-timeout', '0'],
      'USAGE',
      /--handshake-timeout/,
    ],
    [
      'send with --handshake-timeout x',
      ['send', '--relay', relay, '--key', 'k', '--to', to, '--text', 'x', '--handshake-timeout', 'x'],
      'USAGE',
      /--handshake-timeout/,
    ],
  ];
  for (const [name, args, code, message] of usageCases) {
    it(`exits 2 on ${name}`, async () => assertError(await run(args), 2, code, message));
  }

  it('exits 1 with the code when no relay can be reached, without a stack trace', async () => {
    const file = join(dir, 'sender.json');
    assert.equal((await run(['keygen', '--out', file])).code, 0);
    // Port 9 (discard) on loopback is closed; the CLI gives up after its rounds of backoff.
    const result = await run(['send', '--relay', relay, '--key', file, '--to', to, '--text', 'hi']);
    assertError(result, 1, 'CONNECTION_FAILED', /no relay reachable .*ECONNREFUSED/);
  });

  it('listen exits 1, not quietly, when it never reached a relay before --timeout', async () => {
    const file = join(dir, 'listener.json');
    assert.equal((await run(['keygen', '--out', file])).code, 0);
    const result = await run(['listen', '--relay', relay, '--key', file, '--timeout', '0.5']);
    assertError(result, 1, 'CONNECTION_FAILED', /no relay reachable within 0.5 s/);
  });

  it('--handshake-timeout sets the per-step handshake budget: a relay that never answers HELLO fails the run with AUTH_TIMEOUT', async () => {
    const file = join(dir, 'slow.json');
    assert.equal((await run(['keygen', '--out', file])).code, 0);
    // Accepts TCP connections and says nothing. With the default 15 s per step the five
    // rounds (each stretched after a timeout) would take minutes; with 0.2 s a few seconds.
    const silent = createServer((socket) => socket.on('error', () => {}));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    try {
      const result = await run([
        'send',
        '--relay',
        `tcp://127.0.0.1:${port}`,
        '--key',
        file,
        '--to',
        to,
        '--text',
        'hi',
        '--handshake-timeout',
        '0.2',
      ]);
      assertError(result, 1, 'AUTH_TIMEOUT', /no relay reachable/);
    } finally {
      silent.close();
    }
  });

  it('works through the bin shim once built', { skip: !existsSync(entry) && 'shared/cli/dist not built' }, async () => {
    const result = await run(['whoami'], { viaShim: true });
    assertError(result, 2, 'USAGE', /--key is required/);
  });
});
