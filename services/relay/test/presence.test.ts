/**
 * The presence registry against a real redis-server of its own: leases by
 * the caller's clock and by real key expiry, several nodes on one Redis, a
 * heartbeat over 10,000 hints, and the node registry.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { LibertariaError } from '@libertaria/shared';
import { Redis } from 'ioredis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { DURABLE_STORE_REDIS_OPTIONS } from '../src/durable-store.js';
import { PresenceRegistry } from '../src/presence.js';

const hint = (): Uint8Array => new Uint8Array(randomBytes(24));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
  const registry = (prefix: string, nodeId: string, leaseMs = 15_000) =>
    new PresenceRegistry(redis, { prefix, nodeId, leaseMs });

  it('adds, looks up and removes a hint', async () => {
    const prefix = freshPrefix();
    const a = registry(prefix, 'node-a');
    const h = hint();
    assert.deepEqual(await a.lookup(h), []);
    await a.add(h);
    await a.add(h); // a second connection of the same peer on this node changes nothing
    assert.deepEqual(await a.lookup(h), ['node-a']);
    assert.deepEqual(await a.lookup(hint()), []);
    const key = `${prefix}:pr:{${Buffer.from(h).toString('hex')}}`;
    assert.equal(a.key(h), key);
    const ttl = await redis.pttl(key);
    assert.ok(ttl > 14_000 && ttl <= 15_000, `key TTL ${ttl}`);
    await a.remove(h);
    assert.deepEqual(await a.lookup(h), []);
    assert.equal(await redis.exists(key), 0);
  });

  it('expires a lease by the caller’s clock and deletes the stale field', async () => {
    const prefix = freshPrefix();
    const a = registry(prefix, 'node-a', 10_000);
    const h = hint();
    const t = Date.now();
    await a.add(h, t);
    assert.equal(await redis.hget(a.key(h), 'node-a'), String(t + 10_000));
    assert.deepEqual(await a.lookup(h, t + 9_999), ['node-a']);
    assert.deepEqual(await a.lookup(h, t + 10_000), []);
    assert.equal(await redis.exists(a.key(h)), 0, 'the expired field was removed, and with it the empty hash');
  });

  it('lets Redis drop a hash whose leases nobody renews (PEXPIRE)', async () => {
    const a = registry(freshPrefix(), 'node-a', 200);
    const h = hint();
    await a.add(h);
    const ttl = await redis.pttl(a.key(h));
    assert.ok(ttl > 0 && ttl <= 200, `key TTL ${ttl}`);
    await sleep(350);
    assert.equal(await redis.exists(a.key(h)), 0);
    assert.deepEqual(await a.lookup(h), []);
  });

  it('keeps two nodes’ leases apart, and drops a dead node’s lease', async () => {
    const prefix = freshPrefix();
    const leaseMs = 10_000;
    const a = registry(prefix, 'node-a', leaseMs);
    const b = registry(prefix, 'node-b', leaseMs);
    const h = hint();
    const t = Date.now();
    await a.add(h, t);
    await b.add(h, t);
    assert.deepEqual((await a.lookup(h, t)).sort(), ['node-a', 'node-b']);
    assert.deepEqual((await b.lookup(h, t)).sort(), ['node-a', 'node-b']);
    await a.remove(h);
    assert.deepEqual(await b.lookup(h, t), ['node-b']);

    // node-b dies without removing anything; node-a keeps renewing.
    await a.add(h, t);
    await a.renew([h], t + leaseMs);
    assert.deepEqual(await redis.hkeys(a.key(h)), ['node-a'], 'the renewal swept the dead lease');
    await b.add(h, t);
    assert.deepEqual(await a.lookup(h, t + 2 * leaseMs - 1), ['node-a']);
    assert.deepEqual(await redis.hkeys(a.key(h)), ['node-a'], 'the lookup swept the dead lease');
  });

  it('never shortens the key TTL another node’s longer lease needs', async () => {
    const prefix = freshPrefix();
    const long = registry(prefix, 'node-long', 60_000);
    const short = registry(prefix, 'node-short', 1_000);
    const h = hint();
    await long.add(h);
    await short.add(h);
    assert.ok((await redis.pttl(long.key(h))) > 59_000);
  });

  it('renews 10,000 hints in one pipeline', async (t) => {
    const prefix = freshPrefix();
    const a = registry(prefix, 'node-a', 15_000);
    const hints = Array.from({ length: 10_000 }, hint);
    let pipelines = 0;
    const original = redis.pipeline;
    redis.pipeline = function (this: Redis, ...args: Parameters<Redis['pipeline']>) {
      pipelines++;
      return original.apply(this, args);
    } as Redis['pipeline'];
    const now = Date.now();
    const started = performance.now();
    try {
      await a.renew(hints, now);
    } finally {
      redis.pipeline = original;
    }
    t.diagnostic(`renew of 10,000 hints: ${(performance.now() - started).toFixed(0)} ms`);
    assert.equal(pipelines, 1);
    const check = redis.pipeline();
    for (const h of hints) check.hget(a.key(h), 'node-a');
    const replies = (await check.exec()) ?? [];
    assert.equal(replies.length, 10_000);
    for (const [err, value] of replies) {
      assert.equal(err, null);
      assert.equal(value, String(now + 15_000));
    }
    assert.deepEqual(await a.lookup(hints[9_999]!, now), ['node-a']);
    await a.renew([]); // nothing to renew, nothing announced: no round trip, no error
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
    assert.deepEqual(entry, { urls: ['wss://a.example/relay', 'tcp://a.example:8081'], expires: t + leaseMs });

    // The heartbeat renews node-a's entry; node-b stops and drops out.
    const h1 = hint();
    const h2 = hint();
    await a.add(h1, t);
    await a.add(h2, t);
    await b.add(h1, t);
    await a.renew([h1, h2], t + leaseMs / 2);
    assert.deepEqual(await b.liveNodes(t + leaseMs), [
      { nodeId: 'node-a', publicUrls: ['wss://a.example/relay', 'tcp://a.example:8081'] },
    ]);
    assert.deepEqual(await redis.hkeys(`${prefix}:nodes`), ['node-a'], 'the expired entry was removed');

    // Shutdown of node-a: its leases and its entry go; node-b's lease stays.
    await b.add(h1, t + leaseMs);
    await b.announceNode(['wss://b.example/relay'], t + leaseMs);
    await a.withdraw([h1, h2]);
    assert.deepEqual(await a.lookup(h1, t + leaseMs), ['node-b']);
    assert.deepEqual(await a.lookup(h2, t + leaseMs), []);
    assert.deepEqual(
      (await a.liveNodes(t + leaseMs)).map((n) => n.nodeId),
      ['node-b'],
    );
    // A heartbeat that races the shutdown does not bring the entry back.
    await a.renew([], t + leaseMs);
    assert.deepEqual(
      (await b.liveNodes(t + leaseMs)).map((n) => n.nodeId),
      ['node-b'],
    );
  });

  it('keeps presence keys under the {hintHex} hash tag', async () => {
    const prefix = freshPrefix();
    const a = registry(prefix, 'node-a');
    const hints = [hint(), hint()];
    for (const h of hints) await a.add(h);
    const keys = (await redis.keys(`${prefix}:pr:*`)).sort();
    assert.deepEqual(keys, hints.map((h) => `${prefix}:pr:{${Buffer.from(h).toString('hex')}}`).sort());
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
        () => a.renew([hint()]),
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
