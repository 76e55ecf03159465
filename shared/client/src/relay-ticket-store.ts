/**
 * A TicketStore (session/ticket-store.ts) kept by the relay cluster: each
 * consumeOnce is one ONCE_CHECK, answered by a Redis SET NX shared by every
 * node. Use it as the replay guard of 0-RTT resumption and of anonymous
 * requests when the same DID may run on several devices or processes (or
 * connect to several nodes): only one of them can ever accept a given first
 * flight. Ids are namespaced on the relay by our routing hint, and here by a
 * short label per use, so uses never collide.
 */

import type { TicketStore } from '@libertaria/crypto';
import { MAX_ONCE_ID_BYTES } from '@libertaria/protocol';

/** What RelayTicketStore needs of a RelayClient. */
export interface OnceChecker {
  consumeOnce(id: Uint8Array, retentionMs: number): Promise<boolean>;
}

export interface RelayTicketStoreOptions {
  /** How long the cluster remembers each id; must cover the freshness window of what it guards. */
  retentionMs: number;
  /** Prefix that separates this use's ids from others' (at most 16 bytes of UTF-8). */
  label: string;
}

export class RelayTicketStore implements TicketStore {
  readonly #relay: OnceChecker;
  readonly #retentionMs: number;
  readonly #label: Uint8Array;

  constructor(relay: OnceChecker, options: RelayTicketStoreOptions) {
    this.#label = new TextEncoder().encode(options.label);
    if (this.#label.length > 16) throw new RangeError('RelayTicketStore label must be at most 16 bytes');
    if (!Number.isSafeInteger(options.retentionMs) || options.retentionMs < 1000) {
      throw new RangeError('RelayTicketStore retentionMs must be an integer of at least 1000');
    }
    this.#relay = relay;
    this.#retentionMs = options.retentionMs;
  }

  consumeOnce(ticketId: Uint8Array): Promise<boolean> {
    const id = new Uint8Array(this.#label.length + 1 + ticketId.length);
    id.set(this.#label, 0);
    id[this.#label.length] = 0x00;
    id.set(ticketId, this.#label.length + 1);
    if (id.length > MAX_ONCE_ID_BYTES) {
      return Promise.reject(new RangeError(`single-use id of ${id.length} bytes exceeds ${MAX_ONCE_ID_BYTES}`));
    }
    return this.#relay.consumeOnce(id, this.#retentionMs);
  }
}
