/**
 * Once-per-turn flushing of outbound frames. Connections queue what they
 * write during one event-loop turn and are flushed together in setImmediate
 * (after the turn's I/O callbacks): many frames for one peer then cost one
 * syscall instead of one each, which the benchmarks showed to be most of the
 * fast path's CPU time. Order per connection is kept.
 */
import { PerTurn } from '../per-turn.js';

export interface Flushable {
  flush(): void;
}

/** Flushes that threw (a socket closed under us); exposed for metrics and tests. */
export let failedFlushes = 0;

/** Frames a socket layer refused (kept and sent after its drain, not lost); exposed for metrics. */
export let refusedSends = 0;

export function countRefusedSend(): void {
  refusedSends++;
}

function flushOne(t: Flushable): void {
  try {
    t.flush();
  } catch {
    // One dead socket must not take the process or the other connections
    // down. Its fast frames are lost (as on any drop); durable ones are in Redis.
    failedFlushes++;
  }
}

/**
 * The transports with writes queued this turn. A transport queueing again
 * during the flush is flushed next turn, not dropped (PerTurn swaps first).
 * forEach with a function made once: a for-of loop allocates an iterator every turn.
 */
const dirty = new PerTurn<Set<Flushable>>(
  () => new Set(),
  (flushing) => flushing.forEach(flushOne),
);

/** Marks a transport as having queued writes; it is flushed later in this turn. */
export function scheduleFlush(t: Flushable): void {
  dirty.open.add(t);
  dirty.schedule();
}
