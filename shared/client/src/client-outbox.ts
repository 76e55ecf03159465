/**
 * The offline-first outbox of RelayClient (docs/client.md#offline-first-outbox),
 * over a SessionStore: durable sends are written here before they go out
 * and removed when the relay ACKs (or NACKs) them, and the inbound
 * acknowledgement state (the RESUME version) before each ACK, so an
 * application restart loses no unacknowledged send and is shown no message
 * it acknowledged. Before the first connection restore() hands the client
 * what the last run left, to be sent again with the same message ids.
 *
 * Browser-safe: no Node-only imports.
 */
import {
  decodeFrame,
  encodeFrame,
  type Frame,
  MAX_PAYLOAD_LIMIT,
  RelayError,
  SendFlags,
  type SendFrame,
} from '@libertaria/protocol';
import type { ClientLogger } from './client-types.js';
import { ClientErrorCode, toError } from './codes.js';
import type { DedupeSnapshot, DedupeTracker } from './dedupe.js';
import type { SessionStore } from './session-store.js';

const OUTBOX_SEND_PREFIX = 'outbox-send-';
const OUTBOX_INBOUND = 'outbox-inbound';

export class ClientOutbox {
  readonly #store: SessionStore;
  readonly #log: ClientLogger;
  /** The inbound side whose acknowledgement state is kept here. */
  readonly #tracker: DedupeTracker;
  #seq = 0;
  /** Outbox records of settled sends still being removed. */
  readonly #removals = new Set<Promise<void>>();
  /** Settles after the last durable send made so far has been written to the outbox. */
  #tail: Promise<void> = Promise.resolve();
  /** The queued write of the inbound acknowledgement state (acks of one moment share it). */
  #inboundWrite: Promise<void> | undefined;
  #inboundNext: Promise<void> | undefined;

  constructor(store: SessionStore, log: ClientLogger, tracker: DedupeTracker) {
    this.#store = store;
    this.#log = log;
    this.#tracker = tracker;
  }

  /**
   * Writes a durable send before it can go out (a restart from then on
   * resends it). `written` settles once it and every earlier send are written.
   */
  writeSend(key: string, frame: SendFrame): { name: string; written: Promise<void> } {
    const name = this.#name(key);
    // Writes run in parallel, but each send joins the queue only after every earlier one: call order is send order.
    const put = this.#store.put(name, encodeFrame(frame));
    const earlier = this.#tail;
    const mine = (async () => {
      await earlier;
      await put;
    })();
    this.#tail = mine.catch(() => {});
    return { name, written: mine };
  }

  /** Record names sort in send order: time, then a per-process counter, then the message id. */
  #name(key: string): string {
    const seq = (this.#seq++).toString().padStart(9, '0');
    return `${OUTBOX_SEND_PREFIX}${Date.now().toString().padStart(15, '0')}-${seq}-${key}`;
  }

  /** A send was ACKed or NACKed: its record goes (once; `entry.outboxName` is cleared). */
  forget(entry: { outboxName?: string }): void {
    const name = entry.outboxName;
    if (name === undefined) return;
    entry.outboxName = undefined;
    // Failing to forget only means one resend after a restart, which the relay recognizes by id
    // (but a refused send would be refused again, or worse, spend a quota): close() waits for these.
    const removal = this.#store
      .delete(name)
      .catch((error: unknown) =>
        this.#log.warn?.('outbox: could not remove an acknowledged send', { name, error: toError(error).message }),
      );
    this.#removals.add(removal);
    void removal.finally(() => this.#removals.delete(removal));
  }

  /** Writes the inbound acknowledgement state; calls made while a write is queued share it. */
  persistInbound(): Promise<void> {
    if (this.#inboundNext !== undefined) return this.#inboundNext;
    const previous = this.#inboundWrite;
    const next = (async () => {
      await previous?.catch(() => {});
      // From here on, later acks queue another write: this one may not include them.
      this.#inboundNext = undefined;
      const bytes = new TextEncoder().encode(JSON.stringify({ v: 1, ...this.#tracker.snapshot() }));
      const write = this.#store.put(OUTBOX_INBOUND, bytes);
      this.#inboundWrite = write;
      await write;
    })();
    this.#inboundNext = next;
    return next;
  }

  /** What close() waits for: removals of settled sends and the inbound state's writes. */
  pendingWrites(): (Promise<void> | undefined)[] {
    return [...this.#removals, this.#inboundNext, this.#inboundWrite];
  }

  /**
   * Before the first connection: the inbound state and the sends a previous
   * run left unacknowledged, each handed to `resend` in send order (false:
   * it is pending already).
   */
  async restore(resend: (frame: SendFrame, name: string) => boolean): Promise<void> {
    const outbox = this.#store;
    const inbound = await outbox.get(OUTBOX_INBOUND);
    if (inbound !== undefined) {
      try {
        const parsed = JSON.parse(new TextDecoder().decode(inbound)) as { v?: number } & DedupeSnapshot;
        if (parsed.v !== 1) throw new Error(`unknown version ${String(parsed.v)}`);
        this.#tracker.restore(parsed);
      } catch (error) {
        throw new RelayError(
          ClientErrorCode.invalidArgument,
          `outbox: the inbound state record is unreadable (${toError(error).message}); move it aside to start over`,
        );
      }
    }
    const names = await outbox.list(OUTBOX_SEND_PREFIX);
    for (const name of names) {
      const bytes = await outbox.get(name);
      if (bytes === undefined) continue;
      let frame: Frame;
      try {
        frame = decodeFrame(bytes, { maxPayload: MAX_PAYLOAD_LIMIT });
      } catch (error) {
        this.#log.warn?.('outbox: skipping an unreadable record', { name, error: toError(error).message });
        continue;
      }
      if (frame.type !== 'SEND' || (frame.flags & SendFlags.DURABLE) === 0) continue;
      if (!resend(frame, name)) continue;
      // Names sort in send order; keep our own counter after theirs so new sends follow.
      this.#seq++;
    }
    if (names.length > 0) this.#log.info?.('outbox: resending what the last run left', { count: names.length });
  }
}
