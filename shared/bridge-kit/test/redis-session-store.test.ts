/**
 * What scaled-out bridge processes share, on a real redis-server:
 * RedisSessionStore (take exactly once, fenced writes, list), RedisLeaseLock
 * and RedisLeader (shared/bridge-kit/src/redis-session-store.ts, redis-lease.ts),
 * and the sealed data of the seal queue (seal-queue.ts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BridgeError, nostrIdentity } from '@libertaria/bridge-kit';
import { RedisLeader, RedisLeaseLock, RedisSessionStore } from '@libertaria/bridge-kit/worker';
import { Ed25519Identity } from '@libertaria/identity';
import { LibertariaError } from '@libertaria/protocol';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { openSealJobData, sealJobData, sealQueueKey } from '../src/seal-queue.js';

async function until(what: string, probe: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('scaled-out bridge state in Redis', () => {
  let redis: RedisHandle;
  let a: RedisClient;
  let b: RedisClient;
  let n = 0;
  const scope = (): string => `s${process.pid}x${++n}`;

  before(async () => {
    redis = await startRedis();
    a = createRedisClient({ url: redis.url }, {});
    b = createRedisClient({ url: redis.url }, {});
  });
  after(async () => {
    await Promise.allSettled([a?.quit(), b?.quit()]);
    await redis?.stop();
  });

  it('RedisSessionStore: binary round trip, list by prefix, delete', async () => {
    const s = scope();
    const store = new RedisSessionStore({ redis: a, prefix: '{t}', scope: s });
    const bytes = Uint8Array.from([0, 255, 10, 13, 0, 1]);
    await store.put('prekeys', bytes);
    await store.put('otk-x25519-1', Uint8Array.of(1));
    await store.put('otk-x25519-2', Uint8Array.of(2));
    await store.put('otk-kem-1', Uint8Array.of(3));
    await store.put('session-abc', Uint8Array.of(4));
    assert.deepEqual(await store.get('prekeys'), bytes);
    assert.equal(await store.get('nothing'), undefined);
    assert.deepEqual(await store.list('otk-x25519-'), ['otk-x25519-1', 'otk-x25519-2']);
    assert.deepEqual(await store.list('otk-'), ['otk-kem-1', 'otk-x25519-1', 'otk-x25519-2']);
    assert.deepEqual(await store.list(''), ['otk-kem-1', 'otk-x25519-1', 'otk-x25519-2', 'prekeys', 'session-abc']);
    await store.delete('otk-x25519-1');
    assert.deepEqual(await store.list('otk-x25519-'), ['otk-x25519-2']);
    await assert.rejects(store.put('Bad Name', bytes), RangeError);
  });

  it('RedisSessionStore with sealKey: values sealed at rest, bound to their name', async () => {
    const s = scope();
    const sealKey = new Uint8Array(32).fill(7);
    const store = new RedisSessionStore({ redis: a, prefix: '{t}', scope: s, sealKey });
    const secret = new TextEncoder().encode('ratchet keys and opened plaintext');
    await store.put('session-one', secret);
    await store.put('otk-x25519-1', secret);
    assert.deepEqual(await store.get('session-one'), secret);
    const raw = (await a.getBuffer(`{t}:sessions:${s}:r:session-one`)) as Buffer;
    assert.ok(!raw.includes(Buffer.from('plaintext')), 'not in clear');
    assert.deepEqual(await store.take('otk-x25519-1'), secret);
    // Moved to another name: refused.
    await a.set(`{t}:sessions:${s}:r:session-two`, raw);
    await assert.rejects(
      store.get('session-two'),
      (err: unknown) => err instanceof LibertariaError && err.code === 'SESSION_STATE_INVALID',
    );
    // Another key (another bridge identity): refused.
    const other = new RedisSessionStore({ redis: a, prefix: '{t}', scope: s, sealKey: new Uint8Array(32) });
    await assert.rejects(other.get('session-one'), (err: unknown) => err instanceof LibertariaError);
  });

  it('RedisSessionStore.take: a one-time prekey goes to exactly one caller across clients', async () => {
    const s = scope();
    const one = new RedisSessionStore({ redis: a, prefix: '{t}', scope: s });
    const two = new RedisSessionStore({ redis: b, prefix: '{t}', scope: s });
    for (let i = 0; i < 20; i++) await one.put(`otk-x25519-${i}`, Uint8Array.of(i));
    const takes = await Promise.all(
      Array.from({ length: 200 }, (_, i) => (i % 2 ? one : two).take(`otk-x25519-${i % 20}`)),
    );
    const got = takes.filter((t) => t !== undefined).map((t) => (t as Uint8Array)[0]);
    assert.deepEqual(
      got.sort((x, y) => (x as number) - (y as number)),
      Array.from({ length: 20 }, (_, i) => i),
    );
    assert.deepEqual(await one.list('otk-'), []);
  });

  it('RedisSessionStore.lock: one holder per key across clients; a writer whose lease expired writes nothing', async () => {
    const s = scope();
    // Leases long enough that a loaded machine's event-loop stalls cannot expire one mid-bump.
    const one = new RedisSessionStore({ redis: a, prefix: '{t}', scope: s, lockTtlMs: 5000, lockWaitMs: 30_000 });
    const two = new RedisSessionStore({ redis: b, prefix: '{t}', scope: s, lockTtlMs: 5000, lockWaitMs: 30_000 });
    // Read-modify-write of one counter from two "processes": with the lock no increment is lost.
    await one.put('session-counter', Uint8Array.of(0));
    const bump = (store: RedisSessionStore) =>
      store.lock('did:example:peer', async () => {
        const v = (await store.get('session-counter'))?.[0] ?? 0;
        await new Promise((r) => setImmediate(r));
        await store.put('session-counter', Uint8Array.of(v + 1));
      });
    await Promise.all(Array.from({ length: 40 }, (_, i) => bump(i % 2 ? one : two)));
    assert.deepEqual(await one.get('session-counter'), Uint8Array.of(40));

    // A holder that stalls past its lease (renewal cannot save it: we delete the lease as an expiry would).
    let stalled: Promise<unknown> | undefined;
    await one.lock('did:example:slow', async () => {
      await a.del(one.lockKey('did:example:slow'));
      // Someone else takes the lock and writes meanwhile.
      stalled = two.lock('did:example:slow', () => two.put('session-slow', Uint8Array.of(2)));
      await stalled;
      await assert.rejects(
        one.put('session-slow', Uint8Array.of(1)),
        (err: unknown) => err instanceof BridgeError && err.code === 'BRIDGE_LEASE_LOST' && err.retryable,
      );
    });
    assert.deepEqual(await one.get('session-slow'), Uint8Array.of(2), 'the fenced write did not land');
  });

  it('RedisLeaseLock: a busy lock fails with a retryable BRIDGE_UNAVAILABLE after waitMs, and counts it', async () => {
    const events: string[] = [];
    const lock = new RedisLeaseLock({ redis: a, ttlMs: 5000, waitMs: 200, onEvent: (e) => events.push(e) });
    const key = `{t}:lock:${scope()}`;
    let release: () => void = () => {};
    const held = lock.run(key, () => new Promise<void>((r) => (release = r)));
    await until('the lock to be held', () => events.includes('acquired'));
    const started = Date.now();
    await assert.rejects(
      lock.run(key, async () => undefined),
      (err: unknown) => err instanceof BridgeError && err.code === 'BRIDGE_UNAVAILABLE' && err.retryable,
    );
    assert.ok(Date.now() - started >= 190);
    assert.ok(events.includes('busy'));
    release();
    await held;
    assert.equal(await a.exists(key), 0, 'released');
    // The lease is renewed while held: work longer than the ttl keeps it.
    const short = new RedisLeaseLock({ redis: a, ttlMs: 600, waitMs: 0, onEvent: (e) => events.push(e) });
    await short.run(key, async () => {
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(await a.exists(key), 1, 'still held after more than 3 ttls');
    });
    assert.ok(!events.includes('lost'));
  });

  it('RedisLeader: one leader at a time; a leader that stops renewing is replaced, one that stops hands over', async () => {
    const key = `{t}:leader:${scope()}`;
    const changes: string[] = [];
    const make = (name: string, client: RedisClient) =>
      new RedisLeader({ redis: client, key, ttlMs: 600, onChange: (l) => void changes.push(`${name}:${l}`) });
    const one = make('one', a);
    const two = make('two', b);
    await one.start();
    await two.start();
    assert.ok(one.isLeader);
    assert.ok(!two.isLeader);
    // One stops cleanly: it releases, two takes over within a campaign period.
    await one.stop();
    await until('two to lead', () => changes.includes('two:true'));
    assert.ok(two.isLeader);
    assert.deepEqual(changes, ['one:true', 'one:false', 'two:true']);
    // Two's lease is taken from under it (as if it stalled past the ttl and another process won): it steps down.
    await a.set(key, 'someone-else');
    await until('two to step down', () => !two.isLeader);
    await a.del(key);
    await until('two to lead again', () => two.isLeader);
    await two.stop();
    assert.equal(await a.exists(key), 0);
  });

  it('seal-queue data: sealed under a key from the bridge identity, bound to its job; anything else is refused', () => {
    const identity = Ed25519Identity.generate();
    const key = sealQueueKey(identity, 'nostr');
    const message = {
      type: 'private' as const,
      id: 'f'.repeat(64),
      to: Ed25519Identity.generate().did,
      from: nostrIdentity('7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e'),
      text: 'secret words',
      sentAt: 1_700_000_000,
    };
    const data = sealJobData(key, 'seal-nostr', 'nostr-1', message);
    assert.ok(!Buffer.from(data.sealed, 'base64').toString('latin1').includes('secret words'));
    assert.deepEqual(openSealJobData(key, 'seal-nostr', 'nostr-1', data), message);
    const refused = (err: unknown) => err instanceof LibertariaError && err.code === 'FEDERATED_ENVELOPE_INVALID';
    assert.throws(() => openSealJobData(key, 'seal-nostr', 'nostr-2', data), refused);
    assert.throws(
      () => openSealJobData(sealQueueKey(Ed25519Identity.generate(), 'nostr'), 'seal-nostr', 'nostr-1', data),
      refused,
    );
    assert.throws(() => openSealJobData(key, 'seal-nostr', 'nostr-1', { sealed: 'AAAA' }), refused);
    assert.throws(() => openSealJobData(key, 'seal-nostr', 'nostr-1', null), refused);
  });
});
