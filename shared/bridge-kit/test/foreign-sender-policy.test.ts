/**
 * ForeignSenderPolicy on a real Redis, with owners' policies written by the
 * relay's own policy store (the path POLICY_PUT takes), so the bridge reads
 * exactly what the relay wrote.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseForeignIdentity } from '@libertaria/bridge-kit';
import { ForeignSenderPolicy, foreignPeerDid, foreignSenderResource } from '@libertaria/bridge-kit/worker';
import { Ed25519Identity } from '@libertaria/identity';
import { DEFAULT_MEMBRANE_LIMITS, parseResource } from '@libertaria/membrane';
import { RedisAuditLog, RedisPolicyStore } from '@libertaria/membrane/redis';
import { Redis, type RedisOptions } from 'ioredis';
import { Registry } from 'prom-client';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';

let redis: RedisHandle;
const connections: Redis[] = [];
const policies: ForeignSenderPolicy[] = [];
let n = 0;
const freshPrefix = () => `fsp${process.pid}x${n++}`;

function connect(options: RedisOptions = {}): Redis {
  const c = new Redis(redis.url, options);
  connections.push(c);
  return c;
}

async function policyFor(
  prefix: string,
  whenNoPolicy: 'allow' | 'deny',
  network = 'activitypub',
  registry?: Registry,
): Promise<ForeignSenderPolicy> {
  const p = new ForeignSenderPolicy({
    redis: connect(),
    relayPrefix: prefix,
    network,
    whenNoPolicy,
    ...(registry ? { registry } : {}),
  });
  policies.push(p);
  await p.start();
  return p;
}

/** The relay's store, as a relay node writes owners' policies. */
function relayStore(prefix: string): RedisPolicyStore {
  return new RedisPolicyStore(connect(), connect({ lazyConnect: true }), { prefix, limits: DEFAULT_MEMBRANE_LIMITS });
}

/** Polls `cond`; the deadline is sized for a loaded 2-core CI machine. */
async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

const acct = (uri: string) => parseForeignIdentity(uri);

before(async () => {
  redis = await startRedis();
});
after(async () => {
  for (const p of policies) await p.close();
  for (const c of connections) c.disconnect();
  await redis.stop();
});

describe('foreignSenderResource and foreignPeerDid', () => {
  it('name each kind of foreign sender as one exact membrane resource', () => {
    const cases: [string, string, string][] = [
      ['activitypub', 'acct:Alice@Example.Social', 'federated://activitypub/example.social/Alice'],
      ['activitypub', 'acct:bob@host.example:8443', 'federated://activitypub/host.example:8443/bob'],
      ['activitypub', 'acct:..@host.example', 'federated://activitypub/host.example/%2E%2E'],
      [
        'activitypub',
        'https://h.example/users/x',
        'federated://activitypub/h.example/https:%2F%2Fh.example%2Fusers%2Fx',
      ],
      [
        'xmtp',
        'xmtp:0xAbCdEf0123456789abcdef0123456789ABCDEF01',
        'federated://xmtp/0xabcdef0123456789abcdef0123456789abcdef01',
      ],
    ];
    for (const [network, uri, resource] of cases) {
      const r = foreignSenderResource(network, acct(uri));
      assert.equal(r, resource);
      // Exact (no pattern), valid for the membrane: a request with it is never refused as BAD_FIELD.
      assert.equal(parseResource(r, 'r', { maxLength: 512, allowPattern: false }).kind, 'exact');
    }
    const custom = parseForeignIdentity('matrix:@a/b*c:%zz', { customSchemes: ['matrix'] });
    const r = foreignSenderResource('custom-matrix', custom);
    assert.equal(r, 'federated://custom-matrix/@a%2Fb%2Ac:%25zz');
    assert.equal(parseResource(r, 'r', { maxLength: 512, allowPattern: false }).kind, 'exact');
  });

  it('derives one stable did:libertaria per canonical sender, distinct across senders', () => {
    const a = foreignPeerDid(acct('acct:alice@example.social'));
    assert.equal(foreignPeerDid(acct('acct:alice@EXAMPLE.social')), a);
    assert.notEqual(foreignPeerDid(acct('acct:alice2@example.social')), a);
    assert.match(a, /^did:libertaria:z[1-9A-HJ-NP-Za-km-z]{43,44}$/);
  });
});

describe('ForeignSenderPolicy', () => {
  it('gives owners without a policy the configured default', async () => {
    const prefix = freshPrefix();
    const owner = Ed25519Identity.generate().did;
    const open = await policyFor(prefix, 'allow');
    const closed = await policyFor(prefix, 'deny');
    assert.equal((await open.decide(owner, acct('acct:a@x.example'), 'message')).allowed, true);
    const denied = await closed.decide(owner, acct('acct:a@x.example'), 'follow');
    assert.equal(denied.allowed, false);
    assert.equal(denied.code, 'ACCESS_NO_GRANT');
  });

  it("follows the owner's policy: an instance allowed to message, follows by one account only", async () => {
    const prefix = freshPrefix();
    const owner = Ed25519Identity.generate();
    await relayStore(prefix).put(owner.did, {
      version: 1,
      capabilities: [
        { resource: 'federated://activitypub/example.social/*', action: 'send' },
        { resource: 'federated://activitypub/example.social/alice', action: 'read' },
      ],
    });
    const policy = await policyFor(prefix, 'allow');
    const alice = acct('acct:alice@example.social');
    const bob = acct('acct:bob@example.social');
    const mallory = acct('acct:mallory@elsewhere.example');
    assert.equal((await policy.decide(owner.did, alice, 'message')).allowed, true);
    assert.equal((await policy.decide(owner.did, bob, 'message')).allowed, true);
    assert.equal((await policy.decide(owner.did, alice, 'follow')).allowed, true);
    const bobFollows = await policy.decide(owner.did, bob, 'follow');
    assert.deepEqual([bobFollows.allowed, bobFollows.code], [false, 'ACCESS_NO_GRANT']);
    // A policy exists, so the default ('allow') does not apply to what it does not cover.
    const other = await policy.decide(owner.did, mallory, 'message');
    assert.deepEqual([other.allowed, other.code], [false, 'ACCESS_NO_GRANT']);
    // The same owner's policy says nothing about another network's senders.
    const xmtp = await policyFor(prefix, 'allow', 'xmtp');
    const x = await xmtp.decide(owner.did, acct('xmtp:0xabcdef0123456789abcdef0123456789abcdef01'), 'message');
    assert.equal(x.allowed, false);
  });

  it('counts a per-peer rate for each foreign sender apart, atomically in Redis', async () => {
    const prefix = freshPrefix();
    const owner = Ed25519Identity.generate();
    await relayStore(prefix).put(owner.did, {
      version: 1,
      capabilities: [
        {
          resource: 'federated://activitypub/*',
          action: 'send',
          constraints: [{ type: 'rate', limit: 3, windowSeconds: 3600, scope: 'peer' }],
        },
      ],
    });
    // Two bridge processes share the counters.
    const [p1, p2] = [await policyFor(prefix, 'deny'), await policyFor(prefix, 'deny')];
    const alice = acct('acct:alice@a.example');
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => (i % 2 ? p1 : p2).decide(owner.did, alice, 'message')),
    );
    assert.equal(results.filter((r) => r.allowed).length, 3);
    assert.ok(results.filter((r) => !r.allowed).every((r) => r.code === 'ACCESS_RATE_LIMITED'));
    // Bob has his own window, untouched by Alice's.
    assert.equal((await p1.decide(owner.did, acct('acct:bob@a.example'), 'message')).allowed, true);
  });

  it('applies a changed policy at once, through the relay cluster invalidation', async () => {
    const prefix = freshPrefix();
    const owner = Ed25519Identity.generate();
    const store = relayStore(prefix);
    await store.put(owner.did, { version: 1, capabilities: [{ resource: 'federated://activitypub/*', action: '*' }] });
    const policy = await policyFor(prefix, 'deny');
    const alice = acct('acct:alice@a.example');
    assert.equal((await policy.decide(owner.did, alice, 'follow')).allowed, true); // now cached
    await store.put(owner.did, { version: 1, capabilities: [{ resource: 'feed://news', action: 'read' }] });
    await until('the new policy to apply', async () => !(await policy.decide(owner.did, alice, 'follow')).allowed);
  });

  it("records every decision in the owner's audit trail and in its metrics", async () => {
    const prefix = freshPrefix();
    const owner = Ed25519Identity.generate();
    const registry = new Registry();
    const policy = await policyFor(prefix, 'deny', 'activitypub', registry);
    const sender = acct('acct:eve@e.example');
    await policy.decide(owner.did, sender, 'follow');
    const page = await new RedisAuditLog(connect(), { prefix }).query({ owner: owner.did });
    assert.equal(page.records.length, 1);
    const [entry] = page.records;
    assert.equal(entry!.peer, foreignPeerDid(sender));
    assert.equal(entry!.resource, 'federated://activitypub/e.example/eve');
    assert.equal(entry!.action, 'read');
    assert.equal(entry!.allowed, false);
    const metrics = await registry.metrics();
    assert.match(
      metrics,
      /bridge_foreign_sender_decisions_total\{network="activitypub",action="follow",verdict="deny",code="ACCESS_NO_GRANT"\} 1/,
    );
  });

  it('denies, never throws, for a malformed owner and when Redis does not answer (fail closed)', async () => {
    const prefix = freshPrefix();
    const policy = await policyFor(prefix, 'allow');
    const bad = await policy.decide('did:libertaria:not-base58!', acct('acct:a@b.example'), 'message');
    assert.deepEqual([bad.allowed, bad.code], [false, 'INVALID_DID']);

    const own = await startRedis();
    const client = new Redis(own.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, lazyConnect: true });
    client.on('error', () => {});
    await client.connect();
    const subscriber = new Redis(own.url, { lazyConnect: true });
    subscriber.on('error', () => {});
    const down = new ForeignSenderPolicy({
      redis: client,
      subscriber,
      relayPrefix: prefix,
      network: 'activitypub',
      whenNoPolicy: 'allow',
    });
    await down.start();
    await own.stop();
    const d = await down.decide(Ed25519Identity.generate().did, acct('acct:a@b.example'), 'message');
    assert.deepEqual([d.allowed, d.code], [false, 'STORE_UNAVAILABLE']);
    await down.close();
    client.disconnect();
    subscriber.disconnect();
  });
});
