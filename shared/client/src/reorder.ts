/**
 * Releases the messages of each stream in sequence order although they
 * arrive out of order (different paths, different latencies). One stream is
 * one sender instance's messages to us (multipath.ts keys it by sender DID
 * and stream id); sequence numbers start at 0.
 *
 * Rules, per stream with `next` = the sequence number it waits for:
 *   - seq == next: released at once, then every buffered successor;
 *   - seq > next: buffered, with its arrival time;
 *   - seq < next: "late" (its gap was given up on): released at once and
 *     flagged, never dropped. Losing a frame is worse than disorder, and a
 *     durable frame must never be lost;
 *   - no frame waits longer than `gapTimeoutMs` (a fast frame that was lost
 *     never comes; a durable one re-sent on another path may be slower):
 *     when the oldest buffered frame has waited that long, every gap in
 *     front of it (and of any other frame that has waited as long) is given
 *     up and the frames are released in order. Many gaps at once cost one
 *     timeout, not one each;
 *   - more than `maxBufferedFrames` buffered in one stream: the gap is given
 *     up at once, as if its timer had fired (memory stays bounded);
 *   - more than `maxStreams` streams: the least recently used one is
 *     flushed (its buffered frames released in order) and forgotten; if it
 *     sends again it starts over and waits for seq 0 (up to one gap timeout).
 *
 * No I/O; timers are injectable so tests can drive them.
 */
import { RelayError } from '@libertaria/protocol';
import { ClientErrorCode } from './codes.js';

export interface ReorderOptions {
  /** Frames buffered per stream while a gap is open, before the gap is given up (default 1024). */
  maxBufferedFrames?: number;
  /** The longest a frame waits for its predecessors before their gap is given up (default 1000 ms). */
  gapTimeoutMs?: number;
  /** Streams remembered (default 1024); the least recently used is flushed and forgotten beyond it. */
  maxStreams?: number;
}

export interface ReorderStats {
  /** Frames held now, all streams. */
  buffered: number;
  /** Frames that arrived after their gap had been given up (released, flagged late). */
  late: number;
  /** Sequence numbers skipped when a gap was given up. */
  skipped: number;
  /** Gaps given up because their timer fired. */
  gapTimeouts: number;
  /** Gaps given up because a stream's buffer was full. */
  overflows: number;
  /** Frames that arrived before their predecessor and waited. */
  reordered: number;
}

export interface ReorderTimers {
  /** Milliseconds on a monotonic clock. */
  now(): number;
  set(callback: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimers: ReorderTimers = {
  now: () => performance.now(),
  set: (callback, ms) => {
    const t = setTimeout(callback, ms);
    (t as { unref?: () => void }).unref?.();
    return t;
  },
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

interface Held {
  readonly item: unknown;
  /** Arrival time (timers.now()). */
  readonly at: number;
}

interface StreamState {
  next: number;
  /** Insertion order = arrival order: the first entry has waited longest. */
  readonly items: Map<number, Held>;
  timer: unknown;
}

export type ReleaseFn<T> = (item: T, late: boolean) => void;

function limit(value: number | undefined, fallback: number, name: string, min: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) {
    throw new RelayError(ClientErrorCode.invalidArgument, `reorder: ${name} must be an integer ≥ ${min}`);
  }
  return value;
}

export class ReorderBuffer<T> {
  readonly maxBufferedFrames: number;
  readonly gapTimeoutMs: number;
  readonly maxStreams: number;
  readonly #release: ReleaseFn<T>;
  readonly #timers: ReorderTimers;
  /** Map order = least recently used first. */
  readonly #streams = new Map<string, StreamState>();
  #buffered = 0;
  #late = 0;
  #skipped = 0;
  #gapTimeouts = 0;
  #overflows = 0;
  #reordered = 0;

  constructor(options: ReorderOptions, release: ReleaseFn<T>, timers: ReorderTimers = realTimers) {
    this.maxBufferedFrames = limit(options.maxBufferedFrames, 1024, 'maxBufferedFrames', 1);
    this.gapTimeoutMs = limit(options.gapTimeoutMs, 1000, 'gapTimeoutMs', 0);
    this.maxStreams = limit(options.maxStreams, 1024, 'maxStreams', 1);
    this.#release = release;
    this.#timers = timers;
  }

  get stats(): ReorderStats {
    return {
      buffered: this.#buffered,
      late: this.#late,
      skipped: this.#skipped,
      gapTimeouts: this.#gapTimeouts,
      overflows: this.#overflows,
      reordered: this.#reordered,
    };
  }

  /** The sequence number `stream` waits for (undefined: unknown stream). */
  expected(stream: string): number | undefined {
    return this.#streams.get(stream)?.next;
  }

  push(stream: string, seq: number, item: T): void {
    let state = this.#streams.get(stream);
    if (state === undefined) {
      state = { next: 0, items: new Map(), timer: undefined };
      this.#streams.set(stream, state);
      if (this.#streams.size > this.maxStreams) this.#evictOldest();
    } else {
      this.#streams.delete(stream);
      this.#streams.set(stream, state);
    }
    if (seq < state.next || state.items.has(seq)) {
      // Its gap was given up (or, from a broken sender, a second frame with one seq): never dropped.
      this.#late++;
      this.#release(item, true);
      return;
    }
    if (seq > state.next) {
      state.items.set(seq, { item, at: this.#timers.now() });
      this.#buffered++;
      this.#reordered++;
      if (state.items.size > this.maxBufferedFrames) {
        this.#overflows++;
        this.#skipGap(state);
        this.#rearm(stream, state);
      } else if (state.timer === undefined) {
        this.#arm(stream, state);
      }
      return;
    }
    this.#release(item, false);
    state.next++;
    this.#releaseRun(state);
    this.#rearm(stream, state);
  }

  /** Releases every buffered frame in order and forgets all streams (e.g. before closing). */
  flush(): void {
    for (const [stream, state] of [...this.#streams]) {
      this.#flushStream(state);
      this.#streams.delete(stream);
    }
  }

  /** Drops every buffered frame and timer (close(): unacknowledged durable frames stay with the relay). */
  clear(): void {
    for (const state of this.#streams.values()) {
      if (state.timer !== undefined) this.#timers.clear(state.timer);
      state.timer = undefined;
    }
    this.#streams.clear();
    this.#buffered = 0;
  }

  /** A timer for the moment the longest-waiting buffered frame reaches gapTimeoutMs. */
  #arm(stream: string, state: StreamState): void {
    const oldest = state.items.values().next();
    if (oldest.done) return;
    const delay = Math.max(0, oldest.value.at + this.gapTimeoutMs - this.#timers.now());
    state.timer = this.#timers.set(() => {
      state.timer = undefined;
      if (this.#streams.get(stream) !== state) return;
      this.#expire(state);
      this.#arm(stream, state);
    }, delay);
  }

  #rearm(stream: string, state: StreamState): void {
    if (state.timer !== undefined) this.#timers.clear(state.timer);
    state.timer = undefined;
    this.#arm(stream, state);
  }

  /** Gives up every gap in front of a frame that has waited gapTimeoutMs. */
  #expire(state: StreamState): void {
    const deadline = this.#timers.now() - this.gapTimeoutMs;
    let limit = -1;
    for (const [seq, held] of state.items) if (held.at <= deadline && seq > limit) limit = seq;
    if (limit < 0) return; // woke a little early: #arm waits for the rest
    this.#gapTimeouts++;
    while (state.next <= limit && state.items.size > 0) this.#skipGap(state);
  }

  /** Gives up the gap in front of the lowest buffered seq and releases the run that starts there. */
  #skipGap(state: StreamState): void {
    let lowest = Number.POSITIVE_INFINITY;
    for (const seq of state.items.keys()) if (seq < lowest) lowest = seq;
    if (lowest === Number.POSITIVE_INFINITY) return;
    this.#skipped += lowest - state.next;
    state.next = lowest;
    this.#releaseRun(state);
  }

  #releaseRun(state: StreamState): void {
    for (;;) {
      const held = state.items.get(state.next);
      if (held === undefined) return;
      state.items.delete(state.next);
      this.#buffered--;
      state.next++;
      this.#release(held.item as T, false);
    }
  }

  #flushStream(state: StreamState): void {
    if (state.timer !== undefined) this.#timers.clear(state.timer);
    state.timer = undefined;
    while (state.items.size > 0) this.#skipGap(state);
  }

  #evictOldest(): void {
    const oldest = this.#streams.entries().next();
    if (oldest.done) return;
    const [stream, state] = oldest.value;
    this.#flushStream(state);
    this.#streams.delete(stream);
  }
}
