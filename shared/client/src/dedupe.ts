/**
 * Duplicate suppression and the RESUME watermark, as a pure class (no I/O,
 * no timers) so the rules can be tested on their own.
 *
 * Why duplicates happen: a durable frame stays in the relay's queue until the
 * application acknowledges it, and after a reconnect the relay redelivers
 * everything after the RESUME position, including frames that were delivered
 * before but not yet acknowledged (or whose ACK was lost with the
 * connection). Senders also retry with the same messageId. The application
 * should see each message once.
 *
 * Rules, for a frame with id `id` (inboundKey: sender and messageId) and
 * queue position `p` (0 for fast frames):
 *   - durable and p ≤ lastAcked: already acknowledged → `ack-again`
 *     (ACK it once more so the relay can delete it, do not yield it);
 *   - id seen and acknowledged (or seen as a fast frame) → `ack-again` for a
 *     durable frame, `drop` for a fast one;
 *   - id seen, yielded, not yet acknowledged by the application → `drop`
 *     (its ack() is still to come and will acknowledge it);
 *   - otherwise → `new`.
 *
 * lastAcked (the RESUME watermark) is the highest position such that every
 * durable frame at or below it was acknowledged by the application. The
 * relay delivers a queue in position order, so positions the client never
 * saw below the first outstanding one do not exist in the queue any more.
 * Durable frames the client had to leave unread (inbound buffer full) form a
 * "hole" from the lowest to the highest such position: it pins the watermark
 * below its low end until a later connection delivers a frame at or beyond
 * its high end (in-order delivery: by then the relay has redelivered every
 * frame of the hole that still exists, and those are outstanding again).
 *
 * Memory: ids are kept in an LRU of `maxIds` entries; outstanding positions
 * are bounded by the client's limit on unacknowledged inbound messages.
 */

import { toHex } from './bytes.js';

export type DedupeVerdict = 'new' | 'ack-again' | 'drop';

/**
 * The id a frame is tracked by: its source routing hint and its messageId
 * (hex, 48 + 32 digits). A messageId is chosen by its sender, so two senders
 * may pick the same one (by accident or on purpose): keyed on the id alone,
 * the second sender's message would be dropped as a duplicate of the first.
 * The relay's queue is idempotent per (source, messageId) too.
 */
export function inboundKey(source: Uint8Array, messageId: Uint8Array): string {
  return toHex(source) + toHex(messageId);
}

/**
 * What must survive an application restart so nothing acknowledged comes
 * back to it (the client persists it before each ACK goes out, see the
 * client's `outbox` option): the watermark, the highest acknowledged
 * position, the positions yielded but not acknowledged, and the unread hole.
 */
export interface DedupeSnapshot {
  watermark: number;
  highestAcked: number;
  outstanding: number[];
  hole?: { low: number; high: number } | undefined;
}

const PENDING = 0;
const ACKED = 1;
type IdState = typeof PENDING | typeof ACKED;

export interface DedupeOptions {
  /** Message ids remembered (default 100,000). */
  maxIds?: number;
}

export class DedupeTracker {
  readonly #maxIds: number;
  /** id → state; Map iteration order is insertion order, which makes it an LRU. */
  readonly #ids = new Map<string, IdState>();
  /** Positions yielded to the application and not yet acknowledged, ascending. */
  readonly #outstanding: number[] = [];
  #highestAcked = 0;
  #watermark = 0;
  /** Lowest and highest durable positions left unread and not yet passed again. */
  #hole: { low: number; high: number } | undefined;
  /** Connection generation the hole was left on. */
  #holeGeneration = 0;
  #generation = 0;
  /**
   * After restore(): positions at or below this one that are neither
   * outstanding nor in the hole were acknowledged before the restart (or no
   * longer exist in the queue): they are acknowledged again, never yielded.
   */
  #restoredHigh = 0;

  constructor(options: DedupeOptions = {}) {
    this.#maxIds = Math.max(1, options.maxIds ?? 100_000);
  }

  /** The RESUME position: every durable frame at or below it was acknowledged by the application. */
  get lastAcked(): number {
    return this.#watermark;
  }

  /** Durable messages yielded to the application and not yet acknowledged. */
  get unacked(): number {
    return this.#outstanding.length;
  }

  /** Ids currently remembered. */
  get size(): number {
    return this.#ids.size;
  }

  /** Classifies an inbound frame; does not record it. */
  check(id: string, position: number): DedupeVerdict {
    const durable = position > 0;
    if (durable && position <= this.#watermark) return 'ack-again';
    if (durable && position <= this.#restoredHigh && this.#ackedBeforeRestart(position)) return 'ack-again';
    const state = this.#ids.get(id);
    if (state === undefined) return 'new';
    if (state === PENDING) return 'drop';
    return durable ? 'ack-again' : 'drop';
  }

  /**
   * Records a frame handed to the application. A durable one stays
   * outstanding until ack(); a fast one is only remembered by id.
   */
  accept(id: string, position: number): void {
    this.#passed(position);
    if (position > 0) {
      this.#remember(id, PENDING);
      insertSorted(this.#outstanding, position);
      this.#recompute();
    } else {
      this.#remember(id, ACKED);
    }
  }

  /** Records the application's acknowledgement (or a frame acknowledged without yielding it, e.g. a poison frame). */
  ack(id: string, position: number): void {
    this.#remember(id, ACKED);
    if (position <= 0) return;
    this.#passed(position);
    removeSorted(this.#outstanding, position);
    if (position > this.#highestAcked) this.#highestAcked = position;
    this.#recompute();
  }

  /** Records a durable frame left unread (not acknowledged, will be redelivered on the next connection). */
  leaveUnread(position: number): void {
    if (position <= 0) return;
    this.#passed(position);
    if (this.#hole === undefined) {
      this.#hole = { low: position, high: position };
    } else {
      this.#hole.low = Math.min(this.#hole.low, position);
      this.#hole.high = Math.max(this.#hole.high, position);
    }
    this.#holeGeneration = this.#generation;
    this.#recompute();
  }

  /**
   * The relay's queue restarted (QUEUE_RESET): its positions begin at 1
   * again, so every position-based memory is void. Message ids stay
   * remembered (an id is never reused), and nothing yielded is outstanding
   * any more in the new numbering: it will be redelivered if it still exists.
   */
  resetPositions(): void {
    this.#watermark = 0;
    this.#highestAcked = 0;
    this.#restoredHigh = 0;
    this.#outstanding.length = 0;
    this.#hole = undefined;
    for (const [id, state] of this.#ids) if (state === PENDING) this.#ids.delete(id);
  }

  /** The state to persist (see DedupeSnapshot). */
  snapshot(): DedupeSnapshot {
    return {
      watermark: this.#watermark,
      highestAcked: this.#highestAcked,
      outstanding: [...this.#outstanding],
      ...(this.#hole !== undefined ? { hole: { ...this.#hole } } : {}),
    };
  }

  /**
   * Resumes from a snapshot taken by an earlier process. The outstanding
   * positions stay outstanding (the application never acknowledged them:
   * they are redelivered and yielded again), so the watermark does not pass
   * them; positions the snapshot shows acknowledged are never yielded again.
   */
  restore(s: DedupeSnapshot): void {
    for (const n of [s.watermark, s.highestAcked, ...s.outstanding]) {
      if (!Number.isSafeInteger(n) || n < 0) throw new RangeError('dedupe snapshot: positions must be integers ≥ 0');
    }
    this.#watermark = s.watermark;
    this.#highestAcked = Math.max(s.highestAcked, s.watermark);
    this.#outstanding.length = 0;
    for (const p of [...s.outstanding].sort((a, b) => a - b)) {
      if (p > s.watermark) insertSorted(this.#outstanding, p);
    }
    this.#hole = s.hole === undefined ? undefined : { ...s.hole };
    this.#holeGeneration = this.#generation;
    this.#restoredHigh = this.#highestAcked;
  }

  #ackedBeforeRestart(position: number): boolean {
    const at = lowerBound(this.#outstanding, position);
    if (this.#outstanding[at] === position) return false;
    const hole = this.#hole;
    return hole === undefined || position < hole.low || position > hole.high;
  }

  /** Whether a frame was left unread and has not been redelivered yet. */
  get hasHole(): boolean {
    return this.#hole !== undefined;
  }

  /** Call when a new connection has sent RESUME {lastAcked}: the relay now redelivers every hole in order. */
  newConnection(): void {
    this.#generation++;
  }

  /** A durable frame at `position` arrived: on a later connection than the hole, at or beyond its end, the relay got past it. */
  #passed(position: number): void {
    if (this.#hole !== undefined && this.#generation > this.#holeGeneration && position >= this.#hole.high) {
      this.#hole = undefined;
    }
  }

  #remember(id: string, state: IdState): void {
    this.#ids.delete(id);
    this.#ids.set(id, state);
    if (this.#ids.size > this.#maxIds) {
      const oldest = this.#ids.keys().next();
      if (!oldest.done) this.#ids.delete(oldest.value);
    }
  }

  #recompute(): void {
    let candidate = this.#highestAcked;
    const first = this.#outstanding[0];
    if (first !== undefined) candidate = Math.min(candidate, first - 1);
    if (this.#hole !== undefined) candidate = Math.min(candidate, this.#hole.low - 1);
    // Never moves back: RESUME already told the relay everything at or below it is done.
    if (candidate > this.#watermark) this.#watermark = candidate;
  }
}

function lowerBound(list: readonly number[], value: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function insertSorted(list: number[], value: number): void {
  // Deliveries come in order, so this is nearly always an append.
  const last = list[list.length - 1];
  if (last === undefined || last < value) {
    list.push(value);
    return;
  }
  const at = lowerBound(list, value);
  if (list[at] !== value) list.splice(at, 0, value);
}

function removeSorted(list: number[], value: number): void {
  const at = lowerBound(list, value);
  if (list[at] === value) list.splice(at, 1);
}
