/** Builds a NostrBridge on a fresh key store file, with limits small enough for tests. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NostrKeyStore } from '../../src/key-store.js';
import { BridgeNostrMetrics } from '../../src/metrics.js';
import { NostrBridge, type NostrBridgeOptions } from '../../src/nostr-bridge.js';

export const TEST_MAX_TEXT_BYTES = 2000;

export async function makeBridge(
  relays: readonly string[],
  overrides: Partial<NostrBridgeOptions> = {},
): Promise<{
  bridge: NostrBridge;
  keys: NostrKeyStore;
  metrics: BridgeNostrMetrics;
  keyFile: string;
  kek: Uint8Array;
}> {
  const keyFile = join(mkdtempSync(join(tmpdir(), 'bridge-nostr-')), 'keys.jsonl');
  const kek = new Uint8Array(randomBytes(32));
  const keys = await NostrKeyStore.open(keyFile, kek, { maxIdentities: 100 });
  const metrics = new BridgeNostrMetrics(false);
  const bridge = new NostrBridge({
    relays,
    keys,
    metrics,
    maxTextBytes: TEST_MAX_TEXT_BYTES,
    maxMessageBytes: 262144,
    maxInboxRelays: 5,
    publishTimeoutMs: 5000,
    lookupTimeoutMs: 1000,
    reconnectInitialMs: 50,
    reconnectMaxMs: 400,
    pingIntervalMs: 0,
    maxAuthKeys: 16,
    handlerAttempts: 3,
    handlerRetryDelayMs: 20,
    dedupeCapacity: 1000,
    lookbackSeconds: 3 * 86400,
    ...overrides,
  });
  return { bridge, keys, metrics, keyFile, kek };
}
