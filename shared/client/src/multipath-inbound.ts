/**
 * The receive side of a MultipathSession (multipath.ts): merges the copies
 * its paths deliver into one stream, each message id once, in each sender's
 * order.
 *
 *   - The first copy of a message id is opened (sealed sessions) and
 *     decoded (multipath-frame.ts), one at a time in arrival order, and goes
 *     through the ReorderBuffer (reorder.ts) to messages().
 *   - Later copies (a durable frame reaches every connection of our DID; a
 *     fast one every connection on the node it went through) are hidden.
 *     While the application holds the message they are kept; its ack()
 *     acknowledges every copy on its own path, and a copy that arrives after
 *     ack() is acknowledged at once. Nothing is acknowledged before the
 *     application says so, so every path's RESUME watermark stays honest.
 *   - A first copy that does not open or decode is acknowledged everywhere
 *     (a poison frame must not block the queue), reported, never delivered.
 *   - Flow control: `full` while `capacity` messages wait for the
 *     application (or are being opened); the session stops reading its
 *     paths meanwhile (waitForRoom()).
 *
 * Browser-safe: no Node imports.
 */
import type { LibertariaError } from '@libertaria/protocol';
import { bytesEqual, copyBytes, toHex } from './bytes.js';
import type { ClientLogger, InboundMessage } from './client.js';
import { ClientErrorCode, toLibertariaError } from './codes.js';
import { inboundKey } from './dedupe.js';
import { Inbox } from './inbox.js';
import { decodeMultipathFrame, type MultipathFrame } from './multipath-frame.js';
import { ReorderBuffer, type ReorderOptions, type ReorderStats } from './reorder.js';

export interface MultipathMessage {
  readonly messageId: Uint8Array;
  /** Sender DID, verified against the source hint the relay authenticated. */
  readonly from: string;
  readonly payload: Uint8Array;
  readonly durable: boolean;
  /** Queue position of the first copy (0 for fast). */
  readonly position: number;
  /** The path the first copy arrived on. */
  readonly path: string;
  readonly seq: number;
  /** The sender instance's stream id (hex). */
  readonly streamId: string;
  /** It arrived after the reorder buffer had given up waiting for it: released out of order. */
  readonly late: boolean;
  /** Acknowledges every copy, on every path it arrived on (and any copy still to come). Idempotent. */
  ack(): Promise<void>;
}

export interface MultipathInboundOptions {
  /** Messages released and not yet taken before `full` (the session then stops reading its paths). */
  capacity: number;
  /** Acknowledged message ids remembered to hide and acknowledge late copies. */
  dedupeSize: number;
  reorder?: ReorderOptions;
  /** Turns a first copy's payload into the framed plaintext (SessionManager.open, or as is when unsealed). */
  open(copy: InboundMessage): Promise<Uint8Array> | Uint8Array;
  /** A first copy that did not open or decode (already acknowledged). */
  onError(error: LibertariaError, path: string, messageId: Uint8Array): void;
  logger?: ClientLogger;
}

export interface MultipathInboundStats {
  /** Messages released to messages(). */
  delivered: number;
  /** Copies hidden (a message id seen before). */
  duplicates: number;
  reorder: ReorderStats;
}

/** A message id seen and not yet acknowledged by the application. */
interface LiveEntry {
  /** Every copy so far, first one first. */
  readonly copies: InboundMessage[];
}

export class MultipathInbound {
  readonly #options: MultipathInboundOptions;
  readonly #inbox: Inbox<MultipathMessage>;
  readonly #reorder: ReorderBuffer<MultipathMessage>;
  readonly #live = new Map<string, LiveEntry>();
  /** Acknowledged (or fast, or refused) ids, LRU. */
  readonly #done = new Map<string, true>();
  /** First copies are opened one at a time, in arrival order. */
  #opening: Promise<void> = Promise.resolve();
  #pendingOpens = 0;
  #roomWaiters: (() => void)[] = [];
  #delivered = 0;
  #duplicates = 0;
  #closed = false;

  constructor(options: MultipathInboundOptions) {
    this.#options = options;
    this.#inbox = new Inbox<MultipathMessage>(Number.MAX_SAFE_INTEGER, () => this.#wakeIfRoom());
    this.#reorder = new ReorderBuffer<MultipathMessage>(options.reorder ?? {}, (message, late) =>
      this.#deliver(message, late),
    );
  }

  get stats(): MultipathInboundStats {
    return { delivered: this.#delivered, duplicates: this.#duplicates, reorder: this.#reorder.stats };
  }

  /** The application is `capacity` messages behind: stop reading the paths. */
  get full(): boolean {
    return !this.#closed && this.#inbox.length + this.#pendingOpens >= this.#options.capacity;
  }

  /** Resolves once `full` is false (or the inbound side is closed). */
  waitForRoom(): Promise<void> {
    if (!this.full) return Promise.resolve();
    return new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
  }

  messages(): AsyncIterable<MultipathMessage> {
    return { [Symbol.asyncIterator]: () => this.#inbox.iterator() };
  }

  /** A copy that came through `path`: returns whether it was the first of its message id. */
  add(path: string, copy: InboundMessage): 'first' | 'duplicate' {
    // Per sender (fromHint): two senders may choose the same messageId.
    const key = inboundKey(copy.fromHint, copy.messageId);
    if (this.#done.has(key)) {
      this.#duplicates++;
      // Already acknowledged by the application (or refused): this path may let the relay forget it too.
      void copy.ack();
      return 'duplicate';
    }
    const live = this.#live.get(key);
    if (live !== undefined) {
      this.#duplicates++;
      const first = live.copies[0];
      if (first !== undefined && (copy.from !== first.from || !bytesEqual(copy.payload, first.payload))) {
        this.#options.logger?.warn?.('multipath: two frames share a message id but differ', { key, path });
      }
      live.copies.push(copy);
      return 'duplicate';
    }
    const entry: LiveEntry = { copies: [copy] };
    this.#live.set(key, entry);
    this.#pendingOpens++;
    this.#opening = this.#opening.then(() => this.#open(path, key, entry, copy));
    return 'first';
  }

  /** Drops what is buffered (never acknowledged: the relay keeps it) and ends messages(), with `error` if given. */
  close(error?: LibertariaError): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reorder.clear();
    this.#inbox.clear();
    this.#inbox.end(error);
    for (const wake of this.#roomWaiters.splice(0)) wake();
  }

  async #open(path: string, key: string, entry: LiveEntry, first: InboundMessage): Promise<void> {
    let frame: MultipathFrame;
    try {
      frame = decodeMultipathFrame(await this.#options.open(first));
    } catch (error) {
      this.#pendingOpens--;
      this.#wakeIfRoom();
      if (this.#closed) return;
      // A frame that never opens must not block the queue: acknowledged everywhere, reported, not delivered.
      this.#finish(key, entry);
      this.#options.onError(
        toLibertariaError(error, 'opening a multipath message', ClientErrorCode.invalidArgument),
        path,
        copyBytes(first.messageId),
      );
      return;
    }
    this.#pendingOpens--;
    if (this.#closed) return;
    const streamId = toHex(frame.streamId);
    let acked = !first.durable;
    const message: MultipathMessage = {
      messageId: first.messageId,
      from: first.from,
      payload: copyBytes(frame.payload),
      durable: first.durable,
      position: first.position,
      path,
      seq: frame.seq,
      streamId,
      late: false,
      ack: () => {
        if (!acked) {
          acked = true;
          this.#finish(key, entry);
        }
        return Promise.resolve();
      },
    };
    // Fast frames need no acknowledgement: from now on their copies are just hidden.
    if (!first.durable) this.#finish(key, entry);
    this.#reorder.push(`${first.from} ${streamId}`, frame.seq, message);
    // It may have gone to the reorder buffer rather than the inbox: a paused path may read again.
    this.#wakeIfRoom();
  }

  #deliver(message: MultipathMessage, late: boolean): void {
    if (this.#closed) return;
    this.#delivered++;
    this.#inbox.push(late ? { ...message, late: true } : message);
  }

  #wakeIfRoom(): void {
    if (this.full) return;
    for (const wake of this.#roomWaiters.splice(0)) wake();
  }

  /** The message is done with: acknowledge every copy on its own path and remember the id. */
  #finish(key: string, entry: LiveEntry): void {
    if (this.#live.get(key) === entry) this.#live.delete(key);
    for (const copy of entry.copies.splice(0)) void copy.ack();
    this.#done.delete(key);
    this.#done.set(key, true);
    if (this.#done.size > this.#options.dedupeSize) {
      const oldest = this.#done.keys().next();
      if (!oldest.done) this.#done.delete(oldest.value);
    }
  }
}
