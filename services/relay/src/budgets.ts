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
import { PerTurn } from './per-turn.js';
import { isCluster, type RedisClient as Redis } from './redis-connection.js';

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
  Charges a batch of durable frames (or reservations of several frames), in order, each to one or two subjects'
  sliding hours (a sender DID, its source address), each frame to all of its
  subjects or to none: a frame over any of its subjects' limits is charged
  to none of them, and the frames after it are decided on the counts
  without it. A subject's estimate is its window's count plus the previous
  window's weighted by the share of it still inside the sliding hour.
  Input:
    KEYS[2j-1] subject j's window: HASH f -> frames, b -> bytes
    KEYS[2j]   subject j's previous window (same hash tag)
    ARGV[1] weight of the previous windows in thousandths (0..1000)
    ARGV[2] ms a window key lives once created (two windows)
    ARGV[3] S, the number of subjects (KEYS holds 2S keys)
    ARGV[2+2j], ARGV[3+2j]  subject j's most frames, most bytes (0: no limit), j = 1..S
    then four per item, from ARGV[4+2S]: frames (1 for a frame; more for a
      node's reservation, budget-reserves.ts), bytes, its first subject j,
      its second subject j (0: none)
  Output: two codes per item, one per subject slot:
    0 within that subject's budget (or no subject in that slot);
    1 over its frame limit; 2 over its byte limit;
    3 a reservation (frames > 1) that would take the subject past 7/8 of a
      limit: declined, not refused (the node charges frame by frame from
      there, so the last eighth of a budget is decided exactly).
    An item is charged when both its codes are 0, else to neither subject.
]]
local w = tonumber(ARGV[1]) / 1000
local n = tonumber(ARGV[3])
local f, b, maxF, maxB, addF, addB, fresh = {}, {}, {}, {}, {}, {}, {}
for j = 1, n do
  local cur = redis.call('HMGET', KEYS[2 * j - 1], 'f', 'b')
  local prev = redis.call('HMGET', KEYS[2 * j], 'f', 'b')
  f[j] = (tonumber(cur[1]) or 0) + math.floor((tonumber(prev[1]) or 0) * w)
  b[j] = (tonumber(cur[2]) or 0) + math.floor((tonumber(prev[2]) or 0) * w)
  fresh[j] = not cur[1]
  maxF[j], maxB[j] = tonumber(ARGV[2 + 2 * j]), tonumber(ARGV[3 + 2 * j])
  addF[j], addB[j] = 0, 0
end
local out = {}
for i = 4 + 2 * n, #ARGV, 4 do
  local frames, bytes = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local ok = true
  for k = 2, 3 do
    local j = tonumber(ARGV[i + k])
    local code = 0
    if j > 0 then
      if frames > 1 and ((maxF[j] > 0 and (f[j] + frames) * 8 > maxF[j] * 7) or
                         (maxB[j] > 0 and (b[j] + bytes) * 8 > maxB[j] * 7)) then code = 3
      elseif maxF[j] > 0 and f[j] + frames > maxF[j] then code = 1
      elseif maxB[j] > 0 and b[j] + bytes > maxB[j] then code = 2 end
    end
    if code > 0 then ok = false end
    out[#out + 1] = code
  end
  if ok then
    for k = 2, 3 do
      local j = tonumber(ARGV[i + k])
      if j > 0 then
        f[j], b[j] = f[j] + frames, b[j] + bytes
        addF[j], addB[j] = addF[j] + frames, addB[j] + bytes
      end
    end
  end
end
-- Written last, after every check: a write refused (OOM) leaves nothing charged.
for j = 1, n do
  if addF[j] > 0 then
    redis.call('HINCRBY', KEYS[2 * j - 1], 'f', addF[j])
    redis.call('HINCRBY', KEYS[2 * j - 1], 'b', addB[j])
    if fresh[j] then redis.call('PEXPIRE', KEYS[2 * j - 1], ARGV[2]) end
  end
end
return out
`;

const REFUND_LUA = `--[[
  Gives back charges whose frames were not stored (a duplicate, a full queue,
  Redis failing, or the frame's other subject refused it on a Redis
  Cluster): a retried frame is charged once.
  Input: KEYS[1] the window charged; ARGV[1] bytes; ARGV[2] frames (1 when absent)
  Output: 1 refunded, 0 the window is gone
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'f', -tonumber(ARGV[2] or '1'))
redis.call('HINCRBY', KEYS[1], 'b', -tonumber(ARGV[1]))
return 1
`;

const CMD = { charge: 'libertariaBudgetChargeMany', refund: 'libertariaBudgetRefund' } as const;
type BudgetCommands = { [K in (typeof CMD)[keyof typeof CMD]]: (...args: Array<string | number>) => Promise<unknown> };

/** How long a node refuses a subject by itself after Redis refused it: an abuser costs one call a second per node. */
const REFUSAL_HOLD_MS = 1000;
const ONE_HOUR_MS = 3_600_000;
/** Most frames per charge script call: keeps the script short and far below Lua's unpack/stack limits. */
const CHARGE_BATCH = 512;

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
  /**
   * One charge script call per subject instead of one for the whole batch:
   * what a Redis Cluster needs (each subject's keys are in their own slot).
   * Defaults to whether the connection is a Cluster; tests set it to run
   * that path on one server.
   */
  callPerSubject?: boolean;
}

/** What was charged, to give back when the frame is not stored. */
export interface Charge {
  /** The window keys charged (one per subject). */
  keys: readonly string[];
  bytes: number;
  /** Frames charged: 1 for a frame, more for a reservation (budget-reserves.ts). */
  frames: number;
  /** The node's reserve the frame was taken from, if any (budget-reserves.ts gives it back there). */
  reserve?: unknown;
}

/** `declined`: a reservation the budget would not grant (past 7/8 of a limit); not a refusal. */
export type ChargeResult = { charge: Charge } | { refused: BudgetName } | { declined: true };

export type Subject = { kind: 'sender' | 'address'; tag: string; maxFrames: number; maxBytes: number };

/** A charge waiting for its turn's batch. */
interface PendingCharge {
  subjects: Subject[];
  frames: number;
  bytes: number;
  resolve: (result: ChargeResult) => void;
  reject: (err: unknown) => void;
}

/** The charges of one turn in one window (and one weight of the previous window). */
interface ChargeBatch {
  now: number;
  window: number;
  weight: number;
  items: PendingCharge[];
}

/** One turn's refunds, summed per window key, with who waits on each. */
type RefundSums = Map<string, { frames: number; bytes: number; waiters: Array<(err?: unknown) => void> }>;

/**
 * Frames and bytes per sender DID (its routing hint) and per source address
 * in a sliding hour, counted in Redis:
 *
 *   ${prefix}:bud:{s:<hintHex>}:<window>   HASH f, b   (a sender)
 *   ${prefix}:bud:{a:<address>}:<window>   HASH f, b   (an address, IPv6 by /64)
 *
 * <window> is floor(now / window length); each key lives two windows.
 *
 * Charges are batched per event-loop turn, like the ACKs (DurableStore.ackMany):
 * every charge asked for in one turn goes out in one script call that
 * decides each frame in order and answers per frame. Before (one call per
 * subject per frame: two EVALSHAs for every durable frame) the charge halved
 * durable throughput end to end, the relay's own per-command work being the
 * limit (docs/benchmarks.md, "The durable path since the budgets"). One call
 * per turn also makes a frame's two charges one atomic step on one server:
 * a frame is charged to both its sender and its address or to neither, so
 * nothing is refunded for a refusal. On a Redis Cluster the sender's and
 * the address's keys are in different slots: there it is one call per
 * subject per turn, and a frame one subject refused is refunded to the
 * other (as before, per frame). The charge is not folded into the enqueue
 * script for the same reason (other slots than the recipient's queue), and
 * because bridged frames are charged without an enqueue.
 *
 * A subject refused by Redis is then refused by this node alone for a
 * second, so a flood over its budget costs Redis nothing more.
 */
export class DurableBudgets {
  private readonly commands: BudgetCommands;
  private readonly windowMs: number;
  private readonly held = new Map<string, { until: number; budget: BudgetName }>();
  private readonly maxHeld: number;
  private readonly callPerSubject: boolean;
  /** Charges of this turn, by window and weight (nearly always one batch). */
  private readonly batches = new PerTurn<Map<string, ChargeBatch>>(
    () => new Map(),
    (batches) => this.flushCharges(batches),
  );
  /** The batch the last charge went to, while this turn's batches are open. */
  private lastBatch: ChargeBatch | undefined;
  /** Subjects per sender hint object and address (subjectsOf); weak: gone with the connection's hint. */
  private readonly subjectCache = new WeakMap<Uint8Array, Map<string, Subject[]>>();
  /** Refunds of this turn, summed per window key: one call per key. */
  private readonly refunds = new PerTurn<RefundSums>(
    () => new Map(),
    (refunds) => this.flushRefunds(refunds),
  );

  constructor(
    redis: Redis,
    private readonly o: DurableBudgetOptions,
  ) {
    this.windowMs = o.windowMs ?? ONE_HOUR_MS;
    this.maxHeld = o.maxHeldRefusals ?? 100_000;
    this.callPerSubject = o.callPerSubject ?? isCluster(redis);
    redis.defineCommand(CMD.charge, { lua: CHARGE_LUA });
    redis.defineCommand(CMD.refund, { numberOfKeys: 1, lua: REFUND_LUA });
    this.commands = redis as unknown as BudgetCommands;
  }

  /** The sliding window's length in ms. */
  get windowLengthMs(): number {
    return this.windowMs;
  }

  get enabled(): boolean {
    const o = this.o;
    return o.senderFrames + o.senderBytes + o.addressFrames + o.addressBytes > 0;
  }

  /** The budget a subject is held refused under by this node, if any (no Redis call). */
  heldRefusal(sender: Uint8Array, address: string, now = Date.now()): BudgetName | undefined {
    if (this.held.size === 0) return undefined;
    for (const { tag } of this.subjectsOf(sender, address)) {
      const h = this.held.get(tag);
      if (h === undefined) continue;
      if (h.until > now) return h.budget;
      this.held.delete(tag);
    }
    return undefined;
  }

  /**
   * Charges one frame of `bytes` to the sender and its address, in this
   * turn's batch. Resolves with what was charged, or the budget that
   * refused it (then nothing stays charged). Rejects when Redis fails
   * (nothing is charged then, unless Redis applied the call and the reply
   * was lost, as for any command).
   */
  charge(sender: Uint8Array, address: string, bytes: number, now = Date.now(), frames = 1): Promise<ChargeResult> {
    return this.chargeSubjects(this.subjectsOf(sender, address), bytes, now, frames);
  }

  /**
   * charge() for subjects already looked up. `frames` > 1 asks for a
   * reservation of that many frames and `bytes` bytes at once, granted
   * whole or declined (past 7/8 of a limit) or refused.
   */
  chargeSubjects(subjects: Subject[], bytes: number, now: number, frames = 1): Promise<ChargeResult> {
    if (subjects.length === 0) return Promise.resolve({ charge: { keys: [], bytes, frames } });
    const window = Math.floor(now / this.windowMs);
    const weight = 1000 - Math.floor(((now % this.windowMs) * 1000) / this.windowMs);
    // Nearly every charge of a turn falls in the batch of the one before.
    let batch = this.lastBatch;
    if (batch === undefined || batch.window !== window || batch.weight !== weight) {
      const id = `${window}:${weight}`;
      const batches = this.batches.open;
      batch = batches.get(id);
      if (batch === undefined) {
        batch = { now, window, weight, items: [] };
        batches.set(id, batch);
      }
      this.lastBatch = batch;
    }
    const items = batch.items;
    const pending = new Promise<ChargeResult>((resolve, reject) => {
      items.push({ subjects, frames, bytes, resolve, reject });
    });
    this.batches.schedule();
    return pending;
  }

  /**
   * The budgeted subjects of a sender and address, made once per sender
   * hint object (a connection passes the same one for each frame) and
   * address: a durable frame allocates no key names of its own.
   */
  subjectsOf(sender: Uint8Array, address: string): Subject[] {
    let byAddress = this.subjectCache.get(sender);
    if (byAddress === undefined) {
      byAddress = new Map();
      this.subjectCache.set(sender, byAddress);
    }
    let subjects = byAddress.get(address);
    if (subjects === undefined) {
      const o = this.o;
      subjects = [];
      if (o.senderFrames + o.senderBytes > 0) {
        const tag = this.subjectTag('sender', hintToHex(sender));
        subjects.push({ kind: 'sender', tag, maxFrames: o.senderFrames, maxBytes: o.senderBytes });
      }
      if (o.addressFrames + o.addressBytes > 0) {
        const tag = this.subjectTag('address', address);
        subjects.push({ kind: 'address', tag, maxFrames: o.addressFrames, maxBytes: o.addressBytes });
      }
      // A hint object is one connection's: it sees one address, rarely more.
      if (byAddress.size >= 4) byAddress.clear();
      byAddress.set(address, subjects);
    }
    return subjects;
  }

  /** Gives a charge back (its frame was not stored); refunds of one turn go out summed per key. */
  refund(charge: Charge): Promise<void> {
    if (charge.keys.length === 0) return Promise.resolve();
    return Promise.all(charge.keys.map((key) => this.refundKey(key, charge.frames, charge.bytes))).then(() => {});
  }

  private refundKey(key: string, frames: number, bytes: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const refunds = this.refunds.open;
      let r = refunds.get(key);
      if (r === undefined) {
        r = { frames: 0, bytes: 0, waiters: [] };
        refunds.set(key, r);
      }
      r.frames += frames;
      r.bytes += bytes;
      r.waiters.push((err) => (err === undefined ? resolve() : reject(err)));
      this.refunds.schedule();
    });
  }

  private flushRefunds(refunds: RefundSums): void {
    for (const [key, { frames, bytes, waiters }] of refunds) {
      this.commands[CMD.refund](key, bytes, frames).then(
        () => {
          for (const w of waiters) w();
        },
        (err: unknown) => {
          for (const w of waiters) w(err);
        },
      );
    }
  }

  private flushCharges(batches: Map<string, ChargeBatch>): void {
    this.lastBatch = undefined;
    for (const batch of batches.values()) {
      for (let i = 0; i < batch.items.length; i += CHARGE_BATCH) {
        const items = batch.items.slice(i, i + CHARGE_BATCH);
        this.runBatch(batch, items).catch((err: unknown) => {
          for (const item of items) item.reject(err);
        });
      }
    }
  }

  /**
   * One batch: one script call for all its subjects (one server), or one
   * per subject (a Cluster: each call's keys in one slot). Each frame is
   * charged when every subject took it; on a Cluster a frame one subject
   * refused or failed on is refunded to the subjects that took it.
   */
  private async runBatch(batch: ChargeBatch, items: PendingCharge[]): Promise<void> {
    // Subjects in order of first appearance; each frame names them by index.
    const index = new Map<string, number>();
    const subjects: Subject[] = [];
    const refs = items.map((item) =>
      item.subjects.map((s) => {
        let j = index.get(s.tag);
        if (j === undefined) {
          j = subjects.length;
          index.set(s.tag, j);
          subjects.push(s);
        }
        return j;
      }),
    );
    const current = (s: Subject) => `${s.tag}:${batch.window}`;
    // codes[k][slot]: the verdict of item k's subject in that slot; undefined when its call failed.
    const codes: Array<Array<number | undefined>> = items.map((item) => item.subjects.map(() => undefined));
    // taken[k][slot]: that subject was charged for item k (a subject with room is not, when another of the same call refused).
    const taken: boolean[][] = items.map((item) => item.subjects.map(() => false));
    let failure: unknown;
    const groups: number[][] = this.callPerSubject ? subjects.map((_, j) => [j]) : [subjects.map((_, j) => j)];
    await Promise.all(
      groups.map(async (group) => {
        const local = new Map(group.map((j, l) => [j, l + 1]));
        const args: Array<string | number> = [];
        for (const j of group) {
          const s = subjects[j]!;
          args.push(current(s), `${s.tag}:${batch.window - 1}`);
        }
        args.push(batch.weight, 2 * this.windowMs, group.length);
        for (const j of group) args.push(subjects[j]!.maxFrames, subjects[j]!.maxBytes);
        // Four per item with a subject in this call: frames, bytes, then the
        // call's index of the item's first and second subject (0: none here).
        const sent: number[] = [];
        items.forEach((item, k) => {
          const slots = refs[k]!.map((j) => local.get(j) ?? 0);
          if (slots.every((l) => l === 0)) return;
          args.push(item.frames, item.bytes, slots[0] ?? 0, slots[1] ?? 0);
          sent.push(k);
        });
        let reply: unknown;
        try {
          reply = await this.commands[CMD.charge](2 * group.length, ...args);
        } catch (err) {
          failure ??= err;
          return;
        }
        if (!Array.isArray(reply) || reply.length !== 2 * sent.length) {
          failure ??= new RelayError('INTERNAL', 'budget script returned a malformed reply');
          return;
        }
        // Two codes per triple, one per subject slot; the subjects of this
        // call took the item only when every one of them had room.
        sent.forEach((k, t) => {
          const took = Number(reply[2 * t]) === 0 && Number(reply[2 * t + 1]) === 0;
          refs[k]!.forEach((j, slot) => {
            if (!local.has(j)) return;
            codes[k]![slot] = Number(reply[2 * t + slot]);
            taken[k]![slot] = took;
          });
        });
      }),
    );
    const now = batch.now;
    items.forEach((item, k) => {
      const verdicts = codes[k]!;
      let refused: BudgetName | undefined;
      let declined = false;
      let failed = false;
      const took: string[] = [];
      item.subjects.forEach((s, slot) => {
        const code = verdicts[slot];
        if (taken[k]![slot]) took.push(current(s));
        if (code === undefined) failed = true;
        else if (code === 3) declined = true;
        else if (code !== 0) {
          const budget: BudgetName = `${s.kind}_${code === 1 ? 'frames' : 'bytes'}`;
          refused ??= budget;
          this.hold(s.tag, budget, now);
        }
      });
      if (refused === undefined && !declined && !failed) {
        item.resolve({ charge: { keys: took, bytes: item.bytes, frames: item.frames } });
        return;
      }
      // Only with a call per subject (a Cluster) can a subject have taken a frame another refused or failed on: give it back.
      if (took.length > 0) this.refund({ keys: took, bytes: item.bytes, frames: item.frames }).catch(() => {});
      if (refused !== undefined) item.resolve({ refused });
      else if (declined && !failed) item.resolve({ declined: true });
      else item.reject(failure);
    });
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
