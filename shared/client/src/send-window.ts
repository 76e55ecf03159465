/**
 * The durable send window of RelayClient: durable sends live here
 * (insertion order = send order) until the relay ACKs or NACKs them. At most
 * `maxInFlight` of them are on the wire at once, counted on the connection
 * (`inFlight`); the rest wait in order. After a reconnect every one of them
 * is written again with the same messageId (the relay is idempotent on it),
 * so a durable send is never lost and never reported as done without an ACK.
 *
 * The window does not own the connection: the client hands it each new one
 * (resend) and gives it the function that writes a frame.
 *
 * Browser-safe: no Node-only imports.
 */
import { type LibertariaError, RelayError, type SendFrame } from '@libertaria/protocol';
import { toHex } from './bytes.js';
import type { SendResult } from './client-types.js';
import { ClientErrorCode } from './codes.js';
import { rejectUnacknowledged } from './run-status.js';

/** What the window needs of the client's connection record. */
export interface WindowConnection {
  readonly over: boolean;
  /** Durable sends written on this connection and not yet ACKed or NACKed. */
  inFlight: number;
  readonly url: { readonly href: string };
  readonly welcome: { readonly maxPayload: number };
}

export interface OutboundEntry<S extends WindowConnection> {
  readonly key: string;
  /** Its record in the outbox, if there is one. */
  outboxName?: string;
  readonly messageId: Uint8Array;
  readonly frame: SendFrame;
  readonly resolve: (result: SendResult) => void;
  readonly reject: (error: Error) => void;
  /** The session it was last written on; a new session writes it again. */
  session: S | undefined;
  sentAt: number;
}

/** A FIFO of keys with O(1) shift (Array#shift is O(n)). */
class KeyQueue {
  #items: string[] = [];
  #head = 0;
  push(key: string): void {
    this.#items.push(key);
  }
  shift(): string | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const key = this.#items[this.#head++];
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return key;
  }
  reset(keys: Iterable<string>): void {
    this.#items = [...keys];
    this.#head = 0;
  }
}

export class SendWindow<S extends WindowConnection> {
  readonly #outbound = new Map<string, OutboundEntry<S>>();
  readonly #unsent = new KeyQueue();
  readonly #maxInFlight: number;
  /** Writes one frame; on failure the connection ends and false is returned. */
  readonly #write: (session: S, frame: SendFrame) => boolean;

  constructor(maxInFlight: number, write: (session: S, frame: SendFrame) => boolean) {
    this.#maxInFlight = maxInFlight;
    this.#write = write;
  }

  /** Durable sends not yet ACKed or NACKed. */
  get size(): number {
    return this.#outbound.size;
  }

  has(key: string): boolean {
    return this.#outbound.has(key);
  }

  /** The oldest pending send (the first an ACK is owed for). */
  oldest(): OutboundEntry<S> | undefined {
    const first = this.#outbound.values().next();
    return first.done ? undefined : first.value;
  }

  /** Queues a send after every earlier one and writes it on `session` (the current connection) if the window has room. */
  add(entry: OutboundEntry<S>, session: S | undefined): void {
    this.#outbound.set(entry.key, entry);
    this.#unsent.push(entry.key);
    if (session !== undefined) this.pump(session);
  }

  /** A new connection: every pending send is written on it again, in send order, as the window allows. */
  resend(session: S): void {
    this.#unsent.reset(this.#outbound.keys());
    this.pump(session);
  }

  /** Writes waiting durable sends while the in-flight window has room. */
  pump(session: S): void {
    while (!session.over && session.inFlight < this.#maxInFlight) {
      const key = this.#unsent.shift();
      if (key === undefined) return;
      const entry = this.#outbound.get(key);
      if (entry === undefined || entry.session === session) continue;
      if (entry.frame.payload.length > session.welcome.maxPayload) {
        this.#outbound.delete(key);
        entry.reject(
          new RelayError(
            ClientErrorCode.payloadTooLarge,
            `send: ${entry.frame.payload.length} bytes exceed ${session.url.href}'s limit of ${session.welcome.maxPayload}`,
          ),
        );
        continue;
      }
      entry.session = session;
      entry.sentAt = Date.now();
      session.inFlight++;
      if (!this.#write(session, entry.frame)) return;
    }
  }

  /** The ACK or NACK for `messageId` arrived on `session`: the send leaves the window, which makes room. */
  take(messageId: Uint8Array, session: S): OutboundEntry<S> | undefined {
    const key = toHex(messageId);
    const entry = this.#outbound.get(key);
    if (entry === undefined) return undefined;
    this.#outbound.delete(key);
    if (entry.session === session) {
      session.inFlight--;
      this.pump(session);
    }
    return entry;
  }

  /** The client stops: every pending send rejects with `reason`'s code; the relay may or may not have stored it (run-status.ts). */
  rejectAll(reason: LibertariaError): void {
    rejectUnacknowledged(this.#outbound, reason);
  }
}
