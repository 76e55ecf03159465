/**
 * Work in flight counted with a number, not a promise each: the durable
 * SENDs a node has asked Redis to store. A drain waits until none is left
 * (idle()), as it waits for the promises registered with trackDurableWrite.
 */
export class InFlightCount {
  private count = 0;
  private waiters: Array<() => void> = [];

  get size(): number {
    return this.count;
  }

  started(): void {
    this.count++;
  }

  settled(): void {
    if (--this.count > 0 || this.waiters.length === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves once nothing is in flight. */
  idle(): Promise<void> {
    if (this.count <= 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}
