/**
 * The SessionStore record a SessionManager keeps per peer DID
 * (`session-<hash of the DID>`): the peer's sessions, newest first, and the
 * durable messages opened from that peer that the application has not
 * acknowledged yet. Both live in ONE record so that one atomic `put` stores
 * the advanced ratchet together with the plaintext it yielded: a crash can
 * never leave a spent message key without its plaintext (docs/client.md,
 * "Opened, not yet acknowledged").
 *
 * Encoding: length-prefixed fields (session-store.ts packFields).
 *   format 2: [0x02] ‖ u32 k ‖ k × (session state ‖ handshake header ‖ ephemeral key)
 *             ‖ m × (16 message id ‖ 32 body hash ‖ plaintext)
 *   format 1 (read only, written before the opened set existed):
 *             k × (session state ‖ handshake header ‖ ephemeral key)
 * A session state starts with its own version byte and is never one byte
 * long, so a one-byte first field tells the formats apart. An empty header
 * or ephemeral field means "none".
 */

import { type CryptoProvider, PersistentSession, SessionError, type SessionOptions } from '@libertaria/crypto';
import { toHex } from '@libertaria/protocol';
import { packFields, readU32, u32, unpackFields } from './session-store.js';

const FORMAT_2 = 0x02;

export interface PeerEntry {
  session: PersistentSession;
  /** Initiator, until the peer answered: the initial message's fields without the ratchet message. */
  header?: Uint8Array;
  /** Responder: the initiator's ephemeral key (hex), to recognize repeated initial messages. */
  ephemeral?: string;
}

/** A durable message opened and handed to the application, not yet acknowledged by it. */
export interface OpenedMessage {
  /** The 16-byte message id (the map key is its hex). */
  messageId: Uint8Array;
  /** A hash of the sealed body, so only a redelivery of the same frame gets the stored plaintext. */
  bodyHash: Uint8Array;
  plaintext: Uint8Array;
}

export interface PeerSessions {
  /** Newest first; [0] is the one we send with. */
  entries: PeerEntry[];
  /** Message id (hex) → opened plaintext, oldest first (Map insertion order). */
  opened: Map<string, OpenedMessage>;
}

function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => Number.parseInt(h, 16));
}

function invalid(message: string): SessionError {
  return new SessionError('SESSION_STATE_INVALID', `peer record: ${message}`);
}

export function encodePeerRecord(peer: PeerSessions): Uint8Array {
  const fields: Uint8Array[] = [Uint8Array.of(FORMAT_2), u32(peer.entries.length)];
  for (const e of peer.entries) {
    fields.push(e.session.serialize(), e.header ?? new Uint8Array(0), fromHex(e.ephemeral ?? ''));
  }
  for (const m of peer.opened.values()) fields.push(m.messageId, m.bodyHash, m.plaintext);
  return packFields(fields);
}

export function decodePeerRecord(p: CryptoProvider, bytes: Uint8Array, options: SessionOptions): PeerSessions {
  let f: Uint8Array[];
  try {
    f = unpackFields(bytes);
  } catch (error) {
    throw invalid((error as Error).message);
  }
  const peer: PeerSessions = { entries: [], opened: new Map() };
  let at = 0;
  let sessions: number;
  if (f[0]?.length === 1) {
    if (f[0][0] !== FORMAT_2) throw invalid(`format ${f[0][0]} is not supported`);
    sessions = readU32(f[1]);
    at = 2;
  } else {
    if (f.length % 3 !== 0) throw invalid('format 1 record is not made of whole sessions');
    sessions = f.length / 3;
  }
  if (at + 3 * sessions > f.length) throw invalid('truncated');
  for (let i = 0; i < sessions; i++, at += 3) {
    const header = f[at + 1] as Uint8Array;
    const ephemeral = f[at + 2] as Uint8Array;
    peer.entries.push({
      session: PersistentSession.restore(p, f[at] as Uint8Array, options),
      ...(header.length > 0 ? { header } : {}),
      ...(ephemeral.length > 0 ? { ephemeral: toHex(ephemeral) } : {}),
    });
  }
  if ((f.length - at) % 3 !== 0) throw invalid('opened messages are not whole');
  for (; at < f.length; at += 3) {
    const id = f[at] as Uint8Array;
    const bodyHash = f[at + 1] as Uint8Array;
    if (id.length !== 16 || bodyHash.length !== 32) throw invalid('opened message id or hash has the wrong size');
    peer.opened.set(toHex(id), { messageId: id, bodyHash, plaintext: f[at + 2] as Uint8Array });
  }
  return peer;
}
