/**
 * Builds an XmtpBridge as the service does (real Redis, the sealed store,
 * real BullMQ sync queue), on the fake XMTP network, with small limits.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BridgeInboundMessage } from '@libertaria/bridge-kit';
import { ForeignSenderPolicy, RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { DEFAULT_MEMBRANE_LIMITS } from '@libertaria/membrane';
import { RedisPolicyStore } from '@libertaria/membrane/redis';
import { Redis } from 'ioredis';
import { XmtpIdentities } from '../../src/identities.js';
import { BridgeXmtpMetrics } from '../../src/metrics.js';
import type { XmtpNetwork } from '../../src/network.js';
import { XmtpBridge, type XmtpBridgeOptions } from '../../src/xmtp-bridge.js';

export const TEST_MAX_TEXT_BYTES = 2000;

export interface BridgeSetup {
  readonly redisUrl: string;
  readonly network: XmtpNetwork;
  /** Shared by bridges that play one deployment restarted: same KEK, same volume, same prefix. */
  readonly kek?: Uint8Array;
  readonly dbDir?: string;
  readonly prefix?: string;
  /** Owners without a membrane policy (ForeignSenderPolicy's whenNoPolicy); default deny. */
  readonly whenNoPolicy?: 'allow' | 'deny';
  /** BRIDGE_XMTP_MAX_IDENTITIES (default 100). */
  readonly maxIdentities?: number;
  readonly overrides?: Partial<XmtpBridgeOptions>;
}

export interface TestBridge {
  readonly bridge: XmtpBridge;
  readonly identities: XmtpIdentities;
  readonly metrics: BridgeXmtpMetrics;
  readonly redis: Redis;
  readonly kek: Uint8Array;
  readonly dbDir: string;
  readonly prefix: string;
  /** The relays' policy store on the same Redis and prefix: what POLICY_PUT writes. */
  readonly policies: RedisPolicyStore;
  /** Inbound messages handed over (when `collect` was asked). */
  readonly received: BridgeInboundMessage[];
  close(): Promise<void>;
}

export async function makeBridge(setup: BridgeSetup, collect = false): Promise<TestBridge> {
  const kek = setup.kek ?? new Uint8Array(randomBytes(32));
  const dbDir = setup.dbDir ?? mkdtempSync(join(tmpdir(), 'bridge-xmtp-db-'));
  const prefix = setup.prefix ?? `{t${randomBytes(4).toString('hex')}}`;
  const redis = new Redis(setup.redisUrl, { maxRetriesPerRequest: 3 });
  const store = await RedisSealedStore.open({
    redis,
    kek,
    namespace: 'xmtp',
    prefix,
    maxRecords: setup.maxIdentities ?? 100,
  });
  // The owners' policies: one relay prefix per bridge deployment of the test, as RELAY_REDIS_PREFIX.
  const relayPrefix = `lr${prefix.replace(/[{}]/g, '')}`;
  const foreignSenders = new ForeignSenderPolicy({
    redis,
    relayPrefix,
    network: 'xmtp',
    whenNoPolicy: setup.whenNoPolicy ?? 'deny',
  });
  await foreignSenders.start();
  const policySubscriber = new Redis(setup.redisUrl, { lazyConnect: true });
  const policies = new RedisPolicyStore(redis, policySubscriber, {
    prefix: relayPrefix,
    limits: DEFAULT_MEMBRANE_LIMITS,
  });
  const identities = new XmtpIdentities({
    store,
    redis,
    prefix,
    dbDir,
    inboxIdOf: (a) => setup.network.inboxIdOf(a),
    maxIdentities: setup.maxIdentities ?? 100,
  });
  const metrics = new BridgeXmtpMetrics(false);
  const bridge = new XmtpBridge({
    network: setup.network,
    identities,
    redis,
    redisTarget: { url: setup.redisUrl },
    prefix,
    policy: foreignSenders,
    metrics,
    maxTextBytes: TEST_MAX_TEXT_BYTES,
    sentTtlSeconds: 3600,
    allowNewInstallation: false,
    syncIntervalMs: 60_000,
    readRatePerSecond: 1000,
    syncConcurrency: 4,
    syncAttempts: 10,
    syncBackoffMs: 50,
    jitter: 0.2,
    pageSize: 3,
    rateLimitPauseMs: 200,
    keepFailed: 100,
    ...setup.overrides,
  });
  const received: BridgeInboundMessage[] = [];
  if (collect) bridge.onInbound(async (m) => void received.push(m));
  return {
    bridge,
    identities,
    metrics,
    redis,
    kek,
    dbDir,
    prefix,
    policies,
    received,
    async close() {
      await bridge.close();
      await foreignSenders.close();
      policySubscriber.disconnect();
      redis.disconnect();
    },
  };
}

/** Polls `probe` until it gives a value; the deadline is sized for a loaded 2-core machine. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
