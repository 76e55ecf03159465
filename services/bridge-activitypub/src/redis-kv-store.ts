/**
 * Fedify's `KvStore` on our ioredis connections (`@libertaria/redis`): one
 * Redis server or a Redis Cluster.
 *
 * - **Keys**: `<prefix><JSON of the Fedify key>`, e.g.
 *   `lr-ap:kv:["_fedify","publicKey","https://host/users/a#main-key"]`.
 *   JSON keeps the key's parts apart whatever characters they hold, and
 *   `list` reads the parts back from the Redis key. One logical entry is one
 *   Redis key (a string), so every command touches one slot: no multi-key
 *   command is ever sent, and a Cluster spreads the entries over its shards.
 *   Leave the prefix without a `{…}` hash tag for that (a tag would put every
 *   entry in one slot; that works too, on one shard).
 * - **Values**: canonical JSON (json-value.ts: object keys sorted), at most
 *   `maxValueBytes` (default 1 MiB); a larger value is refused with
 *   `KvValueTooLargeError` before anything is written. `get` returns the
 *   parsed JSON (objects come back with their keys sorted). Setting
 *   `undefined` deletes the entry (JSON has no encoding for it; `get` then
 *   answers undefined, as for a value never set).
 * - **TTL**: `SET … PX`; Redis expires the entry (a TTL of zero or less
 *   deletes it at once). Without a TTL, `set` and `cas` leave no expiry
 *   (an earlier one is dropped, as Fedify's MemoryKvStore does).
 * - **cas**: one Lua script on the entry's key: the stored bytes must equal
 *   the canonical encoding of `expectedValue` (`undefined`: the entry must be
 *   absent); then `newValue` is written (`undefined`: the entry is deleted).
 *   Canonical encoding makes this JSON deep equality.
 * - **list(prefix)**: SCAN with MATCH on every primary (on one server: that
 *   server), each key read with its own GET. Chosen over a per-prefix index
 *   because entries expire on their own (an index would keep dead members and
 *   need a sweeper) and because Fedify lists rarely (its circuit breaker's
 *   one-time sweep of legacy states). Cost: a full pass over the keyspace of
 *   every primary per call, `scanCount` keys per round trip. SCAN may return
 *   a key twice (rehashing): duplicates are dropped (the keys seen are kept
 *   per call). An entry written or expiring during the pass may or may not be
 *   listed; a failover during the pass makes `list` throw (call it again).
 */
import type { KvKey, KvStore, KvStoreListEntry, KvStoreSetOptions } from '@fedify/fedify';
import { isCluster, type RedisClient } from '@libertaria/redis';
import type { Redis } from 'ioredis';
import { canonicalJson, utf8Length } from './json-value.js';

export const DEFAULT_KV_PREFIX = 'lr-ap:kv:';
export const DEFAULT_MAX_VALUE_BYTES = 1024 * 1024;

export interface RedisKvStoreOptions {
  /** Prefix of every Redis key of the store (default `lr-ap:kv:`). */
  readonly prefix?: string;
  /** Largest value, in bytes of its JSON encoding (default 1 MiB). */
  readonly maxValueBytes?: number;
  /** SCAN's COUNT hint for `list` (default 1000). */
  readonly scanCount?: number;
}

/** A value whose JSON encoding is over the store's limit; nothing was written. */
export class KvValueTooLargeError extends RangeError {
  constructor(
    readonly key: KvKey,
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(`KvStore value for ${JSON.stringify(key)} is ${bytes} bytes of JSON, over the limit of ${limit} bytes`);
    this.name = 'KvValueTooLargeError';
  }
}

/**
 * KEYS[1] the entry. ARGV: expected present ('1'/'0'), expected encoding,
 * new present ('1'/'0'), new encoding, TTL in ms ('0': none).
 */
const CAS_LUA = `
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
if ARGV[3] == '0' then
  redis.call('DEL', KEYS[1])
elseif ARGV[5] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[4])
end
return 1
`;
const CAS_COMMAND = 'lrFedifyKvCas';
type CasClient = {
  [CAS_COMMAND](key: string, ...args: string[]): Promise<number>;
};

/** What a Temporal.Duration offers that the store uses (Fedify passes @js-temporal/polyfill's). */
interface DurationLike {
  total(options: { unit: 'millisecond' }): number;
}

/** Milliseconds of a TTL: undefined without one; zero or less means expired at once. */
function ttlMs(options: KvStoreSetOptions | undefined): number | undefined {
  const ttl = options?.ttl as DurationLike | undefined | null;
  if (ttl == null) return undefined;
  let ms: number;
  try {
    ms = ttl.total({ unit: 'millisecond' });
  } catch (error) {
    throw new TypeError(`KvStore ttl must be a Temporal.Duration in days or less: ${(error as Error).message}`);
  }
  if (!Number.isFinite(ms)) throw new TypeError('KvStore ttl is not a finite duration');
  return ms <= 0 ? 0 : Math.ceil(ms);
}

function checkKey(key: KvKey): void {
  if (!Array.isArray(key) || key.length === 0 || !key.every((part) => typeof part === 'string')) {
    throw new TypeError('a KvStore key is a non-empty array of strings');
  }
}

/** `*`, `?`, `[`, `]` and `\` literal in a SCAN MATCH pattern. */
function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

export class RedisKvStore implements KvStore {
  readonly prefix: string;
  readonly maxValueBytes: number;
  private readonly scanCount: number;

  constructor(
    private readonly redis: RedisClient,
    options: RedisKvStoreOptions = {},
  ) {
    this.prefix = options.prefix ?? DEFAULT_KV_PREFIX;
    this.maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
    this.scanCount = options.scanCount ?? 1000;
    if (this.prefix.length === 0) throw new TypeError('RedisKvStore: the prefix must not be empty');
    if (!Number.isSafeInteger(this.maxValueBytes) || this.maxValueBytes < 1) {
      throw new TypeError('RedisKvStore: maxValueBytes must be a positive integer');
    }
    if (!(CAS_COMMAND in redis)) redis.defineCommand(CAS_COMMAND, { numberOfKeys: 1, lua: CAS_LUA });
  }

  /** The Redis key of an entry. */
  redisKey(key: KvKey): string {
    checkKey(key);
    return this.prefix + JSON.stringify(key);
  }

  private encode(key: KvKey, value: unknown): string | undefined {
    const json = canonicalJson(value);
    if (json === undefined) return undefined;
    const bytes = utf8Length(json);
    if (bytes > this.maxValueBytes) throw new KvValueTooLargeError(key, bytes, this.maxValueBytes);
    return json;
  }

  private decode(redisKey: string, stored: string): unknown {
    try {
      return JSON.parse(stored);
    } catch {
      throw new Error(`KvStore entry ${redisKey} does not hold JSON (written by something else?)`);
    }
  }

  async get<T = unknown>(key: KvKey): Promise<T | undefined> {
    const redisKey = this.redisKey(key);
    const stored = await this.redis.get(redisKey);
    return stored === null ? undefined : (this.decode(redisKey, stored) as T);
  }

  async set(key: KvKey, value: unknown, options?: KvStoreSetOptions): Promise<void> {
    const redisKey = this.redisKey(key);
    const json = this.encode(key, value);
    const ms = ttlMs(options);
    if (json === undefined || ms === 0) await this.redis.del(redisKey);
    else if (ms === undefined) await this.redis.set(redisKey, json);
    else await this.redis.set(redisKey, json, 'PX', ms);
  }

  async delete(key: KvKey): Promise<void> {
    await this.redis.del(this.redisKey(key));
  }

  async cas(key: KvKey, expectedValue: unknown, newValue: unknown, options?: KvStoreSetOptions): Promise<boolean> {
    const redisKey = this.redisKey(key);
    const expected = canonicalJson(expectedValue);
    let next = this.encode(key, newValue);
    const ms = ttlMs(options);
    if (ms === 0) next = undefined; // written and expired at once: deleted
    const swapped = await (this.redis as unknown as CasClient)[CAS_COMMAND](
      redisKey,
      expected === undefined ? '0' : '1',
      expected ?? '',
      next === undefined ? '0' : '1',
      next ?? '',
      String(ms ?? 0),
    );
    return swapped === 1;
  }

  async *list(prefix?: KvKey): AsyncIterable<KvStoreListEntry> {
    if (prefix !== undefined) checkKey(prefix);
    // `["a","b"]` also starts `["a","b",…]`: the encoding without its `]` is the prefix of both.
    const start = prefix === undefined ? '' : JSON.stringify(prefix).slice(0, -1);
    const pattern = `${globEscape(this.prefix + start)}*`;
    for (const node of await this.primaries()) {
      const seen = new Set<string>();
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', this.scanCount);
        cursor = next;
        const fresh = keys.filter((k) => !seen.has(k));
        for (const k of fresh) seen.add(k);
        // Through the main client: on a Cluster it follows a slot that moved meanwhile.
        const values = await Promise.all(fresh.map((k) => this.redis.get(k)));
        for (let i = 0; i < fresh.length; i++) {
          const stored = values[i];
          const redisKey = fresh[i] as string;
          if (stored === null || stored === undefined) continue; // expired or deleted since the SCAN
          const key = this.parseRedisKey(redisKey);
          if (key === undefined) continue;
          if (prefix !== undefined && !prefix.every((part, j) => key[j] === part)) continue;
          yield { key, value: this.decode(redisKey, stored) };
        }
      } while (cursor !== '0');
    }
  }

  /** The Fedify key of a Redis key under the prefix, or undefined for a key the store did not write. */
  private parseRedisKey(redisKey: string): KvKey | undefined {
    if (!redisKey.startsWith(this.prefix)) return undefined;
    try {
      const key = JSON.parse(redisKey.slice(this.prefix.length)) as unknown;
      if (Array.isArray(key) && key.length > 0 && key.every((p) => typeof p === 'string'))
        return key as unknown as KvKey;
    } catch {
      // not ours
    }
    return undefined;
  }

  /** The servers to SCAN: the server itself, or every primary of a Cluster. */
  private async primaries(): Promise<Redis[]> {
    const redis = this.redis;
    if (!isCluster(redis)) return [redis];
    if (redis.status === 'wait') await redis.connect();
    let nodes = redis.nodes('master');
    if (nodes.length === 0) {
      // The slot map is not loaded yet: any command waits for it (or fails as the client is configured).
      await redis.exists(this.prefix);
      nodes = redis.nodes('master');
    }
    return nodes;
  }
}
