/**
 * A node's reserves of durable budget (issue 18): frames and bytes a node
 * has charged in Redis ahead of use, for one connection's subjects (its
 * sender DID and source address), and hands out without a Redis call.
 *
 * Why: charging every durable frame in Redis (DurableBudgets.charge) put a
 * second round trip and a promise chain per frame in front of the enqueue;
 * measured on the durable benchmark, the budgets cost about 30 % of the
 * end-to-end rate (docs/benchmarks.md). With a reserve, a steady sender's
 * frames are admitted synchronously and Redis sees one charge per
 * reservation.
 *
 * What stays exact and what does not:
 * - A budget is never exceeded: a reservation is charged in Redis, in the
 *   sliding window of its time, before any frame of it is handed out.
 * - Reservations grow with use (2, 4, 8, … up to RELAY_DURABLE_BUDGET_RESERVE_FRAMES
 *   frames, and never more than 1/16 of a limit), and the budget script
 *   declines one that would take a subject past 7/8 of a limit: the last
 *   eighth of every budget is charged frame by frame, exactly as before.
 * - A reserve another node holds unused counts as spent until it is given
 *   back: after RESERVE_IDLE_MS without use, at a window change, or when
 *   the node closes. A sender on two nodes can therefore be refused up to
 *   one reserve early on one of them, for about a second; a node killed
 *   with SIGKILL leaves its reserves charged (the conservative side).
 * - A frame charged from a reserve and not stored (a duplicate, a full
 *   queue) goes back into the reserve.
 */
import type { Charge, ChargeResult, DurableBudgets, Subject } from './budgets.js';

/** A reserve untouched this long is given back to Redis. */
export const RESERVE_IDLE_MS = 1000;
/** A reservation takes at most this share of a limit (1/16). */
const RESERVE_SHARE = 16;

interface Waiter {
  bytes: number;
  now: number;
  resolve: (result: ChargeResult) => void;
  reject: (err: unknown) => void;
}

interface Reserve {
  readonly subjects: Subject[];
  /** The window the reserve was charged in, and its keys (one per subject); -1: none held. */
  window: number;
  keys: readonly string[];
  frames: number;
  bytes: number;
  /** Frames the next reservation asks for (doubles on use, back to 2 when given back). */
  next: number;
  /** Frames of the last grant: the reserve asks for the next one once it is down to half of this. */
  granted: number;
  /** The budget declined a reservation in this window: frame by frame until the window changes. */
  exactOnly: boolean;
  lastUsed: number;
  /** A charge for this reserve is in flight; later charges wait behind it, in order. */
  busy: boolean;
  waiters: Waiter[];
}

export interface BudgetReserveStats {
  /** Frames admitted from a reserve, with no Redis call. */
  local: number;
  /** Reservations granted by Redis. */
  reservations: number;
  /** Frames charged one by one in Redis (no reserve, or the last eighth of a budget). */
  exact: number;
}

export class BudgetReserves {
  private readonly reserves = new Map<Subject[], Reserve>();
  private readonly timer: NodeJS.Timeout | undefined;
  /** Reservations asked of Redis and not answered yet (with their refund, if one follows): close() waits for them. */
  private readonly requests = new Set<Promise<unknown>>();
  readonly stats: BudgetReserveStats = { local: 0, reservations: 0, exact: 0 };

  /**
   * `maxFrames`: the largest reservation (RELAY_DURABLE_BUDGET_RESERVE_FRAMES);
   * 0 or 1 charges every frame in Redis, as without reserves.
   */
  constructor(
    private readonly budgets: DurableBudgets,
    private readonly maxFrames: number,
    private readonly windowMs: number,
  ) {
    if (maxFrames > 1) {
      this.timer = setInterval(() => this.sweep(Date.now()), RESERVE_IDLE_MS / 2);
      this.timer.unref();
    }
  }

  /** Reservations asked of Redis and not answered yet. */
  get requestsInFlight(): number {
    return this.requests.size;
  }

  /** Charges one frame: from the connection's reserve when it holds enough (synchronously), else through Redis. */
  charge(sender: Uint8Array, address: string, bytes: number, now: number): ChargeResult | Promise<ChargeResult> {
    const subjects = this.budgets.subjectsOf(sender, address);
    if (this.maxFrames <= 1 || subjects.length === 0) {
      this.stats.exact++;
      return this.budgets.chargeSubjects(subjects, bytes, now);
    }
    let reserve = this.reserves.get(subjects);
    if (reserve === undefined) {
      reserve = {
        subjects,
        window: -1,
        keys: [],
        frames: 0,
        bytes: 0,
        next: 2,
        granted: 0,
        exactOnly: false,
        lastUsed: now,
        busy: false,
        waiters: [],
      };
      this.reserves.set(subjects, reserve);
    }
    if (reserve.waiters.length === 0) {
      const local = this.take(reserve, bytes, now);
      if (local !== undefined) return local;
    }
    // (Behind waiters it queues instead: frames are charged in the order they came.)
    if (reserve.waiters.length === 0 && reserve.exactOnly && reserve.window === Math.floor(now / this.windowMs)) {
      // The last eighth of a budget: each frame charged in Redis (batched per turn, decided in order).
      this.stats.exact++;
      return this.budgets.chargeSubjects(subjects, bytes, now);
    }
    return new Promise<ChargeResult>((resolve, reject) => {
      reserve.waiters.push({ bytes, now, resolve, reject });
      this.serve(reserve);
    });
  }

  /** Gives back a frame's charge: into its reserve while that still holds the same window, else to Redis. */
  refund(charge: Charge): void {
    const reserve = charge.reserve as Reserve | undefined;
    // The same window keys: the reserve still holds the window the frame was charged in.
    if (
      reserve !== undefined &&
      charge.keys.length > 0 &&
      reserve.keys[0] === charge.keys[0] &&
      this.reserves.get(reserve.subjects) === reserve
    ) {
      reserve.frames += charge.frames;
      reserve.bytes += charge.bytes;
      return;
    }
    this.budgets.refund(charge).catch(() => {});
  }

  /** Gives every reserve back to Redis (the node is closing); resolves once Redis confirmed. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    const pending: Array<Promise<void>> = [];
    for (const reserve of this.reserves.values()) pending.push(this.release(reserve));
    this.reserves.clear();
    // A reservation still in flight is given back when it is granted (the reserve is gone): wait for that too.
    await Promise.allSettled([...pending, ...this.requests]);
  }

  /** Reserves untouched for RESERVE_IDLE_MS go back to Redis. */
  sweep(now: number): void {
    for (const [subjects, reserve] of this.reserves) {
      if (reserve.busy || reserve.waiters.length > 0 || now - reserve.lastUsed < RESERVE_IDLE_MS) continue;
      void this.release(reserve);
      this.reserves.delete(subjects);
    }
  }

  /**
   * A frame from the reserve, when it holds enough in the frame's window. A
   * reserve down to half of its last grant asks for the next one at once,
   * so a steady sender finds it refilled instead of waiting for Redis.
   */
  private take(reserve: Reserve, bytes: number, now: number): ChargeResult | undefined {
    if (reserve.frames < 1 || reserve.bytes < bytes || reserve.window !== Math.floor(now / this.windowMs)) {
      return undefined;
    }
    reserve.frames--;
    reserve.bytes -= bytes;
    reserve.lastUsed = now;
    this.stats.local++;
    if (!reserve.busy && !reserve.exactOnly && 2 * reserve.frames < reserve.granted) this.refill(reserve, bytes, now);
    return { charge: { keys: reserve.keys, bytes, frames: 1, reserve } };
  }

  /** Hands out what the reserve holds to its waiters, in order; asks Redis when it cannot serve the first. */
  private serve(reserve: Reserve): void {
    while (reserve.waiters.length > 0 && !reserve.busy) {
      const w = reserve.waiters[0]!;
      const local = this.take(reserve, w.bytes, w.now);
      if (local !== undefined) {
        reserve.waiters.shift();
        w.resolve(local);
        continue;
      }
      if (this.refill(reserve, w.bytes, w.now)) return;
      // No reservation fits (a small budget, or its last eighth): every waiter is charged on its own,
      // all at once (one batch per turn, decided in order), not one round trip after another.
      const waiters = reserve.waiters;
      reserve.waiters = [];
      for (const x of waiters) {
        this.stats.exact++;
        this.budgets.chargeSubjects(reserve.subjects, x.bytes, x.now).then(x.resolve, x.reject);
      }
    }
  }

  /**
   * Asks Redis for a reservation sized for frames of `bytes` at `now`;
   * false when none fits (the reserve is then frame by frame for the rest
   * of the window). Waiters are served when it is answered; Redis failing
   * fails the first waiter's frame, as its own charge would have.
   */
  private refill(reserve: Reserve, bytes: number, now: number): boolean {
    const window = Math.floor(now / this.windowMs);
    if (reserve.window !== window) {
      // A new window: what is left was charged to the old one; give it back there.
      void this.release(reserve);
      reserve.window = window;
      reserve.exactOnly = false;
    }
    const frames = reserve.exactOnly ? 1 : Math.min(reserve.next, this.cap(reserve.subjects, bytes));
    if (frames <= 1) {
      reserve.exactOnly = true;
      return false;
    }
    reserve.busy = true;
    const total = frames * bytes;
    const request = this.budgets.chargeSubjects(reserve.subjects, total, now, frames).then(
      (result): Promise<void> | undefined => {
        reserve.busy = false;
        let refund: Promise<void> | undefined;
        if ('charge' in result) {
          if (reserve.window !== window || this.reserves.get(reserve.subjects) !== reserve) {
            // The window moved on (or the reserve was given back) meanwhile: this grant goes straight back.
            refund = this.budgets.refund(result.charge).catch(() => {});
          } else {
            this.stats.reservations++;
            reserve.keys = result.charge.keys;
            reserve.frames += frames;
            reserve.bytes += total;
            reserve.granted = frames;
            reserve.next = Math.min(2 * frames, this.maxFrames);
          }
        } else if (reserve.window === window) {
          // Declined (past 7/8 of a limit) or refused: frame by frame for the rest of this window.
          reserve.exactOnly = true;
        }
        this.serve(reserve);
        return refund;
      },
      (err: unknown) => {
        reserve.busy = false;
        const w = reserve.waiters.shift();
        w?.reject(err);
        this.serve(reserve);
        return undefined;
      },
    );
    this.requests.add(request);
    const done = (): void => {
      this.requests.delete(request);
    };
    request.then(done, done);
    return true;
  }

  /** The largest reservation the subjects' limits allow: 1/16 of each, in frames of `bytes` bytes. */
  private cap(subjects: Subject[], bytes: number): number {
    let cap = this.maxFrames;
    for (const s of subjects) {
      if (s.maxFrames > 0) cap = Math.min(cap, Math.floor(s.maxFrames / RESERVE_SHARE));
      if (s.maxBytes > 0) cap = Math.min(cap, Math.floor(s.maxBytes / RESERVE_SHARE / Math.max(bytes, 1)));
    }
    return cap;
  }

  /** Gives the reserve's remainder back to Redis (to the window it was charged in) and empties it. */
  private release(reserve: Reserve): Promise<void> {
    const { frames, bytes, keys } = reserve;
    reserve.frames = 0;
    reserve.bytes = 0;
    reserve.keys = [];
    reserve.next = 2;
    reserve.granted = 0;
    if (frames === 0 && bytes === 0) return Promise.resolve();
    return this.budgets.refund({ keys, bytes, frames }).catch(() => {});
  }
}
