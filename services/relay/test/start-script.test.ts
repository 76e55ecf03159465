/**
 * `npm start` (scripts/start-relay.mjs), the README's one command: it makes
 * the node's identity key when none is configured, and runs the relay with
 * the node options of services/relay/node-flags.json. It broke once without
 * a test noticing (it imported the pre-split `shared/dist/index.js`).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { ownChild } from '../../../test-support/children.js';
import { repoPath } from '../../../test-support/paths.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';

/** Lines a child writes to stdout and stderr, and a wait for one matching. */
function lines(child: ChildProcess): (match: RegExp, timeoutMs: number) => Promise<string> {
  const seen: string[] = [];
  const waiters: Array<() => void> = [];
  const onData = (chunk: Buffer): void => {
    seen.push(...chunk.toString('utf8').split('\n'));
    for (const w of waiters.splice(0)) w();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  return (match, timeoutMs) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no line matching ${match} in ${timeoutMs} ms:\n${seen.join('\n')}`)),
        timeoutMs,
      );
      const check = (): void => {
        const line = seen.find((l) => match.test(l));
        if (line !== undefined) {
          clearTimeout(timer);
          resolve(line);
        } else waiters.push(check);
      };
      check();
    });
}

describe('npm start (scripts/start-relay.mjs)', () => {
  let redis: RedisHandle;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  it('starts a relay with an identity key of its own and the relay node options, and stops on SIGTERM', async () => {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      REDIS_URL: redis.url,
      RELAY_HOST: '127.0.0.1',
      RELAY_WS_PORT: '0',
      RELAY_TCP_PORT: '0',
      RELAY_ADMIN_PORT: '0',
      RELAY_NODE_ID: `start-script-${process.pid}`,
    };
    // No RELAY_IDENTITY_KEY(_FILE): the script makes or reads data/relay-identity.key (git-ignored).
    const script = spawn(process.execPath, [repoPath('scripts', 'start-relay.mjs')], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    ownChild(script);
    const waitFor = lines(script);
    const did = (await waitFor(/^start: relay identity /, 30_000)).replace('start: relay identity ', '');
    const listening = JSON.parse(await waitFor(/"msg":"listening"/, 30_000));
    assert.equal(listening.did, did, 'the relay runs with the key the script announced');
    assert.ok(listening.ws > 0 && listening.tcp > 0);

    const flags: string[] = JSON.parse(readFileSync(repoPath('services', 'relay', 'node-flags.json'), 'utf8')).flags;
    const relayArgs = spawnSync('ps', ['-o', 'args=', '--ppid', String(script.pid)], { encoding: 'utf8' }).stdout;
    for (const flag of flags) assert.ok(relayArgs.includes(flag), `the relay runs with ${flag}: ${relayArgs}`);

    const exited = new Promise<number | null>((resolve) => script.once('exit', (code) => resolve(code)));
    script.kill('SIGTERM');
    assert.equal(await exited, 0);
  });
});
