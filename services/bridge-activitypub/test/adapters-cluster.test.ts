/**
 * Both adapters on a real local Redis Cluster (three primaries, three
 * replicas; test-support/redis-cluster.ts), through @libertaria/redis's
 * Cluster client: KvStore entries spread over every shard and each command
 * on one slot (ioredis refuses a command across slots), `list` scanning
 * every primary; the BullMQ queue under the `{lr-bridge}` hash tag, all its
 * keys on one shard, with ordering keys, two listeners and a failed job.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KvKey } from '@fedify/fedify';
import { Temporal } from '@js-temporal/polyfill';
import { createRedisClient, isCluster, type RedisClient } from '@libertaria/redis';
import { type RedisClusterHandle, startRedisCluster } from '../../../test-support/redis-cluster.js';
import { BullMqMessageQueue } from '../src/bullmq-message-queue.js';
import { RedisKvStore } from '../src/redis-kv-store.js';

let cluster: RedisClusterHandle;
let client: RedisClient;
let url: string;

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** Keys matching `pattern` on each primary. */
async function keysPerPrimary(pattern: string): Promise<number[]> {
  assert.ok(isCluster(client));
  return Promise.all(client.nodes('master').map(async (node) => (await node.keys(pattern)).length));
}

before(async () => {
  cluster = await startRedisCluster();
  url = `redis://127.0.0.1:${cluster.servers[0]?.port}`;
  client = createRedisClient({ url, clusterNodes: cluster.nodes }, { connectionName: 'apub-cluster-test' });
});
after(async () => {
  await client?.quit();
  await cluster?.stop();
});

describe('the Fedify adapters on a Redis Cluster', { timeout: 180_000 }, () => {
  it('KvStore: entries on every shard, cas and TTL on one slot each, list over every primary', async () => {
    const kv = new RedisKvStore(client, { prefix: 'apc:', scanCount: 20 });
    for (let i = 0; i < 300; i++) await kv.set(['_fedify', 'remoteDocument', `https://h${i}.example/doc`], { i });
    await kv.set(['_fedify', 'publicKey', 'k'], 'other part');
    const perPrimary = await keysPerPrimary('apc:*');
    assert.equal(perPrimary.length, 3);
    assert.ok(
      perPrimary.every((count) => count > 0),
      `spread over the shards: ${perPrimary.join(', ')}`,
    );
    const listed: KvKey[] = [];
    for await (const entry of kv.list(['_fedify', 'remoteDocument'])) listed.push(entry.key);
    assert.equal(listed.length, 300, 'every entry of every primary, once');
    assert.equal(new Set(listed.map((k) => k[2])).size, 300);
    let all = 0;
    for await (const _ of kv.list()) all++;
    assert.equal(all, 301);

    assert.equal(
      await kv.cas(['lock'], undefined, { owner: 'a' }, { ttl: Temporal.Duration.from({ seconds: 30 }) }),
      true,
    );
    assert.equal(await kv.cas(['lock'], undefined, { owner: 'b' }), false);
    assert.equal(await kv.cas(['lock'], { owner: 'a' }, undefined), true);
    await kv.set(['short'], 1, { ttl: Temporal.Duration.from({ milliseconds: 200 }) });
    await sleep(400);
    assert.equal(await kv.get(['short']), undefined);
  });

  it('MessageQueue: one shard holds the queue; ordered, shared and failed jobs behave as on one server', async () => {
    const target = { url, clusterNodes: cluster.nodes };
    const messageKey = randomBytes(32);
    const options = { redis: target, name: 'activitypub-fedify', messageKey, attempts: 2, backoffMs: 100, jitter: 0.5 };
    const one = new BullMqMessageQueue(options);
    const two = new BullMqMessageQueue(options);
    const runs = new Map<string, number>();
    const order: string[] = [];
    const handler = async (m: unknown) => {
      const { id } = m as { id: string };
      runs.set(id, (runs.get(id) ?? 0) + 1);
      if (id.startsWith('o')) order.push(id);
      if (id === 'fails') throw new Error('remote down');
      await sleep(10);
    };
    const ac = new AbortController();
    const listening = [one.listen(handler, { signal: ac.signal }), two.listen(handler, { signal: ac.signal })];
    try {
      await one.enqueueMany(Array.from({ length: 20 }, (_, i) => ({ id: `p${i}` })));
      for (const id of ['o1', 'o2', 'o3']) await two.enqueue({ id }, { orderingKey: 'one conversation' });
      await one.enqueue({ id: 'fails' });
      await until('every job', async () => runs.size === 24 && (await one.queue.getJobCounts('failed')).failed === 1);
      await sleep(300);
      assert.ok(
        [...runs.entries()].every(([id, count]) => count === (id === 'fails' ? 2 : 1)),
        'each ran once (the failing one: its two attempts)',
      );
      assert.deepEqual(order, ['o1', 'o2', 'o3']);
      const shards = (await keysPerPrimary('{lr-bridge}:*')).filter((count) => count > 0);
      assert.equal(shards.length, 1, 'every key of the queue on one shard (hash tag {lr-bridge})');
    } finally {
      ac.abort();
      await Promise.all(listening);
      await Promise.all([one.close(), two.close()]);
    }
  });
});
