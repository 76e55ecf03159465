/**
 * Storage budgets of durable frames (issue 12, item 5; docs/relay.md#durable-budgets).
 * Before these, any authenticated peer could store frames for any hint, real
 * or invented, for 30 days: one connection stored about 40 MB/s until Redis
 * was full, and then new handshakes failed (presence could not be written)
 * and /readyz went 503 on every node. A durable SEND (to a mailbox or a
 * bridge) is now admitted only when:
 *
 * 1. Redis is below RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT of its maxmemory
 *    (RedisMemoryGuard, read from INFO memory on a timer: no cost per frame),
 *    so the rest stays for presence leases, acknowledgements and the audit;
 *    an OOM error from Redis itself is also answered STORE_FULL.
 * 2. The recipient has published prekeys, when RELAY_DURABLE_REQUIRE_PREKEYS
 *    is on (KnownRecipients: cached per node, so a frame to a known
 *    recipient costs no Redis call).
 * 3. The sender DID and its source address are within their sliding-hour
 *    budgets of frames and bytes (DurableBudgets: one small script per
 *    subject in Redis, so a sender on several nodes has one budget; both
 *    are issued at once, one round trip before the enqueue).
 *
 * Refusals are NACKs with a stable code (STORE_FULL, RECIPIENT_UNKNOWN,
 * DURABLE_BUDGET_EXCEEDED) counted in relay_budget_refused_total{budget}.
 */
import { isIP } from 'node:net';
import { hintToHex } from '@libertaria/identity';
import { type ErrorCode, RelayError } from '@libertaria/protocol';
import { ipv6Groups, unmapped } from './ip-address.js';
import type { RedisClient as Redis } from './redis-connection.js';

/** What a refusal is counted under: relay_budget_refused_total{budget}. */
export type BudgetName =
  | 'sender_frames'
  | 'sender_bytes'
  | 'address_frames'
  | 'address_bytes'
  | 'recipient_prekeys'
  | 'redis_memory'
  | 'connections_per_address';

export interface Refusal {
  code: ErrorCode;
  budget: BudgetName;
  message: string;
}

// ---------------------------------------------------------------------------
// Source addresses

/**
 * The key a source address is budgeted under: IPv4 as is (also when it
 * arrives IPv4-mapped, `::ffff:1.2.3.4`), IPv6 by its /64 (one subscriber
 * usually holds a whole /64, so counting single IPv6 addresses would give an
 * attacker 2^64 budgets). Anything else (`unknown`) is its own key.
 */
export function addressKey(address: string): string {
  const plain = unmapped(address);
  if (isIP(plain) !== 6) return plain;
  const groups = ipv6Groups(plain);
  if (groups === undefined) return plain;
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

// ---------------------------------------------------------------------------
// Redis memory

/** Whether Redis refused a write because it is at maxmemory (directly, or as the cause of a store error). */
export function isOomError(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (/\bOOM command not allowed\b/.test(e.message)) return true;
    if (e instanceof AggregateError && e.errors.some((inner) => isOomError(inner))) return true;
  }
  return false;
}

export interface MemoryGuardOptions {
  /** Durable writes stop at this share of maxmemory (RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT). */
  percent: number;
  /** How often INFO memory is read (RELAY_REDIS_MEMORY_CHECK_MS). */
  intervalMs: number;
  /** A sample failed (Redis unreachable): counted by the caller; the last state stands. */
  onError?: (err: unknown) => void;
}

/**
 * Reads Redis' memory use on a timer and says whether durable writes must
 * stop. A timer rather than a check per frame: INFO costs a round trip, and
 * the reserve (100 − percent of maxmemory) is what absorbs the writes
 * admitted between two samples (at 40 MB/s and one sample a second, 40 MB;
 * size the reserve above that). An OOM error seen on a write marks Redis
 * full at once, until a sample says otherwise.
 */
export class RedisMemoryGuard {
  used = 0;
  max = 0;
  private oomSeen = false;
  private timer: NodeJS.Timeout | undefined;
  private sampling: Promise<void> | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly options: MemoryGuardOptions,
  ) {}

  /** Durable writes are refused (STORE_FULL). */
  get full(): boolean {
    return this.oomSeen || (this.max > 0 && this.used >= (this.max * this.options.percent) / 100);
  }

  /** Samples once now (awaited), then every intervalMs. */
  async start(): Promise<void> {
    await this.sample();
    this.timer = setInterval(() => void this.sample(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Redis answered OOM to a write: full until the next sample (which also comes sooner). */
  noteOom(): void {
    this.oomSeen = true;
    void this.sample();
  }

  /** Reads INFO memory; one sample in flight at a time. */
  sample(): Promise<void> {
    this.sampling ??= this.read().finally(() => {
      this.sampling = undefined;
    });
    return this.sampling;
  }

  private async read(): Promise<void> {
    try {
      const info = await this.redis.info('memory');
      const used = infoField(info, 'used_memory');
      const max = infoField(info, 'maxmemory');
      if (used === undefined || max === undefined) throw new RelayError('INTERNAL', 'INFO memory lacks used_memory');
      this.used = used;
      this.max = max;
      // A sample below maxmemory clears an OOM seen since: the percent decides again.
      this.oomSeen = max > 0 && used >= max;
    } catch (err) {
      this.options.onError?.(err);
    }
  }
}

function infoField(info: string, name: string): number | undefined {
  const m = new RegExp(`^${name}:(\\d+)\\s*$`, 'm').exec(info);
  return m ? Number(m[1]) : undefined;
}

// ---------------------------------------------------------------------------
// Recipients with prekeys

export interface KnownRecipientsOptions {
  /** Whether the recipient has published prekeys (PrekeyStore.hasPublished): one EXISTS. */
  lookup: (hint: Uint8Array) => Promise<boolean>;
  /** How long a yes is trusted (prekeys live 90 days after their last publication). */
  positiveMs?: number;
  /** How long a no is trusted: a peer publishing through another node waits at most this long. */
  negativeMs?: number;
  maxEntries?: number;
}

/**
 * Per node: which recipients have published prekeys, so that with
 * RELAY_DURABLE_REQUIRE_PREKEYS a durable SEND to a known recipient costs no
 * Redis call. Concurrent misses for one recipient share one lookup.
 */
export class KnownRecipients {
  private readonly cache = new Map<string, { known: boolean; expires: number }>();
  private readonly inflight = new Map<string, Promise<boolean>>();
  private readonly positiveMs: number;
  private readonly negativeMs: number;
  private readonly maxEntries: number;

  constructor(private readonly options: KnownRecipientsOptions) {
    this.positiveMs = options.positiveMs ?? 300_000;
    this.negativeMs = options.negativeMs ?? 5_000;
    this.maxEntries = options.maxEntries ?? 100_000;
  }

  /** From the cache when fresh, else a promise of the lookup. */
  isKnown(hint: Uint8Array, now = Date.now()): boolean | Promise<boolean> {
    const key = Buffer.from(hint.buffer, hint.byteOffset, hint.byteLength).toString('latin1');
    const hit = this.cache.get(key);
    if (hit !== undefined && hit.expires > now) return hit.known;
    let pending = this.inflight.get(key);
    if (pending === undefined) {
      // The frame's bytes are reused by the transport: look up with a copy.
      const copy = Uint8Array.from(hint);
      pending = this.options.lookup(copy).then(
        (known) => {
          this.inflight.delete(key);
          this.remember(key, known, Date.now());
          return known;
        },
        (err: unknown) => {
          this.inflight.delete(key);
          throw err;
        },
      );
      this.inflight.set(key, pending);
    }
    return pending;
  }

  /** The recipient published prekeys through this node. */
  markKnown(hint: Uint8Array, now = Date.now()): void {
    this.remember(Buffer.from(hint).toString('latin1'), true, now);
  }

  private remember(key: string, known: boolean, now: number): void {
    this.cache.delete(key);
    if (this.cache.size >= this.maxEntries) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(key, { known, expires: now + (known ? this.positiveMs : this.negativeMs) });
  }
}

// ---------------------------------------------------------------------------
// Per-sender and per-address budgets, in Redis

const CHARGE_LUA = `--[[
  Charges one durable frame to a subject's sliding hour, unless that would
  go over a limit. The estimate is this window's count plus the previous
  window's weighted by the share of it still inside the sliding hour.
  Input:
    KEYS[1] this window: HASH f -> frames, b -> bytes
    KEYS[2] the previous window (same hash tag)
    ARGV[1] bytes of this frame
    ARGV[2] most frames (0: no limit)
    ARGV[3] most bytes (0: no limit)
    ARGV[4] weight of the previous window in thousandths (0..1000)
    ARGV[5] ms KEYS[1] lives once created (two windows)
  Output: 0 charged; 1 over the frame limit; 2 over the byte limit (nothing charged)
]]
local cur = redis.call('HMGET', KEYS[1], 'f', 'b')
local prev = redis.call('HMGET', KEYS[2], 'f', 'b')
local w = tonumber(ARGV[4]) / 1000
local bytes = tonumber(ARGV[1])
local maxF, maxB = tonumber(ARGV[2]), tonumber(ARGV[3])
local f = (tonumber(cur[1]) or 0) + math.floor((tonumber(prev[1]) or 0) * w)
local b = (tonumber(cur[2]) or 0) + math.floor((tonumber(prev[2]) or 0) * w)
if maxF > 0 and f + 1 > maxF then return 1 end
if maxB > 0 and b + bytes > maxB then return 2 end
redis.call('HINCRBY', KEYS[1], 'f', 1)
redis.call('HINCRBY', KEYS[1], 'b', bytes)
if not cur[1] then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
return 0
`;

const REFUND_LUA = `--[[
  Gives back a charge whose frame was not stored (a duplicate, a full queue,
  Redis failing): a retried frame is charged once.
  Input: KEYS[1] the window charged; ARGV[1] bytes
  Output: 1 refunded, 0 the window is gone
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'f', -1)
redis.call('HINCRBY', KEYS[1], 'b', -tonumber(ARGV[1]))
return 1
`;

const CMD = { charge: 'libertariaBudgetCharge', refund: 'libertariaBudgetRefund' } as const;
type BudgetCommands = { [K in (typeof CMD)[keyof typeof CMD]]: (...args: Array<string | number>) => Promise<unknown> };

/** How long a node refuses a subject by itself after Redis refused it: an abuser costs one call a second per node. */
const REFUSAL_HOLD_MS = 1000;
const ONE_HOUR_MS = 3_600_000;

export interface DurableBudgetOptions {
  /** Key prefix (RELAY_REDIS_PREFIX). */
  prefix: string;
  senderFrames: number;
  senderBytes: number;
  addressFrames: number;
  addressBytes: number;
  /** The sliding window (one hour; shorter in tests). */
  windowMs?: number;
  maxHeldRefusals?: number;
}

/** What was charged, to give back when the frame is not stored. */
export interface Charge {
  keys: string[];
  bytes: number;
}

type Subject = { kind: 'sender' | 'address'; id: string; maxFrames: number; maxBytes: number };

/**
 * Frames and bytes per sender DID (its routing hint) and per source address
 * in a sliding hour, counted in Redis:
 *
 *   ${prefix}:bud:{s:<hintHex>}:<window>   HASH f, b   (a sender)
 *   ${prefix}:bud:{a:<address>}:<window>   HASH f, b   (an address, IPv6 by /64)
 *
 * <window> is floor(now / window length); each key lives two windows. The
 * two subjects are charged by two script calls issued together (their keys
 * are in different Redis Cluster slots), so admission costs one round trip.
 * A subject refused by Redis is then refused by this node alone for a
 * second, so a flood over its budget costs Redis nothing more.
 */
export class DurableBudgets {
  private readonly commands: BudgetCommands;
  private readonly windowMs: number;
  private readonly held = new Map<string, { until: number; budget: BudgetName }>();
  private readonly maxHeld: number;

  constructor(
    redis: Redis,
    private readonly o: DurableBudgetOptions,
  ) {
    this.windowMs = o.windowMs ?? ONE_HOUR_MS;
    this.maxHeld = o.maxHeldRefusals ?? 100_000;
    redis.defineCommand(CMD.charge, { numberOfKeys: 2, lua: CHARGE_LUA });
    redis.defineCommand(CMD.refund, { numberOfKeys: 1, lua: REFUND_LUA });
    this.commands = redis as unknown as BudgetCommands;
  }

  get enabled(): boolean {
    const o = this.o;
    return o.senderFrames + o.senderBytes + o.addressFrames + o.addressBytes > 0;
  }

  /** The budget a subject is held refused under by this node, if any (no Redis call). */
  heldRefusal(sender: Uint8Array, address: string, now = Date.now()): BudgetName | undefined {
    for (const key of [this.subjectTag('sender', hintToHex(sender)), this.subjectTag('address', address)]) {
      const h = this.held.get(key);
      if (h === undefined) continue;
      if (h.until > now) return h.budget;
      this.held.delete(key);
    }
    return undefined;
  }

  /**
   * Charges one frame of `bytes` to the sender and its address. Resolves
   * with what was charged, or the budget that refused it (then nothing stays
   * charged). Rejects when Redis fails (nothing is charged for sure then).
   */
  async charge(
    sender: Uint8Array,
    address: string,
    bytes: number,
    now = Date.now(),
  ): Promise<{ charge: Charge } | { refused: BudgetName }> {
    const o = this.o;
    const subjects: Subject[] = [];
    if (o.senderFrames + o.senderBytes > 0) {
      subjects.push({ kind: 'sender', id: hintToHex(sender), maxFrames: o.senderFrames, maxBytes: o.senderBytes });
    }
    if (o.addressFrames + o.addressBytes > 0) {
      subjects.push({ kind: 'address', id: address, maxFrames: o.addressFrames, maxBytes: o.addressBytes });
    }
    const window = Math.floor(now / this.windowMs);
    const weight = 1000 - Math.floor(((now % this.windowMs) * 1000) / this.windowMs);
    const calls = subjects.map((s) => {
      const tag = this.subjectTag(s.kind, s.id);
      const current = `${tag}:${window}`;
      return this.commands[CMD.charge](
        current,
        `${tag}:${window - 1}`,
        bytes,
        s.maxFrames,
        s.maxBytes,
        weight,
        2 * this.windowMs,
      ).then((code) => ({ subject: s, tag, key: current, code: Number(code) }));
    });
    const settled = await Promise.allSettled(calls);
    const charged: string[] = [];
    let refused: BudgetName | undefined;
    let failure: unknown;
    for (const r of settled) {
      if (r.status === 'rejected') {
        failure ??= r.reason;
        continue;
      }
      const { subject, tag, key, code } = r.value;
      if (code === 0) {
        charged.push(key);
        continue;
      }
      const budget: BudgetName = `${subject.kind}_${code === 1 ? 'frames' : 'bytes'}`;
      refused ??= budget;
      this.hold(tag, budget, now);
    }
    if (refused !== undefined || failure !== undefined) {
      // One subject may have been charged while the other refused or failed: give it back.
      if (charged.length > 0) this.refund({ keys: charged, bytes }).catch(() => {});
      if (refused !== undefined) return { refused };
      throw failure;
    }
    return { charge: { keys: charged, bytes } };
  }

  /** Gives a charge back (its frame was not stored). */
  async refund(charge: Charge): Promise<void> {
    await Promise.all(charge.keys.map((key) => this.commands[CMD.refund](key, charge.bytes)));
  }

  private subjectTag(kind: Subject['kind'], id: string): string {
    return `${this.o.prefix}:bud:{${kind === 'sender' ? 's' : 'a'}:${id}}`;
  }

  private hold(tag: string, budget: BudgetName, now: number): void {
    this.held.delete(tag);
    if (this.held.size >= this.maxHeld) {
      const oldest = this.held.keys().next().value;
      if (oldest !== undefined) this.held.delete(oldest);
    }
    this.held.set(tag, { until: now + REFUSAL_HOLD_MS, budget });
  }
}

// ---------------------------------------------------------------------------
// Admission: the three checks in order, cheapest first

export type Admission = { ok: true; charge: Charge | undefined } | { ok: false; refusal: Refusal };

const ADMITTED: Admission = { ok: true, charge: undefined };

export interface DurableAdmissionParts {
  guard: RedisMemoryGuard | undefined;
  budgets: DurableBudgets | undefined;
  /** Set when RELAY_DURABLE_REQUIRE_PREKEYS is on. */
  recipients: KnownRecipients | undefined;
}

function refusal(budget: BudgetName): Refusal {
  switch (budget) {
    case 'redis_memory':
      return {
        code: 'STORE_FULL',
        budget,
        message:
          'Redis is at the memory reserved for durable frames (RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT); not stored',
      };
    case 'recipient_prekeys':
      return {
        code: 'RECIPIENT_UNKNOWN',
        budget,
        message: 'the recipient has published no prekeys; this relay stores durable frames only for known recipients',
      };
    default: {
      const [who, what] = budget.split('_') as ['sender' | 'address', 'frames' | 'bytes'];
      const variable = `RELAY_DURABLE_${what.toUpperCase()}_PER_${who.toUpperCase()}_PER_HOUR`;
      return {
        code: 'DURABLE_BUDGET_EXCEEDED',
        budget,
        message: `durable ${what} budget of this ${who === 'sender' ? 'sender DID' : 'source address'} for the last hour is used (${variable}); retry later`,
      };
    }
  }
}

/** A refusal for an OOM answer from Redis (the guard had not seen it coming). */
export const OOM_REFUSAL: Refusal = {
  code: 'STORE_FULL',
  budget: 'redis_memory',
  message: 'Redis is at maxmemory; not stored',
};

/**
 * Decides whether a durable SEND may be stored: synchronously when no Redis
 * call is needed (memory full, a held refusal, budgets off and the recipient
 * known or not required), else a promise (one round trip: the budget
 * charges and, on a cache miss, the prekey lookup, issued together).
 */
export class DurableAdmission {
  constructor(private readonly parts: DurableAdmissionParts) {}

  get guard(): RedisMemoryGuard | undefined {
    return this.parts.guard;
  }

  /**
   * The refusals known without a Redis call (memory full, a recipient known
   * to have no prekeys, a budget held refused). Checked before the
   * membrane, so a frame that will be refused anyway costs no access
   * decision and no audit record (which Redis would have to store).
   */
  precheck(sender: Uint8Array, address: string, dest: Uint8Array | undefined, now = Date.now()): Refusal | undefined {
    const { guard, budgets, recipients } = this.parts;
    if (guard?.full) return refusal('redis_memory');
    if (dest !== undefined && recipients?.isKnown(dest, now) === false) return refusal('recipient_prekeys');
    const held = budgets?.enabled ? budgets.heldRefusal(sender, address, now) : undefined;
    return held === undefined ? undefined : refusal(held);
  }

  /** `dest` undefined: the frame goes to a bridge, which needs no prekeys. */
  admit(
    sender: Uint8Array,
    address: string,
    dest: Uint8Array | undefined,
    bytes: number,
    now = Date.now(),
  ): Admission | Promise<Admission> {
    const { guard, budgets, recipients } = this.parts;
    if (guard?.full) return { ok: false, refusal: refusal('redis_memory') };
    const known = dest === undefined || recipients === undefined ? true : recipients.isKnown(dest, now);
    if (known === false) return { ok: false, refusal: refusal('recipient_prekeys') };
    const budgeted = budgets?.enabled === true;
    if (budgeted) {
      const held = budgets.heldRefusal(sender, address, now);
      if (held !== undefined) return { ok: false, refusal: refusal(held) };
    }
    if (!budgeted && known === true) return ADMITTED;
    const charging = budgeted ? budgets.charge(sender, address, bytes, now) : undefined;
    return Promise.allSettled([known, charging]).then(([k, c]): Admission => {
      const charged =
        c.status === 'fulfilled' && c.value !== undefined && 'charge' in c.value ? c.value.charge : undefined;
      const giveBack = (): void => {
        if (charged !== undefined) budgets?.refund(charged).catch(() => {});
      };
      if (k.status === 'rejected') {
        giveBack();
        throw k.reason;
      }
      if (!k.value) {
        giveBack();
        return { ok: false, refusal: refusal('recipient_prekeys') };
      }
      if (c.status === 'rejected') throw c.reason;
      if (c.value !== undefined && 'refused' in c.value) return { ok: false, refusal: refusal(c.value.refused) };
      return { ok: true, charge: charged };
    });
  }

  /** Gives back what an admitted frame was charged, when it was not stored after all. */
  refund(charge: Charge | undefined): void {
    if (charge !== undefined) this.parts.budgets?.refund(charge).catch(() => {});
  }

  /** The recipient published prekeys through this node. */
  recipientPublished(hint: Uint8Array): void {
    this.parts.recipients?.markKnown(hint);
  }
}
