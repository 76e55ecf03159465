/**
 * RedisKvStore (Fedify's KvStore on ioredis) on a real, private redis-server:
 * values and keys, TTLs that Redis expires, the size limit, compare-and-swap
 * (deep equality, absence, deletion, one winner among racers) and listing by
 * prefix with SCAN.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KvKey, KvStoreListEntry } from '@fedify/fedify';
import { Temporal } from '@js-temporal/polyfill';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { KvValueTooLargeError, RedisKvStore } from '../src/redis-kv-store.js';

let redis: RedisHandle;
let client: RedisClient;
let n = 0;
const store = (options: { maxValueBytes?: number; scanCount?: number } = {}) =>
  new RedisKvStore(client, { prefix: `t${n++}:`, ...options });

async function all(iterable: AsyncIterable<KvStoreListEntry>): Promise<KvStoreListEntry[]> {
  const out: KvStoreListEntry[] = [];
  for await (const entry of iterable) out.push(entry);
  return out;
}
const keysOf = (entries: KvStoreListEntry[]) => entries.map((e) => JSON.stringify(e.key)).sort();

before(async () => {
  redis = await startRedis();
  client = createRedisClient({ url: redis.url }, { connectionName: 'kv-test' });
});
after(async () => {
  await client.quit();
  await redis.stop();
});

describe('RedisKvStore', () => {
  it('sets, gets and deletes JSON values under its prefix', async () => {
    const kv = new RedisKvStore(client, { prefix: 'ap-test:' });
    const values: unknown[] = ['text', 0, -1.5, true, false, null, [1, 'a', null], { b: [1, { c: 'd' }], a: 'x' }];
    for (const [i, value] of values.entries()) {
      await kv.set(['v', String(i)], value);
      assert.deepEqual(await kv.get(['v', String(i)]), value);
    }
    assert.equal(await kv.get(['v', 'missing']), undefined);
    assert.equal(
      await client.exists('ap-test:["v","0"]'),
      1,
      'one Redis key per entry, named prefix + JSON of the key',
    );
    assert.equal(await client.get('ap-test:["v","7"]'), '{"a":"x","b":[1,{"c":"d"}]}', 'canonical JSON: keys sorted');
    await kv.delete(['v', '0']);
    assert.equal(await kv.get(['v', '0']), undefined);
    await kv.delete(['v', 'never-there']);
    await kv.set(['v', '1'], undefined);
    assert.equal(await client.exists('ap-test:["v","1"]'), 0, 'setting undefined deletes');
    // Parts are kept apart whatever they hold.
    await kv.set(['a', 'b'], 1);
    await kv.set(['a,b'], 2);
    await kv.set(['a"', 'b'], 3);
    assert.deepEqual([await kv.get(['a', 'b']), await kv.get(['a,b']), await kv.get(['a"', 'b'])], [1, 2, 3]);
    await assert.rejects(kv.get([] as unknown as KvKey), TypeError);
    await assert.rejects(kv.set(['x'], 10n), /not JSON-encodable/);
  });

  it('honours TTLs: Redis expires the entry; no TTL drops an earlier one; zero or less deletes', async () => {
    const kv = store();
    await kv.set(['ttl'], 'soon gone', { ttl: Temporal.Duration.from({ milliseconds: 400 }) });
    assert.equal(await kv.get(['ttl']), 'soon gone');
    const pttl = await client.pttl(kv.redisKey(['ttl']));
    assert.ok(pttl > 0 && pttl <= 400, `PTTL ${pttl}`);
    await sleep(600);
    assert.equal(await kv.get(['ttl']), undefined, 'expired');
    assert.equal(await client.exists(kv.redisKey(['ttl'])), 0, 'and gone from Redis');

    await kv.set(['keep'], 1, { ttl: Temporal.Duration.from({ seconds: 30 }) });
    await kv.set(['keep'], 2);
    assert.equal(await client.pttl(kv.redisKey(['keep'])), -1, 'a set without TTL leaves no expiry');
    await kv.set(['day'], 1, { ttl: Temporal.Duration.from({ days: 1 }) });
    const day = await client.pttl(kv.redisKey(['day']));
    assert.ok(day > 86_000_000 && day <= 86_400_000, `PTTL of a day: ${day}`);
    await kv.set(['keep'], 3, { ttl: Temporal.Duration.from({ seconds: 0 }) });
    assert.equal(await kv.get(['keep']), undefined, 'a TTL of zero deletes');
    await kv.set(['keep'], 4, { ttl: Temporal.Duration.from({ seconds: -5 }) });
    assert.equal(await kv.get(['keep']), undefined, 'a negative TTL deletes');
    await assert.rejects(kv.set(['month'], 1, { ttl: Temporal.Duration.from({ months: 1 }) }), /ttl must be/);
  });

  it('refuses a value over the size limit with a clear error and writes nothing', async () => {
    const kv = store({ maxValueBytes: 1000 });
    await kv.set(['doc'], 'small');
    const big = { text: 'é'.repeat(600) }; // 1,200 bytes of UTF-8
    await assert.rejects(kv.set(['doc'], big), (error: unknown) => {
      assert.ok(error instanceof KvValueTooLargeError);
      assert.equal(error.limit, 1000);
      assert.equal(error.bytes, Buffer.byteLength(JSON.stringify(big)));
      assert.match(error.message, /\["doc"\] is 1\d{3} bytes of JSON, over the limit of 1000 bytes/);
      return true;
    });
    await assert.rejects(kv.cas(['doc'], 'small', big), KvValueTooLargeError);
    assert.equal(await kv.get(['doc']), 'small', 'the old value stays');
    await kv.set(['doc'], 'x'.repeat(998)); // 1,000 bytes with its quotes: at the limit
  });

  it('compare-and-swap: swaps only on a deep-equal current value; undefined means absent or delete', async () => {
    const kv = store();
    assert.equal(await kv.cas(['c'], 'something', 1), false, 'absent: a defined expectation fails');
    assert.equal(await kv.get(['c']), undefined);
    assert.equal(await kv.cas(['c'], undefined, { state: 'open', n: 1 }), true, 'absent as expected: created');
    assert.equal(await kv.cas(['c'], undefined, 'again'), false, 'present: "absent" expected fails');
    assert.equal(await kv.cas(['c'], { state: 'open', n: 2 }, 'x'), false, 'different value');
    assert.deepEqual(await kv.get(['c']), { state: 'open', n: 1 }, 'a failed swap writes nothing');
    assert.equal(await kv.cas(['c'], { n: 1, state: 'open' }, { state: 'closed' }), true, 'key order does not matter');
    assert.deepEqual(await kv.get(['c']), { state: 'closed' });
    assert.equal(await kv.cas(['c'], { state: 'closed' }, undefined), true, 'undefined new value: deleted');
    assert.equal(await client.exists(kv.redisKey(['c'])), 0);
    // Fedify's nonce check: cas(key, true, undefined) consumes a stored `true` once.
    await kv.set(['nonce'], true);
    assert.equal(await kv.cas(['nonce'], true, undefined), true);
    assert.equal(await kv.cas(['nonce'], true, undefined), false);
    // null is a value, not absence.
    await kv.set(['null'], null);
    assert.equal(await kv.cas(['null'], undefined, 1), false);
    assert.equal(await kv.cas(['null'], null, 1), true);
    // TTL on the new value.
    assert.equal(await kv.cas(['t'], undefined, 'v', { ttl: Temporal.Duration.from({ milliseconds: 300 }) }), true);
    assert.ok((await client.pttl(kv.redisKey(['t']))) > 0);
    await sleep(450);
    assert.equal(await kv.get(['t']), undefined, 'expired');
  });

  it('compare-and-swap is atomic: of 20 racers from one value, exactly one wins', async () => {
    const kv = store();
    await kv.set(['counter'], { v: 0 });
    // Separate connections, so the racers really interleave at the server.
    const racers = Array.from({ length: 4 }, () => createRedisClient({ url: redis.url }, {}));
    try {
      const stores = racers.map((c) => new RedisKvStore(c, { prefix: kv.prefix }));
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (stores[i % 4] as RedisKvStore).cas(['counter'], { v: 0 }, { v: i + 1 })),
      );
      assert.equal(results.filter(Boolean).length, 1);
      const winner = results.indexOf(true);
      assert.deepEqual(await kv.get(['counter']), { v: winner + 1 });
    } finally {
      await Promise.all(racers.map((c) => c.quit()));
    }
  });

  it('lists entries by key prefix (SCAN), including the prefix itself, never a sibling', async () => {
    const kv = store();
    const other = new RedisKvStore(client, { prefix: `${kv.prefix}other:` });
    await kv.set(['_fedify', 'publicKey'], 'exact');
    await kv.set(['_fedify', 'publicKey', 'https://a.example/u#k'], 1);
    await kv.set(['_fedify', 'publicKey', 'b*?[]\\"'], 2);
    await kv.set(['_fedify', 'publicKeys', 'x'], 'sibling prefix');
    await kv.set(['_fedify', 'remoteDocument', 'y'], 'other part');
    await kv.set(['_fedify', 'publicKey', 'gone'], 3, { ttl: Temporal.Duration.from({ milliseconds: 100 }) });
    await other.set(['_fedify', 'publicKey', 'z'], 'another store');
    await sleep(250);
    const entries = await all(kv.list(['_fedify', 'publicKey']));
    assert.deepEqual(keysOf(entries), [
      '["_fedify","publicKey","b*?[]\\\\\\""]',
      '["_fedify","publicKey","https://a.example/u#k"]',
      '["_fedify","publicKey"]',
    ]);
    assert.equal(entries.find((e) => e.key[2] === 'https://a.example/u#k')?.value, 1);
    assert.equal(entries.find((e) => e.key[2] === 'b*?[]\\"')?.value, 2);
    assert.equal((await all(kv.list())).length, 5, 'no prefix: every entry of the store, and no other store');
    assert.equal((await all(kv.list(['nothing']))).length, 0);
  });

  it('lists thousands of entries once each, across many SCAN rounds', async () => {
    const kv = store({ scanCount: 50 });
    const pipeline = client.pipeline();
    for (let i = 0; i < 3000; i++) pipeline.set(kv.redisKey(['bulk', String(i)]), String(i));
    await pipeline.exec();
    await kv.set(['unrelated'], 0);
    const entries = await all(kv.list(['bulk']));
    assert.equal(entries.length, 3000);
    assert.equal(new Set(keysOf(entries)).size, 3000, 'no duplicates');
    assert.ok(entries.every((e) => e.value === Number(e.key[1])));
  });
});
