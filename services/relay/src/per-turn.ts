/**
 * A collection that gathers one event-loop turn's work and hands it over at
 * setImmediate (after the turn's I/O callbacks): the relay's batches per
 * turn (outbound writes, durable enqueues and ACK budgets, cross-node
 * messages, replica waits) each turn many small requests into one.
 *
 * The collection is **replaced, not cleared**, at each flush. V8's Map and
 * Set clear() (and a shrinking delete()) allocate a new hash table and leave
 * the old one pointing at it. Once one table of a long-lived collection has
 * been promoted to old space, every later table, and everything it holds,
 * then survives the scavenges until a full collection: a chain that promoted
 * every durable frame's objects and made a full collection every few
 * seconds (docs/benchmarks.md, "a collection cleared every turn"). A fresh
 * collection per turn dies young with what it held.
 */
export class PerTurn<T> {
  private value: T;
  private scheduled = false;
  /** Made once: a closure per schedule would be an allocation per turn. */
  private readonly run = (): void => {
    this.scheduled = false;
    // Swapped first: work added while flushing goes to the next turn, not into the batch being sent.
    const batch = this.value;
    this.value = this.make();
    this.flush(batch);
  };

  /**
   * @param make  a new, empty collection (called once now and once per flush)
   * @param flush takes one turn's collection; it is never handed out again
   */
  constructor(
    private readonly make: () => T,
    private readonly flush: (batch: T) => void,
  ) {
    this.value = make();
  }

  /** This turn's collection: add to it, then call schedule(). */
  get open(): T {
    return this.value;
  }

  /** Makes sure this turn's collection is flushed at the end of the turn. */
  schedule(): void {
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.run);
    }
  }
}
