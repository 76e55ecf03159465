/**
 * Turns events from relays into inbound messages for bridged identities.
 *
 * For each event: shape check, duplicate check by event id, signature check,
 * then by kind:
 *   1059 gift wrap → find the bridged key it is addressed to, unwrap (NIP-59),
 *                    accept a kind-14 rumor (NIP-17), deliver as `private`;
 *   1    note      → each `p` tag naming a bridged key is a `mention`.
 * Anything that fails a check is dropped and counted by reason; nothing from
 * a relay can make this throw. A message is delivered once however many relays
 * send it: event ids and rumor ids both go into the bounded `RecentIds`, marked
 * before the handler runs (two relays answering at once must not both deliver)
 * and unmarked if the handler rejects, so a later copy gets another chance.
 */
import { type BridgeInboundHandler, type BridgeInboundMessage, nostrIdentity } from '@libertaria/bridge-kit';
import { type NostrEvent, validateEvent } from 'nostr-tools/core';
import { verifyEvent } from 'nostr-tools/pure';
import type { RecentIds } from './dedupe.js';
import type { NostrKeys } from './key-store.js';
import type { Logger } from './log.js';
import type { BridgeNostrMetrics, MalformedMetricReason } from './metrics.js';
import { privateMessageRecipients } from './nip17.js';
import { KIND_GIFT_WRAP, UnwrapError, unwrapGiftWrap } from './nip59.js';

export const KIND_TEXT_NOTE = 1;

export interface InboundOptions {
  readonly keys: NostrKeys;
  readonly seen: RecentIds;
  readonly metrics: BridgeNostrMetrics;
  readonly log: Logger;
  readonly maxTextBytes: number;
  readonly handler: () => BridgeInboundHandler | undefined;
  /** Tries of the handler per message; the delay doubles from `handlerRetryDelayMs` between them. */
  readonly handlerAttempts: number;
  readonly handlerRetryDelayMs: number;
}

export class InboundProcessor {
  constructor(private readonly o: InboundOptions) {}

  private malformed(reason: MalformedMetricReason, relay: string): void {
    this.o.metrics.malformed.labels(reason).inc();
    this.o.log.debug('ignored an event', { relay, reason });
  }

  /** Handles one EVENT payload from `relay`; resolves when it was delivered or dropped. */
  async handle(relay: string, raw: unknown): Promise<void> {
    const kind = typeof (raw as { kind?: unknown })?.kind === 'number' ? (raw as { kind: number }).kind : -1;
    this.o.metrics.eventsReceived
      .labels(kind === KIND_GIFT_WRAP || kind === KIND_TEXT_NOTE ? String(kind) : 'other')
      .inc();
    if (
      !validateEvent(raw) ||
      typeof (raw as { id?: unknown }).id !== 'string' ||
      typeof (raw as { sig?: unknown }).sig !== 'string'
    ) {
      return this.malformed('event_shape', relay);
    }
    const event = raw as NostrEvent;
    if (this.o.seen.has(event.id)) {
      this.o.metrics.duplicates.inc();
      return;
    }
    // Verified before it is remembered: a forged copy carrying a real id must not hide the real event.
    if (!verifyEvent(event)) return this.malformed('signature', relay);
    if (event.kind === KIND_GIFT_WRAP) return this.giftWrap(relay, event);
    if (event.kind === KIND_TEXT_NOTE) return this.note(relay, event);
    return this.malformed('shape', relay);
  }

  private async giftWrap(relay: string, wrap: NostrEvent): Promise<void> {
    const recipient = wrap.tags.find((t) => t[0] === 'p')?.[1];
    const identity = recipient === undefined ? undefined : this.o.keys.byPubkey(recipient);
    if (!identity) return this.malformed('not_for_us', relay);
    let opened: ReturnType<typeof unwrapGiftWrap>;
    try {
      opened = await this.o.keys.withSecretKey(identity.did, (secret) => unwrapGiftWrap(wrap, secret));
    } catch (err) {
      if (err instanceof UnwrapError) return this.malformed(err.reason, relay);
      throw err;
    }
    const { rumor } = opened;
    const recipients = privateMessageRecipients(rumor);
    if (!recipients?.includes(identity.pubkey)) return this.malformed('not_a_private_message', relay);
    if (Buffer.byteLength(rumor.content, 'utf8') > this.o.maxTextBytes) return this.malformed('text_too_large', relay);
    // The same rumor may come in different wraps (a sender wrapping per relay): the rumor id is the message.
    const key = `rumor:${identity.pubkey}:${rumor.id}`;
    if (!this.o.seen.add(wrap.id) || !this.o.seen.add(key)) {
      this.o.metrics.duplicates.inc();
      return;
    }
    await this.deliver(
      {
        type: 'private',
        id: rumor.id,
        to: identity.did,
        from: nostrIdentity(rumor.pubkey),
        text: rumor.content,
        sentAt: rumor.created_at,
      },
      [wrap.id, key],
    );
  }

  private async note(relay: string, note: NostrEvent): Promise<void> {
    const mentioned = new Set(note.tags.filter((t) => t[0] === 'p' && typeof t[1] === 'string').map((t) => t[1]!));
    const targets = [...mentioned].map((pk) => this.o.keys.byPubkey(pk)).filter((i) => i !== undefined);
    if (targets.length === 0) return this.malformed('not_for_us', relay);
    if (Buffer.byteLength(note.content, 'utf8') > this.o.maxTextBytes) return this.malformed('text_too_large', relay);
    if (!this.o.seen.add(note.id)) {
      this.o.metrics.duplicates.inc();
      return;
    }
    for (const target of targets) {
      await this.deliver(
        {
          type: 'mention',
          id: note.id,
          to: target.did,
          from: nostrIdentity(note.pubkey),
          text: note.content,
          sentAt: note.created_at,
        },
        [note.id],
      );
    }
  }

  private async deliver(message: BridgeInboundMessage, marks: string[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        const handler = this.o.handler();
        if (!handler) throw new Error('no inbound handler is set');
        await handler(message);
        this.o.metrics.delivered.labels(message.type).inc();
        return;
      } catch (err) {
        this.o.metrics.handlerFailures.inc();
        if (attempt >= this.o.handlerAttempts) {
          // Unmarked, so a copy from another relay (or after a reconnect) gets another chance.
          for (const id of marks) this.o.seen.delete(id);
          this.o.log.warn('inbound handler failed; the message is offered again if a relay resends it', {
            to: message.to,
            id: message.id,
            attempts: attempt,
            err,
          });
          return;
        }
        await new Promise((r) => setTimeout(r, this.o.handlerRetryDelayMs * 2 ** (attempt - 1)));
      }
    }
  }
}
