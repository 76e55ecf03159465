/**
 * Wires the bridge from its configuration: key store, bridge, HTTP listener.
 * `main.ts` calls it with the environment; tests call it with a plain record.
 */
import type { BridgeInboundHandler, Env } from '@libertaria/shared';
import { type BridgeNostrConfig, loadBridgeNostrConfig, relayUrls } from './config.js';
import { type BridgeHttpServer, startBridgeHttpServer } from './http-server.js';
import { NostrKeyStore, parseKek } from './key-store.js';
import { createLogger, type Logger } from './log.js';
import { BridgeNostrMetrics } from './metrics.js';
import { NostrBridge } from './nostr-bridge.js';

export interface NostrBridgeService {
  readonly config: BridgeNostrConfig;
  readonly bridge: NostrBridge;
  readonly keys: NostrKeyStore;
  readonly http: BridgeHttpServer;
  close(): Promise<void>;
}

export interface StartOptions {
  readonly log?: Logger;
  /** Set before the relays are subscribed, so nothing received at start is refused for want of a handler. */
  readonly onInbound?: BridgeInboundHandler;
}

export async function startNostrBridgeService(env: Env, options: StartOptions = {}): Promise<NostrBridgeService> {
  const config = loadBridgeNostrConfig(env);
  const logger = options.log ?? createLogger(config.BRIDGE_NOSTR_LOG_LEVEL, { service: 'bridge-nostr' });
  const keys = await NostrKeyStore.open(config.BRIDGE_NOSTR_KEY_STORE_FILE, parseKek(config.BRIDGE_NOSTR_KEK), {
    maxIdentities: config.BRIDGE_NOSTR_MAX_IDENTITIES,
  });
  const metrics = new BridgeNostrMetrics();
  const bridge = new NostrBridge({
    relays: relayUrls(config),
    keys,
    metrics,
    log: logger,
    maxTextBytes: config.BRIDGE_NOSTR_MAX_TEXT_BYTES,
    maxMessageBytes: config.BRIDGE_NOSTR_MAX_EVENT_BYTES,
    maxInboxRelays: config.BRIDGE_NOSTR_MAX_INBOX_RELAYS,
    publishTimeoutMs: config.BRIDGE_NOSTR_PUBLISH_TIMEOUT_MS,
    lookupTimeoutMs: config.BRIDGE_NOSTR_LOOKUP_TIMEOUT_MS,
    reconnectInitialMs: config.BRIDGE_NOSTR_RECONNECT_INITIAL_MS,
    reconnectMaxMs: config.BRIDGE_NOSTR_RECONNECT_MAX_MS,
    pingIntervalMs: config.BRIDGE_NOSTR_PING_INTERVAL_MS,
    maxAuthKeys: config.BRIDGE_NOSTR_MAX_AUTH_KEYS,
    handlerAttempts: config.BRIDGE_NOSTR_HANDLER_ATTEMPTS,
    handlerRetryDelayMs: config.BRIDGE_NOSTR_HANDLER_RETRY_MS,
    dedupeCapacity: config.BRIDGE_NOSTR_DEDUPE_CAPACITY,
    lookbackSeconds: config.BRIDGE_NOSTR_LOOKBACK_SECONDS,
  });
  const http = await startBridgeHttpServer({
    host: config.BRIDGE_NOSTR_HTTP_HOST,
    port: config.BRIDGE_NOSTR_HTTP_PORT,
    bridge,
    keys,
    metrics,
  });
  if (options.onInbound) bridge.onInbound(options.onInbound);
  await bridge.start();
  logger.info('bridge-nostr started', { relays: bridge.relayUrls, port: http.port, identities: keys.size });
  return {
    config,
    bridge,
    keys,
    http,
    async close() {
      await bridge.close();
      await http.close();
    },
  };
}
