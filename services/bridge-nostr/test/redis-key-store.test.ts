/** The Nostr keys in Redis (src/redis-key-store.ts), the gift-wrap cache (src/wrap-cache.ts) and the scale-out settings, on a real redis-server. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BridgeError } from '@libertaria/bridge-kit';
import { Ed25519Identity } from '@libertaria/identity';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import type { NostrEvent } from 'nostr-tools/core';
import { getPublicKey } from 'nostr-tools/pure';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { loadBridgeNostrConfig } from '../src/config.js';
import { NostrKeyStore } from '../src/key-store.js';
import { silentLogger } from '../src/log.js';
import { RedisNostrKeyStore } from '../src/redis-key-store.js';
import { RedisWrapCache } from '../src/wrap-cache.js';

async function until(what: string, probe: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const code = (c: string) => (err: unknown) => err instanceof BridgeError && err.code === c;

describe('RedisNostrKeyStore', () => {
  let redis: RedisHandle;
  let a: RedisClient;
  let b: RedisClient;
  let dir: string;
  let n = 0;
  const open = (client: RedisClient, kek: Uint8Array, prefix: string, maxIdentities = 100) =>
    RedisNostrKeyStore.open({ redis: client, kek, prefix, maxIdentities, refreshMs: 60_000, log: silentLogger });
  const prefix = () => `{k${++n}}`;

  before(async () => {
    redis = await startRedis();
    a = createRedisClient({ url: redis.url }, {});
    b = createRedisClient({ url: redis.url }, {});
    dir = await mkdtemp(join(tmpdir(), 'bridge-nostr-keys-'));
  });
  after(async () => {
    await Promise.allSettled([a?.quit(), b?.quit()]);
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('two processes bridge one DID to one key; the other learns new identities and names', async () => {
    const kek = new Uint8Array(randomBytes(32));
    const p = prefix();
    const one = await open(a, kek, p);
    const two = await open(b, kek, p);
    const added: number[] = [];
    two.onAdded(() => added.push(two.size));
    try {
      const did = Ed25519Identity.generate().did;
      const [x, y] = await Promise.all([one.bridge(did), two.bridge(did)]);
      assert.equal(x.pubkey, y.pubkey);
      const secretOk = await one.withSecretKey(did, (secret) => getPublicKey(secret) === x.pubkey);
      assert.ok(secretOk);
      // Bridged by one: two learns it from the notice (and subscribes, through onAdded).
      const other = Ed25519Identity.generate().did;
      const made = await one.bridge(other, 'alice');
      await until('two to learn the identity', () => two.get(other) !== undefined);
      assert.equal(two.byPubkey(made.pubkey)?.did, other);
      assert.equal(two.byName('alice')?.did, other);
      assert.ok(added.length > 0);
      // A name is one DID's: from another process too; renaming is refused; a name can come later.
      await assert.rejects(two.bridge(did, 'alice'), code('BRIDGE_NAME_TAKEN'));
      await assert.rejects(one.bridge(other, 'alicia'), code('BRIDGE_NAME_TAKEN'));
      assert.equal((await two.bridge(did, 'bob')).name, 'bob');
      await two.reload();
      await one.reload();
      assert.equal(one.byName('bob')?.did, did);
      await assert.rejects(
        one.withSecretKey(Ed25519Identity.generate().did, () => 1),
        code('BRIDGE_IDENTITY_UNKNOWN'),
      );
    } finally {
      await one.close();
      await two.close();
    }
  });

  it('refuses a wrong KEK at open and maps the store limit to BRIDGE_IDENTITY_LIMIT', async () => {
    const p = prefix();
    const first = await open(a, new Uint8Array(randomBytes(32)), p, 2);
    try {
      await assert.rejects(open(b, new Uint8Array(randomBytes(32)), p), code('BRIDGE_KEY_STORE'));
      await first.bridge(Ed25519Identity.generate().did);
      await first.bridge(Ed25519Identity.generate().did);
      await assert.rejects(first.bridge(Ed25519Identity.generate().did), code('BRIDGE_IDENTITY_LIMIT'));
    } finally {
      await first.close();
    }
  });

  it('imports a key file once: same keys and names, safe to run again from every process', async () => {
    const kek = new Uint8Array(randomBytes(32));
    const file = await NostrKeyStore.open(join(dir, 'keys.jsonl'), kek, { maxIdentities: 10 });
    const dids = [Ed25519Identity.generate().did, Ed25519Identity.generate().did];
    const inFile = [await file.bridge(dids[0] as string, 'carol'), await file.bridge(dids[1] as string)];
    const p = prefix();
    const store = await open(a, kek, p);
    try {
      assert.equal(await store.importFrom(file), 2);
      assert.equal(await store.importFrom(file), 0, 'already there: nothing written again');
      for (const identity of inFile) {
        assert.equal(store.get(identity.did)?.pubkey, identity.pubkey);
        const sameKey = await store.withSecretKey(identity.did, (secret) => getPublicKey(secret) === identity.pubkey);
        assert.ok(sameKey);
      }
      assert.equal(store.byName('carol')?.did, dids[0]);
      // Another file whose DID's name is taken in Redis: the key comes over (the npub never changes), not the name.
      const second = await NostrKeyStore.open(join(dir, 'keys-2.jsonl'), kek, { maxIdentities: 10 });
      const dave = await second.bridge(Ed25519Identity.generate().did, 'carol');
      assert.equal(await store.importFrom(second), 1);
      assert.equal(store.get(dave.did)?.pubkey, dave.pubkey);
      assert.equal(store.byName('carol')?.did, dids[0]);
    } finally {
      await store.close();
    }
  });

  it('RedisWrapCache: the first event stored for a frame is the one every process publishes', async () => {
    const one = new RedisWrapCache(a, prefix(), 60);
    const two = new RedisWrapCache(b, (one as unknown as { prefix: string }).prefix, 60);
    const e1 = { id: '1'.repeat(64) } as NostrEvent;
    const e2 = { id: '2'.repeat(64) } as NostrEvent;
    assert.equal(await one.get('ab'), undefined);
    assert.equal((await one.putIfAbsent('ab', e1)).id, e1.id);
    assert.equal((await two.putIfAbsent('ab', e2)).id, e1.id);
    assert.equal((await two.get('ab'))?.id, e1.id);
    assert.ok((await a.ttl(`${(one as unknown as { prefix: string }).prefix}:nostr-wraps:ab`)) > 0);
    await assert.rejects(one.get('not hex'), code('BAD_FIELD'));
  });

  it('scale-out settings: no key file or state directory needed, but Redis is', () => {
    const base = {
      BRIDGE_NOSTR_RELAYS: 'ws://127.0.0.1:1',
      BRIDGE_NOSTR_KEK: 'ab'.repeat(32),
      BRIDGE_NOSTR_REDIS_URL: 'redis://127.0.0.1:6379',
      BRIDGE_NOSTR_LIBERTARIA_RELAYS: 'ws://127.0.0.1:2',
      BRIDGE_NOSTR_IDENTITY_FILE: '/run/secrets/bridge.json',
    };
    const config = loadBridgeNostrConfig({ ...base, BRIDGE_NOSTR_SCALE_OUT: 'true' });
    assert.equal(config.BRIDGE_NOSTR_SCALE_OUT, true);
    assert.equal(config.BRIDGE_NOSTR_LEADER_TTL_MS, 10_000);
    assert.throws(() => loadBridgeNostrConfig(base), /BRIDGE_NOSTR_STATE_DIR is required/);
    assert.throws(() => loadBridgeNostrConfig(base), /BRIDGE_NOSTR_KEY_STORE_FILE is required unless/);
    assert.throws(
      () => loadBridgeNostrConfig({ ...base, BRIDGE_NOSTR_REDIS_URL: undefined, BRIDGE_NOSTR_SCALE_OUT: 'true' }),
      /BRIDGE_NOSTR_SCALE_OUT needs BRIDGE_NOSTR_REDIS_URL/,
    );
  });
});
