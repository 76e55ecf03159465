/**
 * Which path a MultipathSession (multipath.ts) sends a frame on: the three
 * strategies of the seed's MultipathStrategy, as a pure class (no I/O) so
 * the choices can be tested on their own. Only connected paths are
 * candidates; `exclude` removes paths a frame was already written to.
 *
 *   - failover: the first connected path in configuration order (primary,
 *     then backup, …): everything goes to the primary while it is up, to the
 *     backup while it is not, and back to the primary when it returns;
 *   - load-balance: the connected path with the fewest durable sends awaiting
 *     their relay ACK (join the shortest queue: a slow or stuck path gets
 *     fewer frames), ties broken round robin, so fast frames, which have
 *     nothing outstanding, alternate over all paths;
 *   - aggregate: smooth weighted round robin over the connected paths (the
 *     nginx algorithm): path i gets weight_i / Σ weights of the frames,
 *     interleaved as evenly as possible, whatever its queue; this is Linux
 *     bonding's balance-rr with weights. The receiver reorders.
 */

export type MultipathStrategy = 'failover' | 'load-balance' | 'aggregate';

export const MULTIPATH_STRATEGIES: readonly MultipathStrategy[] = ['failover', 'load-balance', 'aggregate'];

export interface PathView {
  readonly connected: boolean;
  /** Durable sends written on this path and not yet ACKed or NACKed. */
  readonly outstanding: number;
  /** Positive integer (aggregate only). */
  readonly weight: number;
}

export class PathScheduler {
  readonly strategy: MultipathStrategy;
  /** load-balance: the path chosen last (ties go to the next one after it). */
  #cursor = -1;
  /** aggregate: the running "current weight" of each path. */
  #current: number[] = [];

  constructor(strategy: MultipathStrategy) {
    this.strategy = strategy;
  }

  /** The index of the path for the next frame, or undefined when no candidate is connected. */
  pick(paths: readonly PathView[], exclude?: ReadonlySet<number>): number | undefined {
    const eligible: number[] = [];
    for (let i = 0; i < paths.length; i++) {
      if (paths[i]!.connected && exclude?.has(i) !== true) eligible.push(i);
    }
    if (eligible.length === 0) return undefined;
    switch (this.strategy) {
      case 'failover':
        return eligible[0];
      case 'load-balance':
        return this.#leastOutstanding(paths, eligible);
      case 'aggregate':
        return this.#weighted(paths, eligible);
    }
  }

  #leastOutstanding(paths: readonly PathView[], eligible: number[]): number {
    const n = paths.length;
    let best: number | undefined;
    // Scan starting after the last choice so that equal paths take turns.
    for (let k = 1; k <= n; k++) {
      const i = (this.#cursor + k + n) % n;
      if (!eligible.includes(i)) continue;
      if (best === undefined || paths[i]!.outstanding < paths[best]!.outstanding) best = i;
    }
    this.#cursor = best!;
    return best!;
  }

  #weighted(paths: readonly PathView[], eligible: number[]): number {
    if (this.#current.length !== paths.length) this.#current = new Array<number>(paths.length).fill(0);
    let total = 0;
    let best = eligible[0]!;
    for (const i of eligible) {
      const w = paths[i]!.weight;
      this.#current[i]! += w;
      total += w;
      if (this.#current[i]! > this.#current[best]!) best = i;
    }
    this.#current[best]! -= total;
    return best;
  }
}
