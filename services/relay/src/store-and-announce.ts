/**
 * Store and announce: a durable DELIVER frame goes into its recipient's
 * mailbox (DurableStore.enqueue, idempotent on the frame's source hint and
 * message id); a frame newly stored gets its queue position written into its
 * own bytes and is announced (Router.announceDurable) to the recipient's
 * connections on this node and to the nodes holding it. A duplicate is not
 * announced: it was when first stored, and the recipient reads it from Redis.
 *
 * One sequence for its two callers, which differ only in what they make of
 * the store's answer: a durable SEND (peer-connection.ts: ACK or NACK,
 * metrics, budget refunds) and a bridge's inbound frame
 * (federation/inbound-worker.ts: the job's result, or an error BullMQ retries
 * or fails).
 *
 * The store and the router are named by the methods used, not imported as
 * classes, so the inbound worker's modules do not reach the router, the peer
 * connections and the relay context (issue 14: the import cycle those made).
 */
import {
  type LibertariaError,
  routedDest,
  routedMessageId,
  routedTtl,
  writeRoutedPosition,
} from '@libertaria/protocol';
import type { DurableStore, EnqueueResult, EnqueueSink } from './durable-store.js';
import { toStoreError } from './store-error.js';

/** Router.announceDurable: offers a stored frame to local connections and the holders' nodes (the frame names its recipient). */
export interface DurableAnnouncer {
  announceDurable(frame: Buffer, position: number, holders: readonly string[]): void;
}

/** Where durable frames are stored and announced (the relay context, or the inbound worker's options). */
export interface Mailboxes {
  readonly store: Pick<DurableStore, 'enqueue'>;
  readonly router: DurableAnnouncer;
}

/**
 * Stores a durable DELIVER frame (already retyped, position 0) and announces
 * it once stored; settles like `enqueue(…).then(onStored, onFailed)`.
 *
 * - `onStored` gets Redis' answer (`stored` or `duplicate`) and the frame's
 *   message id (a view, for an ACK). It runs before the position is written
 *   and the frame announced, so a sender's ACK goes out before any DELIVER of
 *   its frame, also when it sends to itself.
 * - `onFailed` gets what enqueue rejected with (a RelayError refusal, or
 *   Redis failing); nothing was stored or announced.
 *
 * The promise rejects only with what a handler, or the announcement, threw;
 * the store's own errors reach `onFailed` alone.
 */
export function storeAndAnnounce<T>(
  to: Mailboxes,
  frame: Buffer,
  onStored: (result: EnqueueResult, messageId: Buffer) => T,
  onFailed: (err: unknown) => T,
): Promise<T> {
  const dest = routedDest(frame);
  const messageId = routedMessageId(frame);
  return to.store.enqueue(dest, messageId, frame, routedTtl(frame)).then((result) => {
    const answer = onStored(result, messageId);
    announceStored(to.router, frame, result);
    return answer;
  }, onFailed);
}

const NO_HOLDERS: readonly string[] = [];

/** The other half of the sequence: a newly stored frame gets its position and is announced. */
function announceStored(router: DurableAnnouncer, frame: Buffer, result: EnqueueResult): void {
  if (result.status !== 'stored') return;
  writeRoutedPosition(frame, result.position);
  router.announceDurable(frame, result.position, result.holders ?? NO_HOLDERS);
}

/**
 * One frame on storeAndAnnounceTo's path: the store's sink (EnqueueSink)
 * and the handler of its outcome in one object, so the relay's hot path
 * makes one object per durable SEND and no promise, closure or view of the
 * frame's fields. A subclass says what the outcome means (peer-connection.ts:
 * the sender's ACK or NACK).
 */
export abstract class AnnouncedWrite implements EnqueueSink {
  constructor(
    private readonly router: DurableAnnouncer,
    /** The frame being stored (a DELIVER, position 0); its position is written in place once stored. */
    readonly frame: Buffer,
  ) {}
  /** As storeAndAnnounce's onStored (the message id is the frame's own): runs before the position is written and the frame announced. */
  abstract stored(result: EnqueueResult): void;
  /** As onFailed: nothing was stored or announced. */
  abstract failed(err: LibertariaError): void;
  enqueued(result: EnqueueResult): void {
    this.stored(result);
    announceStored(this.router, this.frame, result);
  }
  enqueueFailed(err: LibertariaError): void {
    this.failed(err);
  }
}

/**
 * storeAndAnnounce for the relay's hot path: the same sequence, told to
 * `write` rather than through promises. A validation refusal reaches
 * `write.failed` too, synchronously.
 */
export function storeAndAnnounceTo(store: Pick<DurableStore, 'enqueueFrameTo'>, write: AnnouncedWrite): void {
  try {
    store.enqueueFrameTo(write.frame, write);
  } catch (err) {
    write.failed(toStoreError(err));
  }
}
