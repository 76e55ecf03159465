/**
 * The serialized form of a PersistentSession, version 1 (integers big-endian,
 * texts u8 length ‖ UTF-8):
 *
 *   u8 format version (1) ‖ u8 kind (1 = persistent) ‖ u8 role (0 initiator, 1 responder)
 *   ‖ 16 session id ‖ 32 resumption secret ‖ 32 peer identity key ‖ 32 peer identity DH key
 *   ‖ text local DID ‖ text peer DID ‖ u64 created-at ms ‖ u64 messages sent ‖ u64 messages received
 *   ‖ u32 0-RTT tickets issued ‖ u64 policy max messages ‖ u64 policy max age ms
 *   ‖ ratchet: u16 AD length ‖ AD ‖ 32 root key ‖ 32 ratchet private key ‖ 32 ratchet public key
 *     ‖ u8 flags (1 remote key, 2 sending chain, 4 receiving chain) ‖ [32 remote ratchet key]
 *     ‖ [32 sending chain key] ‖ [32 receiving chain key] ‖ u32 Ns ‖ u32 Nr ‖ u32 PN
 *     ‖ u8 k ‖ k × 32 previous remote ratchet keys ‖ u32 s ‖ s × (32 ratchet key ‖ u32 N ‖ 32 message key)
 *
 * Binary rather than JSON so secrets never pass through strings (which JS
 * cannot wipe). Reading is strict and cross-checked (the ratchet key pair
 * matches, the AD names the stored peer, the peer DID names the peer key);
 * every failure is SessionError SESSION_STATE_INVALID.
 */

import { didMatchesKey } from '@libertaria/identity';
import { LibertariaError } from '@libertaria/protocol';
import { ByteReader, ByteWriter, constantTimeEqual, utf8 } from './bytes.js';
import type { CryptoProvider } from './crypto-provider.js';
import { DoubleRatchet, type RatchetLimits } from './double-ratchet.js';
import { SessionError } from './errors.js';
import { ENCODED_IDENTITY_SIZE, encodeIdentity, type PublicIdentity, SESSION_AD_SIZE } from './pqxdh.js';

export const SESSION_STATE_VERSION = 1;
const KIND_PERSISTENT = 1;

export interface RotationPolicy {
  /** Messages (sent + received) after which a new session is due. */
  maxMessages: number;
  /** Age in milliseconds after which a new session is due. */
  maxAgeMs: number;
}

export type SessionRole = 'initiator' | 'responder';

export interface SessionStateFields {
  role: SessionRole;
  sessionId: Uint8Array;
  resumptionSecret: Uint8Array;
  peer: PublicIdentity;
  localDid: string;
  peerDid: string;
  createdAt: number;
  messagesSent: number;
  messagesReceived: number;
  ticketsIssued: number;
  policy: RotationPolicy;
}

export function writeSessionState(s: SessionStateFields, ratchet: DoubleRatchet): Uint8Array {
  const size =
    3 +
    16 +
    32 +
    64 +
    1 +
    utf8(s.localDid).length +
    1 +
    utf8(s.peerDid).length +
    8 * 3 +
    4 +
    8 * 2 +
    ratchet.serializedSize();
  const w = new ByteWriter(size)
    .u8(SESSION_STATE_VERSION)
    .u8(KIND_PERSISTENT)
    .u8(s.role === 'initiator' ? 0 : 1)
    .raw(s.sessionId)
    .raw(s.resumptionSecret)
    .raw(s.peer.identityKey)
    .raw(s.peer.identityDhKey)
    .shortText(s.localDid)
    .shortText(s.peerDid)
    .u64(s.createdAt)
    .u64(s.messagesSent)
    .u64(s.messagesReceived)
    .u32(s.ticketsIssued)
    .u64(s.policy.maxMessages)
    .u64(s.policy.maxAgeMs);
  ratchet.writeTo(w);
  return w.done();
}

function bad(problem: string, cause?: unknown): never {
  throw new SessionError('SESSION_STATE_INVALID', `session state: ${problem}`, { cause });
}

export function readSessionState(
  p: CryptoProvider,
  bytes: Uint8Array,
  limits: RatchetLimits,
): { state: SessionStateFields; ratchet: DoubleRatchet } {
  if (!(bytes instanceof Uint8Array)) bad('not bytes');
  try {
    const r = new ByteReader(bytes, 'session state');
    const version = r.u8('version');
    if (version !== SESSION_STATE_VERSION) bad(`version ${version} is not supported`);
    if (r.u8('kind') !== KIND_PERSISTENT) bad('not a persistent session');
    const roleByte = r.u8('role');
    if (roleByte > 1) bad('unknown role');
    const state: SessionStateFields = {
      role: roleByte === 0 ? 'initiator' : 'responder',
      sessionId: r.bytesN(16, 'session id'),
      resumptionSecret: r.bytesN(32, 'resumption secret'),
      peer: { identityKey: r.bytesN(32, 'peer identity key'), identityDhKey: r.x25519Key('peer identity DH key') },
      localDid: r.shortText('local DID'),
      peerDid: r.shortText('peer DID'),
      createdAt: r.u64('created-at'),
      messagesSent: r.u64('messages sent'),
      messagesReceived: r.u64('messages received'),
      ticketsIssued: r.u32('tickets issued'),
      policy: { maxMessages: r.u64('policy max messages'), maxAgeMs: r.u64('policy max age') },
    };
    const ratchet = DoubleRatchet.readFrom(p, r, limits);
    r.end();
    if (state.policy.maxMessages <= 0 || state.policy.maxAgeMs <= 0) bad('rotation policy must be positive');
    if (!didMatchesKey(state.peerDid, state.peer.identityKey)) bad('the peer DID does not name the peer identity key');
    const ad = ratchet.associatedData;
    const peerAt = state.role === 'initiator' ? ENCODED_IDENTITY_SIZE : 0;
    if (
      ad.length !== SESSION_AD_SIZE ||
      !constantTimeEqual(ad.subarray(peerAt, peerAt + ENCODED_IDENTITY_SIZE), encodeIdentity(state.peer))
    ) {
      bad('the associated data does not name the stored peer');
    }
    return { state, ratchet };
  } catch (err) {
    if (err instanceof SessionError) throw err;
    if (err instanceof LibertariaError || err instanceof RangeError) bad(err.message, err);
    throw err;
  }
}
