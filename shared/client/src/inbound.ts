/**
 * RelayClient's inbound side: what happens to a DELIVER
 * (docs/client.md#duplicates-acknowledgements-and-resume and
 * #inbound-flow-control).
 *
 * - Duplicates: the DedupeTracker (dedupe.ts, keyed on sender hint and
 *   messageId) says whether a frame is new, to be acknowledged again, or
 *   dropped; its watermark is what RESUME carries.
 * - Flow control: the bounded Inbox (inbox.ts) that messages() reads; fast
 *   frames beyond it are dropped, durable ones left with the relay (not
 *   acknowledged) until the application has drained enough, and then the
 *   connection is replaced so the relay delivers them again.
 * - Opening: sealed frames are opened one at a time in arrival order, and
 *   unsealed ones queue behind them, so the application sees them in order;
 *   a durable message is acknowledged to the relay only when the
 *   application calls ack() (after the SessionManager forgot its kept
 *   plaintext), with the inbound state persisted first when there is an
 *   outbox.
 * - What is never shown to the application: control envelopes (a peer's
 *   path update, path-updates.ts) and anonymous requests (handed to the
 *   AnonymousResponder); frames that cannot be accepted are acknowledged
 *   so they cannot block the queue, and reported.
 *
 * Browser-safe: no Node-only imports.
 */
import { type DeliverFrame, RelayError, SendFlags } from '@libertaria/protocol';
import { ANONYMOUS_REQUEST_KIND } from './anonymous.js';
import type { AnonymousResponder } from './anonymous-responder.js';
import { bytesEqual, copyBytes, toHex } from './bytes.js';
import type { ClientOutbox } from './client-outbox.js';
import type { ClientLogger, InboundMessage, RelayClientEvents } from './client-types.js';
import { ClientErrorCode, toLibertariaError } from './codes.js';
import type { Connection } from './connection.js';
import type { ConnectionLoop } from './connection-loop.js';
import { type DedupeTracker, inboundKey } from './dedupe.js';
import type { TypedEmitter } from './emitter.js';
import { CONTROL_ENVELOPE_VERSION, checkEnvelopeSender, decodeEnvelope } from './envelope.js';
import { Inbox } from './inbox.js';
import type { PathUpdates } from './path-updates.js';
import { isZero, UNSEALED_WARNING, UnsealedSenders, warnOnce } from './sealing.js';
import type { SessionManager } from './sessions.js';

export interface InboundOptions {
  /** Our DID (InboundMessage.to) and hint (a DELIVER must be addressed to it). */
  did: string;
  hint: Uint8Array;
  tracker: DedupeTracker;
  /** RelayClientOptions.inboundBufferSize and maxUnackedInbound. */
  capacity: number;
  maxUnacked: number;
  sessions: SessionManager | undefined;
  outbox: ClientOutbox | undefined;
  paths: PathUpdates;
  responder: AnonymousResponder;
  /** ACKs go on the current connection; a connection that left frames unread is replaced. */
  link: Pick<ConnectionLoop, 'live' | 'write' | 'end'>;
  events: TypedEmitter<RelayClientEvents>;
  log: ClientLogger;
  emitError: (event: RelayClientEvents['error']) => void;
}

export class InboundSide {
  readonly #did: string;
  readonly #hint: Uint8Array;
  readonly #tracker: DedupeTracker;
  readonly #inbox: Inbox<InboundMessage>;
  readonly #maxUnacked: number;
  readonly #sessions: SessionManager | undefined;
  readonly #outbox: ClientOutbox | undefined;
  readonly #paths: PathUpdates;
  readonly #responder: AnonymousResponder;
  readonly #link: Pick<ConnectionLoop, 'live' | 'write' | 'end'>;
  readonly #events: TypedEmitter<RelayClientEvents>;
  readonly #log: ClientLogger;
  readonly #emitError: (event: RelayClientEvents['error']) => void;
  readonly #unsealedSenders: UnsealedSenders;
  /** Inbound sealed frames are opened one at a time, in arrival order. */
  #opening: Promise<void> = Promise.resolve();
  #pendingOpens = 0;
  #droppedFast = 0;
  #duplicates = 0;

  constructor(options: InboundOptions) {
    this.#did = options.did;
    this.#hint = options.hint;
    this.#tracker = options.tracker;
    this.#maxUnacked = options.maxUnacked;
    this.#sessions = options.sessions;
    this.#outbox = options.outbox;
    this.#paths = options.paths;
    this.#responder = options.responder;
    this.#link = options.link;
    this.#events = options.events;
    this.#log = options.log;
    this.#emitError = options.emitError;
    this.#unsealedSenders = new UnsealedSenders(options.log);
    this.#inbox = new Inbox(options.capacity, () => this.maybeResync());
  }

  /** Messages waiting for messages() (stats.bufferedInbound). */
  get buffered(): number {
    return this.#inbox.length;
  }

  /** Fast messages dropped because the buffer was full (stats.droppedFast). */
  get droppedFast(): number {
    return this.#droppedFast;
  }

  /** Duplicate frames hidden (stats.duplicates). */
  get duplicates(): number {
    return this.#duplicates;
  }

  /** One consumer of the shared buffer (RelayClient.messages()). */
  iterator(): AsyncIterator<InboundMessage> {
    return this.#inbox.iterator();
  }

  /** The relay's queue restarted (ERROR QUEUE_RESET): every frame after it is numbered anew. */
  queueReset(url: string): void {
    this.#log.warn?.('relay queue restarted; forgetting old positions', { url });
    this.#tracker.resetPositions();
    if (this.#outbox !== undefined) void this.#outbox.persistInbound().catch(() => {});
  }

  /** The client stops: messages() ends (with `error` when it gave up); queued ones were never acknowledged. */
  end(error: Error | undefined): void {
    // Queued messages were never acknowledged: the relay keeps them for the next client.
    this.#inbox.clear();
    this.#inbox.end(error);
  }

  deliver(connection: Connection, frame: DeliverFrame): void {
    const durable = (frame.flags & SendFlags.DURABLE) !== 0;
    const position = durable ? frame.position : 0;
    const url = connection.url.href;
    if (durable && position === 0) {
      this.#emitError({
        error: new RelayError(ClientErrorCode.unexpectedFrame, `${url}: durable DELIVER without a queue position`),
        url,
      });
      return;
    }
    // Per sender: another sender's frame with the same messageId is another message.
    const key = inboundKey(frame.source, frame.messageId);
    const verdict = this.#tracker.check(key, position);
    if (verdict !== 'new') this.#duplicates++;
    if (verdict === 'ack-again') {
      this.#tracker.ack(key, position);
      this.#link.write(connection, { type: 'ACK', messageId: frame.messageId, position });
      return;
    }
    if (verdict === 'drop') return;
    if (frame.payload[0] === ANONYMOUS_REQUEST_KIND) {
      const messageId = copyBytes(frame.messageId);
      // Anonymous connections cannot send durably; acknowledge anything odd so it cannot block the queue.
      this.#settle(key, messageId, durable, position);
      this.#responder.answer(url, frame, durable, messageId);
      return;
    }

    let from: string;
    let body: Uint8Array;
    let control = false;
    try {
      if (!bytesEqual(frame.dest, this.#hint)) {
        throw new RelayError(ClientErrorCode.unexpectedFrame, `DELIVER addressed to ${toHex(frame.dest)}, not to us`);
      }
      const envelope = decodeEnvelope(frame.payload);
      checkEnvelopeSender(envelope, frame.source);
      from = envelope.senderDid;
      body = envelope.body;
      control = envelope.version === CONTROL_ENVELOPE_VERSION;
    } catch (error) {
      // A frame we will never accept: acknowledge it so it cannot block the queue, and say so.
      this.#settle(key, copyBytes(frame.messageId), durable, position);
      this.#emitError({
        error: toLibertariaError(error, 'inbound message'),
        url,
        messageId: copyBytes(frame.messageId),
      });
      return;
    }

    if (control) {
      this.#control(url, frame, key, durable, position, from, body);
      return;
    }
    this.#paths.notePeer(from);

    const full = this.#inbox.full || this.#inbox.length + this.#pendingOpens >= this.#inbox.capacity;
    if (durable) {
      if (connection.leavingUnread || full || this.#tracker.unacked + this.#pendingOpens >= this.#maxUnacked) {
        // Not acknowledged, so the relay keeps it; it comes back once the connection is replaced.
        if (!connection.leavingUnread) {
          this.#log.warn?.('inbound buffer full; leaving durable messages with the relay', { url, position });
        }
        connection.leavingUnread = true;
        this.#tracker.leaveUnread(position);
        return;
      }
    } else if (full) {
      this.#droppedFast++;
      this.#emitError({
        error: new RelayError(
          ClientErrorCode.inboundOverflow,
          `inbound buffer full (${this.#inbox.capacity}); fast message dropped (${this.#droppedFast} so far)`,
        ),
        url,
        messageId: copyBytes(frame.messageId),
        dropped: this.#droppedFast,
      });
      return;
    }

    const messageId = copyBytes(frame.messageId);
    const fromHint = copyBytes(frame.source);
    // Copies: the frame is a view into the transport's buffer.
    const sessionId = copyBytes(frame.sessionId);
    const sessions = this.#sessions;
    // The SDK seals under a session id of its own (never all zero); all zero is
    // the id of an unsealed send, whose payload is the plaintext.
    const unsealed = sessions === undefined || isZero(sessionId);
    if (sessions !== undefined && unsealed) this.#unsealedSenders.warn(from, url);
    if (sessions === undefined && isZero(sessionId)) warnOnce('unsealed', this.#log, UNSEALED_WARNING);
    if (!unsealed) {
      // Held (duplicates hidden) while it is opened; never yielded unless it opens.
      this.#tracker.accept(key, position);
      const sealed = copyBytes(body);
      this.#pendingOpens++;
      this.#opening = this.#opening.then(async () => {
        let plaintext: Uint8Array;
        try {
          // Durable: the plaintext is kept until ack(), so a redelivery after a crash still opens.
          plaintext = await sessions.open(from, sessionId, sealed, durable ? messageId : undefined);
        } catch (error) {
          this.#pendingOpens--;
          // A poison frame must not block the queue: acknowledged, reported, never delivered.
          if (durable) void this.#ack(key, messageId, position);
          this.#emitError({ error: toLibertariaError(error, 'opening a sealed message'), url, messageId });
          return;
        }
        this.#pendingOpens--;
        this.#inbox.push(this.#message(key, messageId, from, fromHint, plaintext, durable, position, sessionId, true));
      });
      return;
    }
    this.#tracker.accept(key, position);
    // Behind any message still being opened, so the application sees them in order.
    const message = this.#message(key, messageId, from, fromHint, copyBytes(body), durable, position, sessionId, false);
    if (sessions === undefined) {
      this.#inbox.push(message);
      return;
    }
    this.#pendingOpens++;
    this.#opening = this.#opening.then(() => {
      this.#pendingOpens--;
      this.#inbox.push(message);
    });
  }

  /** A frame that is not shown to the application leaves the queue: a durable one acknowledged, a fast one remembered. */
  #settle(key: string, messageId: Uint8Array, durable: boolean, position: number): void {
    if (durable) void this.#ack(key, messageId, position);
    else this.#tracker.accept(key, 0);
  }

  /**
   * A control envelope from a peer's SDK (never shown to the application):
   * today the path update a peer sends after a migration. Fast only.
   */
  #control(
    url: string,
    frame: DeliverFrame,
    key: string,
    durable: boolean,
    position: number,
    from: string,
    body: Uint8Array,
  ): void {
    const messageId = copyBytes(frame.messageId);
    this.#settle(key, messageId, durable, position);
    const sessions = this.#sessions;
    const sessionId = copyBytes(frame.sessionId);
    const sealed = copyBytes(body);
    const handle = (record: Uint8Array): void => {
      const notice = this.#paths.onRecord(from, record);
      if (notice === undefined) {
        this.#emitError({
          error: new RelayError('BAD_FIELD', `unreadable control notice from ${from}`),
          url,
          messageId,
        });
        return;
      }
      this.#events.emit('peer-moved', { did: from, nodeId: notice.nodeId, at: notice.at });
    };
    if (sessions === undefined) {
      handle(sealed);
      return;
    }
    this.#opening = this.#opening.then(async () => {
      try {
        handle(await sessions.open(from, sessionId, sealed));
      } catch (error) {
        this.#emitError({ error: toLibertariaError(error, 'opening a control notice'), url, messageId });
      }
    });
  }

  #message(
    key: string,
    messageId: Uint8Array,
    from: string,
    fromHint: Uint8Array,
    payload: Uint8Array,
    durable: boolean,
    position: number,
    sessionId: Uint8Array,
    sealed: boolean,
  ): InboundMessage {
    let acked = !durable;
    return {
      messageId,
      from,
      fromHint,
      to: this.#did,
      payload,
      durable,
      position,
      sessionId,
      sealed,
      ack: async () => {
        if (acked) return;
        acked = true;
        // The kept plaintext is forgotten before the relay hears the ACK (sessions.ts acknowledge()).
        if (durable && sealed && this.#sessions !== undefined) {
          await this.#sessions.acknowledge(from, messageId).catch((error: unknown) => {
            acked = false;
            throw error;
          });
        }
        await this.#ack(key, messageId, position);
      },
    };
  }

  async #ack(key: string, messageId: Uint8Array, position: number): Promise<void> {
    this.#tracker.ack(key, position);
    // Persisted before the relay hears it: a restart must not show an acknowledged message again.
    if (this.#outbox !== undefined) await this.#outbox.persistInbound();
    const connection = this.#link.live;
    // Without a connection the next RESUME (or a redelivery acked again) tells the relay.
    if (connection !== undefined) this.#link.write(connection, { type: 'ACK', messageId, position });
    this.maybeResync();
  }

  /** Once the application has drained enough, replace a connection that left frames unread. */
  maybeResync(): void {
    const connection = this.#link.live;
    if (connection === undefined || !connection.leavingUnread) return;
    if (this.#inbox.length > this.#inbox.capacity / 2 || this.#tracker.unacked > this.#maxUnacked / 2) return;
    this.#log.info?.('inbound buffer drained; reconnecting to receive what was left with the relay', {
      url: connection.url.href,
    });
    this.#link.end(connection, { resync: true });
  }
}
