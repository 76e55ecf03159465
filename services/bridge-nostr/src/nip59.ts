/**
 * NIP-59 gift wraps, written against the NIP rather than nostr-tools' own
 * nip59 module (the tests use that one as the independent client, so the two
 * implementations check each other). Crypto primitives are nostr-tools'
 * NIP-44 v2 and BIP-340 signing.
 *
 *   rumor  (unsigned, any kind; its id is the NIP-01 hash)
 *   seal   kind 13, tags [], content = nip44(JSON(rumor), conv(sender, recipient)), signed by the sender
 *   wrap   kind 1059, tags [["p", recipient]], content = nip44(JSON(seal), conv(ephemeral, recipient)),
 *          signed by a one-time key
 * Seal and wrap timestamps are drawn up to two days in the past, as NIP-59
 * recommends, so relays cannot tie a wrap to the moment it was sent.
 *
 * Unwrapping checks everything a forger could vary: both signatures, both
 * kinds, the rumor's id, and that the rumor's author is the seal's signer
 * (NIP-17: otherwise anyone could put words in another's mouth).
 */
import { randomInt } from 'node:crypto';
import type { NostrEvent, UnsignedEvent } from 'nostr-tools/core';
import * as nip44 from 'nostr-tools/nip44';
import { finalizeEvent, generateSecretKey, getEventHash, getPublicKey, verifyEvent } from 'nostr-tools/pure';

export const KIND_SEAL = 13;
export const KIND_GIFT_WRAP = 1059;
/** Two days, the backdating window NIP-59 suggests. */
const TWO_DAYS = 2 * 24 * 60 * 60;
/** base64 of the largest NIP-44 v2 payload (65535-byte plaintext padded to 65536 + 99 bytes of framing). */
const MAX_NIP44_PAYLOAD_CHARS = 87472;
const MIN_NIP44_PAYLOAD_CHARS = 132;

export type Rumor = UnsignedEvent & { id: string };

/** Why a gift wrap was refused; the reasons are metric labels. */
export type UnwrapFailure =
  | 'wrap_kind'
  | 'wrap_signature'
  | 'wrap_payload'
  | 'wrap_decrypt'
  | 'seal_json'
  | 'seal_kind'
  | 'seal_signature'
  | 'seal_payload'
  | 'seal_decrypt'
  | 'rumor_json'
  | 'rumor_shape'
  | 'rumor_id'
  | 'sender_mismatch';

export class UnwrapError extends Error {
  constructor(readonly reason: UnwrapFailure) {
    super(`gift wrap refused: ${reason}`);
    this.name = 'UnwrapError';
  }
}

function backdated(now: number): number {
  return now - randomInt(0, TWO_DAYS);
}

export function createRumor(template: Omit<UnsignedEvent, 'pubkey'>, authorPubkey: string): Rumor {
  const unsigned: UnsignedEvent = { ...template, pubkey: authorPubkey };
  return { ...unsigned, id: getEventHash(unsigned) };
}

/** Seals `rumor` with the sender's key and wraps it for `recipientPubkey`. */
export function giftWrap(
  rumor: Rumor,
  senderSecret: Uint8Array,
  recipientPubkey: string,
  now = Math.floor(Date.now() / 1000),
): NostrEvent {
  const seal = finalizeEvent(
    {
      kind: KIND_SEAL,
      tags: [],
      created_at: backdated(now),
      content: nip44.encrypt(JSON.stringify(rumor), nip44.getConversationKey(senderSecret, recipientPubkey)),
    },
    senderSecret,
  );
  const ephemeral = generateSecretKey();
  try {
    return finalizeEvent(
      {
        kind: KIND_GIFT_WRAP,
        tags: [['p', recipientPubkey]],
        created_at: backdated(now),
        content: nip44.encrypt(JSON.stringify(seal), nip44.getConversationKey(ephemeral, recipientPubkey)),
      },
      ephemeral,
    );
  } finally {
    ephemeral.fill(0);
  }
}

function decryptOrFail(payload: unknown, key: Uint8Array, sizeReason: UnwrapFailure, reason: UnwrapFailure): string {
  // nostr-tools leaves the size check to callers: bound the work before base64 and HMAC.
  if (
    typeof payload !== 'string' ||
    payload.length < MIN_NIP44_PAYLOAD_CHARS ||
    payload.length > MAX_NIP44_PAYLOAD_CHARS
  ) {
    throw new UnwrapError(sizeReason);
  }
  try {
    return nip44.decrypt(payload, key);
  } catch {
    throw new UnwrapError(reason);
  }
}

function parseJson(text: string, reason: UnwrapFailure): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // falls through to the typed failure
  }
  throw new UnwrapError(reason);
}

function isTags(value: unknown): value is string[][] {
  return Array.isArray(value) && value.every((t) => Array.isArray(t) && t.every((s) => typeof s === 'string'));
}

/** Opens a gift wrap addressed to the holder of `recipientSecret`. Throws UnwrapError. */
export function unwrapGiftWrap(wrap: NostrEvent, recipientSecret: Uint8Array): { rumor: Rumor; seal: NostrEvent } {
  if (wrap.kind !== KIND_GIFT_WRAP) throw new UnwrapError('wrap_kind');
  if (!verifyEvent(wrap)) throw new UnwrapError('wrap_signature');
  const sealJson = decryptOrFail(
    wrap.content,
    nip44.getConversationKey(recipientSecret, wrap.pubkey),
    'wrap_payload',
    'wrap_decrypt',
  );
  const seal = parseJson(sealJson, 'seal_json') as unknown as NostrEvent;
  if (seal.kind !== KIND_SEAL) throw new UnwrapError('seal_kind');
  if (typeof seal.pubkey !== 'string' || !/^[0-9a-f]{64}$/.test(seal.pubkey) || !verifyEvent(seal)) {
    throw new UnwrapError('seal_signature');
  }
  const rumorJson = decryptOrFail(
    seal.content,
    nip44.getConversationKey(recipientSecret, seal.pubkey),
    'seal_payload',
    'seal_decrypt',
  );
  const r = parseJson(rumorJson, 'rumor_json');
  if (
    typeof r.id !== 'string' ||
    typeof r.pubkey !== 'string' ||
    typeof r.kind !== 'number' ||
    !Number.isInteger(r.kind) ||
    typeof r.created_at !== 'number' ||
    !Number.isInteger(r.created_at) ||
    typeof r.content !== 'string' ||
    !isTags(r.tags)
  ) {
    throw new UnwrapError('rumor_shape');
  }
  const rumor: Rumor = {
    id: r.id,
    pubkey: r.pubkey,
    kind: r.kind,
    created_at: r.created_at,
    content: r.content,
    tags: r.tags,
  };
  if (getEventHash(rumor) !== rumor.id) throw new UnwrapError('rumor_id');
  if (rumor.pubkey !== seal.pubkey) throw new UnwrapError('sender_mismatch');
  return { rumor, seal };
}

/** The public key for a secret key, re-exported so callers need one import for wrapping. */
export { getPublicKey };
