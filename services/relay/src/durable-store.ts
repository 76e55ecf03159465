// Size: about 1,830 lines, most of them the Lua scripts (enqueue in two forms, one text) with
// their KEYS/ARGV headers, each next to the method that calls it: a script and its caller change
// together (key order, argument encoding, reply shape), so they are read and reviewed together.
/**
 * The durable per-recipient queue behind durable SEND/DELIVER/ACK/RESUME
 * (docs/durable-queue.md explains the design; docs/protocol.md the frames).
 *
 * Relay nodes are stateless: a recipient's queue lives in Redis, as six keys
 * that share the Redis Cluster hash tag `{hintHex}` so one Lua script can
 * touch all of them atomically (and so they land in one Cluster slot). A
 * frame's member is `source ‖ messageId` (the sender's 24-byte routing hint,
 * then its 16-byte id): two senders may pick the same messageId, and each
 * sender's id is its own (issue 12 item 9).
 *
 *   ${prefix}:q:{hintHex}:z  ZSET  member → position     (delivery order)
 *   ${prefix}:q:{hintHex}:d  HASH  member → frame bytes  (the DELIVER frame; its position field holds the store time)
 *   ${prefix}:q:{hintHex}:e  ZSET  member → expiresAtMs  (per-frame TTL)
 *   ${prefix}:q:{hintHex}:m  HASH  seq → last position issued, bytes → sum of stored frame sizes,
 *                                    largest → largest frame stored since the queue was last empty
 *   ${prefix}:q:{hintHex}:x  ZSET  acknowledged member → position (≤ maxAcked newest)
 *   ${prefix}:q:{hintHex}:s  HASH  source‖"f" → frames, source‖"b" → bytes that sender has queued
 *
 * Every mutation is one Lua script, so idempotency on (source, messageId),
 * the queue's and each sender's frame and byte limits, position assignment
 * and expiry are decided in one atomic step no matter how many relay nodes
 * enqueue for the same recipient at once. Every script that removes a frame
 * (ack, ackUpTo, the expiry purge inside all of them) takes it off its
 * sender's counts in `s` in the same step, so the counts cannot drift.
 * Time is always the caller's `nowMs` (never Redis TIME), so relay nodes and
 * tests control it.
 *
 * Connection requirements (see DURABLE_STORE_REDIS_OPTIONS): the relay's
 * ioredis connection must not use `enableAutoPipelining` (it keeps one batch
 * in flight per connection, so relay and Redis wait on each other: durable
 * throughput rose from 15k to 34.5k frames/s without it), and must
 * fail fast rather than queue commands while Redis is unreachable
 * (`enableOfflineQueue: false`, `maxRetriesPerRequest: 1`, `commandTimeout`),
 * so a SEND is NACKed with STORE_UNAVAILABLE instead of hanging.
 */

import { hintToHex } from '@libertaria/identity';
import {
  bytesEqualAt,
  HINT_SIZE,
  ID_SIZE,
  LibertariaError,
  MIN_ROUTED_FRAME_SIZE,
  RelayError,
  RoutedAt,
  readRoutedPosition,
  routedTtl,
  writeRoutedPosition,
} from '@libertaria/protocol';
import { type RedisOptions, ReplyError } from 'ioredis';
import { EncodedScript, type ScriptArg, sendEncoded, sendSilentHsetnx } from './encoded-script.js';
import { type PackedAcks, PendingAcks } from './pending-acks.js';
import { PerTurn } from './per-turn.js';
import { presenceKey } from './presence.js';
import { isCluster, type RedisClient } from './redis-connection.js';
import { type ReplicaCheck, type ReplicaWaiter, WAIT_KEY_LIFETIME_MS } from './replica-wait.js';
import { toStoreError } from './store-error.js';

export interface DurableStoreOptions {
  /** Key prefix (RELAY_REDIS_PREFIX). */
  prefix: string;
  /** Most frames one recipient's queue holds (RELAY_QUEUE_MAX_FRAMES). */
  maxFrames: number;
  /**
   * How many acknowledged members a queue remembers, the newest (x), so a
   * retry of one is a duplicate (RELAY_QUEUE_ACKED_IDS); default maxFrames.
   * Apart from maxFrames because x costs Redis memory per queue (about 150
   * bytes a member) and its size adds to every ACK's ZADD: a cap raised for
   * large mailboxes need not raise them too (docs/benchmarks.md).
   */
  maxAcked?: number;
  /** Most bytes (sum of stored frame sizes) one queue holds (RELAY_QUEUE_MAX_BYTES). */
  maxBytes: number;
  /** Longest TTL a sender may ask for, and the TTL of a frame that asks for 0 (RELAY_QUEUE_TTL_SECONDS). */
  maxTtlSeconds: number;
  /**
   * RELAY_DURABLE_WAIT_REPLICAS > 0: enqueue resolves once its replicas hold
   * the frame. The node's one waiter, so one WAIT per primary and turn serves
   * every kind of write (frames, hand-offs, single-use ids).
   */
  replicas?: ReplicaWaiter;
  /**
   * Most frames one sender (source hint) may hold in one recipient's queue
   * (RELAY_QUEUE_MAX_FRAMES_PER_SENDER); default maxFrames, i.e. no share of
   * its own. The relay's config decides the real default (relayQueueSenderShare).
   */
  maxFramesPerSender?: number;
  /** Most bytes one sender may hold in one recipient's queue (RELAY_QUEUE_MAX_BYTES_PER_SENDER); default maxBytes. */
  maxBytesPerSender?: number;
  /**
   * How enqueued frames reach Redis (docs/durable-queue.md#enqueue):
   * 'prewrite' (the default on one server) writes them with HSETNX before
   * the script, which then handles 40-byte members only; 'script' hands
   * them to the script. A Redis Cluster always takes 'script', and so does
   * a server found not to allow the pre-write (CLIENT REPLY, PEXPIRE NX:
   * Redis 7.0 or later, CLIENT not renamed or denied).
   */
  framesPath?: 'prewrite' | 'script';
  /**
   * Fewest frames of one script call that take the pre-write (default 16):
   * a call of fewer takes the script form, whose one request answers a
   * small call sooner (docs/benchmarks.md). Tests set 1.
   */
  prewriteMinFrames?: number;
}

/**
 * `depth`: frames in the recipient's queue after a store; `holders`: node ids
 * with a live presence lease on the recipient at that instant (both absent
 * for duplicates).
 */
export type EnqueueResult = {
  status: 'stored' | 'duplicate';
  position: number;
  depth?: number;
  holders?: string[];
};

export interface EnqueueItem {
  dest: Uint8Array;
  messageId: Uint8Array;
  frame: Uint8Array;
  ttlSeconds: number;
}

/**
 * Who hears an enqueue's outcome (enqueueTo): the relay's per-frame write
 * object, so the hot path makes no promise and no closure per frame.
 * Exactly one of the two is called, once.
 */
export interface EnqueueSink {
  /** Redis answered: stored, or a duplicate of a frame stored before. */
  enqueued(result: EnqueueResult): void;
  /** Refused (a limit, TTL_TOO_LONG, …) or not confirmed by Redis (STORE_UNAVAILABLE). */
  enqueueFailed(err: LibertariaError): void;
}

/** One item's outcome in enqueueMany: its result, or the error enqueue would have thrown (RelayError, or IdentityError INVALID_HINT). */
export type EnqueueOutcome = EnqueueResult | { status: 'rejected'; error: LibertariaError };

/** What a read of the queue will return, told as soon as Redis named the frames (fetchWithin's onNamed). */
export interface NamedFrames {
  /** The position of the last frame named (the frames returned end there, or earlier if some were removed meanwhile). */
  last: number;
  /** At least the bytes of the frames named; -1 when unknown (a read without byte limit of a queue with no m.largest). */
  bytes: number;
  /** Frames follow the last one named. */
  more: boolean;
}

/** The frames a read names, before they are read: members and positions in order (DurableStore.fetchWithin). */
interface Names {
  members: Buffer[];
  positions: number[];
  more: boolean;
  /** At least their bytes; -1 when unknown. */
  bytes: number;
  last: number;
}

/** What fetchWithin read. */
export interface FetchedFrames {
  /** The frames read, in position order. */
  frames: StoredFrame[];
  /** Frames follow `last`. */
  more: boolean;
  /**
   * The position of the last frame Redis named (afterPosition when none).
   * Frames named but gone when read (`vanished`) need no delivery: a reader
   * continues after `last`, not after its last frame, or a read naming only
   * such frames would be made again and again.
   */
  last: number;
  /**
   * Frames named that were gone when read: acknowledged or expired in
   * between (harmless), or lost from Redis (an evicting maxmemory-policy
   * removes the frames' hash; docs/deploy.md).
   */
  vanished: number;
}

export interface StoredFrame {
  position: number;
  messageId: Buffer;
  /** The stored DELIVER frame with its position written in place (RoutedAt.POSITION). */
  frame: Buffer;
  /**
   * When the frame was stored (ms since the epoch): the time its enqueue
   * call was sent, kept in the stored frame's position field until fetch
   * writes the position there. For a frame stored by an earlier relay
   * (position field 0): its expiry minus its TTL (a frame stored with TTL 0
   * took the relay's maximum TTL; should RELAY_QUEUE_TTL_SECONDS change
   * meanwhile, that is off by the change).
   */
  storedAtMs: number;
}

/**
 * ioredis options the relay's Redis connection should use with this store.
 * - enableAutoPipelining false: ioredis' auto-pipelining holds a tick's
 *   commands until the previous batch is answered; writing each command at
 *   once lets Redis work while the relay still sends (see docs/durable-queue.md).
 * - enableOfflineQueue false: while disconnected, commands fail at once
 *   (→ STORE_UNAVAILABLE) instead of piling up in memory and resolving
 *   minutes later; wait for the 'ready' event before serving traffic.
 * - maxRetriesPerRequest 1: a command in flight when the connection drops is
 *   resent at most once after a reconnect, then fails. Resending is safe:
 *   every script is idempotent (enqueue on source+messageId, ack on id+position).
 * - commandTimeout: a Redis that accepts the connection but stalls still
 *   yields STORE_UNAVAILABLE. A timed-out enqueue may have been applied; the
 *   sender's retry then gets `duplicate` with the original position.
 * Do not set `keyPrefix`: keys are prefixed by the store itself.
 */
export const DURABLE_STORE_REDIS_OPTIONS = {
  enableAutoPipelining: false,
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  commandTimeout: 2000,
  connectTimeout: 5000,
} as const satisfies RedisOptions;

/** Expired frames an enqueue purges per call: keeps the hot path's script short. */
const ENQUEUE_PURGE_BATCH = 100;
/** Expired frames fetch/depth purge per call; they must see no expired frame, so they loop. */
const READ_PURGE_BATCH = 1000;
/** Frames one ackUpTo script call removes; the method loops, so no single call blocks Redis long. */
const ACK_UP_TO_BATCH = 1000;

// ---------------------------------------------------------------------------
// Lua. Every script opens with its contract. Lua numbers are doubles, exact
// for the integers used here (positions and times stay below 2^53); Redis
// formats numeric arguments to redis.call with %.17g, so they round-trip.

/** Result codes shared by the scripts; mapped to errors only in scriptError(). */
const Code = {
  OK: 0,
  DUPLICATE: 1,
  QUEUE_FULL: 2,
  QUEUE_BYTES_FULL: 3,
  /** Expired frames are left after this call's purge budget: call again. */
  AGAIN: 4,
  /** The sender holds maxFramesPerSender frames of this queue. */
  SENDER_FULL: 5,
  /** The sender's frames in this queue would exceed maxBytesPerSender bytes. */
  SENDER_BYTES_FULL: 6,
  /** The pre-written frame is not in d (removed by another call for its member, or refused unanswered): send it again as an argument. */
  NOT_WRITTEN: 7,
} as const;

const COMMON_LUA = `
-- A member is source hint (24 bytes) .. messageId (16 bytes). A member of 16
-- bytes is the messageId alone: a frame stored by a relay of the earlier
-- layout (before idempotency per sender); its sender is not counted in s.
local MEMBER_SIZE, SOURCE_SIZE = 40, 24
-- Takes removed frames off their senders' counts in s (field source .. 'f' =
-- frames, source .. 'b' = bytes) and drops a sender's fields once it has no
-- frame left, so s holds only senders with frames queued. An empty queue
-- means no sender has anything queued, whatever s says: s is deleted then,
-- which also clears counts a relay of the earlier layout left too high (it
-- removed frames without knowing s).
local function uncount(z, s, members, sizes)
  local per, order = {}, {}
  for i = 1, #members do
    local member = members[i]
    if #member == MEMBER_SIZE then
      local src = string.sub(member, 1, SOURCE_SIZE)
      local t = per[src]
      if not t then
        t = {0, 0}
        per[src] = t
        order[#order + 1] = src
      end
      t[1] = t[1] + 1
      t[2] = t[2] + sizes[i]
    end
  end
  if redis.call('EXISTS', z) == 0 then
    redis.call('DEL', s)
    return
  end
  for i = 1, #order do
    local src = order[i]
    local t = per[src]
    redis.call('HINCRBY', s, src .. 'b', -t[2])
    if redis.call('HINCRBY', s, src .. 'f', -t[1]) <= 0 then redis.call('HDEL', s, src .. 'f', src .. 'b') end
  end
end
-- Removes up to budget frames whose expiresAtMs <= now (the oldest expiries
-- first), subtracts their sizes from the byte count and from their senders'
-- counts. Returns how many.
local function purge(z, d, e, m, s, now, budget)
  local ids = redis.call('ZRANGEBYSCORE', e, '-inf', now, 'LIMIT', 0, budget)
  local n = #ids
  if n == 0 then return 0 end
  local freed, sizes = 0, {}
  for i = 1, n do
    sizes[i] = redis.call('HSTRLEN', d, ids[i])
    freed = freed + sizes[i]
  end
  redis.call('HDEL', d, unpack(ids))
  redis.call('ZREM', z, unpack(ids))
  redis.call('ZREM', e, unpack(ids))
  redis.call('HINCRBY', m, 'bytes', -freed)
  uncount(z, s, ids, sizes)
  return n
end
-- The last position issued: m.seq (given as read), or, when m is gone while
-- the queue's index is not, the highest position in z and x. m outlives z
-- and expires with x (PEXPIREAT in enqueue), so a queue that expired has
-- neither and starts again at 1; but a Redis that evicts keys may drop m
-- alone, and positions issued from 0 again would collide with queued ones
-- while every reader's cursor looked beyond the queue (a pump then read from
-- the start forever). Callers read it before purging: the purge may remove
-- the highest positions. (Positions whose frames expired and were purged
-- before m was lost are not seen: see docs/durable-queue.md.)
local function lastIssued(z, x, seq)
  if seq then return tonumber(seq) end
  local top = 0
  local zt = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if zt[2] then top = tonumber(zt[2]) end
  local xt = redis.call('ZRANGE', x, -1, -1, 'WITHSCORES')
  if xt[2] and tonumber(xt[2]) > top then top = tonumber(xt[2]) end
  return top
end
-- A purge that used its whole budget may have left expired frames behind.
local function expiredLeft(e, now, purged, budget)
  return purged == budget and redis.call('ZCOUNT', e, '-inf', now) > 0
end
-- Records acknowledged members (so a re-send is answered as a duplicate),
-- keeps only the maxAcked newest, and lets the set expire together with m.
local function remember(x, m, entries, maxAcked)
  if #entries == 0 then return end
  redis.call('ZADD', x, unpack(entries))
  redis.call('ZREMRANGEBYRANK', x, 0, -(maxAcked + 1))
  local ttl = redis.call('PTTL', m)
  if ttl > 0 then redis.call('PEXPIRE', x, ttl) end
end
-- The position of the frame member (source .. messageId) stands for, when
-- it is queued or was acknowledged recently; nil otherwise. A frame of the
-- earlier layout (member = messageId alone) still queued counts when its
-- stored frame carries the same source (offset 6 + 24 in the frame, 1-based
-- here); an acknowledged one of that layout names no sender and never counts
-- (storing a re-send again is a duplicate delivery the client drops; taking
-- another sender's frame for it would be a silent loss).
local function duplicateOf(z, d, x, member)
  local id = string.sub(member, SOURCE_SIZE + 1)
  -- One call for both: the member, and the id as the earlier layout stored it.
  local scores = redis.call('ZMSCORE', z, member, id)
  local pos = scores[1] or redis.call('ZSCORE', x, member)
  if pos then return pos end
  local legacy = scores[2]
  if legacy then
    local stored = redis.call('HGET', d, id)
    if stored and string.sub(stored, ${RoutedAt.SOURCE + 1}, ${RoutedAt.SOURCE + HINT_SIZE}) == string.sub(member, 1, SOURCE_SIZE) then
      return legacy
    end
  end
  return nil
end
`;

/** Most ACK pairs per script call: keeps Lua's unpack() far below its stack limit. */
const ACK_BATCH = 256;

/**
 * Most frames per enqueue script call: 256 keep one call near a millisecond
 * inside Redis and Lua's unpack() far below its stack limit, like ACK_BATCH
 * for the ACKs.
 */
const ENQUEUE_BATCH = 256;

/**
 * The enqueue script, in its two forms (docs/durable-queue.md#enqueue):
 * - 'argv': the frames are the script's arguments and it writes them to d
 *   (HSET from Lua). Every deployment can run it; a Redis Cluster does.
 * - 'hash': the relay wrote the frames to d itself just before, with
 *   HSETNX (DurableStore's pre-write: a plain command never overwrites a
 *   stored frame), and the script gets their members alone. A 1 KiB frame
 *   handed to Lua and written out of it again cost Redis about 3 µs, the
 *   largest item of a durable frame's Redis time. The script checks that
 *   each frame it stores is in d (HSTRLEN, which also gives its exact size)
 *   and removes the fields it did not keep.
 */
function enqueueLua(frames: 'argv' | 'hash'): string {
  const argv = frames === 'argv';
  return `--[[
  Appends frames to one recipient's durable queue, in order, each as if it
  were enqueued alone: idempotent on (source, messageId), within the
  queue's limits and its sender's share of them. One call carries the
  recipient's frames of one event-loop turn (DurableStore.enqueue batches
  them).${
    argv
      ? ''
      : `
  The frames are in d already: the relay wrote each with HSETNX d member
  frame right before this call (so a frame stored before keeps its bytes).
  This script keeps those it stores and removes the others' fields.`
  }
  Input:
    KEYS[1] z  ZSET member -> position           (member = source .. messageId)
    KEYS[2] d  HASH member -> frame bytes
    KEYS[3] e  ZSET member -> expiresAtMs
    KEYS[4] m  HASH seq, bytes, largest
    KEYS[5] x  ZSET acknowledged member -> position
    KEYS[6] s  HASH source .. 'f' -> frames, source .. 'b' -> bytes per sender
    KEYS[7] p  presence HASH nodeId -> leaseExpiryMs (presence.ts; same hash tag)
    ARGV[1] nowMs
    ARGV[2] maxFrames
    ARGV[3] maxBytes
    ARGV[4] metaRetentionMs: m and x outlive the latest frame expiry by this
    ARGV[5] purge budget
    ARGV[6] maxFramesPerSender
    ARGV[7] maxBytesPerSender${
      argv
        ? `
    then two per frame, from ARGV[8]: the frame (the DELIVER frame, stored
      as is; its member is read from its own source hint and messageId),
      expiresAtMs of this frame`
        : `
    ARGV[8] the frames' members (40 bytes each), one after another
    then one per frame, from ARGV[9]: expiresAtMs of this frame`
    }
  Output: {code, position, depth} per frame, in order, then node...
    0 stored, position newly issued; depth = frames queued once it was
      stored (for metrics)
    1 duplicate, position of the original (stored, acknowledged recently,
      or stored earlier in this call)
    2 QUEUE_FULL        (nothing stored, nothing evicted)
    3 QUEUE_BYTES_FULL  (nothing stored, nothing evicted)
    4 again: at a limit while expired frames remain; neither this frame nor
      any later frame of this call was looked at: call again
    5 sender holds maxFramesPerSender frames of this queue (nothing stored)
    6 sender's bytes would exceed maxBytesPerSender (nothing stored)${
      argv
        ? ''
        : `
    7 the frame is not in d (a concurrent call for the same member removed
      the field this one wrote, or Redis refused the write at maxmemory
      while this script's own write is allowed): call again, with the frame
      as an argument; every later frame of this call gets 4`
    }
    The nodes after the frames: those holding an unexpired presence lease on
    the recipient (none listed when no frame was stored), so the relay can
    announce the frames without another round trip.
  Each frame is decided on counts kept in Lua locals (queue size and bytes,
  each sender's frames and bytes, the last position), and the frames stored
  are written at the end in one command per key: the script is atomic, so
  no one sees the difference, and a call of n frames runs a handful of
  commands instead of about ten per frame.
]]
${COMMON_LUA}
local z, d, e, m, x, s, p = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local now = ARGV[1]
local maxFrames, maxBytes = tonumber(ARGV[2]), tonumber(ARGV[3])
local retention, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local maxSenderFrames, maxSenderBytes = tonumber(ARGV[6]), tonumber(ARGV[7])
${
  argv
    ? `-- Members, from each frame's own header (1-based offsets of source and messageId).
local members, ids, n = {}, {}, (#ARGV - 7) / 2
for k = 1, n do
  local frame = ARGV[6 + 2 * k]
  local id = string.sub(frame, ${RoutedAt.MESSAGE_ID + 1}, ${RoutedAt.MESSAGE_ID + ID_SIZE})
  members[k] = string.sub(frame, ${RoutedAt.SOURCE + 1}, ${RoutedAt.SOURCE + HINT_SIZE}) .. id
  ids[k] = id
end
local function expiresAt(k) return ARGV[7 + 2 * k] end`
    : `-- Members, as given (source .. messageId, 40 bytes each).
local all, members, ids, n = ARGV[8], {}, {}, #ARGV - 8
if #all ~= n * MEMBER_SIZE then return redis.error_reply('ERR members do not match the expiries') end
for k = 1, n do
  local member = string.sub(all, MEMBER_SIZE * k - MEMBER_SIZE + 1, MEMBER_SIZE * k)
  members[k] = member
  ids[k] = string.sub(member, SOURCE_SIZE + 1)
end
local function expiresAt(k) return ARGV[8 + k] end`
}
${
  argv
    ? ''
    : `
-- The pre-write's errors go unanswered (CLIENT REPLY OFF). After it every
-- member of the call has a field, unless Redis refused the writes (at
-- maxmemory) or a concurrent call for a member removed its field. When the
-- last one is missing, a write of this script's own, its first (Redis
-- refuses a script at maxmemory only its first write), tells which: its
-- OOM error is this call's answer, as when the script form's first write
-- is refused. Otherwise a missing frame is answered 7 below.
if redis.call('HEXISTS', d, members[n]) == 0 then
  local written = redis.pcall('HSETNX', d, members[n], '')
  if type(written) == 'table' and written.err then return written end
  redis.call('HDEL', d, members[n])
end`
}
-- Before the purge, which may remove the highest positions issued (lastIssued).
local issued = lastIssued(z, x, redis.call('HGET', m, 'seq'))
local purged = purge(z, d, e, m, s, now, budget)
-- The frame keys (and s) expire on their own when every frame has
-- (PEXPIREAT below) while m outlives them: no frames left means no bytes
-- and no sender counts, whatever m or s still say.
local card = redis.call('ZCARD', z)
if card == 0 then
  redis.call('HDEL', m, 'bytes', 'largest')
  redis.call('DEL', s)
end
-- Duplicates of what is queued or acknowledged: two reads for the whole call
-- (members, then the ids as the earlier layout stored them, in one ZMSCORE).
local lookup = {}
for k = 1, n do
  lookup[k] = members[k]
  lookup[n + k] = ids[k]
end
local scores = redis.call('ZMSCORE', z, unpack(lookup))
local queued, legacy, absent = {}, {}, {}
for k = 1, n do
  queued[k] = scores[k]
  legacy[k] = scores[n + k]
  if not queued[k] then absent[#absent + 1] = members[k] end
end
local ackedAt = {}
if #absent > 0 then
  local acked = redis.call('ZMSCORE', x, unpack(absent))
  for j = 1, #absent do
    if acked[j] then ackedAt[absent[j]] = acked[j] end
  end
end
-- (seq is issued, read above.)
local meta = redis.call('HMGET', m, 'bytes', 'largest')
local seq, bytes = issued, tonumber(meta[1] or '0')
local bytesBefore = bytes
-- The largest frame stored since the queue was last empty: no queued frame
-- is larger (frames are never rewritten), so fetch may skip their sizes.
-- Kept only while it holds: the field exists, or the queue is empty now. A
-- queue without it (written by a relay before the field, or whose field a
-- read found wrong) gets it back only once empty: frames already queued
-- may be larger than any this call stores.
local largest = tonumber(meta[2] or '0')
local largestBefore = largest
local largestKept = meta[2] ~= false or card == 0
-- Per sender: {frames, bytes} as read, then as counted; the order they came in.
local senders, senderOrder = {}, {}
local added = {}
local zadd, hset, eadd = {}, {}, {}
local out, stored, again = {}, false, false
for k = 1, n do
  local member = members[k]
  local code, position = 0, 0
  if again then
    code = 4
  else
    local pos = added[member] or queued[k] or ackedAt[member]
    if not pos and legacy[k] then
      -- A frame of the earlier layout (member = messageId alone) counts when it carries this source.
      local old = redis.call('HGET', d, ids[k])
      if old and string.sub(old, ${RoutedAt.SOURCE + 1}, ${RoutedAt.SOURCE + HINT_SIZE}) == string.sub(member, 1, SOURCE_SIZE) then
        pos = legacy[k]
      end
    end
    if pos then
      code, position = 1, tonumber(pos)
    else
      -- The queue's limits first, then the sender's share of it:
      -- QUEUE_SENDER_FULL says the queue would take other senders' frames,
      -- only not this sender's (and a share as large as the queue is no
      -- share: the queue's code wins).
      local src = string.sub(member, 1, SOURCE_SIZE)
      local counts = senders[src]
      ${
        argv
          ? `local frame = ARGV[6 + 2 * k]
      local size = #frame
      if card >= maxFrames then`
          : `-- Its field, as the relay wrote it (or as stored earlier: an orphan of a call that never ran).
      local size = redis.call('HSTRLEN', d, member)
      if size == 0 then
        -- Not written: this frame and every later one of the call go again (after it, in order).
        code = 7
        again = true
      elseif card >= maxFrames then`
      }
        code = 2
      elseif bytes + size > maxBytes then
        code = 3
      else
        if not counts then
          local read = redis.call('HMGET', s, src .. 'f', src .. 'b')
          local f, b = tonumber(read[1] or '0'), tonumber(read[2] or '0')
          counts = {f, b, f, b}
          senders[src] = counts
          senderOrder[#senderOrder + 1] = src
        end
        if counts[3] >= maxSenderFrames then
          code = 5
        elseif counts[4] + size > maxSenderBytes then
          code = 6
        end
      end
      if code == 7 then
        -- Written again by the relay, then decided in another call.
      elseif code ~= 0 then
        if expiredLeft(e, now, purged, budget) then
          again = true
          code = 4
        end
      else
        seq = seq + 1
        position = seq
        zadd[#zadd + 1] = position
        zadd[#zadd + 1] = member${
          argv
            ? `
        hset[#hset + 1] = member
        hset[#hset + 1] = frame`
            : ''
        }
        eadd[#eadd + 1] = expiresAt(k)
        eadd[#eadd + 1] = member
        added[member] = position
        bytes = bytes + size
        if size > largest then largest = size end
        counts[3] = counts[3] + 1
        counts[4] = counts[4] + size
        card = card + 1
        stored = true
      end
    end
  end
  out[#out + 1] = code
  out[#out + 1] = position
  out[#out + 1] = code == 0 and card or 0
end${
    argv
      ? ''
      : `
-- The fields this call wrote and did not keep: refused, duplicates of
-- acknowledged or earlier-layout frames, and those left for another call.
-- A duplicate of a queued frame is that frame's own field: kept.
local drop, dropped = {}, {}
for k = 1, n do
  local member = members[k]
  if not added[member] and not queued[k] and not dropped[member] then
    dropped[member] = true
    drop[#drop + 1] = member
  end
end
if #drop > 0 then redis.call('HDEL', d, unpack(drop)) end`
  }
if not stored then return out end
redis.call('ZADD', z, unpack(zadd))${
    argv
      ? `
redis.call('HSET', d, unpack(hset))`
      : ''
  }
redis.call('ZADD', e, unpack(eadd))
if largestKept and largest > largestBefore then
  redis.call('HSET', m, 'seq', seq, 'largest', largest)
else
  redis.call('HSET', m, 'seq', seq)
end
redis.call('HINCRBY', m, 'bytes', bytes - bytesBefore)
for i = 1, #senderOrder do
  local src = senderOrder[i]
  local c = senders[src]
  if c[3] > c[1] then
    redis.call('HINCRBY', s, src .. 'f', c[3] - c[1])
    redis.call('HINCRBY', s, src .. 'b', c[4] - c[2])
  end
end
-- The frame keys live exactly as long as their latest-expiring frame, so an
-- abandoned queue disappears; s goes with them (it counts their frames); m
-- (the position counter) and x outlive it so a returning recipient's
-- positions stay comparable.
local latest = tonumber(redis.call('ZRANGE', e, -1, -1, 'WITHSCORES')[2])
redis.call('PEXPIREAT', z, latest)
redis.call('PEXPIREAT', d, latest)
redis.call('PEXPIREAT', e, latest)
redis.call('PEXPIREAT', s, latest)
redis.call('PEXPIREAT', m, latest + retention)
-- (On a missing x, PEXPIREAT does nothing.)
redis.call('PEXPIREAT', x, latest + retention)
local holders = redis.call('HGETALL', p)
for i = 1, #holders, 2 do
  if tonumber(holders[i + 1]) > tonumber(now) then out[#out + 1] = holders[i] end
end
return out
`;
}

const IS_STORED_LUA = `--[[
  Whether enqueue would answer duplicate for this member (read only).
  Input:
    KEYS[1] z, KEYS[2] d, KEYS[3] x   (as in enqueue)
    ARGV[1] member: source (24 raw bytes) .. messageId (16)
  Output: the original position, or 0 when the member is neither queued nor
    acknowledged recently
]]
${COMMON_LUA}
local pos = duplicateOf(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
if pos then return tonumber(pos) end
return 0
`;

const CONFIRM_LUA = `--[[
  Before a WAIT (RELAY_DURABLE_WAIT_REPLICAS): which of one recipient's
  members this server does not hold (neither queued nor acknowledged
  recently: what enqueue calls a duplicate), and a write under the queue's
  hash tag, so that this connection's replication offset is past every
  member found. A WAIT on this connection right after it then counts the
  replicas that hold them. Without the look, a WAIT answered by a server
  that never stored the frame (a request resent after a failover to the
  replica that took over, or to a restarted server) would confirm a frame
  that is gone.
  Input:
    KEYS[1] z, KEYS[2] d, KEYS[3] x, KEYS[4] w   (w: the routing write's key)
    ARGV[1] w's lifetime in ms
    ARGV[2..] members: source (24 raw bytes) .. messageId (16)
  Output: the indexes (1-based, in ARGV[2..]) of the members not here
]]
${COMMON_LUA}
redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
local missing = {}
for i = 2, #ARGV do
  if not duplicateOf(KEYS[1], KEYS[2], KEYS[3], ARGV[i]) then missing[#missing + 1] = i - 1 end
end
return missing
`;

const FETCH_LUA = `--[[
  Says which frames to read after a position, in position order, none
  expired: their positions and members. Used when the plain read of
  DurableStore.nameWithoutScript cannot answer (expired frames, m or
  m.largest missing, a cursor past the last position, a byte limit that
  needs the sizes). The frames themselves (HMGET d)
  the relay reads with a plain command right after
  (DurableStore.fetchWithin): a frame that passes through Lua is
  copied into a Lua string and again into the reply, which made the frame
  bytes the largest cost of a drain; a plain HMGET writes them to the
  reply once.
  Input:
    KEYS[1] z, KEYS[2] d, KEYS[3] e, KEYS[4] m, KEYS[5] s, KEYS[6] x   (enqueue's keys, in this order)
    ARGV[1] afterPosition
    ARGV[2] limit (>= 1)
    ARGV[3] nowMs
    ARGV[4] purge budget
    ARGV[5] maxBytes: stop before a frame that would take the frames read
            past this many bytes (the first frame is always read); 0 = no limit
  Output: {code, more, bytes, position1, member1, position2, member2, ...}
    0 ok; more = 1 when frames after the last one returned were left out
      (by limit or maxBytes), 0 when nothing follows it; bytes = at least
      the size of the frames named (their sizes when looked at, else their
      count times m.largest), -1 when unknown (no byte limit and no
      m.largest)
    4 again: expired frames remain after the purge budget; call again
  An afterPosition above the last position issued cannot come from this
  queue: the recipient remembers an earlier queue that expired entirely, so
  everything stored now is new to it and is read from the start.
]]
${COMMON_LUA}
local z, d, e, m, s, x = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = ARGV[3]
local budget = tonumber(ARGV[4])
-- Read before the purge, which may remove the highest positions issued (lastIssued).
local meta = redis.call('HMGET', m, 'seq', 'largest')
local issued = lastIssued(z, x, meta[1])
if expiredLeft(e, now, purge(z, d, e, m, s, now, budget), budget) then return {4} end

local after = ARGV[1]
if tonumber(after) > issued then after = '0' end
local limit = tonumber(ARGV[2])
local maxBytes = tonumber(ARGV[5] or '0')
-- No queued frame is larger than m.largest (enqueue keeps it): when limit
-- frames of that size fit in maxBytes, no size needs a look (an HSTRLEN
-- per frame was a third of this script's time in a drain). Without the
-- field (a queue that already held frames when it had none) every size is
-- looked at.
local largest = tonumber(meta[2] or '0')
if largest > 0 and largest * limit <= maxBytes then maxBytes = 0 end
-- One row more than asked: tells whether anything follows.
local rows = redis.call('ZRANGEBYSCORE', z, '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, limit + 1)
local n = math.min(#rows / 2, limit)
local out, total, taken, takenBytes = {0, 0, -1}, 0, 0, 0
for i = 1, n do
  local member = rows[2 * i - 1]
  if maxBytes > 0 then
    total = total + redis.call('HSTRLEN', d, member)
    if taken > 0 and total > maxBytes then break end
    takenBytes = total
  end
  out[#out + 1] = tonumber(rows[2 * i])
  out[#out + 1] = member
  taken = i
end
-- more: rows after the last one taken (cut by bytes, or beyond limit).
out[2] = (#rows > 2 * taken) and 1 or 0
if maxBytes > 0 then
  out[3] = takenBytes
elseif largest > 0 then
  out[3] = taken * largest
end
return out
`;

const ACK_LUA = `--[[
  Removes frames on the recipient's ACKs, each only if the frame at that
  position carries that messageId, and remembers them as acknowledged.
  An ACK names (messageId, position) but not the sender, so the frame is
  found by its position (positions are unique in a queue) and its member
  must end with the messageId: a stale or forged ACK for another position
  removes nothing, as before members named their sender.
  Input:
    KEYS[1] z, KEYS[2] d, KEYS[3] e, KEYS[4] m, KEYS[5] x, KEYS[6] s   (as in enqueue)
    ARGV[1] maxAcked: how many acknowledged members x keeps
    ARGV[2], ARGV[3], ...: messageId, position pairs (at most ACK_BATCH)
  Output: how many frames were removed (an unknown id, another position or
    an already removed frame counts 0)
]]
${COMMON_LUA}
local z, d, e, m, x, s = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local freed, acked, members, sizes = 0, {}, {}, {}
-- A burst of ACKs is nearly always a run of consecutive positions: read the
-- members of the whole range in one call when it is dense, else look each
-- position up on its own.
local n = (#ARGV - 1) / 2
local positions, lo, hi = {}, math.huge, -math.huge
for i = 1, n do
  local p = tonumber(ARGV[2 * i + 1])
  positions[i] = p
  if p < lo then lo = p end
  if p > hi then hi = p end
end
-- inRange[p - lo + 1] is the member at position p when every position of
-- the range is queued (the usual case): the rows come in position order,
-- so Redis need not format a score per frame nor Lua parse it. A range
-- with gaps is read again with its scores, into byPosition.
local inRange, byPosition = nil, nil
if n > 0 and hi - lo < 2 * n then
  local rows = redis.call('ZRANGEBYSCORE', z, lo, hi)
  if #rows == hi - lo + 1 then
    inRange = rows
  else
    byPosition = {}
    rows = redis.call('ZRANGEBYSCORE', z, lo, hi, 'WITHSCORES')
    for j = 1, #rows, 2 do byPosition[tonumber(rows[j + 1])] = rows[j] end
  end
end
local taken, k = {}, 0
for i = 1, n do
  local id, at = ARGV[2 * i], ARGV[2 * i + 1]
  local member
  if inRange then
    member = inRange[positions[i] - lo + 1]
  elseif byPosition then
    member = byPosition[positions[i]]
  else
    member = redis.call('ZRANGEBYSCORE', z, at, at, 'LIMIT', 0, 1)[1]
  end
  -- 16 = messageId size; a member of the earlier layout is the id alone. An
  -- ACK repeated in the batch finds its frame taken already.
  if member and not taken[member] and string.sub(member, -16) == id then
    taken[member] = true
    local size = redis.call('HSTRLEN', d, member)
    freed = freed + size
    k = k + 1
    acked[2 * k - 1] = at
    acked[2 * k] = member
    members[k] = member
    sizes[k] = size
  end
end
if #members > 0 then
  redis.call('HDEL', d, unpack(members))
  redis.call('ZREM', z, unpack(members))
  redis.call('ZREM', e, unpack(members))
end
if freed > 0 then redis.call('HINCRBY', m, 'bytes', -freed) end
uncount(z, s, members, sizes)
remember(x, m, acked, tonumber(ARGV[1]))
return #members
`;

const ACK_UP_TO_LUA = `--[[
  Cumulative ack (RESUME lastAcked): removes frames with position <= upTo,
  at most batch of them per call, remembers their members as acknowledged
  and takes them off their senders' counts.
  Input:
    KEYS[1] z, KEYS[2] d, KEYS[3] e, KEYS[4] m, KEYS[5] x, KEYS[6] s   (as in enqueue)
    ARGV[1] upTo
    ARGV[2] batch
    ARGV[3] maxAcked
  Output: {removed, more, restarted}  more = 1 when the batch was full: call again
  An upTo above the last position issued acknowledges positions this queue
  never issued (the recipient remembers an earlier queue that expired
  entirely, or a Redis that lost its data): nothing is removed, so the
  frames it has never seen survive, and restarted = 1 tells the relay to say
  so (QUEUE_RESET), or the recipient would take them for ones it acknowledged.
]]
${COMMON_LUA}
local z, d, e, m, x, s = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local batch = tonumber(ARGV[2])
if tonumber(ARGV[1]) > lastIssued(z, x, redis.call('HGET', m, 'seq')) then return {0, 0, 1} end
local rows = redis.call('ZRANGEBYSCORE', z, '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, batch)
local n = #rows / 2
if n == 0 then return {0, 0} end
local ids, entries, sizes, freed = {}, {}, {}, 0
for i = 1, #rows, 2 do
  local id = rows[i]
  ids[#ids + 1] = id
  entries[#entries + 1] = rows[i + 1]
  entries[#entries + 1] = id
  sizes[#sizes + 1] = redis.call('HSTRLEN', d, id)
  freed = freed + sizes[#sizes]
end
redis.call('HDEL', d, unpack(ids))
redis.call('ZREM', z, unpack(ids))
redis.call('ZREM', e, unpack(ids))
redis.call('HINCRBY', m, 'bytes', -freed)
uncount(z, s, ids, sizes)
remember(x, m, entries, tonumber(ARGV[3]))
if n == batch then return {n, 1} end
return {n, 0}
`;

const DEPTH_LUA = `--[[
  Counts a queue's unexpired frames and their bytes.
  Input:
    KEYS[1] z, KEYS[2] d, KEYS[3] e, KEYS[4] m, KEYS[5] s   (as in enqueue)
    ARGV[1] nowMs
    ARGV[2] purge budget
  Output: {0, frames, bytes}, or {4} when expired frames remain: call again
]]
${COMMON_LUA}
local z, d, e, m, s = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local budget = tonumber(ARGV[2])
if expiredLeft(e, ARGV[1], purge(z, d, e, m, s, ARGV[1], budget), budget) then return {4} end
local frames = redis.call('ZCARD', z)
-- As in enqueue: frame keys Redis expired on its own leave a stale count in m.
if frames == 0 then return {0, 0, 0} end
return {0, frames, tonumber(redis.call('HGET', m, 'bytes') or '0')}
`;

// The scripts go out through EncodedScript (encoded-script.ts): the enqueue
// and ACK requests carry two arguments per frame, which ioredis' own
// encoding made a visible share of the relay's CPU.
const SCRIPT = {
  enqueue: new EncodedScript(enqueueLua('argv'), 7),
  enqueueNamed: new EncodedScript(enqueueLua('hash'), 7),
  fetch: new EncodedScript(FETCH_LUA, 6),
  ack: new EncodedScript(ACK_LUA, 6),
  ackUpTo: new EncodedScript(ACK_UP_TO_LUA, 6),
  depth: new EncodedScript(DEPTH_LUA, 5),
  isStored: new EncodedScript(IS_STORED_LUA, 3),
  confirm: new EncodedScript(CONFIRM_LUA, 4),
} as const;

/** Fewest frames of a call that go to Redis by the pre-write, by default (see enqueueCall). */
const PREWRITE_MIN_FRAMES = 16;

/** Redis' answers (and a proxy's) for a command it does not have or does not allow this client. */
const NOT_SUPPORTED = /unknown (sub)?command|wrong number of arguments|unsupported|syntax error|NOPERM|disabled/i;

/** An enqueue, validated, with what its script call needs and who hears the outcome. */
interface EnqueueJob {
  /** The DELIVER frame; the script reads its member (source ‖ messageId) from it, destOf() its recipient. */
  frame: Buffer;
  ttlMs: number;
  /** The caller's clock, or undefined: the turn's (Date.now() when the batch is sent). */
  nowMs: number | undefined;
  sink: EnqueueSink;
  /** Script calls that answered AGAIN or NOT_WRITTEN for this frame so far. */
  attempts: number;
  /** NOT_WRITTEN once: its next call hands the frames to the script (the pre-write failed for it). */
  viaScript?: boolean;
}

/**
 * Tells a sink its outcome. A sink that throws must not break the batch it
 * was answered in (the other frames' sinks); its error surfaces as an
 * uncaught exception, which the relay's process handler counts
 * (relay_internal_errors_total) instead of dying.
 */
function settle(job: EnqueueJob, outcome: EnqueueResult | LibertariaError): void {
  try {
    if (outcome instanceof LibertariaError) job.sink.enqueueFailed(outcome);
    else job.sink.enqueued(outcome);
  } catch (err) {
    queueMicrotask(() => {
      throw err;
    });
  }
}

// ---------------------------------------------------------------------------

/** The one place script result codes become errors. */
function scriptError(code: number, dest: string): RelayError {
  switch (code) {
    case Code.QUEUE_FULL:
      return new RelayError('QUEUE_FULL', `durable queue of ${dest} holds its maximum number of frames`);
    case Code.QUEUE_BYTES_FULL:
      return new RelayError('QUEUE_BYTES_FULL', `durable queue of ${dest} holds its maximum number of bytes`);
    case Code.SENDER_FULL:
      return new RelayError(
        'QUEUE_SENDER_FULL',
        `this sender holds its maximum number of frames in the durable queue of ${dest}`,
      );
    case Code.SENDER_BYTES_FULL:
      return new RelayError(
        'QUEUE_SENDER_FULL',
        `this sender holds its maximum number of bytes in the durable queue of ${dest}`,
      );
    case Code.AGAIN:
      // Only reached when a retry loop gave up: expired frames are purged
      // in bounded batches and this many batches did not free room.
      return new RelayError('QUEUE_FULL', `durable queue of ${dest} is still purging expired frames; retry`);
    case Code.NOT_WRITTEN:
      // Only reached when a retry loop gave up: concurrent sends of the same member kept removing this one's write.
      return new RelayError('STORE_UNAVAILABLE', `durable frame for ${dest} was not found where it was written; retry`);
    default:
      return new RelayError('INTERNAL', `durable queue script returned unknown code ${code}`);
  }
}

/** A Buffer view of the bytes (no copy): ioredis sends only Buffers binary, other views it would stringify. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function reply(value: unknown): unknown[] {
  if (!Array.isArray(value)) throw new RelayError('INTERNAL', 'durable queue script returned a non-array reply');
  return value;
}
function int(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new RelayError('INTERNAL', `durable queue script returned ${String(value)} where an integer belongs`);
  }
  return value;
}
/** A position Redis wrote as a score (ASCII digits), read without making a string of it. */
function asciiCount(bytes: Buffer): number {
  let value = 0;
  for (let i = 0; i < bytes.length; i++) {
    const digit = bytes[i]! - 48;
    if (digit < 0 || digit > 9 || i >= 16)
      throw new RelayError('INTERNAL', `durable queue position ${bytes.toString('latin1')} is no count`);
    value = value * 10 + digit;
  }
  if (bytes.length === 0) throw new RelayError('INTERNAL', 'durable queue position is empty');
  return value;
}
function buf(value: unknown): Buffer {
  if (!Buffer.isBuffer(value)) throw new RelayError('INTERNAL', 'durable queue script returned a non-binary field');
  return value;
}

function checkCount(value: number, name: string, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new RelayError('BAD_FIELD', `${name} must be an integer >= ${min}, got ${value}`);
  }
}
function checkMessageId(messageId: Uint8Array): void {
  if (messageId.length !== ID_SIZE) {
    throw new RelayError('BAD_FIELD', `messageId must be ${ID_SIZE} bytes, got ${messageId.length}`);
  }
}

/**
 * A frame's member in the queue's keys: the sender's routing hint, then its
 * messageId (40 bytes). Idempotency is per sender: another sender's frame
 * with the same messageId has another member.
 */
function memberOf(source: Uint8Array, messageId: Uint8Array): Buffer {
  if (source.length !== HINT_SIZE) throw new RelayError('BAD_FIELD', `source must be ${HINT_SIZE} bytes`);
  checkMessageId(messageId);
  return Buffer.concat([asBuffer(source), asBuffer(messageId)], HINT_SIZE + ID_SIZE);
}

export class DurableStore {
  private readonly redis: RedisClient;
  private readonly prefix: string;
  private readonly maxFrames: number;
  private readonly maxAcked: number;
  private readonly maxBytes: number;
  private readonly maxTtlSeconds: number;
  private readonly maxFramesPerSender: number;
  private readonly maxBytesPerSender: number;
  /** How long m (position counter) and x (acked ids) outlive the latest frame. */
  private readonly metaRetentionMs: number;
  /** RELAY_DURABLE_WAIT_REPLICAS > 0: what confirms a stored frame to its sender. */
  private readonly replicas: ReplicaWaiter | undefined;
  /** This turn's enqueues, by the caller's nowMs ('turn': none given), in the order they came. */
  private readonly enqueues = new PerTurn<Map<number | 'turn', EnqueueJob[]>>(
    () => new Map(),
    (batches) => this.flushEnqueues(batches),
  );
  /** Script calls answering AGAIN one frame may take: each frees up to a purge batch. */
  private readonly maxAttempts: number;
  /** 'prewrite' wanted; undefined until the server was asked whether it allows it (probeFramesPath). */
  private framesPath: 'prewrite' | 'script' | undefined;
  private readonly prewriteMinFrames: number;
  private probingFramesPath: Promise<'prewrite' | 'script'> | undefined;

  constructor(redis: RedisClient, options: DurableStoreOptions) {
    checkCount(options.maxFrames, 'maxFrames', 1);
    checkCount(options.maxBytes, 'maxBytes', 1);
    checkCount(options.maxTtlSeconds, 'maxTtlSeconds', 1);
    this.maxFramesPerSender = options.maxFramesPerSender ?? options.maxFrames;
    this.maxBytesPerSender = options.maxBytesPerSender ?? options.maxBytes;
    checkCount(this.maxFramesPerSender, 'maxFramesPerSender', 1);
    checkCount(this.maxBytesPerSender, 'maxBytesPerSender', 1);
    this.redis = redis;
    this.prefix = options.prefix;
    this.maxFrames = options.maxFrames;
    this.maxAcked = options.maxAcked ?? options.maxFrames;
    checkCount(this.maxAcked, 'maxAcked', 1);
    this.maxBytes = options.maxBytes;
    this.maxTtlSeconds = options.maxTtlSeconds;
    this.metaRetentionMs = options.maxTtlSeconds * 1000;
    this.replicas = options.replicas;
    this.maxAttempts = Math.ceil(this.maxFrames / ENQUEUE_PURGE_BATCH) + 1;
    this.framesPath = isCluster(redis) || options.framesPath === 'script' ? 'script' : undefined;
    this.prewriteMinFrames = options.prewriteMinFrames ?? PREWRITE_MIN_FRAMES;
    checkCount(this.prewriteMinFrames, 'prewriteMinFrames', 1);
  }

  /**
   * How this store's enqueues write their frames ('prewrite' or 'script'),
   * once known: a store that may pre-write asks the server first
   * (probeFramesPath). For tests and operators.
   */
  get enqueueFramesPath(): 'prewrite' | 'script' | undefined {
    return this.framesPath;
  }

  /**
   * Whether the server runs what the pre-write sends: CLIENT REPLY (a
   * server may rename or deny CLIENT) and PEXPIRE … NX (Redis 7.0). Asked
   * once, with commands that change nothing and answer once each, so a
   * refusal cannot leave replies unmatched. An answer that the command is
   * unknown or not allowed means 'script' for good; any other failure is
   * thrown (the enqueue fails as STORE_UNAVAILABLE) and the next enqueue
   * asks again. The relay asks at start, to log the answer.
   */
  whichFramesPath(): Promise<'prewrite' | 'script'> {
    return this.framesPath !== undefined ? Promise.resolve(this.framesPath) : this.probeFramesPath();
  }

  private probeFramesPath(): Promise<'prewrite' | 'script'> {
    this.probingFramesPath ??= Promise.all([
      this.redis.call('CLIENT', 'REPLY', 'ON'),
      this.redis.call('PEXPIRE', `${this.prefix}:probe:pexpire-nx`, 1, 'NX'),
    ])
      .then(
        (): 'prewrite' => 'prewrite',
        (err: unknown) => {
          // Only an answer that the command is not there or not allowed means 'script' for good;
          // anything else (LOADING, BUSY, a lost connection) is asked again at the next enqueue.
          if (!(err instanceof ReplyError) || !NOT_SUPPORTED.test((err as Error).message)) throw err;
          return 'script' as const;
        },
      )
      .then(
        (path) => {
          this.framesPath = path;
          this.probingFramesPath = undefined;
          return path;
        },
        (err: unknown) => {
          this.probingFramesPath = undefined;
          throw err;
        },
      );
    return this.probingFramesPath;
  }

  /** The queue's six keys [z, d, e, m, x, s]; all share the hash tag {hintHex}. */
  keys(dest: Uint8Array): [string, string, string, string, string, string] {
    const base = `${this.prefix}:q:{${hintToHex(dest)}}:`;
    return [`${base}z`, `${base}d`, `${base}e`, `${base}m`, `${base}x`, `${base}s`];
  }

  /**
   * What one sender has queued for `dest` (the counts the per-sender share
   * is checked against); zeros when it has nothing queued. For tests and
   * operators: the relay itself never reads it.
   */
  async senderUsage(dest: Uint8Array, source: Uint8Array): Promise<{ frames: number; bytes: number }> {
    if (source.length !== HINT_SIZE) throw new RelayError('BAD_FIELD', `source must be ${HINT_SIZE} bytes`);
    const s = this.keys(dest)[5];
    const src = asBuffer(source);
    try {
      const [frames, bytes] = await this.redis.hmget(
        s,
        Buffer.concat([src, Buffer.from('f')]),
        Buffer.concat([src, Buffer.from('b')]),
      );
      return { frames: Number(frames ?? 0), bytes: Number(bytes ?? 0) };
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /**
   * Appends a durable frame for `dest`. `frame` is the complete DELIVER frame
   * (header included), stored as is but for its position field: the store
   * writes the time of the enqueue call there, in place (fetch reads it as
   * storedAtMs, then writes the position); its source hint names the
   * sender. ttlSeconds 0 means maxTtlSeconds; more than that → TTL_TOO_LONG.
   * ttlSeconds is the frame's own TTL field (the relay passes `routedTtl(frame)`).
   * Idempotent on (source, messageId): a frame of this sender with this id
   * already stored, or acknowledged recently (within the last maxFrames
   * acks), returns `duplicate` with the original position and stores
   * nothing; another sender's frame with the same id is another message.
   * The sender holding maxFramesPerSender frames or maxBytesPerSender bytes
   * of this queue → QUEUE_SENDER_FULL; over maxFrames → QUEUE_FULL, over
   * maxBytes → QUEUE_BYTES_FULL; nothing is ever evicted. Expired frames of the queue
   * are purged first (≤ 100 per call). Resolves only once Redis confirmed;
   * any Redis failure → STORE_UNAVAILABLE with the cause attached.
   *
   * The enqueues of one event-loop turn go to Redis together, in the order
   * they were made (flushEnqueues): one script call, each frame decided as
   * if it came alone. A call failing rejects every frame in it (nothing of
   * a failed call is stored, unless Redis ran it and the reply was lost, as
   * for any command: the sender's retry is then a duplicate). `nowMs`
   * omitted: the time the turn's batch is sent.
   */
  enqueue(
    dest: Uint8Array,
    messageId: Uint8Array,
    frame: Uint8Array,
    ttlSeconds: number,
    nowMs?: number,
  ): Promise<EnqueueResult> {
    return new Promise((resolve, reject) => {
      this.enqueueTo(dest, messageId, frame, ttlSeconds, { enqueued: resolve, enqueueFailed: reject }, nowMs);
    });
  }

  /**
   * enqueue() for the hot path: the outcome goes to `sink` (EnqueueSink)
   * instead of a promise. Throws only what validation refuses (BAD_FIELD,
   * TTL_TOO_LONG, INVALID_HINT), synchronously; everything else reaches the
   * sink, exactly once.
   */
  enqueueTo(
    dest: Uint8Array,
    messageId: Uint8Array,
    frame: Uint8Array,
    ttlSeconds: number,
    sink: EnqueueSink,
    nowMs?: number,
  ): void {
    this.inTurnBatch(this.enqueueJob(dest, messageId, frame, ttlSeconds, nowMs, sink));
  }

  /**
   * enqueueTo() for a frame that names its own recipient, id and TTL (the
   * relay's durable SEND, retyped to DELIVER): the same outcome, without
   * views of the frame's fields made per frame to compare the frame with.
   * Throws BAD_FIELD for a frame too short to be routed and TTL_TOO_LONG,
   * synchronously.
   */
  enqueueFrameTo(frame: Buffer, sink: EnqueueSink, nowMs?: number): void {
    if (frame.length < MIN_ROUTED_FRAME_SIZE) throw new RelayError('BAD_FIELD', 'frame is too short to be routed');
    const ttlSeconds = routedTtl(frame);
    this.checkTiming(ttlSeconds, nowMs);
    this.inTurnBatch(this.job(frame, ttlSeconds, nowMs, sink));
  }

  /** Adds an enqueue to this event-loop turn's batch (sent at setImmediate, like the ACKs of a turn). */
  private inTurnBatch(job: EnqueueJob): void {
    const key = job.nowMs ?? 'turn';
    const open = this.enqueues.open;
    let batch = open.get(key);
    if (batch === undefined) {
      batch = [];
      open.set(key, batch);
    }
    batch.push(job);
    this.enqueues.schedule();
  }

  /**
   * Sends the turn's enqueues: one script call per recipient (per
   * ENQUEUE_BATCH frames), its frames in the order they were enqueued, so
   * one sender's frames to a recipient get increasing positions.
   *
   * Why batched: each command costs the relay a Command object, a socket
   * write and a reply to parse, and Redis a script invocation; once the
   * per-frame budget charge was gone (budgets.ts) that per-command work was
   * the relay's largest cost on the durable path. Why per recipient and not
   * one call for every recipient of the turn (which one server would
   * allow): measured alike on the durable benchmark (docs/benchmarks.md,
   * "The durable path since the budgets"), a recipient's keys are in one
   * Cluster slot, so both deployments take the same path, and a call that
   * fails (a script error aborts it where it stands) fails only that
   * recipient's frames.
   */
  private flushEnqueues(batches: Map<number | 'turn', EnqueueJob[]>): void {
    for (const [key, waiting] of batches) {
      const nowMs = key === 'turn' ? Date.now() : key;
      // Grouped by recipient. A turn's frames mostly come in runs to one recipient (a message of
      // frames from one sender): a run joins its list on a byte comparison, and only a change of
      // recipient makes a key string (no string per frame).
      const byRecipient = new Map<string, EnqueueJob[]>();
      let run: EnqueueJob[] | undefined;
      let runFrame: Buffer | undefined;
      for (const job of waiting) {
        if (run === undefined || !bytesEqualAt(job.frame, RoutedAt.DEST, runFrame!, RoutedAt.DEST, HINT_SIZE)) {
          const key = job.frame.toString('latin1', RoutedAt.DEST, RoutedAt.DEST + HINT_SIZE);
          run = byRecipient.get(key);
          if (run === undefined) {
            run = [];
            byRecipient.set(key, run);
          }
          runFrame = job.frame;
        }
        run.push(job);
      }
      for (const list of byRecipient.values()) {
        for (let i = 0; i < list.length; i += ENQUEUE_BATCH) {
          const chunk = list.length <= ENQUEUE_BATCH ? list : list.slice(i, i + ENQUEUE_BATCH);
          this.enqueueCall(chunk, nowMs).catch((err: unknown) => {
            const error = toStoreError(err);
            for (const job of chunk) settle(job, error);
          });
        }
      }
    }
  }

  /** One enqueue script call for `chunk` (frames of one recipient); settles each frame with its own outcome. */
  private async enqueueCall(chunk: EnqueueJob[], nowMs: number): Promise<void> {
    const path = this.framesPath ?? (await this.probeFramesPath());
    const dest = destOf(chunk[0]!);
    const keys = this.keys(dest);
    const args: ScriptArg[] = [
      ...keys,
      // The presence key (same prefix and hash tag): the script names the holders in the same step.
      presenceKey(this.prefix, dest),
      nowMs,
      this.maxFrames,
      this.maxBytes,
      this.metaRetentionMs,
      ENQUEUE_PURGE_BATCH,
      this.maxFramesPerSender,
      this.maxBytesPerSender,
    ];
    // The store time rides in the stored frame's position field (fetch reads it as storedAtMs):
    // one read of the frame at delivery instead of a read of its expiry beside it.
    for (const job of chunk) writeRoutedPosition(job.frame, nowMs);
    let script = SCRIPT.enqueue;
    // The pre-write pays for its second request when a call carries many frames (a loaded relay's
    // turns: about 160 a call on the durable benchmark); a call of a few frames (a relay at 10k frames/s
    // paced) took longer to answer with it, in the tail (docs/benchmarks.md): those take the script form.
    let prewrite = path === 'prewrite' && chunk.length >= this.prewriteMinFrames;
    // A frame whose pre-write was not found goes in a call of the script form: one that cannot miss it.
    for (const job of chunk) if (job.viaScript === true) prewrite = false;
    if (prewrite) {
      // The frames first, by HSETNX (no reply), then the script on their members: both on this one
      // connection, in this order, so the script finds them (or finds them removed: NOT_WRITTEN).
      const frames = chunk.map((job) => job.frame);
      // Byte by byte: Buffer#copy of a part of a frame makes a view each time.
      const members = Buffer.allocUnsafe(chunk.length * (HINT_SIZE + ID_SIZE));
      let at = 0;
      for (const frame of frames) {
        for (let i = 0; i < HINT_SIZE; i++) members[at++] = frame[RoutedAt.SOURCE + i]!;
        for (let i = 0; i < ID_SIZE; i++) members[at++] = frame[RoutedAt.MESSAGE_ID + i]!;
      }
      args.push(members);
      for (const job of chunk) args.push(nowMs + job.ttlMs);
      script = SCRIPT.enqueueNamed;
      // Its outcome is the script's to tell: it stores only frames it finds written.
      sendSilentHsetnx(this.redis, keys[1], frames, members, this.metaRetentionMs).catch(() => {});
    } else {
      for (const job of chunk) args.push(job.frame, nowMs + job.ttlMs);
    }
    const result = reply(await script.call(this.redis, args));
    // {code, position, depth} per frame, then the nodes holding the recipient.
    const holders = result.slice(3 * chunk.length).map((h) => (Buffer.isBuffer(h) ? h.toString() : String(h)));
    // Every code is read before any sink runs: a malformed reply fails the whole call, never half of it.
    const codes = chunk.map((_, k) => int(result[3 * k]));
    chunk.forEach((job, k) => {
      const code = codes[k]!;
      switch (code) {
        case Code.OK:
          this.confirmed(job, {
            status: 'stored',
            position: int(result[3 * k + 1]),
            depth: int(result[3 * k + 2]),
            holders,
          });
          break;
        case Code.DUPLICATE:
          this.confirmed(job, { status: 'duplicate', position: int(result[3 * k + 1]) });
          break;
        case Code.NOT_WRITTEN:
        case Code.AGAIN:
          // AGAIN: a queue at its limit whose expired frames exceed one purge batch: the next turn's
          // call frees another batch. NOT_WRITTEN: the next turn's call carries the frame itself.
          // Bounded by maxAttempts.
          if (code === Code.NOT_WRITTEN) job.viaScript = true;
          if (++job.attempts < this.maxAttempts) this.inTurnBatch(job);
          else settle(job, scriptError(code, hintToHex(destOf(job))));
          break;
        default:
          settle(job, scriptError(code, hintToHex(destOf(job))));
      }
    });
  }

  /** Redis answered stored or duplicate: settle now, or once replicas confirmed (RELAY_DURABLE_WAIT_REPLICAS). */
  private confirmed(job: EnqueueJob, result: EnqueueResult): void {
    if (!this.replicas) return settle(job, result);
    const dest = destOf(job);
    const frame = job.frame;
    const member = Buffer.allocUnsafe(HINT_SIZE + ID_SIZE);
    frame.copy(member, 0, RoutedAt.SOURCE, RoutedAt.SOURCE + HINT_SIZE);
    frame.copy(member, HINT_SIZE, RoutedAt.MESSAGE_ID, RoutedAt.MESSAGE_ID + ID_SIZE);
    // The frames of one recipient and turn share one run of the queue's check (CONFIRM_LUA).
    this.replicas.wait(hintToHex(dest), this.queueCheck(dest), member).then(
      () => settle(job, result),
      (err: unknown) => settle(job, toStoreError(err)),
    );
  }

  /** The replica wait's look at `dest`'s queue: which frames (members) this server holds. */
  private queueCheck(dest: Uint8Array): ReplicaCheck {
    const [z, d, , , x] = this.keys(dest);
    const w = `${this.prefix}:w:{${hintToHex(dest)}}`;
    return {
      script: SCRIPT.confirm,
      routeKey: z,
      args: (members) => [z, d, x, w, WAIT_KEY_LIFETIME_MS, ...members],
    };
  }

  /**
   * Enqueues many frames, which go out in this turn's batch (one script call
   * on one server, one per recipient on a Cluster). Each item gets the
   * outcome enqueue would have produced: an error of validation, limits or
   * Redis is reported per item rather than thrown.
   */
  async enqueueMany(items: readonly EnqueueItem[], nowMs: number = Date.now()): Promise<EnqueueOutcome[]> {
    return Promise.all(
      items.map((item) =>
        this.enqueue(item.dest, item.messageId, item.frame, item.ttlSeconds, nowMs).catch(
          (err: unknown): EnqueueOutcome => ({ status: 'rejected', error: toStoreError(err) }),
        ),
      ),
    );
  }

  /**
   * Whether `source`'s `messageId` is queued for `dest`, or was acknowledged
   * from its queue recently: exactly when enqueue would answer `duplicate`
   * (the same Lua function decides both). The membrane asks this before
   * deciding a durable SEND again, so a sender's retry of a stored frame is
   * not charged twice. One read-only script call.
   */
  async isStored(dest: Uint8Array, source: Uint8Array, messageId: Uint8Array): Promise<boolean> {
    const member = memberOf(source, messageId);
    const [z, d, , , x] = this.keys(dest);
    try {
      return int(await SCRIPT.isStored.call(this.redis, [z, d, x, member])) > 0;
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /**
   * Up to `limit` unexpired frames with position > afterPosition, in
   * position order. Each frame is the Buffer ioredis returned, with its
   * position written in place at RoutedAt.POSITION (no copy); every other
   * byte is as stored. An afterPosition above the last position ever issued
   * (the recipient remembers a queue that expired entirely) reads from the
   * start.
   */
  async fetch(
    dest: Uint8Array,
    afterPosition: number,
    limit: number,
    nowMs: number = Date.now(),
  ): Promise<StoredFrame[]> {
    return (await this.fetchWithin(dest, afterPosition, limit, 0, nowMs)).frames;
  }

  /**
   * Like `fetch`, and at most `maxBytes` of frames (the first frame is
   * always read, whatever its size; 0 = no byte limit): a delivery pump reads
   * only what its connection has room for. `more` says whether frames
   * follow the last one returned.
   *
   * `onNamed`, if given, hears which frames will be read as soon as Redis
   * named them, before they are read (NamedFrames): a delivery pump starts
   * its next read from there, so Redis names the next batch while this one
   * is read and written.
   */
  async fetchWithin(
    dest: Uint8Array,
    afterPosition: number,
    limit: number,
    maxBytes: number,
    nowMs: number = Date.now(),
    onNamed?: (named: NamedFrames) => void,
  ): Promise<FetchedFrames> {
    checkCount(afterPosition, 'afterPosition', 0);
    checkCount(limit, 'limit', 0);
    checkCount(maxBytes, 'maxBytes', 0);
    if (limit === 0) return { frames: [], more: false, last: afterPosition, vanished: 0 };
    const [z, d, e, m, x, s] = this.keys(dest);
    const names =
      (await this.nameWithoutScript(z, e, m, afterPosition, limit, maxBytes, nowMs)) ??
      (await this.nameWithScript(dest, [z, d, e, m, s, x], afterPosition, limit, maxBytes, nowMs));
    const { members, positions, more, bytes: namedBytes, last } = names;
    const count = members.length;
    if (count === 0) return { frames: [], more, last: afterPosition, vanished: 0 };
    // The frames, read with a plain command (see FETCH_LUA). A frame
    // acknowledged or purged since the script answered reads as null and is
    // left out: it needs no delivery. (A frame purged and stored again in
    // that instant would be read under its old position too: a duplicate the
    // client drops, never a loss.)
    const read = sendEncoded(this.redis, 'hmget', [d, ...members], 'buffer') as Promise<Array<Buffer | null>>;
    if (onNamed !== undefined) {
      // Told once the read is on its way, so a read the listener starts goes to Redis after it.
      try {
        onNamed({ last, bytes: namedBytes, more });
      } catch (err) {
        read.catch(() => {});
        throw err;
      }
    }
    let stored: Array<Buffer | null>;
    try {
      stored = await read;
    } catch (err) {
      throw toStoreError(err);
    }
    const frames: StoredFrame[] = [];
    /** Frames stored by an earlier relay (no store time in the frame), with their members. */
    const undated: Array<{ item: StoredFrame; member: Buffer }> = [];
    let bytesRead = 0;
    for (let k = 0; k < count; k++) {
      const frame = stored[k];
      if (!frame) continue;
      bytesRead += frame.length;
      const position = positions[k]!;
      if (frame.length < MIN_ROUTED_FRAME_SIZE) {
        throw new RelayError('INTERNAL', `stored frame at ${position} is too short`);
      }
      const storedAtMs = readRoutedPosition(frame);
      writeRoutedPosition(frame, position);
      // The member is source ‖ messageId (or, stored by a relay of the earlier layout, messageId alone).
      const member = members[k]!;
      const item = { position, messageId: member.subarray(member.length - ID_SIZE), frame, storedAtMs };
      frames.push(item);
      if (storedAtMs === 0) undated.push({ item, member });
    }
    if (namedBytes >= 0 && bytesRead > namedBytes) {
      // More bytes than the script named: m.largest was below a queued frame
      // (a relay before the field stored it during an upgrade). Dropped, so
      // reads look at every size until the queue is empty and enqueue starts
      // it again; this read went past its byte limit once.
      this.redis.hdel(m, 'largest').catch(() => {});
    }
    if (undated.length > 0) await this.dateFromExpiry(e, undated, nowMs);
    return { frames, more, last, vanished: count - frames.length };
  }

  /**
   * Which frames to read, named by the fetch script (FETCH_LUA): it purges
   * expired frames, finds the last position issued when m is lost, follows
   * a queue that restarted, and looks at frame sizes when the byte limit
   * needs them.
   */
  private async nameWithScript(
    dest: Uint8Array,
    keys: readonly string[],
    afterPosition: number,
    limit: number,
    maxBytes: number,
    nowMs: number,
  ): Promise<Names> {
    let result: unknown[] = [Code.AGAIN];
    // Each call purges at most READ_PURGE_BATCH expired frames; it says AGAIN
    // until none is left, so the frames finally read are all unexpired.
    while (result[0] === Code.AGAIN) {
      try {
        result = reply(
          await SCRIPT.fetch.call(
            this.redis,
            [...keys, afterPosition, limit, nowMs, READ_PURGE_BATCH, maxBytes],
            'buffer',
          ),
        );
      } catch (err) {
        throw toStoreError(err);
      }
    }
    if (result[0] !== Code.OK) throw scriptError(int(result[0]), hintToHex(dest));
    const count = (result.length - 3) / 2;
    const members: Buffer[] = new Array(count);
    const positions: number[] = new Array(count);
    for (let k = 0; k < count; k++) {
      positions[k] = int(result[3 + 2 * k]);
      members[k] = buf(result[4 + 2 * k]);
    }
    return {
      members,
      positions,
      more: int(result[1]) === 1,
      bytes: int(result[2]),
      last: count > 0 ? positions[count - 1]! : afterPosition,
    };
  }

  /**
   * Which frames to read, named without the script in the common case: one
   * round trip of three plain commands (the frames after the cursor, then
   * m's last position and largest frame, and whether anything expired), and
   * no row passes through Lua, which was most of the script's time in a
   * drain (docs/benchmarks.md, "Issue 18: reads before clean-up").
   * Undefined, and the script decides, when the common case does not hold:
   * a frame has expired (the script purges it), m or its largest frame is
   * missing, the cursor is past the last position issued (a restarted
   * queue), or `limit` frames of the largest size would not fit in maxBytes
   * (the script looks at the sizes), and always on a Redis Cluster (below).
   * m.largest is read after the rows, so it bounds every frame they name.
   */
  private async nameWithoutScript(
    z: string,
    e: string,
    m: string,
    afterPosition: number,
    limit: number,
    maxBytes: number,
    nowMs: number,
  ): Promise<Names | undefined> {
    // On a Cluster a slot being migrated may hold some of a queue's keys on
    // either node, and a single-key read of a key not moved yet answers as
    // if it were empty (an expired frame not seen in e, an empty z): the
    // script, which names every key, gets TRYAGAIN until they are together.
    if (isCluster(this.redis)) return undefined;
    // One pipeline: the three commands go to Redis in one write (three writes cost the relay more
    // kernel time than the script they replace).
    let replies: Array<[Error | null, unknown]> | null;
    try {
      replies = await this.redis
        .pipeline()
        .zrangebyscoreBuffer(z, `(${afterPosition}`, '+inf', 'WITHSCORES', 'LIMIT', 0, limit + 1)
        .hmget(m, 'seq', 'largest')
        .zrangebyscore(e, '-inf', nowMs, 'LIMIT', 0, 1)
        .exec();
    } catch (err) {
      throw toStoreError(err);
    }
    if (replies === null) throw new RelayError('STORE_UNAVAILABLE', 'Redis did not confirm: the read was discarded');
    for (const [err] of replies) if (err) throw toStoreError(err);
    const rows = replies[0]![1] as Buffer[];
    const meta = replies[1]![1] as Array<string | null>;
    const expired = replies[2]![1] as string[];
    const seq = meta[0] == null ? Number.NaN : Number(meta[0]);
    const largest = meta[1] == null ? 0 : Number(meta[1]);
    if (expired.length > 0 || !(afterPosition <= seq) || !(largest > 0)) return undefined;
    // Frames of the largest size might not fit: the script looks at their sizes.
    if (maxBytes > 0 && largest * limit > maxBytes) return undefined;
    const count = Math.min(rows.length / 2, limit);
    const members: Buffer[] = new Array(count);
    const positions: number[] = new Array(count);
    for (let k = 0; k < count; k++) {
      members[k] = rows[2 * k]!;
      positions[k] = asciiCount(rows[2 * k + 1]!);
    }
    return {
      members,
      positions,
      more: rows.length > 2 * count,
      bytes: count * largest,
      last: count > 0 ? positions[count - 1]! : afterPosition,
    };
  }

  /**
   * storedAtMs of frames stored by a relay that did not write the store time
   * into them: their expiry (in e) minus their TTL. Only during an upgrade.
   */
  private async dateFromExpiry(
    e: string,
    undated: ReadonlyArray<{ item: StoredFrame; member: Buffer }>,
    nowMs: number,
  ): Promise<void> {
    let expiries: Array<string | null>;
    try {
      expiries = await this.redis.zmscore(e, ...undated.map((u) => u.member));
    } catch (err) {
      throw toStoreError(err);
    }
    undated.forEach(({ item }, j) => {
      const expiresAt = expiries[j];
      const ttlSeconds = item.frame.readUInt32BE(RoutedAt.TTL);
      // No expiry beside a frame only if the keys were changed by hand: age 0.
      item.storedAtMs =
        expiresAt == null ? nowMs : Number(expiresAt) - (ttlSeconds === 0 ? this.maxTtlSeconds : ttlSeconds) * 1000;
    });
  }

  /** Removes one frame on the recipient's ACK, only if the frame at `position` has `messageId`. */
  async ack(dest: Uint8Array, messageId: Uint8Array, position: number): Promise<boolean> {
    return (await this.ackMany(dest, [{ messageId, position }])) === 1;
  }

  /**
   * Several ACKs of one recipient in one script call per ACK_BATCH (a
   * recipient acknowledging a burst costs one round trip, not one each).
   * Returns how many frames were removed.
   */
  async ackMany(dest: Uint8Array, acks: ReadonlyArray<{ messageId: Uint8Array; position: number }>): Promise<number> {
    const packed = new PendingAcks();
    for (const { messageId, position } of acks) {
      checkMessageId(messageId);
      packed.push(messageId, position);
    }
    return this.ackPacked(dest, packed.take());
  }

  /** ackMany for ACKs packed as a connection keeps them (pending-acks.ts): no object per ACK. */
  async ackPacked(dest: Uint8Array, acks: PackedAcks): Promise<number> {
    const { ids, positions, count } = acks;
    for (let i = 0; i < count; i++) checkCount(positions[i]!, 'position', 0);
    const [z, d, e, m, x, s] = this.keys(dest);
    let removed = 0;
    try {
      for (let start = 0; start < count; start += ACK_BATCH) {
        const end = Math.min(count, start + ACK_BATCH);
        const args: ScriptArg[] = [z, d, e, m, x, s, this.maxAcked];
        for (let i = start; i < end; i++) {
          args.push(ids.subarray(i * ID_SIZE, (i + 1) * ID_SIZE), positions[i]!);
        }
        removed += int(await SCRIPT.ack.call(this.redis, args));
      }
    } catch (err) {
      throw toStoreError(err);
    }
    return removed;
  }

  /**
   * Cumulative ack of RESUME: removes every frame with position <= upTo and
   * returns how many. Runs in batches of ACK_UP_TO_BATCH (one script call
   * each) so Redis is never blocked long. An upTo above the last position
   * issued removes nothing (see the script).
   */
  /**
   * RESUME's cumulative ack. `restarted`: upTo is beyond every position this
   * queue issued, so the recipient's watermark belongs to an earlier queue
   * (see the script); nothing was removed.
   */
  async ackUpTo(dest: Uint8Array, upTo: number): Promise<{ removed: number; restarted: boolean }> {
    checkCount(upTo, 'upTo', 0);
    if (upTo === 0) return { removed: 0, restarted: false };
    const [z, d, e, m, x, s] = this.keys(dest);
    let removed = 0;
    for (;;) {
      let result: unknown[];
      try {
        result = reply(await SCRIPT.ackUpTo.call(this.redis, [z, d, e, m, x, s, upTo, ACK_UP_TO_BATCH, this.maxAcked]));
      } catch (err) {
        throw toStoreError(err);
      }
      removed += int(result[0]);
      if (result[2] !== undefined && int(result[2]) === 1) return { removed, restarted: true };
      if (int(result[1]) !== 1) return { removed, restarted: false };
    }
  }

  /** Unexpired frames and their bytes in the queue (expired ones are purged first). */
  async depth(dest: Uint8Array, nowMs: number = Date.now()): Promise<{ frames: number; bytes: number }> {
    const [z, d, e, m, , s] = this.keys(dest);
    let result: unknown[] = [Code.AGAIN];
    while (result[0] === Code.AGAIN) {
      try {
        result = reply(await SCRIPT.depth.call(this.redis, [z, d, e, m, s, nowMs, READ_PURGE_BATCH]));
      } catch (err) {
        throw toStoreError(err);
      }
    }
    return { frames: int(result[1]), bytes: int(result[2]) };
  }

  /** Validates an enqueue and prepares its part of a script call (throws RelayError). */
  private enqueueJob(
    dest: Uint8Array,
    messageId: Uint8Array,
    frame: Uint8Array,
    ttlSeconds: number,
    nowMs: number | undefined,
    sink: EnqueueSink,
  ): EnqueueJob {
    checkMessageId(messageId);
    this.checkTiming(ttlSeconds, nowMs);
    // INVALID_HINT for a dest that is no hint: hintToHex's check, without its string per frame.
    if (!(dest instanceof Uint8Array) || dest.length !== HINT_SIZE) hintToHex(dest);
    // The frame must be the DELIVER for this (dest, messageId): fetch writes
    // its position into it, and a mix-up here would deliver to the wrong peer.
    // (compared in place: no views allocated per frame.)
    const bytes = asBuffer(frame);
    if (
      bytes.length < MIN_ROUTED_FRAME_SIZE ||
      !bytesEqualAt(bytes, RoutedAt.DEST, dest, 0, HINT_SIZE) ||
      !bytesEqualAt(bytes, RoutedAt.MESSAGE_ID, messageId, 0, ID_SIZE)
    ) {
      throw new RelayError('BAD_FIELD', 'frame is not a DELIVER frame for this dest and messageId');
    }
    return this.job(bytes, ttlSeconds, nowMs, sink);
  }

  /** TTL_TOO_LONG, or BAD_FIELD for a count that is none. */
  private checkTiming(ttlSeconds: number, nowMs: number | undefined): void {
    checkCount(ttlSeconds, 'ttlSeconds', 0);
    if (nowMs !== undefined) checkCount(nowMs, 'nowMs', 0);
    if (ttlSeconds > this.maxTtlSeconds) {
      throw new RelayError(
        'TTL_TOO_LONG',
        `TTL of ${ttlSeconds} s exceeds the relay's maximum of ${this.maxTtlSeconds} s`,
      );
    }
  }

  /** A validated frame's part of a script call. */
  private job(frame: Buffer, ttlSeconds: number, nowMs: number | undefined, sink: EnqueueSink): EnqueueJob {
    const ttl = ttlSeconds === 0 ? this.maxTtlSeconds : ttlSeconds;
    // The frame's source hint names the sender (the script reads it from the
    // frame): the relay checked it is the authenticated peer's own
    // (SOURCE_MISMATCH), the federation inbound worker that it is a
    // registered bridge's.
    return { frame, ttlMs: ttl * 1000, nowMs, sink, attempts: 0 };
  }
}

/** The recipient's hint, read from the job's own frame (a view: taken once per script call, not per frame). */
function destOf(job: EnqueueJob): Buffer {
  return job.frame.subarray(RoutedAt.DEST, RoutedAt.DEST + HINT_SIZE);
}
