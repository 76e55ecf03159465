/** The service as main.ts starts it: from environment variables to a running bridge and HTTP listener. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import type { BridgeInboundMessage } from '@libertaria/bridge-kit';
import { Ed25519Identity } from '@libertaria/identity';
import { silentLogger } from '../src/log.js';
import { startNostrBridgeService } from '../src/service.js';
import { NostrUser } from './support/nostr-client.js';
import { startNostrRelay } from './support/nostr-relay.js';

it('starts from its environment, bridges an identity, and hands over a message from a Nostr user', async () => {
  const relay = await startNostrRelay();
  const inbound: BridgeInboundMessage[] = [];
  const service = await startNostrBridgeService(
    {
      BRIDGE_NOSTR_RELAYS: relay.url,
      BRIDGE_NOSTR_KEK: randomBytes(32).toString('hex'),
      BRIDGE_NOSTR_KEY_STORE_FILE: join(mkdtempSync(join(tmpdir(), 'bridge-nostr-svc-')), 'keys.jsonl'),
      BRIDGE_NOSTR_HTTP_PORT: '0',
    },
    { log: silentLogger, onInbound: async (m) => void inbound.push(m) },
  );
  try {
    const did = Ed25519Identity.generate().did;
    const npub = await service.bridge.bridgeIdentity(did, { name: 'carol' });
    const user = new NostrUser([relay.url]);
    await user.sendPrivate(npub, 'hello carol');
    // Sized for a loaded 2-core CI machine; the assertion below shows what arrived.
    const deadline = Date.now() + 20_000;
    while (!inbound.some((m) => m.text === 'hello carol') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 25));
    assert.equal(
      inbound.find((m) => m.text === 'hello carol')?.to,
      did,
      `inbound: ${JSON.stringify(inbound.map((m) => m.text))}`,
    );
    const health = await fetch(`http://127.0.0.1:${service.http.port}/health`);
    assert.equal(health.status, 200);
  } finally {
    await service.close();
    await relay.stop();
  }
});

it('joins the relay cluster from its environment: registers, serves federation health, refuses a partial setup', async (t) => {
  const { startRedis } = await import('../../../test-support/redis.js');
  const { startRelay } = await import('../../../test-support/relay-process.js');
  const { hintFromDid, hintToHex } = await import('@libertaria/identity');
  const { writeKeyFile } = await import('@libertaria/identity/node');
  const { bridgesKey, FEDERATION_PREFIX } = await import('@libertaria/bridge-kit');
  const { loadBridgeNostrConfig } = await import('../src/config.js');
  // Each part is stopped after the test even when a later step fails: a part
  // left running would keep this file's process alive until the run's timeout.
  const stops: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const stop of stops.reverse()) await stop();
  });
  const redis = await startRedis();
  stops.push(() => redis.stop());
  const nostr = await startNostrRelay();
  stops.push(() => nostr.stop());
  const relay = await startRelay({ redisUrl: redis.url });
  stops.push(() => relay.stop());
  const dir = mkdtempSync(join(tmpdir(), 'bridge-nostr-fed-'));
  const identity = Ed25519Identity.generate();
  await writeKeyFile(join(dir, 'bridge.json'), identity);
  const env = {
    BRIDGE_NOSTR_RELAYS: nostr.url,
    BRIDGE_NOSTR_KEK: randomBytes(32).toString('hex'),
    BRIDGE_NOSTR_KEY_STORE_FILE: join(dir, 'keys.jsonl'),
    BRIDGE_NOSTR_HTTP_PORT: '0',
    BRIDGE_NOSTR_REDIS_URL: redis.url,
    BRIDGE_NOSTR_LIBERTARIA_RELAYS: relay.wsUrl,
    BRIDGE_NOSTR_IDENTITY_FILE: join(dir, 'bridge.json'),
    BRIDGE_NOSTR_STATE_DIR: join(dir, 'state'),
  };
  assert.throws(
    () => loadBridgeNostrConfig({ ...env, BRIDGE_NOSTR_IDENTITY_FILE: undefined }),
    (err: Error) => /BRIDGE_NOSTR_IDENTITY_FILE is required when BRIDGE_NOSTR_REDIS_URL is set/.test(err.message),
  );
  const service = await startNostrBridgeService(env, { log: silentLogger });
  try {
    assert.equal(service.federation?.registration.did, identity.did);
    const { Redis } = await import('ioredis');
    const r = new Redis(redis.url);
    const registered = await r.hget(bridgesKey(FEDERATION_PREFIX), hintToHex(hintFromDid(identity.did)));
    r.disconnect();
    assert.equal(JSON.parse(registered ?? '{}').attempts, 8, 'the configured retry policy is registered');
    const health = (await (await fetch(`http://127.0.0.1:${service.http.port}/health`)).json()) as {
      federation: { relay: string; worker: string; redis: string };
    };
    assert.deepEqual(
      [health.federation.relay, health.federation.worker, health.federation.redis],
      ['connected', 'running', 'ready'],
    );
  } finally {
    await service.close();
  }
});
