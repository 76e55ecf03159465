/** The handle rule and the actor store on a real Redis (RedisSealedStore), shared by two processes' stores. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { Ed25519Identity } from '@libertaria/identity';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { ActorStore, handleOf } from '../src/actors.js';

describe('actors: the handle rule and keys sealed in Redis', () => {
  let redis: RedisHandle;
  let client: RedisClient;
  const kek = new Uint8Array(randomBytes(32));
  const open = async () =>
    new ActorStore(
      await RedisSealedStore.open({ redis: client, kek, namespace: 'activitypub-actors', maxRecords: 10 }),
    );

  before(async () => {
    redis = await startRedis();
    client = createRedisClient({ url: redis.url }, {});
  });
  after(async () => {
    await client.quit();
    await redis.stop();
  });

  it('derives a stable, Mastodon-valid handle from the DID alone, different per DID', () => {
    const did = Ed25519Identity.generate().did;
    assert.equal(handleOf(did), handleOf(did));
    assert.match(handleOf(did), /^l[a-z2-7]{24}$/);
    assert.notEqual(handleOf(did), handleOf(Ed25519Identity.generate().did));
    // A known vector, so the rule cannot change silently (it would move every actor).
    assert.equal(
      handleOf('did:libertaria:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK'),
      'lg3mt2kqpzbxydgsuv77mhvfk',
    );
  });

  it('gives two stores (two processes) the same actor and the same keys, made once', async () => {
    const [a, b] = [await open(), await open()];
    const did = Ed25519Identity.generate().did;
    const [x, y] = await Promise.all([a.bridge(did), b.bridge(did)]);
    assert.equal(x.handle, y.handle);
    assert.equal(x.rsaPublicPem, y.rsaPublicPem);
    assert.equal((await b.byHandle(x.handle))?.id, did);
    const [ka, kb] = [await a.keyPairs(x), await b.keyPairs(y)];
    const data = new TextEncoder().encode('signed by one, checked by the other');
    const sig = await crypto.subtle.sign('Ed25519', ka.ed25519.privateKey, data);
    assert.ok(await crypto.subtle.verify('Ed25519', kb.ed25519.publicKey, sig, data));
    const rsa = await crypto.subtle.sign('RSASSA-PKCS1-v1_5', kb.rsa.privateKey, data);
    assert.ok(await crypto.subtle.verify('RSASSA-PKCS1-v1_5', ka.rsa.publicKey, rsa, data));
    const stored = JSON.stringify(await client.hgetall('{lr-bridge}:sealed:activitypub-actors:records'));
    assert.doesNotMatch(stored, /PRIVATE|"rsa":|"ed25519":/, 'private keys only sealed');
  });

  it('takes a chosen name once, refuses an invalid or taken one, and refuses a malformed DID', async () => {
    const store = await open();
    const did = Ed25519Identity.generate().did;
    assert.equal((await store.bridge(did, 'Alice_1')).handle, 'alice_1');
    assert.equal((await store.bridge(did, 'other')).handle, 'alice_1', 'a name is set on the first bridging only');
    await assert.rejects(store.bridge(Ed25519Identity.generate().did, 'alice_1'), { code: 'BRIDGE_IDENTITY_CONFLICT' });
    await assert.rejects(store.bridge(Ed25519Identity.generate().did, 'no spaces'), { code: 'BRIDGE_NAME_INVALID' });
    await assert.rejects(store.bridge(Ed25519Identity.generate().did, 'bridge'), { code: 'BRIDGE_NAME_INVALID' });
    await assert.rejects(store.bridge('did:libertaria:nope!'), { code: 'INVALID_DID' });
    assert.equal(await store.byHandle('../etc'), undefined);
  });

  it('stops at the store limit with BRIDGE_KEY_STORE_FULL', async () => {
    const store = await open();
    await assert.rejects(
      (async () => {
        for (let i = 0; i < 12; i++) await store.bridge(Ed25519Identity.generate().did);
      })(),
      { code: 'BRIDGE_KEY_STORE_FULL' },
    );
  });
});
