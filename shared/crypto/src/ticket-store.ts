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
  /**
   * Most ids remembered at once (default 1,000,000). When full (after
   * pruning expired ids) consumeOnce answers false: a replay guard that
   * cannot remember must refuse, not forget (fail closed).
   */
  maxEntries?: number;
  clock?: () => number;
}

/** A TicketStore in memory, for tests and single-process peers. Expired ids are pruned as it goes. */
export class InMemoryTicketStore implements TicketStore {
  readonly #seen = new Map<string, number>();
  readonly #retentionMs: number;
  readonly #maxEntries: number;
  readonly #clock: () => number;

  constructor(options: InMemoryTicketStoreOptions = {}) {
    this.#retentionMs = options.retentionMs ?? 24 * 60 * 60 * 1000;
    this.#maxEntries = options.maxEntries ?? 1_000_000;
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
    if (this.#seen.size >= this.#maxEntries) return false;
    this.#seen.set(id, now + this.#retentionMs);
    return true;
  }
}

/**
 * A TicketStore that says "fresh" only when every one of `stores` does, asked
 * in order and stopping at the first "seen". Put a local store first: a
 * remote one (the relay cluster's ONCE_CHECK) can lie "fresh" to replay a
 * message at us, and the local store still remembers what this process
 * accepted. The remote one adds what other processes of the same DID
 * accepted.
 */
export class AllTicketStores implements TicketStore {
  readonly #stores: readonly TicketStore[];

  constructor(...stores: TicketStore[]) {
    this.#stores = stores;
  }

  async consumeOnce(ticketId: Uint8Array): Promise<boolean> {
    for (const store of this.#stores) if (!(await store.consumeOnce(ticketId))) return false;
    return true;
  }
}
