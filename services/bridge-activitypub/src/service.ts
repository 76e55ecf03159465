/**
 * Wires the bridge from its configuration: Redis, the sealed actor store,
 * the bridge on Fedify, the federation worker (the bridge's place in the
 * relay cluster) and the HTTP listener. `main.ts` calls it with the
 * environment; tests call it with a plain record.
 */
import { hkdfSync } from 'node:crypto';
import { BridgeFederation, ForeignSenderPolicy, RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { parseRelayUrls } from '@libertaria/client';
import { FileSessionStore } from '@libertaria/client/node';
import type { Env } from '@libertaria/config';
import { readKeyFile } from '@libertaria/identity/node';
import { createRedisClient, type RedisClient, type RedisTarget } from '@libertaria/redis';
import { ActivityPubBridge, type ForeignSenderDecider } from './activitypub-bridge.js';
import { ActorStore } from './actors.js';
import { type BridgeActivityPubConfig, loadBridgeActivityPubConfig } from './config.js';
import { type BridgeHttpOptions, type BridgeHttpServer, startBridgeHttpServer } from './http-server.js';
import { createLogger, type Logger } from './log.js';
import { BridgeActivityPubMetrics } from './metrics.js';

export interface ActivityPubBridgeService {
  readonly config: BridgeActivityPubConfig;
  readonly bridge: ActivityPubBridge;
  readonly actors: ActorStore;
  readonly http: BridgeHttpServer;
  readonly federation: BridgeFederation;
  readonly metrics: BridgeActivityPubMetrics;
  close(): Promise<void>;
}

export interface StartOptions {
  readonly log?: Logger;
  /** Who may message or follow a bridged peer; default: the owner's membrane policy (ForeignSenderPolicy on the relays' Redis keys). */
  readonly policy?: ForeignSenderDecider;
}

/** The key sealing Fedify's queued messages: derived from the KEK, so every process has it and nothing else is configured. */
export function queueMessageKey(kek: Uint8Array): Uint8Array {
  return new Uint8Array(
    hkdfSync('sha256', kek, new Uint8Array(0), 'libertaria/bridge-activitypub/fedify-queue/v1', 32),
  );
}

export async function startActivityPubBridgeService(
  env: Env,
  options: StartOptions = {},
): Promise<ActivityPubBridgeService> {
  const config = loadBridgeActivityPubConfig(env);
  const log = options.log ?? createLogger(config.BRIDGE_AP_LOG_LEVEL, { service: 'bridge-activitypub' });
  const insecure = config.BRIDGE_AP_INSECURE_TEST_MODE;
  if (insecure) {
    log.error(
      'BRIDGE_AP_INSECURE_TEST_MODE=true: plain HTTP and loopback/private addresses are allowed. This is for tests only; never run it facing the Internet.',
      { origin: config.BRIDGE_AP_ORIGIN },
    );
  }
  const origin = new URL(config.BRIDGE_AP_ORIGIN).origin;
  const prefix = config.BRIDGE_AP_FEDERATION_PREFIX;
  const target: RedisTarget = { url: config.BRIDGE_AP_REDIS_URL, clusterNodes: config.REDIS_CLUSTER_NODES };
  const redis: RedisClient = createRedisClient(target, { connectionName: 'bridge-activitypub' });
  redis.on('error', (err) => log.debug('redis error', { err }));
  const kek = Uint8Array.from(Buffer.from(config.BRIDGE_AP_KEK, 'hex'));
  const closers: (() => Promise<unknown>)[] = [() => redis.quit().catch(() => undefined)];
  try {
    const sealed = await RedisSealedStore.open({
      redis,
      kek,
      namespace: 'activitypub-actors',
      prefix,
      maxRecords: config.BRIDGE_AP_MAX_ACTORS + 1, // and the instance actor
    });
    const actors = new ActorStore(sealed);
    const metrics = new BridgeActivityPubMetrics();
    const httpOptions: BridgeHttpOptions = {
      host: config.BRIDGE_AP_HTTP_HOST,
      port: config.BRIDGE_AP_HTTP_PORT,
      metrics,
      maxActivityBytes: config.BRIDGE_AP_MAX_ACTIVITY_BYTES,
    };
    const http = await startBridgeHttpServer(httpOptions);
    closers.unshift(() => http.close());
    let policy = options.policy;
    if (!policy) {
      const membrane = new ForeignSenderPolicy({
        redis,
        relayPrefix: config.BRIDGE_AP_RELAY_REDIS_PREFIX,
        network: 'activitypub',
        whenNoPolicy: config.BRIDGE_AP_WHEN_NO_POLICY,
        registry: metrics.registry,
      });
      await membrane.start();
      closers.unshift(() => membrane.close());
      policy = membrane;
    }
    const bridge = new ActivityPubBridge({
      origin,
      redis,
      redisTarget: target,
      prefix,
      actors,
      policy,
      messageKey: queueMessageKey(kek),
      insecure,
      maxTextBytes: config.BRIDGE_AP_MAX_TEXT_BYTES,
      maxFollowers: config.BRIDGE_AP_MAX_FOLLOWERS,
      fetchTimeoutMs: config.BRIDGE_AP_FETCH_TIMEOUT_MS,
      maxFetchBytes: config.BRIDGE_AP_MAX_FETCH_BYTES,
      accountCacheSeconds: config.BRIDGE_AP_ACCOUNT_CACHE_SECONDS,
      threadSeconds: config.BRIDGE_AP_THREAD_SECONDS,
      signatureWindowSeconds: config.BRIDGE_AP_SIGNATURE_WINDOW_SECONDS,
      maxRetryAfterMs: config.BRIDGE_AP_MAX_RETRY_AFTER_MS,
      queueAttempts: config.BRIDGE_AP_QUEUE_ATTEMPTS,
      queueBackoffMs: config.BRIDGE_AP_QUEUE_BACKOFF_MS,
      queueJitter: config.BRIDGE_AP_JITTER_PERCENT / 100,
      queueConcurrency: config.BRIDGE_AP_QUEUE_CONCURRENCY,
      keepCompleted: config.BRIDGE_AP_KEEP_COMPLETED,
      keepFailed: config.BRIDGE_AP_KEEP_FAILED,
      metrics,
      log,
    });
    closers.unshift(() => bridge.close());
    const federation = new BridgeFederation({
      bridge,
      identity: await readKeyFile(config.BRIDGE_AP_IDENTITY_FILE),
      ...(config.BRIDGE_AP_SCALE_OUT
        ? {
            scaleOut: {
              leaderTtlMs: config.BRIDGE_AP_LEADER_TTL_MS,
              lockTtlMs: config.BRIDGE_AP_SESSION_LOCK_TTL_MS,
              lockWaitMs: config.BRIDGE_AP_SESSION_LOCK_WAIT_MS,
            },
          }
        : { sessionStore: new FileSessionStore(config.BRIDGE_AP_STATE_DIR as string) }),
      jobLockMs: config.BRIDGE_AP_JOB_LOCK_MS,
      relays: parseRelayUrls(config.BRIDGE_AP_LIBERTARIA_RELAYS).map((u) => u.href),
      redisUrl: config.BRIDGE_AP_REDIS_URL,
      redisClusterNodes: config.REDIS_CLUSTER_NODES,
      prefix,
      concurrency: config.BRIDGE_AP_OUTBOUND_CONCURRENCY,
      ratePerSecond: config.BRIDGE_AP_OUTBOUND_RATE,
      rateLimitPauseMs: config.BRIDGE_AP_RATE_LIMIT_PAUSE_MS,
      attempts: config.BRIDGE_AP_OUTBOUND_ATTEMPTS,
      backoffMs: config.BRIDGE_AP_OUTBOUND_BACKOFF_MS,
      jitter: config.BRIDGE_AP_JITTER_PERCENT / 100,
      inboundAttempts: config.BRIDGE_AP_INBOUND_ATTEMPTS,
      inboundBackoffMs: config.BRIDGE_AP_INBOUND_BACKOFF_MS,
      registerEveryMs: config.BRIDGE_AP_REGISTER_EVERY_MS,
      inboundTtlSeconds: config.BRIDGE_AP_INBOUND_TTL_SECONDS,
      keepCompleted: config.BRIDGE_AP_KEEP_COMPLETED,
      keepFailed: config.BRIDGE_AP_KEEP_FAILED,
      log,
      registry: metrics.registry,
    });
    closers.unshift(() => federation.close());
    httpOptions.bridge = bridge;
    httpOptions.federation = federation;
    await bridge.start();
    await federation.start();
    log.info('bridge-activitypub started', { origin, port: http.port, did: federation.client.did });
    let closed: Promise<void> | undefined;
    return {
      config,
      bridge,
      actors,
      http,
      federation,
      metrics,
      close() {
        closed ??= (async () => {
          for (const close of closers) await close();
        })();
        return closed;
      },
    };
  } catch (err) {
    for (const close of closers) await close().catch(() => undefined);
    throw err;
  }
}
