/**
 * The membrane commands of `lrelay` end to end, against a real relay process
 * on a private Redis: `policy set|get`, `grant`, `send --grant` and `audit`.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { cli } from '../../../test-support/client-harness.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

let redis: RedisHandle;
let relay: RelayHandle;
let dir: string;

before(async () => {
  redis = await startRedis();
  relay = await startRelay({ redisUrl: redis.url });
  dir = await mkdtemp(join(tmpdir(), 'lrelay-membrane-'));
});

after(async () => {
  await relay?.stop();
  await redis?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('lrelay policy, grant, send --grant and audit', () => {
  it('sets and reads a policy, grants a quota of one send, and shows every decision in the audit', async () => {
    const alice = Ed25519Identity.generate();
    const bob = Ed25519Identity.generate();
    const aliceKey = join(dir, 'alice.key');
    const bobKey = join(dir, 'bob.key');
    await writeKeyFile(aliceKey, alice);
    await writeKeyFile(bobKey, bob);
    const policyFile = join(dir, 'policy.json');
    // Only sessions may be opened; nobody may send without a grant.
    await writeFile(
      policyFile,
      JSON.stringify({ version: 1, capabilities: [{ resource: alice.did, action: 'open' }] }),
    );

    const set = await cli(['policy', 'set', '--relay', relay.wsUrl, '--key', aliceKey, '--file', policyFile]).done;
    assert.equal(set.code, 0, set.stderr);
    assert.equal(JSON.parse(set.stdout).capabilities[0].action, 'open');
    const get = await cli(['policy', 'get', '--relay', relay.wsUrl, '--key', aliceKey]).done;
    assert.equal(get.code, 0, get.stderr);
    assert.deepEqual(JSON.parse(get.stdout), JSON.parse(set.stdout));

    const sendArgs = ['send', '--relay', relay.wsUrl, '--key', bobKey, '--to', alice.did, '--unsealed', '--text', 'hi'];
    const refused = await cli(sendArgs).done;
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^warning: --unsealed: [^\n]*\nerror: ACCESS_NO_GRANT: /);

    const token = join(dir, 'bob.grant');
    const granted = await cli([
      'grant',
      '--key',
      aliceKey,
      '--to',
      bob.did,
      '--resource',
      alice.did,
      '--action',
      'send',
      '--expires',
      '3600',
      '--limit',
      '1',
      '--out',
      token,
    ]).done;
    assert.equal(granted.code, 0, granted.stderr);
    assert.match(await readFile(token, 'utf8'), /^[A-Za-z0-9+/]+={0,2}\n$/);

    const allowed = await cli([...sendArgs, '--grant', token]).done;
    assert.equal(allowed.code, 0, allowed.stderr);
    const spent = await cli([...sendArgs, '--grant', token]).done;
    assert.equal(spent.code, 1);
    assert.match(spent.stderr, /^warning: --unsealed: [^\n]*\nerror: ACCESS_QUOTA_EXHAUSTED: .*links\[0\]\.cst\[0\]/);

    const audit = await cli(['audit', '--relay', relay.wsUrl, '--key', aliceKey, '--since', '600']).done;
    assert.equal(audit.code, 0, audit.stderr);
    const records = audit.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { peer: string; code: string; via: string; action: string });
    // A send the client resent (its ACK timer fired first on a loaded machine) is a second request with
    // a second record: compare the runs of equal records.
    const runs = records
      .map((r) => [r.peer, r.action, r.code, r.via])
      .filter((r, i, all) => i === 0 || r.join() !== all[i - 1]!.join());
    assert.deepEqual(runs, [
      [bob.did, 'send', 'ACCESS_NO_GRANT', 'policy'],
      [bob.did, 'send', 'OK', 'grant'],
      [bob.did, 'send', 'ACCESS_QUOTA_EXHAUSTED', 'grant'],
    ]);
    // Bob's own audit (decisions about his resources) holds none of these.
    const bobs = await cli(['audit', '--relay', relay.wsUrl, '--key', bobKey]).done;
    assert.equal(bobs.code, 0, bobs.stderr);
    assert.equal(bobs.stdout, '');
  });

  it('refuses an invalid policy with the JSON path, and bad grant arguments as usage errors', async () => {
    const alice = Ed25519Identity.generate();
    const aliceKey = join(dir, 'alice2.key');
    await writeKeyFile(aliceKey, alice);
    const bad = join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify({ version: 1, capabilities: [{ resource: alice.did, action: 'fly' }] }));
    const set = await cli(['policy', 'set', '--relay', relay.wsUrl, '--key', aliceKey, '--file', bad]).done;
    assert.equal(set.code, 1);
    assert.match(set.stderr, /^error: POLICY_INVALID: .*capabilities\[0\]\.action/);
    const grant = await cli([
      'grant',
      '--key',
      aliceKey,
      '--to',
      alice.did,
      '--resource',
      alice.did,
      '--action',
      'fly',
      '--out',
      join(dir, 'x'),
    ]).done;
    assert.equal(grant.code, 2);
    assert.match(grant.stderr, /^error: USAGE: --action/);
  });
});
