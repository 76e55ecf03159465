/**
 * "Seen once" stores for single-use values: 0-RTT ticket ids, anonymous
 * request ids and replay ids of last-resort PQXDH handshakes. The relay
 * cluster will back this with Redis (SET key NX PX retention); the ids are
 * derived values that reveal no key, so a relay may hold them.
 */
import { toHex } from './bytes.js';

export interface TicketStore {
  /**
   * True the first time `ticketId` is presented, false every later time for
   * at least the store's retention. Must be atomic across concurrent callers
   * (Redis: SET … NX). Callers accept a message only on true.
   */
  consumeOnce(ticketId: Uint8Array): Promise<boolean>;
}

export interface InMemoryTicketStoreOptions {
  /** How long a consumed id is remembered; must cover the freshness window of what it guards. */
  retentionMs?: number;
  clock?: () => number;
}

/** A TicketStore in memory, for tests and single-process peers. Expired ids are pruned as it goes. */
export class InMemoryTicketStore implements TicketStore {
  readonly #seen = new Map<string, number>();
  readonly #retentionMs: number;
  readonly #clock: () => number;

  constructor(options: InMemoryTicketStoreOptions = {}) {
    this.#retentionMs = options.retentionMs ?? 24 * 60 * 60 * 1000;
    this.#clock = options.clock ?? Date.now;
  }

  get size(): number {
    return this.#seen.size;
  }

  async consumeOnce(ticketId: Uint8Array): Promise<boolean> {
    const now = this.#clock();
    // Insertion order is expiry order (constant retention), so pruning stops at the first live entry.
    for (const [id, expiry] of this.#seen) {
      if (expiry > now) break;
      this.#seen.delete(id);
    }
    const id = toHex(ticketId);
    if (this.#seen.has(id)) return false;
    this.#seen.set(id, now + this.#retentionMs);
    return true;
  }
}
