/**
 * The prekey service's store (docs/relay.md#prekeys; frames in
 * docs/protocol.md). Relay nodes are stateless: a peer's prekeys live in
 * Redis, as keys that share the Redis Cluster hash tag `{hintHex}` of the
 * owner with each other and with its presence hash (presence.ts), so one Lua
 * script touches all of them atomically:
 *
 *   ${prefix}:pk:{hintHex}:m  HASH   s → the signed keys: a PrekeyBundle encoding without one-time keys
 *                                    x → highest one-time X25519 prekey id ever stored
 *                                    k → highest one-time KEM prekey id ever stored
 *   ${prefix}:pk:{hintHex}:x  LIST   one-time X25519 prekeys, oldest first: u32 id ‖ 32-byte key (36 bytes)
 *   ${prefix}:pk:{hintHex}:k  LIST   one-time ML-KEM-768 prekeys, oldest first:
 *                                    u32 id ‖ 1184-byte key ‖ 64-byte signature (1252 bytes)
 *   ${prefix}:pk:{hintHex}:r  STRING fetches of this peer's prekeys in the current minute (cluster-wide limit)
 *
 * - Publish replaces the signed keys and appends one-time keys whose id is
 *   above the highest id ever stored for their kind, while the list is below
 *   the cap; the rest are skipped. So a retried publication changes nothing
 *   (idempotent), and an id is never stored twice: a one-time key can only be
 *   handed out once even when a client publishes the same keys again.
 * - Fetch pops (LPOP) one one-time key of each kind in the same script that
 *   reads the signed keys, so concurrent fetches through any number of nodes
 *   never get the same one-time key. With none left the bundle carries the
 *   signed X25519 prekey and the last-resort KEM key only. Beyond the
 *   per-target fetch rate no one-time key is consumed (the bundle is still
 *   served): draining a peer's one-time keys is slowed, and an attacker can
 *   neither drain them faster nor deny the peer's bundle to others.
 * - Every key expires `ttlSeconds` after the owner's last publication.
 *
 * Time for the rate window is Redis's (PEXPIRE); nothing here depends on the
 * node's clock except presence leases, compared with the caller's `nowMs`.
 */

import { hintToHex } from '@libertaria/identity';
import {
  decodePrekeyBundle,
  encodePrekeyBundle,
  MLKEM768_PUBLIC_KEY_SIZE,
  ONE_TIME_X25519_KEY_ENCODED_SIZE,
  type PrekeyBundle,
  type PrekeyPublication,
  PrekeyStatusFlags,
  type PrekeyStatusFrame,
  RelayError,
  SIGNED_KEM_KEY_ENCODED_SIZE,
} from '@libertaria/protocol';
import { presenceKey } from './presence.js';
import type { RedisClient } from './redis-connection.js';
import { toStoreError } from './store-error.js';

export interface PrekeyStoreOptions {
  /** Key prefix (RELAY_REDIS_PREFIX). */
  prefix: string;
  /** Most one-time prekeys of each kind per peer (RELAY_PREKEY_MAX_ONE_TIME). */
  maxOneTime: number;
  /** A fetch leaving fewer than this of a kind it consumed asks for a notice (RELAY_PREKEY_LOW_WATER). */
  lowWater: number;
  /** Fetches of one peer per minute that may consume one-time keys (RELAY_PREKEY_TARGET_FETCHES_PER_MINUTE). */
  targetFetchesPerMinute: number;
  /** Lifetime of a peer's prekeys after its last publication (RELAY_PREKEY_TTL_SECONDS). */
  ttlSeconds: number;
}

/** What the store holds for a peer. Ids are undefined while no one-time key of that kind was ever stored. */
export interface PrekeyCounts {
  /** Signed keys are stored (a fetch gets a bundle). */
  published: boolean;
  oneTimeX25519: number;
  oneTimeKem: number;
  lastOneTimeX25519Id: number | undefined;
  lastOneTimeKemId: number | undefined;
}

export interface PrekeyPublishResult extends PrekeyCounts {
  /** One-time keys of this publication that were stored (the others were at or below the last id, or over the cap). */
  addedX25519: number;
  addedKem: number;
}

export type PrekeyFetchResult =
  | { status: 'not_found' }
  | {
      /** ok: one-time keys were taken if any were left; throttled: the per-target rate was exceeded, none taken. */
      status: 'ok' | 'throttled';
      /** Freshly allocated: nothing in it is a view into a Redis reply shared with anyone else. */
      bundle: PrekeyBundle;
      /** The owner's counts after this fetch. */
      counts: PrekeyCounts;
      /**
       * Present when the fetch took a one-time key and left fewer than the
       * low-water mark of its kind: the node ids holding a live presence lease
       * on the owner at that instant (possibly none), to be told.
       */
      notify?: string[];
    };

const Code = { OK: 0, NOT_FOUND: 1, THROTTLED: 2 } as const;
const WINDOW_MS = 60_000;

const PUBLISH_LUA = `--[[
  Stores a peer's prekey publication.
  Input:
    KEYS[1] m  HASH s -> signed keys, x / k -> highest one-time id stored per kind
    KEYS[2] x  LIST one-time X25519 entries
    KEYS[3] k  LIST one-time KEM entries
    ARGV[1] signed keys (a PrekeyBundle encoding without one-time keys), replaces what is stored
    ARGV[2] cap: most entries per list
    ARGV[3] '1': empty both lists first (the high-water ids are kept), '0': append
    ARGV[4] ttlMs: every key expires this long from now
    ARGV[5] n, then n pairs (id, entry) of X25519 entries, then m, then m pairs of KEM entries
  Output: {addedX25519, addedKem, lenX, lenK, lastX25519Id, lastKemId}   ids -1: none ever stored
  An entry is appended only if its id is above the highest id stored for its
  kind and its list is below the cap; the highest id moves to it. The rest
  are skipped, so a retried publication is a no-op.
]]
local m, x, k = KEYS[1], KEYS[2], KEYS[3]
local cap = tonumber(ARGV[2])
redis.call('HSET', m, 's', ARGV[1])
if ARGV[3] == '1' then redis.call('DEL', x, k) end
local function append(list, field, at)
  local n = tonumber(ARGV[at])
  local last = tonumber(redis.call('HGET', m, field) or '-1')
  local room = cap - redis.call('LLEN', list)
  local batch = {}
  for i = 1, n do
    local id = tonumber(ARGV[at + 2 * i - 1])
    if id > last and #batch < room then
      batch[#batch + 1] = ARGV[at + 2 * i]
      last = id
    end
  end
  if #batch > 0 then
    redis.call('RPUSH', list, unpack(batch))
    redis.call('HSET', m, field, last)
  end
  return at + 2 * n + 1, #batch
end
local nextAt, addedX = append(x, 'x', 5)
local _, addedK = append(k, 'k', nextAt)
local ttl = ARGV[4]
redis.call('PEXPIRE', m, ttl)
redis.call('PEXPIRE', x, ttl)
redis.call('PEXPIRE', k, ttl)
return {addedX, addedK, redis.call('LLEN', x), redis.call('LLEN', k),
  tonumber(redis.call('HGET', m, 'x') or '-1'), tonumber(redis.call('HGET', m, 'k') or '-1')}
`;

const FETCH_LUA = `--[[
  Hands out a peer's bundle, consuming one one-time key of each kind.
  Input:
    KEYS[1] m, KEYS[2] x, KEYS[3] k   (as in publish)
    KEYS[4] r  STRING fetch count of the current window
    KEYS[5] p  presence HASH nodeId -> leaseExpiryMs (presence.ts; same hash tag)
    ARGV[1] fetches per window that may consume one-time keys
    ARGV[2] window length in ms
    ARGV[3] nowMs (for presence leases)
    ARGV[4] lowWater
    ARGV[5] '1' to count and consume; '0' (anonymous fetches) neither counts
            against the window nor consumes: the bundle's last-resort keys only
  Output: {1} not found (no signed keys), or
    {code, signed, xEntry|nil, kEntry|nil, lenX, lenK, lastX25519Id, lastKemId, node...}
    code 0: entries popped if any were left; 2: over the window's limit, nothing popped.
    The trailing node ids (live presence leases on the owner) are present only
    when an entry was popped and left its list below lowWater.
]]
local m, x, k, r, p = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local signed = redis.call('HGET', m, 's')
if not signed then return {1} end
local code, ex, ek = 2, false, false
local count = math.huge
if ARGV[5] == '1' then
  count = redis.call('INCR', r)
  if redis.call('PTTL', r) < 0 then redis.call('PEXPIRE', r, ARGV[2]) end
end
if count <= tonumber(ARGV[1]) then
  code = 0
  ex = redis.call('LPOP', x)
  ek = redis.call('LPOP', k)
end
local lx, lk = redis.call('LLEN', x), redis.call('LLEN', k)
local out = {code, signed, ex, ek, lx, lk,
  tonumber(redis.call('HGET', m, 'x') or '-1'), tonumber(redis.call('HGET', m, 'k') or '-1')}
local low = tonumber(ARGV[4])
if (ex and lx < low) or (ek and lk < low) then
  local now = tonumber(ARGV[3])
  local holders = redis.call('HGETALL', p)
  for i = 1, #holders, 2 do
    if tonumber(holders[i + 1]) > now then out[#out + 1] = holders[i] end
  end
end
return out
`;

const STATUS_LUA = `--[[
  Reads what is stored for a peer.
  Input: KEYS[1] m, KEYS[2] x, KEYS[3] k   (as in publish)
  Output: {published (0/1), lenX, lenK, lastX25519Id, lastKemId}   ids -1: none ever stored
]]
local m, x, k = KEYS[1], KEYS[2], KEYS[3]
return {redis.call('HEXISTS', m, 's'), redis.call('LLEN', x), redis.call('LLEN', k),
  tonumber(redis.call('HGET', m, 'x') or '-1'), tonumber(redis.call('HGET', m, 'k') or '-1')}
`;

const CMD = {
  publish: 'libertariaPrekeyPublish',
  fetch: 'libertariaPrekeyFetchBuffer',
  status: 'libertariaPrekeyStatus',
} as const;

type ScriptArg = string | number | Buffer;
type ScriptCall = (...args: ScriptArg[]) => Promise<unknown>;
type PrekeyCommands = { [K in (typeof CMD)[keyof typeof CMD]]: ScriptCall };

function reply(value: unknown): unknown[] {
  if (!Array.isArray(value)) throw new RelayError('INTERNAL', 'prekey script returned a non-array reply');
  return value;
}
function int(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new RelayError('INTERNAL', `prekey script returned ${String(value)} where an integer belongs`);
  }
  return value;
}
function optionalId(value: unknown): number | undefined {
  const n = int(value);
  return n < 0 ? undefined : n;
}
function entry(value: unknown, size: number, what: string): Buffer | undefined {
  if (value === null || value === undefined) return undefined;
  if (!Buffer.isBuffer(value) || value.length !== size) {
    throw new RelayError('INTERNAL', `stored ${what} is not ${size} bytes`);
  }
  return value;
}

function u32(id: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(id, 0);
  return b;
}

function countsFrom(values: unknown[], published: boolean): PrekeyCounts {
  return {
    published,
    oneTimeX25519: int(values[0]),
    oneTimeKem: int(values[1]),
    lastOneTimeX25519Id: optionalId(values[2]),
    lastOneTimeKemId: optionalId(values[3]),
  };
}

export class PrekeyStore {
  private readonly commands: PrekeyCommands;
  private readonly prefix: string;
  readonly maxOneTime: number;
  readonly lowWater: number;
  private readonly targetFetchesPerMinute: number;
  private readonly ttlMs: number;

  constructor(
    private readonly redis: RedisClient,
    options: PrekeyStoreOptions,
  ) {
    for (const [name, value, min] of [
      ['maxOneTime', options.maxOneTime, 1],
      ['lowWater', options.lowWater, 0],
      ['targetFetchesPerMinute', options.targetFetchesPerMinute, 1],
      ['ttlSeconds', options.ttlSeconds, 1],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < min) {
        throw new RelayError('BAD_FIELD', `${name} must be an integer >= ${min}, got ${value}`);
      }
    }
    this.prefix = options.prefix;
    this.maxOneTime = options.maxOneTime;
    this.lowWater = options.lowWater;
    this.targetFetchesPerMinute = options.targetFetchesPerMinute;
    this.ttlMs = options.ttlSeconds * 1000;
    // Names are namespaced: the connection is shared with the durable store's scripts.
    redis.defineCommand('libertariaPrekeyPublish', { numberOfKeys: 3, lua: PUBLISH_LUA });
    redis.defineCommand('libertariaPrekeyFetch', { numberOfKeys: 5, lua: FETCH_LUA });
    redis.defineCommand('libertariaPrekeyStatus', { numberOfKeys: 3, lua: STATUS_LUA });
    this.commands = redis as unknown as PrekeyCommands;
  }

  /** The owner's keys [m, x, k, r]; all share the hash tag {hintHex}. */
  keys(owner: Uint8Array): [string, string, string, string] {
    const base = `${this.prefix}:pk:{${hintToHex(owner)}}:`;
    return [`${base}m`, `${base}x`, `${base}k`, `${base}r`];
  }

  /**
   * Whether `owner` has published prekeys that have not expired (one
   * EXISTS): RELAY_DURABLE_REQUIRE_PREKEYS stores durable frames only for
   * such recipients (budgets.ts caches the answer).
   */
  async hasPublished(owner: Uint8Array): Promise<boolean> {
    try {
      return (await this.redis.exists(this.keys(owner)[0])) === 1;
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /**
   * Stores a publication (already verified by the caller) for `owner`: the
   * signed keys replace what is stored; one-time keys are appended as the
   * script says (ids above the highest stored, up to the cap). `replace`
   * empties both one-time lists first. Everything is copied before this
   * returns, so `pub` may be a view into a transport buffer.
   */
  async publish(owner: Uint8Array, pub: PrekeyPublication, replace: boolean): Promise<PrekeyPublishResult> {
    const [m, x, k] = this.keys(owner);
    const signed = Buffer.from(
      encodePrekeyBundle({
        identityKey: pub.identityKey,
        identityDhKey: pub.identityDhKey,
        signedPrekey: pub.signedPrekey,
        lastResortKemPrekey: pub.lastResortKemPrekey,
      }),
    );
    const args: ScriptArg[] = [m, x, k, signed, this.maxOneTime, replace ? '1' : '0', this.ttlMs];
    args.push(pub.oneTimePrekeys.length);
    for (const key of pub.oneTimePrekeys) args.push(key.id, Buffer.concat([u32(key.id), key.publicKey]));
    args.push(pub.oneTimeKemPrekeys.length);
    for (const key of pub.oneTimeKemPrekeys) {
      args.push(key.id, Buffer.concat([u32(key.id), key.publicKey, key.signature]));
    }
    let result: unknown[];
    try {
      result = reply(await this.commands.libertariaPrekeyPublish(...args));
    } catch (err) {
      throw toStoreError(err);
    }
    return { addedX25519: int(result[0]), addedKem: int(result[1]), ...countsFrom(result.slice(2), true) };
  }

  /**
   * Hands out `target`'s bundle (see the module comment); `not_found` when it
   * published nothing (or it expired). `consume: false` (anonymous requesters,
   * whose ephemeral sessions use the last-resort keys) takes no one-time key
   * and does not count against the target's fetch window; the status is then
   * `throttled`, like any bundle without one-time keys.
   */
  async fetch(target: Uint8Array, nowMs: number = Date.now(), consume = true): Promise<PrekeyFetchResult> {
    const [m, x, k, r] = this.keys(target);
    const presence = presenceKey(this.prefix, target);
    let result: unknown[];
    try {
      result = reply(
        await this.commands.libertariaPrekeyFetchBuffer(
          m,
          x,
          k,
          r,
          presence,
          this.targetFetchesPerMinute,
          WINDOW_MS,
          nowMs,
          this.lowWater,
          consume ? '1' : '0',
        ),
      );
    } catch (err) {
      throw toStoreError(err);
    }
    const code = int(result[0]);
    if (code === Code.NOT_FOUND) return { status: 'not_found' };
    if (code !== Code.OK && code !== Code.THROTTLED) {
      throw new RelayError('INTERNAL', `prekey fetch script returned unknown code ${code}`);
    }
    const signed = result[1];
    if (!Buffer.isBuffer(signed)) throw new RelayError('INTERNAL', 'stored signed prekeys are not binary');
    let bundle: PrekeyBundle;
    try {
      // A copy first: decoded fields are views, and the bundle must not alias the reply buffer.
      bundle = decodePrekeyBundle(Uint8Array.from(signed));
    } catch (err) {
      throw new RelayError('INTERNAL', `stored signed prekeys do not decode: ${(err as Error).message}`);
    }
    const ex = entry(result[2], ONE_TIME_X25519_KEY_ENCODED_SIZE, 'one-time X25519 prekey');
    if (ex) bundle.oneTimePrekey = { id: ex.readUInt32BE(0), publicKey: new Uint8Array(ex.subarray(4)) };
    const ek = entry(result[3], SIGNED_KEM_KEY_ENCODED_SIZE, 'one-time KEM prekey');
    if (ek) {
      const keyEnd = 4 + MLKEM768_PUBLIC_KEY_SIZE;
      bundle.oneTimeKemPrekey = {
        id: ek.readUInt32BE(0),
        publicKey: new Uint8Array(ek.subarray(4, keyEnd)),
        signature: new Uint8Array(ek.subarray(keyEnd)),
      };
    }
    const counts = countsFrom(result.slice(4, 8), true);
    const out: PrekeyFetchResult = { status: code === Code.OK ? 'ok' : 'throttled', bundle, counts };
    // The same condition the script used to decide whether to list the holders.
    if ((ex && counts.oneTimeX25519 < this.lowWater) || (ek && counts.oneTimeKem < this.lowWater)) {
      out.notify = result.slice(8).map((h) => (Buffer.isBuffer(h) ? h.toString() : String(h)));
    }
    return out;
  }

  /** The PREKEY_STATUS frame telling `owner` its counts; `requestId` zero for an unsolicited notice. */
  statusFrame(owner: Uint8Array, requestId: Uint8Array, counts: PrekeyCounts): PrekeyStatusFrame {
    let flags = 0;
    if (counts.published) flags |= PrekeyStatusFlags.PUBLISHED;
    if (counts.lastOneTimeX25519Id !== undefined) flags |= PrekeyStatusFlags.X25519_ID;
    if (counts.lastOneTimeKemId !== undefined) flags |= PrekeyStatusFlags.KEM_ID;
    return {
      type: 'PREKEY_STATUS',
      hint: owner,
      requestId,
      flags,
      // Lists never exceed the cap (at most 10,000), but a cap lowered after the fact must not overflow u16.
      oneTimeX25519: Math.min(counts.oneTimeX25519, 0xffff),
      oneTimeKem: Math.min(counts.oneTimeKem, 0xffff),
      cap: this.maxOneTime,
      lowWater: this.lowWater,
      lastOneTimeX25519Id: counts.lastOneTimeX25519Id ?? 0,
      lastOneTimeKemId: counts.lastOneTimeKemId ?? 0,
    };
  }

  /** What is stored for `owner`. */
  async status(owner: Uint8Array): Promise<PrekeyCounts> {
    const [m, x, k] = this.keys(owner);
    let result: unknown[];
    try {
      result = reply(await this.commands.libertariaPrekeyStatus(m, x, k));
    } catch (err) {
      throw toStoreError(err);
    }
    return countsFrom(result.slice(1), int(result[0]) === 1);
  }
}
