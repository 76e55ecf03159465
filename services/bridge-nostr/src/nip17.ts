/**
 * NIP-17 private direct messages: a kind-14 rumor carried in a NIP-59 gift
 * wrap, sent to the relays the recipient lists in its kind-10050 event.
 */
import type { NostrEvent } from 'nostr-tools/core';
import { createRumor, type Rumor } from './nip59.js';

export const KIND_PRIVATE_MESSAGE = 14;
export const KIND_DM_RELAYS = 10050;

/** The kind-14 rumor of one message from `senderPubkey` to `recipientPubkey`. */
export function privateMessageRumor(
  senderPubkey: string,
  recipientPubkey: string,
  text: string,
  createdAt = Math.floor(Date.now() / 1000),
): Rumor {
  return createRumor(
    { kind: KIND_PRIVATE_MESSAGE, created_at: createdAt, tags: [['p', recipientPubkey]], content: text },
    senderPubkey,
  );
}

/** The `p` recipients of a kind-14 rumor; undefined when it is not a private message. */
export function privateMessageRecipients(rumor: Rumor): string[] | undefined {
  if (rumor.kind !== KIND_PRIVATE_MESSAGE) return undefined;
  return rumor.tags.filter((t) => t[0] === 'p' && typeof t[1] === 'string').map((t) => t[1]!);
}

const RELAY_URL = /^wss?:\/\/[^\s]{1,2000}$/;

/**
 * The inbox relays of the newest kind-10050 event among `events` by
 * `pubkey`: its `relay` tags that are ws:// or wss:// URLs, without
 * duplicates, at most `max`. Empty when there is none.
 */
export function inboxRelays(events: readonly NostrEvent[], pubkey: string, max: number): string[] {
  let newest: NostrEvent | undefined;
  for (const e of events) {
    if (e.kind !== KIND_DM_RELAYS || e.pubkey !== pubkey) continue;
    if (!newest || e.created_at > newest.created_at) newest = e;
  }
  if (!newest) return [];
  const urls: string[] = [];
  for (const tag of newest.tags) {
    if (tag[0] !== 'relay' || typeof tag[1] !== 'string' || !RELAY_URL.test(tag[1])) continue;
    let normalized: string;
    try {
      normalized = new URL(tag[1]).toString();
    } catch {
      continue;
    }
    if (!urls.includes(normalized)) urls.push(normalized);
    if (urls.length >= max) break;
  }
  return urls;
}
