/**
 * The presence registry against a real redis-server of its own: presence
 * pointing at nodes, node leases by the caller's clock, one heartbeat for
 * 10,000 peers (two commands, no script), the sweep of a dead node and of a
 * restarted node's previous incarnation, and the node registry.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { LibertariaError } from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { DURABLE_STORE_REDIS_OPTIONS } from '../src/durable-store.js';
import { PresenceRegistry } from '../src/presence.js';

const hint = (): Uint8Array => new Uint8Array(randomBytes(24));
const hex = (h: Uint8Array) => Buffer.from(h).toString('hex');

/** Calls per command name from INFO commandstats. */
async function commandCounts(redis: Redis): Promise<Record<string, number>> {
  const info = await redis.info('commandstats');
  const out: Record<string, number> = {};
  for (const m of info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

describe('PresenceRegistry', () => {
  let server: RedisHandle;
  let redis: Redis;

  before(async () => {
    server = await startRedis();
    redis = new Redis(server.url, { ...DURABLE_STORE_REDIS_OPTIONS, lazyConnect: true });
    await redis.connect();
  });
  after(async () => {
    redis.disconnect();
    await server.stop();
  });

  const freshPrefix = () => `t${randomBytes(4).toString('hex')}`;
  const registry = (prefix: string, nodeId: string, leaseMs = 15_000, incarnation?: string) =>
    new PresenceRegistry(redis, { prefix, nodeId, leaseMs, ...(incarnation ? { incarnation } : {}) });

  it('adds, looks up and removes a hint; presence points at the node, indexed under the node’s tag', async () => {
    const prefix = freshPrefix();
    const a = registry(prefix, 'node-a');
    await a.announceNode([]);
    const h = hint();
    assert.deepEqual(await a.lookup(h), []);
    await a.add(h);
    await a.add(h); // a second connection of the same peer on this node changes nothing
    assert.deepEqual(await a.lookup(h), ['node-a']);
    assert.deepEqual(await a.lookup(hint()), []);
    const key = `${prefix}:pr:{${hex(h)}}`;
    assert.equal(a.key(h), key);
    assert.equal(await redis.hget(key, 'node-a'), a.incarnation);
    assert.ok(Number(a.incarnation) > 2 ** 52, 'an incarnation reads as a lease later than any clock');
    assert.equal(await redis.pttl(key), -1, 'no per-peer TTL to renew');
    assert.equal(a.indexKey(), `${prefix}:nh:{node-a}:${a.incarnation}`);
    assert.deepEqual(await redis.smembers(a.indexKey()), [hex(h)]);
    await a.remove(h);
    assert.deepEqual(await a.lookup(h), []);
    assert.equal(await redis.exists(key), 0);
    assert.deepEqual(await redis.smembers(a.indexKey()), []);
  });

  it('counts a holder live while its node’s lease is, by the caller’s clock', async () => {
    const prefix = freshPrefix();
    const a = registry(prefix, 'node-a', 10_000);
    const b = registry(prefix, 'node-b', 10_000);
    const t = Date.now();
    await a.announceNode([], t);
    await b.announceNode([], t);
    await a.renew(undefined, t);
    const h = hint();
    await b.add(h);
    assert.deepEqual(await a.lookup(h, t + 9_999), ['node-b']);
    assert.deepEqual(await a.lookup(h, t + 10_000), [], 'node-b stopped renewing');
    assert.deepEqual(a.liveHolders(['node-a', 'node-b'], t + 10_000), ['node-a']);
    // node-b renews: live again.
    await b.renew(undefined, t + 10_000);
    await a.renew(undefined, t + 10_000);
    assert.deepEqual(await a.lookup(h, t + 10_001), ['node-b']);
  });

  it('takes a node it has not read yet as live, reads the registry, then knows it is gone', async () => {
    const prefix = freshPrefix();
    const a = registry(prefix, 'node-a');
    await a.announceNode([]);
    const h = hint();
    await redis.hset(`${prefix}:pr:{${hex(h)}}`, 'node-ghost', '4503599627370497');
    assert.deepEqual(await a.lookup(h), ['node-ghost'], 'unknown: live until the registry says otherwise');
    await a.refresh();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(await a.lookup(h), [], 'not in the registry after a read: gone');
    const late = registry(prefix, 'node-late');
    await late.announceNode([]);
    await redis.hset(`${prefix}:pr:{${hex(h)}}`, 'node-late', late.incarnation);
    await a.renew();
    assert.deepEqual(await a.lookup(h), ['node-late']);
  });

  it('renews 10,000 peers with one heartbeat of two commands and no script', async () => {
    const prefix = freshPrefix();
    const a = registry(prefix, 'node-a', 15_000);
    await a.announceNode(['wss://a.example']);
    for (let i = 0; i < 10_000; i += 1000) {
      await Promise.all(Array.from({ length: 1000 }, () => a.add(hint())));
    }
    const before = await commandCounts(redis);
    await a.renew();
    const after = await commandCounts(redis);
    const delta = (name: string) => (after[name] ?? 0) - (before[name] ?? 0);
    assert.equal(delta('evalsha') + delta('eval'), 0);
    assert.equal(delta('hset'), 1);
    assert.equal(delta('hgetall'), 1);
    assert.equal(await redis.scard(a.indexKey()), 10_000);
  });

  it('sweeps a dead node’s presence a lease length after its lease expired, once', async () => {
    const prefix = freshPrefix();
    const leaseMs = 1000;
    const a = registry(prefix, 'node-a', leaseMs);
    const b = registry(prefix, 'node-b', leaseMs);
    const c = registry(prefix, 'node-c', leaseMs);
    const t = Date.now();
    await a.announceNode([], t);
    await b.announceNode([], t);
    const shared = hint();
    const onlyB = Array.from({ length: 2500 }, hint);
    await a.add(shared);
    await b.add(shared);
    for (const h of onlyB) await b.add(h);
    // node-b dies. One lease later it is not live, but not swept yet.
    await a.renew(undefined, t + leaseMs);
    assert.deepEqual(await a.lookup(shared, t + leaseMs), ['node-a']);
    assert.equal(await redis.hexists(b.key(onlyB[0]!), 'node-b'), 1);
    // Two lease lengths: node-a sweeps it (node-c, racing, finds the claim taken).
    await Promise.all([a.renew(undefined, t + 2 * leaseMs + 1), c.renew(undefined, t + 2 * leaseMs + 1)]);
    assert.equal(a.stats.sweeps + c.stats.sweeps, 1);
    assert.deepEqual(await redis.hkeys(a.key(shared)), ['node-a']);
    for (const h of onlyB.slice(0, 50)) assert.equal(await redis.exists(b.key(h)), 0);
    assert.equal(await redis.exists(b.indexKey()), 0);
    assert.deepEqual(await redis.hkeys(`${prefix}:nodes`), ['node-a']);
  });

  it('sweeps the previous incarnation of a restarted node before it serves, and keeps the new one’s', async () => {
    const prefix = freshPrefix();
    const old = registry(prefix, 'node-a', 15_000, '4503599627370500');
    await old.announceNode([]);
    const h1 = hint();
    const h2 = hint();
    await old.add(h1);
    await old.add(h2);
    const fresh = registry(prefix, 'node-a', 15_000, '4503599627370501');
    // The new process has h2 again before the sweep reaches it: the sweep leaves the new field alone.
    await redis.hset(fresh.key(h2), 'node-a', fresh.incarnation);
    await fresh.announceNode([]);
    assert.equal(await redis.exists(fresh.key(h1)), 0);
    assert.equal(await redis.hget(fresh.key(h2), 'node-a'), fresh.incarnation);
    assert.equal(await redis.exists(old.indexKey()), 0);
  });

  it('announces nodes, lists the live ones and withdraws on shutdown', async () => {
    const prefix = freshPrefix();
    const leaseMs = 10_000;
    const a = registry(prefix, 'node-a', leaseMs);
    const b = registry(prefix, 'node-b', leaseMs);
    const t = Date.now();
    await a.announceNode(['wss://a.example/relay', 'tcp://a.example:8081'], t);
    await b.announceNode(['wss://b.example/relay'], t);
    assert.deepEqual(await a.liveNodes(t), [
      { nodeId: 'node-a', publicUrls: ['wss://a.example/relay', 'tcp://a.example:8081'] },
      { nodeId: 'node-b', publicUrls: ['wss://b.example/relay'] },
    ]);
    const entry = JSON.parse((await redis.hget(`${prefix}:nodes`, 'node-a')) ?? '{}') as unknown;
    assert.deepEqual(entry, {
      urls: ['wss://a.example/relay', 'tcp://a.example:8081'],
      expires: t + leaseMs,
      inc: a.incarnation,
    });
    await a.renew(undefined, t + leaseMs / 2);
    assert.deepEqual(await b.liveNodes(t + leaseMs), [
      { nodeId: 'node-a', publicUrls: ['wss://a.example/relay', 'tcp://a.example:8081'] },
    ]);

    // Shutdown of node-a: its presence, index and entry go; node-b's stays.
    const h1 = hint();
    const h2 = hint();
    await a.add(h1);
    await a.add(h2);
    await b.add(h1);
    await b.renew(undefined, t + leaseMs);
    await a.withdraw([h1, h2]);
    assert.deepEqual(await b.lookup(h1, t + leaseMs), ['node-b']);
    assert.deepEqual(await b.lookup(h2, t + leaseMs), []);
    assert.equal(await redis.exists(a.indexKey()), 0);
    assert.deepEqual(
      (await b.liveNodes(t + leaseMs)).map((n) => n.nodeId),
      ['node-b'],
    );
    // A heartbeat that races the shutdown does not bring the entry back.
    await a.renew(undefined, t + leaseMs);
    assert.deepEqual(
      (await b.liveNodes(t + leaseMs)).map((n) => n.nodeId),
      ['node-b'],
    );
  });

  it('fails with STORE_UNAVAILABLE when Redis is gone', async () => {
    const doomed = await startRedis();
    const conn = new Redis(doomed.url, { ...DURABLE_STORE_REDIS_OPTIONS, lazyConnect: true });
    conn.on('error', () => {});
    await conn.connect();
    try {
      const a = new PresenceRegistry(conn, { prefix: freshPrefix(), nodeId: 'node-a', leaseMs: 1000 });
      await a.add(hint());
      await doomed.stop();
      const calls = [
        () => a.add(hint()),
        () => a.remove(hint()),
        () => a.lookup(hint()),
        () => a.renew(),
        () => a.announceNode(['wss://a.example']),
        () => a.liveNodes(),
        () => a.withdraw([hint()]),
      ];
      for (const call of calls) {
        await assert.rejects(
          call(),
          (err: unknown) => err instanceof LibertariaError && err.code === 'STORE_UNAVAILABLE',
        );
      }
    } finally {
      conn.disconnect();
      await doomed.stop();
    }
  });
});
