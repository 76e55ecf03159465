/** The service as main.ts starts it: from environment variables to a running bridge and HTTP listener. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { type BridgeInboundMessage, Ed25519Identity } from '@libertaria/shared';
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
    const deadline = Date.now() + 8000;
    while (!inbound.some((m) => m.text === 'hello carol') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 25));
    assert.equal(inbound.find((m) => m.text === 'hello carol')?.to, did);
    const health = await fetch(`http://127.0.0.1:${service.http.port}/health`);
    assert.equal(health.status, 200);
  } finally {
    await service.close();
    await relay.stop();
  }
});
