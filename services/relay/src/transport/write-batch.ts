/**
 * Once-per-turn flushing of outbound frames. Connections queue what they
 * write during one event-loop turn and are flushed together in setImmediate
 * (after the turn's I/O callbacks): many frames for one peer then cost one
 * syscall instead of one each, which the benchmarks showed to be most of the
 * fast path's CPU time. Order per connection is kept.
 */
export interface Flushable {
  flush(): void;
}

/**
 * The transports with writes queued this turn. Replaced, not cleared, at
 * each flush: V8's Set and Map clear() keep the old table pointing at its
 * replacement, so once one table has been promoted every later table (and
 * what it holds) survives the scavenges until a full collection: a chain
 * that promoted every durable frame's objects (docs/benchmarks.md, "a
 * collection cleared every turn"). A fresh Set per turn dies young.
 */
let dirty = new Set<Flushable>();
let scheduled = false;

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

function flushAll(): void {
  scheduled = false;
  // Swapped first: a transport queueing again during this flush is flushed next turn, not dropped.
  const flushing = dirty;
  dirty = new Set();
  // forEach with a function made once: a for-of loop allocates an iterator every turn.
  flushing.forEach(flushOne);
}

/** Marks a transport as having queued writes; it is flushed later in this turn. */
export function scheduleFlush(t: Flushable): void {
  dirty.add(t);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flushAll);
  }
}
