/**
 * The membrane's Redis stores on a real Redis: operator trust scores, the
 * revocation list, owner policies cached per node and invalidated through
 * pub/sub (two nodes, each with its own connections), and the audit trail
 * as a bounded stream queried by peer, resource and time.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Ed25519Identity } from '@libertaria/identity';
import {
  type AccessDecision,
  issueGrant,
  DEFAULT_MEMBRANE_LIMITS as LIMITS,
  Membrane,
  membraneLimits,
  verifyGrant,
} from '@libertaria/membrane';
import {
  createRedisMembrane,
  RedisAuditLog,
  RedisConstraintState,
  RedisPolicyStore,
  RedisRevocationStore,
  RedisTrustStore,
} from '@libertaria/membrane/redis';
import { Redis } from 'ioredis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';

let redis: RedisHandle;
const connections: Redis[] = [];
let n = 0;
const freshPrefix = () => `s${process.pid}x${n++}`;
function connect(): Redis {
  const c = new Redis(redis.url);
  connections.push(c);
  return c;
}

before(async () => {
  redis = await startRedis();
});
after(async () => {
  for (const c of connections) c.disconnect();
  await redis.stop();
});

/** Polls `cond` (pub/sub invalidations between nodes); the deadline is sized for a loaded 2-core CI machine. */
async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

const feedPolicy = (action: string) => ({ version: 1, capabilities: [{ resource: 'feed://news', action }] });

describe('membrane trust store', () => {
  it('keeps operator-set scores per DID (either form), forgets them, and refuses bad scores', async () => {
    const trust = new RedisTrustStore(connect(), freshPrefix());
    const alice = Ed25519Identity.generate();
    assert.equal(await trust.trustScore(alice.did), undefined);
    await trust.set(alice.didKey, 0.75);
    assert.equal(await trust.trustScore(alice.did), 0.75);
    await assert.rejects(trust.set(alice.did, 1.5), { code: 'BAD_FIELD' });
    await assert.rejects(trust.set(alice.did, Number.NaN), { code: 'BAD_FIELD' });
    await assert.rejects(trust.set('bob', 0.5), { code: 'INVALID_DID' });
    assert.equal(await trust.remove(alice.did), true);
    assert.equal(await trust.trustScore(alice.did), undefined);
  });

  it('treats a hand-written value that is not a score as unknown, not as trusted', async () => {
    const c = connect();
    const trust = new RedisTrustStore(c, freshPrefix());
    const alice = Ed25519Identity.generate();
    await c.hset(trust.key, alice.did, 'lots');
    assert.equal(await trust.trustScore(alice.did), undefined);
  });
});

describe('membrane revocation store', () => {
  it('finds the first revoked cid of a chain; entries lapse after their time and are purged', async () => {
    let now = 1_000_000;
    const c = connect();
    const rev = new RedisRevocationStore(c, freshPrefix(), () => now);
    const [a, b, x] = ['a', 'b', 'c'].map((ch) => ch.repeat(64)) as [string, string, string];
    assert.equal(await rev.firstRevoked([a, b]), undefined);
    await rev.revoke(b, now + 1000);
    await rev.revoke(x);
    assert.equal(await rev.firstRevoked([a, b]), b);
    assert.equal(await rev.firstRevoked([x, b]), x);
    await rev.revoke(b, now + 500); // a shorter revocation never shortens a longer one
    now += 999;
    assert.equal(await rev.firstRevoked([a, b]), b);
    now += 1;
    assert.equal(await rev.firstRevoked([a, b]), undefined, 'lapsed with the token it revoked');
    await rev.revoke(a, now + 10);
    assert.equal(await c.zscore(rev.key, b), null, 'purged on the next revocation');
    assert.deepEqual(
      (await rev.list()).map((e) => e.cid),
      [a, x],
    );
    await assert.rejects(rev.revoke('not-a-cid'), { code: 'BAD_FIELD' });
  });

  it('denies a revoked token through the membrane on every node', async () => {
    const prefix = freshPrefix();
    const owner = Ed25519Identity.generate();
    const bob = Ed25519Identity.generate();
    const token = issueGrant(
      owner,
      { audience: bob.did, capabilities: [{ resource: 'feed://news', action: 'read' }] },
      LIMITS,
    );
    const membrane = (c: Redis) =>
      new Membrane({
        policies: { policyFor: () => null },
        trust: new RedisTrustStore(c, prefix),
        state: new RedisConstraintState(c, prefix),
        revocations: new RedisRevocationStore(c, prefix),
        audit: new RedisAuditLog(c, { prefix }),
        whenNoPolicy: 'deny',
      });
    const [one, two] = [membrane(connect()), membrane(connect())];
    const request = { peer: bob.did, owner: owner.did, resource: 'feed://news', action: 'read' as const, grant: token };
    assert.ok((await one.checkAccess(request)).allowed);
    await new RedisRevocationStore(connect(), prefix).revoke(verifyGrant(token, LIMITS).cid);
    for (const m of [one, two]) {
      const d = await m.checkAccess(request);
      assert.ok(!d.allowed && d.code === 'GRANT_REVOKED');
    }
  });
});

describe('membrane policy store', () => {
  function node(prefix: string, options: { cacheEntries?: number; cacheMaxAgeMs?: number; now?: () => number } = {}) {
    return new RedisPolicyStore(connect(), connect(), { prefix, limits: LIMITS, ...options });
  }

  it('stores the normalized policy, refuses invalid ones naming the field, and removes', async () => {
    const store = node(freshPrefix());
    const owner = Ed25519Identity.generate();
    await assert.rejects(store.put(owner.did, '{"version":1,"capabilities":[{"resource":"feed://x"}]}'), {
      code: 'POLICY_INVALID',
      field: 'capabilities[0].action',
    });
    const compiled = await store.put(owner.didKey, JSON.stringify(feedPolicy('read')));
    assert.equal(compiled.owner, owner.did);
    assert.deepEqual(await store.get(owner.did), compiled.policy);
    assert.equal(await store.remove(owner.did), true);
    assert.equal(await store.get(owner.did), null);
    assert.equal(await store.remove(owner.did), false);
  });

  it('caches on every node and invalidates through pub/sub when any node writes', async () => {
    const prefix = freshPrefix();
    const [a, b] = [node(prefix), node(prefix)];
    await a.start();
    await b.start();
    const owner = Ed25519Identity.generate();
    assert.equal(await b.policyFor(owner.did), null);
    assert.equal(await b.policyFor(owner.did), null);
    assert.equal(b.stats.hits, 1, '"no policy" is cached too');
    await a.put(owner.did, feedPolicy('read'));
    await until('node b to see the new policy', async () => (await b.policyFor(owner.did)) !== null);
    const first = await b.policyFor(owner.did);
    assert.equal(first?.policy.capabilities[0]?.action, 'read');
    const hits = b.stats.hits;
    assert.equal(await b.policyFor(owner.did), first, 'served from the cache, compiled once');
    assert.equal(b.stats.hits, hits + 1);
    await a.put(owner.did, feedPolicy('write'));
    // The writer never serves its old policy, not even before its own message comes back.
    assert.equal((await a.policyFor(owner.did))?.policy.capabilities[0]?.action, 'write');
    await until(
      'node b to see the change',
      async () => (await b.policyFor(owner.did))?.policy.capabilities[0]?.action === 'write',
    );
    await a.remove(owner.did);
    await until('node b to see the removal', async () => (await b.policyFor(owner.did)) === null);
    await a.stop();
    await b.stop();
  });

  it('caches nothing until subscribed, and drops the cache when the subscriber reconnects', async () => {
    const prefix = freshPrefix();
    const c = connect();
    const sub = connect();
    const store = new RedisPolicyStore(c, sub, { prefix, limits: LIMITS });
    const owner = Ed25519Identity.generate();
    await store.put(owner.did, feedPolicy('read'));
    await store.policyFor(owner.did);
    assert.equal(store.cachedOwners, 0, 'not subscribed: not cached');
    await store.start();
    await store.policyFor(owner.did);
    assert.equal(store.cachedOwners, 1);
    // A write whose message this node misses (made while its subscriber is away, never published).
    const closed = once(sub, 'close');
    sub.disconnect(true);
    await closed;
    assert.equal(store.cachedOwners, 0, 'dropped when the subscriber went away');
    await store.policyFor(owner.did);
    assert.equal(store.cachedOwners, 0, 'nothing cached while away');
    await c.set(store.key(owner.did), JSON.stringify(feedPolicy('write')));
    await once(sub, 'ready');
    assert.equal((await store.policyFor(owner.did))?.policy.capabilities[0]?.action, 'write');
    assert.equal(store.cachedOwners, 1, 'caching again once resubscribed');
    await store.stop();
  });

  it('bounds the cache in entries (least recently used out) and in age', async () => {
    const prefix = freshPrefix();
    let now = 0;
    const store = node(prefix, { cacheEntries: 2, cacheMaxAgeMs: 1000, now: () => now });
    await store.start();
    const owners = [0, 1, 2].map(() => Ed25519Identity.generate().did);
    for (const o of owners) await store.policyFor(o);
    assert.equal(store.cachedOwners, 2);
    const misses = store.stats.misses;
    await store.policyFor(owners[2]!);
    assert.equal(store.stats.misses, misses, 'the newest is cached');
    await store.policyFor(owners[0]!);
    assert.equal(store.stats.misses, misses + 1, 'the oldest was evicted');
    now += 1001;
    await store.policyFor(owners[0]!);
    assert.equal(store.stats.misses, misses + 2, 'expired by age');
    await store.stop();
  });

  it('joins concurrent misses for one owner into one read', async () => {
    const store = node(freshPrefix());
    await store.start();
    const owner = Ed25519Identity.generate();
    await store.put(owner.did, feedPolicy('read'));
    const reads = await Promise.all([
      store.policyFor(owner.did),
      store.policyFor(owner.did),
      store.policyFor(owner.did),
    ]);
    assert.ok(reads[0] !== null && reads.every((r) => r === reads[0]), 'one compiled policy shared');
    await store.stop();
  });

  it('drives membrane decisions: a policy written on one node is enforced on another', async () => {
    const prefix = freshPrefix();
    const owner = Ed25519Identity.generate();
    const bob = Ed25519Identity.generate();
    const [a, b] = [node(prefix), node(prefix)];
    await a.start();
    await b.start();
    const c = connect();
    const membrane = new Membrane({
      policies: b,
      trust: new RedisTrustStore(c, prefix),
      state: new RedisConstraintState(c, prefix),
      revocations: new RedisRevocationStore(c, prefix),
      audit: new RedisAuditLog(c, { prefix }),
      whenNoPolicy: 'allow',
    });
    const read = { peer: bob.did, owner: owner.did, resource: 'feed://news', action: 'read' as const };
    assert.equal((await membrane.checkAccess(read)).allowed, true, 'no policy: the open default');
    await a.put(owner.did, { version: 1, capabilities: [{ resource: 'feed://news', action: 'write' }] });
    await until('the policy to reach node b', async () => !(await membrane.checkAccess(read)).allowed);
    const d = await membrane.checkAccess(read);
    assert.ok(!d.allowed && d.code === 'ACCESS_NO_GRANT');
    await a.stop();
    await b.stop();
  });
});

describe('membrane audit log', () => {
  it('records every decision with its reason, queryable by peer, resource, outcome and time', async () => {
    const prefix = freshPrefix();
    const c = connect();
    const log = new RedisAuditLog(c, { prefix });
    const owner = Ed25519Identity.generate();
    const [alice, bob] = [Ed25519Identity.generate(), Ed25519Identity.generate()];
    const policies = new RedisPolicyStore(c, connect(), { prefix, limits: LIMITS });
    await policies.put(owner.did, {
      version: 1,
      capabilities: [{ resource: 'feed://news', action: 'read' }],
      constraints: [{ type: 'rate', limit: 2, windowSeconds: 3600 }],
    });
    const membrane = new Membrane({
      policies,
      trust: new RedisTrustStore(c, prefix),
      state: new RedisConstraintState(c, prefix),
      revocations: new RedisRevocationStore(c, prefix),
      audit: log,
      whenNoPolicy: 'deny',
    });
    const ask = (peer: Ed25519Identity, resource: string) =>
      membrane.checkAccess({ peer: peer.did, owner: owner.did, resource, action: 'read' });
    const t0 = Date.now();
    const decisions: AccessDecision[] = [];
    for (let i = 0; i < 3; i++) decisions.push(await ask(alice, 'feed://news'));
    decisions.push(await ask(bob, 'feed://other'));
    await sleep(5);
    const t1 = Date.now();
    decisions.push(await ask(bob, 'feed://news'));

    const all = await log.query();
    assert.equal(all.records.length, decisions.length, 'every decision is in the trail');
    assert.equal(all.next, undefined);
    assert.deepEqual(
      all.records.map((r) => [r.peer === alice.did ? 'alice' : 'bob', r.resource, r.allowed, r.code]),
      [
        ['alice', 'feed://news', true, 'OK'],
        ['alice', 'feed://news', true, 'OK'],
        ['alice', 'feed://news', false, 'ACCESS_RATE_LIMITED'],
        ['bob', 'feed://other', false, 'ACCESS_NO_GRANT'],
        ['bob', 'feed://news', true, 'OK'],
      ],
    );
    const limited = all.records[2]!;
    assert.equal(limited.field, 'constraints[0]');
    assert.match(limited.reason, /more than 2 requests/);
    assert.equal(limited.via, 'policy');
    assert.ok(limited.at >= t0 && limited.amount === 1 && limited.owner === owner.did);

    assert.equal((await log.query({ peer: alice.did })).records.length, 3);
    assert.equal((await log.query({ resource: 'feed://other' })).records.length, 1);
    assert.equal((await log.query({ peer: bob.did, allowed: true })).records.length, 1);
    assert.equal((await log.query({ sinceMs: t1 })).records.length, 1, 'since is inclusive of later entries only');
    assert.equal((await log.query({ untilMs: t1 - 1 })).records.length, 4);
    // Paging: limit and cursor; a small scan budget returns a cursor to continue from.
    const page1 = await log.query({ peer: alice.did, limit: 2 });
    assert.equal(page1.records.length, 2);
    const page2 = await log.query({ peer: alice.did, limit: 2, after: page1.next });
    assert.deepEqual(
      page2.records.map((r) => r.code),
      ['ACCESS_RATE_LIMITED'],
    );
    const scan = await log.query({ resource: 'feed://other', scanLimit: 2 });
    assert.equal(scan.records.length, 0);
    assert.ok(scan.next);
    assert.equal((await log.query({ resource: 'feed://other', after: scan.next })).records.length, 1);
  });

  it('stays bounded: MAXLEN trims the oldest entries', async () => {
    const log = new RedisAuditLog(connect(), { prefix: freshPrefix(), maxEntries: 100 });
    const base = {
      peer: 'p',
      owner: 'o',
      resource: 'feed://x',
      action: 'read' as const,
      amount: 1,
      allowed: true,
      code: 'OK' as const,
      via: 'policy' as const,
      field: '',
      reason: '',
      basis: '',
    };
    await Promise.all(Array.from({ length: 1000 }, (_, i) => log.record({ ...base, at: i })));
    const len = await log.length();
    // Approximate trimming removes whole stream nodes (100 entries each by default).
    assert.ok(len >= 100 && len <= 200, `length ${len}`);
    const newest = await log.query({ limit: 1000 });
    assert.equal(newest.records.at(-1)?.at, 999, 'the newest are kept');
  });

  it('refuses bad options', () => {
    assert.throws(() => new RedisAuditLog(connect(), { prefix: 'x', maxEntries: 0 }), { code: 'BAD_FIELD' });
    assert.throws(() => membraneLimits({ maxTokenBytes: -1 }), { code: 'BAD_FIELD' });
  });
});

describe('createRedisMembrane: two nodes on one Redis', () => {
  it('a policy, trust score and revocation set on one node decide on the other, all audited', async () => {
    const prefix = freshPrefix();
    const [a, b] = [0, 1].map(() => createRedisMembrane(connect(), connect(), { prefix, whenNoPolicy: 'deny' }));
    await a!.start();
    await b!.start();
    const owner = Ed25519Identity.generate();
    const [alice, bob] = [Ed25519Identity.generate(), Ed25519Identity.generate()];
    const send = (peer: Ed25519Identity, grant?: Uint8Array) =>
      b!.membrane.checkAccess({
        peer: peer.did,
        owner: owner.did,
        resource: owner.did,
        action: 'send',
        ...(grant ? { grant } : {}),
      });
    await a!.policies.put(owner.did, {
      version: 1,
      capabilities: [{ resource: owner.did, action: 'send' }],
      constraints: [{ type: 'minTrust', score: 0.5 }],
    });
    await a!.trust.set(alice.did, 0.9);
    await until('node b to take the policy', async () => (await send(alice)).allowed);
    const low = await send(bob);
    assert.ok(!low.allowed && low.code === 'ACCESS_TRUST_TOO_LOW' && low.field === 'constraints[0]');
    // The owner vouches for bob with a token instead: no trust threshold in it.
    const token = issueGrant(
      owner,
      { audience: bob.did, capabilities: [{ resource: owner.did, action: 'send' }] },
      LIMITS,
    );
    assert.ok((await send(bob, token)).allowed);
    await a!.revocations.revoke(verifyGrant(token, LIMITS).cid);
    const revoked = await send(bob, token);
    assert.ok(!revoked.allowed && revoked.code === 'GRANT_REVOKED');
    const trail = await a!.audit.query({ peer: bob.did });
    assert.deepEqual(
      trail.records.map((r) => [r.code, r.via]),
      [
        ['ACCESS_TRUST_TOO_LOW', 'policy'],
        ['OK', 'grant'],
        ['GRANT_REVOKED', 'grant'],
      ],
    );
    await a!.stop();
    await b!.stop();
  });
});
