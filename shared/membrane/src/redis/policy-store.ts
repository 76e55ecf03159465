/**
 * Owners' policies, stored in Redis and cached compiled on every node.
 *
 *   ${prefix}:mb:policy:${ownerDid}  STRING  the normalized policy JSON
 *   ${prefix}:mb:policy-changed      channel  the owner DID whose policy changed
 *   ${prefix}:mb:owners              HASH     routing hint (hex) -> owner DID, for every owner that
 *                                             ever stored a policy: the relay knows a SEND's recipient
 *                                             by its hint only, and finds the owner's policy through it
 *
 * A write stores the policy and publishes the owner on the channel; every
 * node's store drops that owner from its cache on the message, so the next
 * decision reads the new policy. The cache holds compiled policies and "no
 * policy" answers, bounded in entries (least recently used out) and in age
 * (a safety net should a message be lost). Correctness does not rest on the
 * age alone:
 *  - nothing is cached until the subscription is confirmed, and the whole
 *    cache is dropped whenever the subscriber connection is (re)established,
 *    since messages published while it was away are lost;
 *  - each owner has a generation, bumped by every invalidation; a read that
 *    started before an invalidation does not store its (possibly old) result.
 * Concurrent misses for one owner share one Redis read.
 */

import { hintFromDid } from '@libertaria/identity';
import { isCluster, type RedisClient, type Subscriber } from '@libertaria/redis';
import {
  CompiledPolicy,
  canonicalDid,
  type MembraneLimits,
  type MembranePolicy,
  type PolicySource,
  parsePolicy,
  policyToJson,
  validatePolicy,
} from '../index.js';
import { requireInt, toStoreError } from './store-error.js';

export interface PolicyStoreOptions {
  /** Key prefix (RELAY_REDIS_PREFIX). */
  prefix: string;
  limits: MembraneLimits;
  /** Most owners cached per node. @default 10000 */
  cacheEntries?: number;
  /** Oldest a cached answer may be, in ms, should an invalidation be lost. @default 60000 */
  cacheMaxAgeMs?: number;
  now?: () => number;
}

interface Entry {
  policy: CompiledPolicy | null;
  at: number;
}

export class RedisPolicyStore implements PolicySource {
  readonly channel: string;
  /** The hint -> owner index (see the header). */
  readonly ownersKey: string;
  /**
   * Called on every invalidation: with the owner whose policy changed, or
   * with undefined when the whole cache was dropped (a reconnection). The
   * relay's enforcer drops what it derived from the old policies.
   */
  readonly changeListeners = new Set<(owner: string | undefined) => void>();
  private readonly keyPrefix: string;
  private readonly limits: MembraneLimits;
  private readonly cacheEntries: number;
  private readonly cacheMaxAgeMs: number;
  private readonly now: () => number;
  private readonly cache = new Map<string, Entry>();
  private readonly generations = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<CompiledPolicy | null>>();
  /** Bumped when the whole cache is dropped; reads from before never store. */
  private epoch = 0;
  private subscribed = false;
  private started = false;
  private readonly onMessage = (channel: string, owner: string): void => {
    if (channel === this.channel) this.invalidate(owner);
  };
  private readonly onReady = (): void => {
    // Reconnected: invalidations sent while away are lost, so everything cached is suspect. ioredis
    // re-sends SUBSCRIBE (autoResubscribe) before it reports ready; a write in the instant before Redis
    // processes it is covered by cacheMaxAgeMs.
    this.dropAll();
    if (this.started) this.subscribed = true;
  };
  private readonly onClose = (): void => {
    this.subscribed = false;
    this.dropAll();
  };
  /** Cache hits and misses, for metrics. */
  readonly stats = { hits: 0, misses: 0, invalidations: 0 };

  constructor(
    private readonly redis: RedisClient,
    private readonly subscriber: Subscriber,
    options: PolicyStoreOptions,
  ) {
    this.keyPrefix = `${options.prefix}:mb:policy:`;
    this.channel = `${options.prefix}:mb:policy-changed`;
    this.ownersKey = `${options.prefix}:mb:owners`;
    this.limits = options.limits;
    this.cacheEntries = options.cacheEntries ?? 10_000;
    this.cacheMaxAgeMs = options.cacheMaxAgeMs ?? 60_000;
    requireInt('cacheEntries', this.cacheEntries, 0);
    requireInt('cacheMaxAgeMs', this.cacheMaxAgeMs, 0);
    this.now = options.now ?? Date.now;
  }

  /** Subscribes to invalidations; until it resolves nothing is cached. */
  async start(): Promise<void> {
    // Wait for the first connection before listening for 'ready': only a *re*connection drops the cache.
    if (this.subscriber.status !== 'ready') {
      if (this.subscriber.status === 'wait') this.subscriber.connect().catch(() => {});
      await new Promise<void>((resolve, reject) => {
        const onReady = () => {
          this.subscriber.off('end', onEnd);
          resolve();
        };
        const onEnd = () => {
          this.subscriber.off('ready', onReady);
          reject(toStoreError(new Error('the subscriber connection ended before it was ready')));
        };
        this.subscriber.once('ready', onReady);
        this.subscriber.once('end', onEnd);
      });
    }
    this.subscriber.on('message', this.onMessage);
    this.subscriber.on('ready', this.onReady);
    this.subscriber.on('close', this.onClose);
    try {
      await this.subscriber.subscribe(this.channel);
    } catch (err) {
      throw toStoreError(err);
    }
    this.dropAll();
    this.started = true;
    this.subscribed = true;
  }

  /** Unsubscribes; the store keeps answering, uncached. */
  async stop(): Promise<void> {
    this.started = false;
    this.subscribed = false;
    this.subscriber.off('message', this.onMessage);
    this.subscriber.off('ready', this.onReady);
    this.subscriber.off('close', this.onClose);
    this.dropAll();
    await this.subscriber.unsubscribe(this.channel).catch(() => {});
  }

  key(owner: string): string {
    return this.keyPrefix + owner;
  }

  /**
   * Validates, stores and announces an owner's policy: JSON text, UTF-8 bytes,
   * or a parsed JSON value. Throws POLICY_INVALID naming the field; returns
   * the compiled form.
   */
  async put(owner: string, policy: unknown): Promise<CompiledPolicy> {
    const did = canonicalDid(owner);
    const parsed =
      typeof policy === 'string' || policy instanceof Uint8Array
        ? parsePolicy(policy, this.limits)
        : validatePolicy(policy, this.limits);
    const compiled = new CompiledPolicy(did, parsed);
    const ownerHint = Buffer.from(hintFromDid(did)).toString('hex');
    try {
      if (isCluster(this.redis)) {
        // The policy and the owners index live in different Cluster slots: one after the other,
        // the index only once the policy is stored (a retried put repairs a half-done one).
        await this.redis.set(this.key(did), policyToJson(parsed));
        await this.redis.hset(this.ownersKey, ownerHint, did);
        await this.redis.publish(this.channel, did);
      } else {
        await this.redis
          .multi()
          .set(this.key(did), policyToJson(parsed))
          .hset(this.ownersKey, ownerHint, did)
          .publish(this.channel, did)
          .exec();
      }
    } catch (err) {
      throw toStoreError(err);
    }
    // This node too: its own message arrives later, and a decision in between must not see the old policy.
    this.invalidate(did);
    return compiled;
  }

  /** Removes an owner's policy: the relay's default applies to it again. */
  async remove(owner: string): Promise<boolean> {
    const did = canonicalDid(owner);
    let deleted: number;
    try {
      const results = await this.redis.multi().del(this.key(did)).publish(this.channel, did).exec();
      deleted = Number(results?.[0]?.[1] ?? 0);
    } catch (err) {
      throw toStoreError(err);
    }
    this.invalidate(did);
    return deleted === 1;
  }

  /** The stored policy as the normalized value (uncached; for the admin API). */
  async get(owner: string): Promise<MembranePolicy | null> {
    const raw = await this.redis.get(this.key(canonicalDid(owner))).catch((e) => {
      throw toStoreError(e);
    });
    return raw === null ? null : parsePolicy(raw, this.limits);
  }

  /**
   * The owner DID behind a routing hint, if that owner ever stored a policy
   * (the index is kept when a policy is removed: the hint still names that
   * DID). Uncached: the enforcer caches it.
   */
  async ownerOfHint(hint: Uint8Array): Promise<string | null> {
    try {
      return await this.redis.hget(this.ownersKey, Buffer.from(hint).toString('hex'));
    } catch (err) {
      throw toStoreError(err);
    }
  }

  policyFor(owner: string): CompiledPolicy | null | Promise<CompiledPolicy | null> {
    const hit = this.cache.get(owner);
    if (hit !== undefined && this.now() - hit.at <= this.cacheMaxAgeMs) {
      this.stats.hits++;
      // Re-inserted: the Map's first key is the least recently used.
      this.cache.delete(owner);
      this.cache.set(owner, hit);
      return hit.policy;
    }
    this.stats.misses++;
    const pending = this.inflight.get(owner);
    if (pending) return pending;
    const read: Promise<CompiledPolicy | null> = this.load(owner).finally(() => {
      if (this.inflight.get(owner) === read) this.inflight.delete(owner);
    });
    this.inflight.set(owner, read);
    return read;
  }

  private async load(owner: string): Promise<CompiledPolicy | null> {
    const generation = this.generations.get(owner) ?? 0;
    const epoch = this.epoch;
    let raw: string | null;
    try {
      raw = await this.redis.get(this.key(owner));
    } catch (err) {
      throw toStoreError(err);
    }
    // Stored policies were validated on the way in; a policy that no longer validates (e.g. lowered limits) fails closed here.
    const policy = raw === null ? null : new CompiledPolicy(owner, parsePolicy(raw, this.limits));
    if (
      this.subscribed &&
      this.cacheEntries > 0 &&
      epoch === this.epoch &&
      generation === (this.generations.get(owner) ?? 0)
    ) {
      if (this.cache.size >= this.cacheEntries) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(owner, { policy, at: this.now() });
    }
    return policy;
  }

  private invalidate(owner: string): void {
    this.stats.invalidations++;
    this.cache.delete(owner);
    // A read already under way may return the old policy: later callers must not join it.
    this.inflight.delete(owner);
    this.generations.set(owner, (this.generations.get(owner) ?? 0) + 1);
    for (const listener of this.changeListeners) listener(owner);
    // The map of generations is only needed while reads are in flight; keep it from growing for ever.
    if (this.generations.size > this.cacheEntries * 2 + 1024 && this.inflight.size === 0) this.generations.clear();
  }

  private dropAll(): void {
    this.epoch++;
    this.cache.clear();
    for (const listener of this.changeListeners) listener(undefined);
  }

  /** Owners cached now (for tests and metrics). */
  get cachedOwners(): number {
    return this.cache.size;
  }
}
