/**
 * Node 20's JWK export of a generated key can deadlock the whole process.
 *
 * ExportJWKEdKey holds the key's mutex while it allocates strings; an
 * allocation may start a garbage collection, which may finalize the
 * generateKeyPairSync job that made the key, and that job's destructor
 * (~KeyPairGenConfig) takes the same mutex: the main thread waits on itself,
 * in futex_wait, for good. That is how test files of this folder hung with no
 * output until their 3-minute timeout, about one full run in four (gdb on a
 * hung one: ExportJWKEdKey → String::NewFromOneByte → CollectGarbage →
 * InvokeFirstPassWeakCallbacks → ~KeyGenJob → uv_mutex_lock). Peers using the
 * SDK on Node 20 were exposed the same way, at every DH ratchet step.
 *
 * 1. The provider's key generation, in a child with a 1 MiB young generation
 *    (collections every few hundred keys): the old code hung there within
 *    0.2–1.5 s in six runs of six.
 * 2. No JWK export of a key anywhere in the sources, unless marked as one of
 *    an imported key (which has no generation job).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { ownChild } from '../../../test-support/children.js';
import { REPO_ROOT } from '../../../test-support/paths.js';

/** Loop time in the child; the old code hung within 1.5 s. */
const LOOP_MS = 3000;
/** A hung child is killed after this; a loaded 2-core machine finishes the loop in well under it. */
const DEADLINE_MS = 60_000;

const CHILD = `
import { nodeCrypto } from '@libertaria/crypto/node';
import { nobleCrypto } from '@libertaria/crypto';
const end = Date.now() + ${LOOP_MS};
let n = 0;
while (Date.now() < end) {
  const pair = nodeCrypto.x25519Generate();
  const again = nodeCrypto.x25519PublicKey(pair.privateKey);
  if (Buffer.compare(again, pair.publicKey) !== 0) throw new Error('x25519PublicKey disagrees with x25519Generate');
  if (n % 500 === 0 && Buffer.compare(nobleCrypto.x25519PublicKey(pair.privateKey), pair.publicKey) !== 0) {
    throw new Error('node and noble disagree on a public key');
  }
  n++;
}
process.stdout.write('done ' + n + '\\n');
`;

describe('Node 20: no JWK export of a generated key', () => {
  it('generates X25519 pairs under constant collections without hanging', async () => {
    const child = spawn(process.execPath, ['--max-semi-space-size=1', '--input-type=module', '-e', CHILD], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    ownChild(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    const started = Date.now();
    const result = await new Promise<{ code: number | null; hung: boolean }>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve({ code: null, hung: true });
      }, DEADLINE_MS);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, hung: false });
      });
    });
    assert.equal(result.hung, false, `the child hung (deadlock) and was killed after ${Date.now() - started} ms`);
    assert.equal(result.code, 0, `the child failed: ${err}`);
    const generated = Number(/^done (\d+)$/m.exec(out)?.[1]);
    // Enough keys for many young-generation collections (each key leaves a few KiB of garbage).
    assert.ok(generated >= 1000, `only ${generated} keys in ${LOOP_MS} ms`);
  });

  it('no source exports a key as JWK unless it marks the key as imported', () => {
    const patterns = [/\.export\(\s*\{[^}]*format:\s*'jwk'/, /\bexportJwk\(/, /exportKey\(\s*'jwk'/];
    const marker = 'jwk-export: imported key';
    const offenders: string[] = [];
    const self = 'shared/crypto/test/node-jwk-deadlock.test.ts';
    const walk = (dir: string): void => {
      for (const name of readdirSync(dir)) {
        if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
        const path = join(dir, name);
        if (statSync(path).isDirectory()) walk(path);
        else if (name.endsWith('.ts') && relative(REPO_ROOT, path) !== self) {
          const lines = readFileSync(path, 'utf8').split('\n');
          lines.forEach((line, i) => {
            if (!patterns.some((p) => p.test(line))) return;
            if (line.includes(marker) || (lines[i - 1] ?? '').includes(marker)) return;
            offenders.push(`${relative(REPO_ROOT, path)}:${i + 1}: ${line.trim()}`);
          });
        }
      }
    };
    for (const dir of ['shared', 'services', 'test-support', 'bench', 'scripts']) walk(join(REPO_ROOT, dir));
    assert.deepEqual(
      offenders,
      [],
      `JWK exports (may deadlock on Node 20 for a generated key; use DER, or mark an imported key with "// ${marker}")`,
    );
  });
});
