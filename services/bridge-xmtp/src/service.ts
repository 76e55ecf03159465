/**
 * Wires the XMTP bridge from its configuration: Redis, the sealed key store,
 * the XMTP network adapter, the bridge, the federation worker and the HTTP
 * listener. `main.ts` calls it with the environment; tests call it with a
 * plain record and their own `network` (the fake XMTP network).
 */
import { mkdirSync } from 'node:fs';
import type { BridgeInboundHandler } from '@libertaria/bridge-kit';
import { BridgeFederation, ForeignSenderPolicy, RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { parseRelayUrls } from '@libertaria/client';
import { FileSessionStore } from '@libertaria/client/node';
import type { Env } from '@libertaria/config';
import { readKeyFile } from '@libertaria/identity/node';
import { createRedisClient, type RedisClient, type RedisTarget } from '@libertaria/redis';
import { type BridgeXmtpConfig, loadBridgeXmtpConfig } from './config.js';
import { type BridgeHttpServer, startBridgeHttpServer } from './http-server.js';
import { XmtpIdentities } from './identities.js';
import { createLogger, type Logger } from './log.js';
import { BridgeXmtpMetrics } from './metrics.js';
import type { XmtpNetwork } from './network.js';
import { SdkXmtpNetwork } from './sdk-network.js';
import { XmtpBridge } from './xmtp-bridge.js';

export const APP_VERSION = 'libertaria-bridge-xmtp/0.1.0';

export interface XmtpBridgeService {
  readonly config: BridgeXmtpConfig;
  readonly bridge: XmtpBridge;
  readonly identities: XmtpIdentities;
  readonly redis: RedisClient;
  readonly http: BridgeHttpServer;
  /** Set when BRIDGE_XMTP_LIBERTARIA_RELAYS is: the bridge's place in the relay cluster. */
  readonly federation: BridgeFederation | undefined;
  close(): Promise<void>;
}

export interface StartOptions {
  readonly log?: Logger;
  /** Without federation, where inbound messages go (main.ts logs them). */
  readonly onInbound?: BridgeInboundHandler;
  /** The XMTP network; default the real one (@xmtp/node-sdk on BRIDGE_XMTP_ENV). */
  readonly network?: XmtpNetwork;
}

export async function startXmtpBridgeService(env: Env, options: StartOptions = {}): Promise<XmtpBridgeService> {
  const config = loadBridgeXmtpConfig(env);
  const log = options.log ?? createLogger(config.BRIDGE_XMTP_LOG_LEVEL, { service: 'bridge-xmtp' });
  const target: RedisTarget = { url: config.BRIDGE_XMTP_REDIS_URL, clusterNodes: config.REDIS_CLUSTER_NODES };
  const redis = createRedisClient(target, { connectionName: 'bridge-xmtp', maxRetriesPerRequest: 3 });
  redis.on('error', (err) => log.debug('redis error', { err }));
  const prefix = config.BRIDGE_XMTP_PREFIX;
  const network =
    options.network ??
    new SdkXmtpNetwork({ env: config.BRIDGE_XMTP_ENV, apiUrl: config.BRIDGE_XMTP_API_URL, appVersion: APP_VERSION });
  // The volume of the local databases: owner-only, as it holds every inbox's MLS state (encrypted).
  mkdirSync(config.BRIDGE_XMTP_DB_DIR, { recursive: true, mode: 0o700 });
  const store = await RedisSealedStore.open({
    redis,
    kek: Uint8Array.from(Buffer.from(config.BRIDGE_XMTP_KEK, 'hex')),
    namespace: 'xmtp',
    prefix,
    maxRecords: config.BRIDGE_XMTP_MAX_IDENTITIES,
  });
  const identities = new XmtpIdentities({
    store,
    redis,
    prefix,
    dbDir: config.BRIDGE_XMTP_DB_DIR,
    inboxIdOf: (address) => network.inboxIdOf(address),
    maxIdentities: config.BRIDGE_XMTP_MAX_IDENTITIES,
  });
  const metrics = new BridgeXmtpMetrics();
  // Unknown senders are decided by the bridged peer's own membrane policy, read from the relays' keys.
  const policy = new ForeignSenderPolicy({
    redis,
    relayPrefix: config.BRIDGE_XMTP_RELAY_PREFIX,
    network: 'xmtp',
    whenNoPolicy: config.BRIDGE_XMTP_WHEN_NO_POLICY,
    registry: metrics.registry,
  });
  await policy.start();
  const jitter = config.BRIDGE_XMTP_JITTER_PERCENT / 100;
  const bridge = new XmtpBridge({
    network,
    identities,
    redis,
    redisTarget: target,
    prefix,
    policy,
    metrics,
    log,
    maxTextBytes: config.BRIDGE_XMTP_MAX_TEXT_BYTES,
    sentTtlSeconds: config.BRIDGE_XMTP_SENT_TTL_SECONDS,
    allowNewInstallation: config.BRIDGE_XMTP_ALLOW_NEW_INSTALLATION,
    syncIntervalMs: config.BRIDGE_XMTP_SYNC_INTERVAL_MS,
    readRatePerSecond: config.BRIDGE_XMTP_READ_RATE,
    syncConcurrency: config.BRIDGE_XMTP_SYNC_CONCURRENCY,
    syncAttempts: config.BRIDGE_XMTP_SYNC_ATTEMPTS,
    syncBackoffMs: config.BRIDGE_XMTP_SYNC_BACKOFF_MS,
    jitter,
    pageSize: config.BRIDGE_XMTP_PAGE_SIZE,
    rateLimitPauseMs: config.BRIDGE_XMTP_RATE_LIMIT_PAUSE_MS,
    keepFailed: config.BRIDGE_XMTP_SYNC_KEEP_FAILED,
  });
  const federation =
    config.BRIDGE_XMTP_LIBERTARIA_RELAYS === undefined
      ? undefined
      : new BridgeFederation({
          bridge,
          identity: await readKeyFile(config.BRIDGE_XMTP_IDENTITY_FILE as string),
          sessionStore: new FileSessionStore(config.BRIDGE_XMTP_STATE_DIR as string),
          relays: parseRelayUrls(config.BRIDGE_XMTP_LIBERTARIA_RELAYS).map((u) => u.href),
          redisUrl: config.BRIDGE_XMTP_REDIS_URL,
          redisClusterNodes: config.REDIS_CLUSTER_NODES,
          prefix,
          concurrency: config.BRIDGE_XMTP_OUTBOUND_CONCURRENCY,
          ratePerSecond: config.BRIDGE_XMTP_WRITE_RATE,
          rateLimitPauseMs: config.BRIDGE_XMTP_RATE_LIMIT_PAUSE_MS,
          attempts: config.BRIDGE_XMTP_OUTBOUND_ATTEMPTS,
          backoffMs: config.BRIDGE_XMTP_OUTBOUND_BACKOFF_MS,
          jitter,
          inboundAttempts: config.BRIDGE_XMTP_INBOUND_ATTEMPTS,
          inboundBackoffMs: config.BRIDGE_XMTP_INBOUND_BACKOFF_MS,
          registerEveryMs: config.BRIDGE_XMTP_REGISTER_EVERY_MS,
          inboundTtlSeconds: config.BRIDGE_XMTP_INBOUND_TTL_SECONDS,
          keepCompleted: config.BRIDGE_XMTP_KEEP_COMPLETED,
          keepFailed: config.BRIDGE_XMTP_KEEP_FAILED,
          log,
          registry: metrics.registry,
        });
  const http = await startBridgeHttpServer({
    host: config.BRIDGE_XMTP_HTTP_HOST,
    port: config.BRIDGE_XMTP_HTTP_PORT,
    bridge,
    metrics,
    ...(federation ? { federation } : {}),
  });
  // With federation, inbound messages go to the cluster (BridgeFederation sets the handler when it starts).
  if (options.onInbound && !federation) bridge.onInbound(options.onInbound);
  await federation?.start();
  await bridge.start();
  log.info('bridge-xmtp started', {
    env: network.name,
    port: http.port,
    identities: await identities.count(),
    federation: federation !== undefined,
  });
  return {
    config,
    bridge,
    identities,
    redis,
    http,
    federation,
    async close() {
      await federation?.close();
      await bridge.close();
      await http.close();
      await policy.close();
      await redis.quit().catch(() => undefined);
    },
  };
}
