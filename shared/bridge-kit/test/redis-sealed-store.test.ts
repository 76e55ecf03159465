/** RedisSealedStore on a real redis-server (shared/bridge-kit/src/redis-sealed-store.ts). */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { BridgeError } from '@libertaria/bridge-kit';
import { RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';

function rejectsWith(code: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof BridgeError, `a BridgeError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.retryable, false);
    return true;
  };
}

describe('RedisSealedStore', () => {
  let redis: RedisHandle;
  let a: RedisClient;
  let b: RedisClient;
  const kek = new Uint8Array(randomBytes(32));
  /** A fresh namespace per test: stores never see each other's records. */
  let n = 0;
  const ns = (): string => `t${process.pid}-${++n}`;

  before(async () => {
    redis = await startRedis();
    a = createRedisClient({ url: redis.url }, { connectionName: 'sealed-a' });
    b = createRedisClient({ url: redis.url }, { connectionName: 'sealed-b' });
  });
  after(async () => {
    await Promise.allSettled([a?.quit(), b?.quit()]);
    await redis?.stop();
  });

  it('round-trips a record: meta in clear, the secret sealed, a second getOrCreate returns it unchanged', async () => {
    const namespace = ns();
    const store = await RedisSealedStore.open({ redis: a, kek, namespace });
    const secret = new Uint8Array(randomBytes(32));
    const copy = Uint8Array.from(secret);
    const first = await store.getOrCreate('did:example:alice', () => ({
      meta: { pubkey: 'ab'.repeat(32), rank: 3 },
      secret,
    }));
    assert.equal(first.created, true);
    assert.deepEqual(first.record.secret, copy);
    assert.deepEqual({ ...first.record.meta }, { pubkey: 'ab'.repeat(32), rank: 3 });
    assert.ok(
      secret.every((x) => x === 0),
      'the caller secret is wiped once sealed',
    );

    // Nothing secret is stored in clear.
    const raw = await a.hget(`{lr-bridge}:sealed:${namespace}:records`, 'did:example:alice');
    assert.ok(raw);
    assert.ok(!raw.includes(Buffer.from(copy).toString('base64')));
    assert.ok(!raw.includes(Buffer.from(copy).toString('hex')));

    const again = await store.getOrCreate('did:example:alice', () =>
      assert.fail('create must not run for an existing id'),
    );
    assert.equal(again.created, false);
    assert.deepEqual(again.record.secret, copy);
    assert.equal(again.record.createdAt, first.record.createdAt);
    const got = await store.get('did:example:alice');
    assert.deepEqual(got?.secret, copy);
    assert.equal(await store.get('did:example:nobody'), undefined);
    assert.equal(await store.count(), 1);
    // Another process (another connection, same KEK) reads the same record.
    const other = await RedisSealedStore.open({ redis: b, kek, namespace });
    assert.deepEqual((await other.get('did:example:alice'))?.secret, copy);
    const listed = [];
    for await (const r of other.list(1)) listed.push(r.id);
    assert.deepEqual(listed, ['did:example:alice']);
  });

  it('refuses a wrong KEK at open, and a bad KEK or namespace before touching Redis', async () => {
    const namespace = ns();
    await RedisSealedStore.open({ redis: a, kek, namespace });
    await assert.rejects(
      RedisSealedStore.open({ redis: b, kek: new Uint8Array(randomBytes(32)), namespace }),
      rejectsWith('BRIDGE_KEY_STORE'),
    );
    await assert.rejects(
      RedisSealedStore.open({ redis: a, kek: new Uint8Array(16), namespace }),
      rejectsWith('BRIDGE_KEY_STORE'),
    );
    await assert.rejects(
      RedisSealedStore.open({ redis: a, kek, namespace: 'Has:Colon' }),
      rejectsWith('BRIDGE_KEY_STORE'),
    );
    // The same KEK under another namespace is a separate store: it opens.
    await RedisSealedStore.open({ redis: b, kek: new Uint8Array(randomBytes(32)), namespace: ns() });
  });

  it('refuses a tampered record: edited meta, a record moved to another id, a truncated seal, garbage', async () => {
    const namespace = ns();
    const store = await RedisSealedStore.open({ redis: a, kek, namespace });
    const key = `{lr-bridge}:sealed:${namespace}:records`;
    const make = () => ({ meta: { pubkey: 'cd'.repeat(32) }, secret: new Uint8Array(randomBytes(32)) });
    await store.getOrCreate('did:example:a', make);
    await store.getOrCreate('did:example:b', make);
    const rawA = (await a.hget(key, 'did:example:a')) as string;
    const rec = JSON.parse(rawA) as { id: string; meta: Record<string, unknown>; sealed: string; createdAt: number };

    await a.hset(key, 'did:example:a', JSON.stringify({ ...rec, meta: { pubkey: 'ef'.repeat(32) } }));
    await assert.rejects(store.get('did:example:a'), rejectsWith('BRIDGE_KEY_STORE'));
    await a.hset(key, 'did:example:a', JSON.stringify({ ...rec, createdAt: rec.createdAt + 1 }));
    await assert.rejects(store.get('did:example:a'), rejectsWith('BRIDGE_KEY_STORE'));
    // A's sealed secret moved onto B (id rewritten too, so only the AAD can tell).
    await a.hset(key, 'did:example:b', JSON.stringify({ ...rec, id: 'did:example:b' }));
    await assert.rejects(store.get('did:example:b'), rejectsWith('BRIDGE_KEY_STORE'));
    // getOrCreate of a tampered id refuses too, and does not overwrite it.
    await assert.rejects(store.getOrCreate('did:example:b', make), rejectsWith('BRIDGE_KEY_STORE'));
    await a.hset(key, 'did:example:a', JSON.stringify({ ...rec, sealed: rec.sealed.slice(0, 8) }));
    await assert.rejects(store.get('did:example:a'), rejectsWith('BRIDGE_KEY_STORE'));
    await a.hset(key, 'did:example:a', '{not json');
    await assert.rejects(store.get('did:example:a'), rejectsWith('BRIDGE_KEY_STORE'));
    await a.hset(key, 'did:example:a', JSON.stringify({ ...rec, meta: { pubkey: ['x'] } }));
    await assert.rejects(store.get('did:example:a'), rejectsWith('BRIDGE_KEY_STORE'));
    // The original bytes open again: nothing else changed.
    await a.hset(key, 'did:example:a', rawA);
    assert.ok(await store.get('did:example:a'));
  });

  it('creates one record when two clients race getOrCreate on one id, and every caller gets it', async () => {
    const namespace = ns();
    const [s1, s2] = await Promise.all([
      RedisSealedStore.open({ redis: a, kek, namespace }),
      RedisSealedStore.open({ redis: b, kek, namespace }),
    ]);
    let made = 0;
    const make = () => {
      made++;
      return { meta: { by: made }, secret: new Uint8Array(randomBytes(32)) };
    };
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? s1 : s2).getOrCreate('did:example:race', make)),
    );
    assert.equal(results.filter((r) => r.created).length, 1, 'exactly one caller created it');
    const winner = results.find((r) => r.created)?.record;
    assert.ok(winner);
    for (const r of results) {
      assert.deepEqual(r.record.secret, winner.secret);
      assert.deepEqual(r.record.meta, winner.meta);
    }
    assert.ok(made >= 1);
    assert.equal(await s1.count(), 1);
  });

  it('keeps unique keys to one id: a clash writes nothing, the owner finds its record', async () => {
    const namespace = ns();
    const store = await RedisSealedStore.open({ redis: a, kek, namespace });
    const make = () => ({ meta: {}, secret: new Uint8Array(randomBytes(32)) });
    await store.getOrCreate('did:example:alice', make, { unique: { handle: 'alice', pubkey: 'p1' } });
    assert.equal(await store.findBy('handle', 'alice'), 'did:example:alice');
    assert.equal(await store.findBy('pubkey', 'p1'), 'did:example:alice');
    assert.equal(await store.findBy('handle', 'bob'), undefined);
    await assert.rejects(
      store.getOrCreate('did:example:mallory', make, { unique: { handle: 'bob', pubkey: 'p1' } }),
      rejectsWith('BRIDGE_IDENTITY_CONFLICT'),
    );
    // Nothing of the refused record was written, not even its free unique key.
    assert.equal(await store.get('did:example:mallory'), undefined);
    assert.equal(await store.findBy('handle', 'bob'), undefined);
    assert.equal(await store.count(), 1);
    // Racing creators of two ids for one handle: one wins, the other gets the conflict.
    const race = await Promise.allSettled([
      store.getOrCreate('did:example:c1', make, { unique: { handle: 'carol' } }),
      RedisSealedStore.open({ redis: b, kek, namespace }).then((s) =>
        s.getOrCreate('did:example:c2', make, { unique: { handle: 'carol' } }),
      ),
    ]);
    assert.equal(race.filter((r) => r.status === 'fulfilled').length, 1);
    const lost = race.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.equal((lost.reason as BridgeError).code, 'BRIDGE_IDENTITY_CONFLICT');
    const owner = await store.findBy('handle', 'carol');
    assert.ok(owner && (await store.get(owner)));
    // A handle chosen later: claimed atomically, refused when taken, unknown ids refused.
    await store.claimUnique('did:example:alice', 'handle', 'alice'); // its own already: no-op
    await store.claimUnique('did:example:alice', 'alias', 'al');
    assert.equal(await store.findBy('alias', 'al'), 'did:example:alice');
    await assert.rejects(store.claimUnique(owner, 'alias', 'al'), rejectsWith('BRIDGE_IDENTITY_CONFLICT'));
    await assert.rejects(store.claimUnique('did:example:ghost', 'alias', 'g'), rejectsWith('BRIDGE_IDENTITY_UNKNOWN'));
    assert.equal(await store.findBy('alias', 'g'), undefined);
  });

  it('refuses creating beyond maxRecords (BRIDGE_KEY_STORE_FULL) but still serves existing records', async () => {
    const namespace = ns();
    const store = await RedisSealedStore.open({ redis: a, kek, namespace, maxRecords: 3 });
    const make = () => ({ meta: {}, secret: new Uint8Array(randomBytes(16)) });
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => store.getOrCreate(`did:example:${i}`, make)),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3);
    for (const r of results) {
      if (r.status === 'rejected') rejectsWith('BRIDGE_KEY_STORE_FULL')(r.reason);
    }
    assert.equal(await store.count(), 3);
    const kept = results.findIndex((r) => r.status === 'fulfilled');
    assert.equal((await store.getOrCreate(`did:example:${kept}`, make)).created, false);
  });

  it('refuses malformed input with BAD_FIELD before writing', async () => {
    const store = await RedisSealedStore.open({ redis: a, kek, namespace: ns() });
    const ok = () => ({ meta: {}, secret: new Uint8Array(32) });
    const bad = (err: unknown) => err instanceof BridgeError && err.code === 'BAD_FIELD';
    await assert.rejects(store.get(''), bad);
    await assert.rejects(store.get('x'.repeat(513)), bad);
    await assert.rejects(
      store.getOrCreate('id', () => ({ meta: { 'bad key': 1 }, secret: new Uint8Array(1) })),
      bad,
    );
    await assert.rejects(
      store.getOrCreate('id', () => ({ meta: { n: Number.NaN }, secret: new Uint8Array(1) })),
      bad,
    );
    await assert.rejects(
      store.getOrCreate('id', () => ({ meta: {}, secret: new Uint8Array(64 * 1024 + 1) })),
      bad,
    );
    await assert.rejects(store.getOrCreate('id', ok, { unique: { 'Bad:Index': 'v' } }), bad);
    await assert.rejects(store.getOrCreate('id', ok, { unique: { handle: '' } }), bad);
    await assert.rejects(store.findBy('Bad:Index', 'v'), bad);
    assert.equal(await store.count(), 0);
  });

  it('announces each created record on its channel', async () => {
    const namespace = ns();
    const store = await RedisSealedStore.open({ redis: a, kek, namespace });
    const sub = b.duplicate();
    try {
      const seen = new Promise<string>((resolve) => sub.on('message', (_channel: string, id: string) => resolve(id)));
      await sub.subscribe(store.createdChannel);
      await store.getOrCreate('did:example:announced', () => ({ meta: {}, secret: new Uint8Array(32) }));
      assert.equal(await seen, 'did:example:announced');
    } finally {
      await sub.quit();
    }
  });
});
