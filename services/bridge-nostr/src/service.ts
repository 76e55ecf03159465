/**
 * Wires the bridge from its configuration: key store, bridge, HTTP listener.
 * `main.ts` calls it with the environment; tests call it with a plain record.
 * With BRIDGE_NOSTR_SCALE_OUT the keys, sessions and gift-wrap cache are in
 * Redis and nothing is written locally (docs/bridges.md#running-several-processes).
 */
import type { BridgeInboundHandler } from '@libertaria/bridge-kit';
import { BridgeFederation } from '@libertaria/bridge-kit/worker';
import { parseRelayUrls } from '@libertaria/client';
import { FileSessionStore } from '@libertaria/client/node';
import type { Env } from '@libertaria/config';
import { readKeyFile } from '@libertaria/identity/node';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type BridgeNostrConfig, loadBridgeNostrConfig, relayUrls } from './config.js';
import { type BridgeHttpServer, startBridgeHttpServer } from './http-server.js';
import { NostrKeyStore, type NostrKeys, parseKek } from './key-store.js';
import { createLogger, type Logger } from './log.js';
import { BridgeNostrMetrics } from './metrics.js';
import { NostrBridge } from './nostr-bridge.js';
import { RedisNostrKeyStore } from './redis-key-store.js';
import { RedisWrapCache } from './wrap-cache.js';

export interface NostrBridgeService {
  readonly config: BridgeNostrConfig;
  readonly bridge: NostrBridge;
  readonly keys: NostrKeys;
  readonly http: BridgeHttpServer;
  /** Set when BRIDGE_NOSTR_REDIS_URL is: the bridge's place in the relay cluster. */
  readonly federation: BridgeFederation | undefined;
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
  const kek = parseKek(config.BRIDGE_NOSTR_KEK);
  const scaleOut = config.BRIDGE_NOSTR_SCALE_OUT;
  let redis: RedisClient | undefined;
  let keys: NostrKeys;
  let redisKeys: RedisNostrKeyStore | undefined;
  if (scaleOut) {
    // The config check guarantees the URL. Commands fail after one retry instead of waiting for Redis forever.
    redis = createRedisClient(
      { url: config.BRIDGE_NOSTR_REDIS_URL as string, clusterNodes: config.REDIS_CLUSTER_NODES },
      { connectionName: 'bridge-nostr-state', maxRetriesPerRequest: 1 },
    );
    redis.on('error', (err) => logger.debug('state redis error', { err }));
    redisKeys = await RedisNostrKeyStore.open({
      redis,
      kek,
      prefix: config.BRIDGE_NOSTR_FEDERATION_PREFIX,
      maxIdentities: config.BRIDGE_NOSTR_MAX_IDENTITIES,
      refreshMs: config.BRIDGE_NOSTR_IDENTITY_REFRESH_MS,
      log: logger,
    });
    if (config.BRIDGE_NOSTR_KEY_STORE_FILE !== undefined) {
      const file = await NostrKeyStore.open(config.BRIDGE_NOSTR_KEY_STORE_FILE, kek, {
        maxIdentities: config.BRIDGE_NOSTR_MAX_IDENTITIES,
      });
      const imported = await redisKeys.importFrom(file);
      logger.info('key file imported into Redis', { file: config.BRIDGE_NOSTR_KEY_STORE_FILE, imported });
    }
    keys = redisKeys;
  } else {
    keys = await NostrKeyStore.open(config.BRIDGE_NOSTR_KEY_STORE_FILE as string, kek, {
      maxIdentities: config.BRIDGE_NOSTR_MAX_IDENTITIES,
    });
  }
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
    ...(redis === undefined
      ? {}
      : {
          wrapCache: new RedisWrapCache(
            redis,
            config.BRIDGE_NOSTR_FEDERATION_PREFIX,
            config.BRIDGE_NOSTR_WRAP_TTL_SECONDS,
          ),
        }),
  });
  const federation =
    config.BRIDGE_NOSTR_REDIS_URL === undefined
      ? undefined
      : new BridgeFederation({
          bridge,
          identity: await readKeyFile(config.BRIDGE_NOSTR_IDENTITY_FILE as string),
          ...(scaleOut
            ? {
                scaleOut: {
                  leaderTtlMs: config.BRIDGE_NOSTR_LEADER_TTL_MS,
                  lockTtlMs: config.BRIDGE_NOSTR_SESSION_LOCK_TTL_MS,
                  lockWaitMs: config.BRIDGE_NOSTR_SESSION_LOCK_WAIT_MS,
                },
              }
            : { sessionStore: new FileSessionStore(config.BRIDGE_NOSTR_STATE_DIR as string) }),
          relays: parseRelayUrls(config.BRIDGE_NOSTR_LIBERTARIA_RELAYS as string).map((u) => u.href),
          redisUrl: config.BRIDGE_NOSTR_REDIS_URL,
          redisClusterNodes: config.REDIS_CLUSTER_NODES,
          prefix: config.BRIDGE_NOSTR_FEDERATION_PREFIX,
          concurrency: config.BRIDGE_NOSTR_OUTBOUND_CONCURRENCY,
          jobLockMs: config.BRIDGE_NOSTR_JOB_LOCK_MS,
          ratePerSecond: config.BRIDGE_NOSTR_OUTBOUND_RATE,
          rateLimitPauseMs: config.BRIDGE_NOSTR_RATE_LIMIT_PAUSE_MS,
          attempts: config.BRIDGE_NOSTR_OUTBOUND_ATTEMPTS,
          backoffMs: config.BRIDGE_NOSTR_OUTBOUND_BACKOFF_MS,
          jitter: config.BRIDGE_NOSTR_JITTER_PERCENT / 100,
          inboundAttempts: config.BRIDGE_NOSTR_INBOUND_ATTEMPTS,
          inboundBackoffMs: config.BRIDGE_NOSTR_INBOUND_BACKOFF_MS,
          registerEveryMs: config.BRIDGE_NOSTR_REGISTER_EVERY_MS,
          inboundTtlSeconds: config.BRIDGE_NOSTR_INBOUND_TTL_SECONDS,
          keepCompleted: config.BRIDGE_NOSTR_KEEP_COMPLETED,
          keepFailed: config.BRIDGE_NOSTR_KEEP_FAILED,
          log: logger,
          registry: metrics.registry,
        });
  const http = await startBridgeHttpServer({
    host: config.BRIDGE_NOSTR_HTTP_HOST,
    port: config.BRIDGE_NOSTR_HTTP_PORT,
    bridge,
    keys,
    metrics,
    ...(federation ? { federation } : {}),
  });
  // With federation, inbound messages go to the cluster (BridgeFederation sets the handler).
  if (options.onInbound && !federation) bridge.onInbound(options.onInbound);
  await bridge.start();
  await federation?.start();
  logger.info('bridge-nostr started', { relays: bridge.relayUrls, port: http.port, identities: keys.size });
  return {
    config,
    bridge,
    keys,
    http,
    federation,
    async close() {
      await federation?.close();
      await bridge.close();
      await http.close();
      await redisKeys?.close();
      await redis?.quit().catch(() => undefined);
    },
  };
}
