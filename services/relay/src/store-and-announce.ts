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
import { routedDest, routedMessageId, routedTtl, writeRoutedPosition } from '@libertaria/protocol';
import type { DurableStore, EnqueueResult } from './durable-store.js';

/** Router.announceDurable: offers a stored frame to local connections and the holders' nodes. */
export interface DurableAnnouncer {
  announceDurable(frame: Buffer, position: number, dest: Uint8Array, holders: readonly string[]): void;
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
    if (result.status === 'stored') {
      writeRoutedPosition(frame, result.position);
      to.router.announceDurable(frame, result.position, dest, result.holders ?? []);
    }
    return answer;
  }, onFailed);
}
