/**
 * Builds the ActivityPub bridge for tests: on a real Redis, with its actors
 * in a RedisSealedStore, its HTTP listener on 127.0.0.1 and a free port (the
 * origin is `http://127.0.0.1:<port>`, so the insecure test mode is on), and
 * limits small enough for tests.
 */
import { randomBytes } from 'node:crypto';
import { RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import {
  ActivityPubBridge,
  type ActivityPubBridgeOptions,
  type ForeignSenderDecider,
} from '../../src/activitypub-bridge.js';
import { ActorStore } from '../../src/actors.js';
import { type BridgeHttpOptions, type BridgeHttpServer, startBridgeHttpServer } from '../../src/http-server.js';
import { silentLogger } from '../../src/log.js';
import { BridgeActivityPubMetrics } from '../../src/metrics.js';
import { queueMessageKey } from '../../src/service.js';

export const TEST_MAX_TEXT_BYTES = 2000;
export const TEST_MAX_ACTIVITY_BYTES = 64 * 1024;

export interface TestBridge {
  readonly bridge: ActivityPubBridge;
  readonly http: BridgeHttpServer;
  readonly httpOptions: BridgeHttpOptions;
  readonly actors: ActorStore;
  readonly metrics: BridgeActivityPubMetrics;
  readonly redis: RedisClient;
  readonly origin: string;
  close(): Promise<void>;
}

export async function makeBridge(options: {
  redisUrl: string;
  policy: ForeignSenderDecider;
  kek?: Uint8Array;
  prefix?: string;
  /** The public origin when the bridge is behind a front (default: its own listener). */
  origin?: string;
  overrides?: Partial<ActivityPubBridgeOptions>;
}): Promise<TestBridge> {
  const prefix = options.prefix ?? '{lr-bridge}';
  const redis = createRedisClient({ url: options.redisUrl }, { connectionName: 'test-bridge-activitypub' });
  const kek = options.kek ?? new Uint8Array(randomBytes(32));
  const sealed = await RedisSealedStore.open({ redis, kek, namespace: 'activitypub-actors', prefix, maxRecords: 1000 });
  const actors = new ActorStore(sealed);
  const metrics = new BridgeActivityPubMetrics(false);
  const httpOptions: BridgeHttpOptions = {
    host: '127.0.0.1',
    port: 0,
    metrics,
    maxActivityBytes: TEST_MAX_ACTIVITY_BYTES,
  };
  const http = await startBridgeHttpServer(httpOptions);
  const origin = options.origin ?? `http://127.0.0.1:${http.port}`;
  const bridge = new ActivityPubBridge({
    origin,
    redis,
    redisTarget: { url: options.redisUrl },
    prefix,
    actors,
    policy: options.policy,
    // Derived from the KEK as the service does: every instance must open the others' queued messages.
    messageKey: queueMessageKey(kek),
    insecure: true,
    maxTextBytes: TEST_MAX_TEXT_BYTES,
    maxFollowers: 100,
    fetchTimeoutMs: 5000,
    maxFetchBytes: 65536,
    accountCacheSeconds: 60,
    threadSeconds: 600,
    signatureWindowSeconds: 3600,
    maxRetryAfterMs: 5000,
    queueAttempts: 4,
    queueBackoffMs: 200,
    queueJitter: 0.5,
    queueConcurrency: 4,
    keepCompleted: 1000,
    keepFailed: 1000,
    metrics,
    log: silentLogger,
    ...options.overrides,
  });
  httpOptions.bridge = bridge;
  return {
    bridge,
    http,
    httpOptions,
    actors,
    metrics,
    redis,
    origin,
    async close() {
      await bridge.close();
      await http.close();
      await redis.quit().catch(() => undefined);
    },
  };
}
