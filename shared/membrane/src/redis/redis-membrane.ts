/**
 * One call that assembles a Membrane on the Redis stores, for the relay to
 * wire in: every store shares the node's command connection; the policy
 * cache needs a subscriber connection of its own (a subscribed ioredis
 * connection cannot run commands).
 */

import type { RedisClient, Subscriber } from '@libertaria/redis';
import { DEFAULT_MEMBRANE_LIMITS, Membrane, type MembraneLimits } from '../index.js';
import { RedisAuditLog } from './audit-log.js';
import { RedisConstraintState } from './constraint-state.js';
import { RedisPolicyStore } from './policy-store.js';
import { RedisRevocationStore } from './revocation-store.js';
import { RedisTrustStore } from './trust-store.js';

export interface RedisMembraneOptions {
  /** Key prefix (RELAY_REDIS_PREFIX). */
  prefix: string;
  /** What owners without a policy get: 'allow' (open relay) or 'deny'. */
  whenNoPolicy: 'allow' | 'deny';
  limits?: MembraneLimits;
  /** @default 0 */
  unknownTrust?: number;
  /** @default 4096 */
  grantCacheSize?: number;
  /** @default 10000 */
  policyCacheEntries?: number;
  /** @default 60000 */
  policyCacheMaxAgeMs?: number;
  /** @default 1000000 */
  auditMaxEntries?: number;
  now?: () => number;
}

export interface RedisMembrane {
  membrane: Membrane;
  policies: RedisPolicyStore;
  trust: RedisTrustStore;
  revocations: RedisRevocationStore;
  state: RedisConstraintState;
  audit: RedisAuditLog;
  /** Subscribes the policy cache to invalidations (decisions work before, uncached). */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function createRedisMembrane(
  redis: RedisClient,
  subscriber: Subscriber,
  options: RedisMembraneOptions,
): RedisMembrane {
  const limits = options.limits ?? DEFAULT_MEMBRANE_LIMITS;
  const now = options.now ?? Date.now;
  const policies = new RedisPolicyStore(redis, subscriber, {
    prefix: options.prefix,
    limits,
    ...(options.policyCacheEntries !== undefined ? { cacheEntries: options.policyCacheEntries } : {}),
    ...(options.policyCacheMaxAgeMs !== undefined ? { cacheMaxAgeMs: options.policyCacheMaxAgeMs } : {}),
    now,
  });
  const trust = new RedisTrustStore(redis, options.prefix);
  const revocations = new RedisRevocationStore(redis, options.prefix, now);
  const state = new RedisConstraintState(redis, options.prefix);
  const audit = new RedisAuditLog(redis, {
    prefix: options.prefix,
    ...(options.auditMaxEntries !== undefined ? { maxEntries: options.auditMaxEntries } : {}),
  });
  const membrane = new Membrane({
    policies,
    trust,
    state,
    revocations,
    audit,
    whenNoPolicy: options.whenNoPolicy,
    limits,
    now,
    ...(options.unknownTrust !== undefined ? { unknownTrust: options.unknownTrust } : {}),
    ...(options.grantCacheSize !== undefined ? { grantCacheSize: options.grantCacheSize } : {}),
  });
  return {
    membrane,
    policies,
    trust,
    revocations,
    state,
    audit,
    start: () => policies.start(),
    stop: () => policies.stop(),
  };
}
