/**
 * The Double Ratchet message on the wire (inside a relay SEND payload):
 *
 *   0   u8   version (1)
 *   1   32   DH ratchet public key of the sender (canonical X25519)
 *   33  u32  PN: messages in the sender's previous sending chain
 *   37  u32  N: this message's number in the current sending chain
 *   41  ...  ChaCha20-Poly1305 ciphertext ‖ 16-byte tag
 *
 * Bytes 0..40 are the header; it is not encrypted (relays see the ratchet
 * key and counters, never content) but it is authenticated: the AEAD's
 * associated data is session AD ‖ header. All integers are big-endian.
 */
import { ProtocolError } from '@libertaria/protocol';
import { ByteReader, ByteWriter } from './bytes.js';
import { AEAD_TAG_SIZE } from './crypto-provider.js';

export const RATCHET_MESSAGE_VERSION = 1;
export const RATCHET_HEADER_SIZE = 41;
export const MIN_RATCHET_MESSAGE_SIZE = RATCHET_HEADER_SIZE + AEAD_TAG_SIZE;

export interface RatchetHeader {
  dh: Uint8Array;
  pn: number;
  n: number;
}

export interface DecodedRatchetMessage {
  header: RatchetHeader;
  /** The 41 header bytes exactly as received: the AEAD's associated data (after the session AD). */
  headerBytes: Uint8Array;
  /** Ciphertext ‖ tag. */
  sealed: Uint8Array;
}

export function encodeRatchetHeader(header: RatchetHeader): Uint8Array {
  return new ByteWriter(RATCHET_HEADER_SIZE)
    .u8(RATCHET_MESSAGE_VERSION)
    .raw(header.dh)
    .u32(header.pn)
    .u32(header.n)
    .done();
}

export function decodeRatchetMessage(bytes: Uint8Array): DecodedRatchetMessage {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError('BAD_FIELD', 'ratchet message: not bytes');
  const r = new ByteReader(bytes, 'ratchet message');
  const version = r.u8('version');
  if (version !== RATCHET_MESSAGE_VERSION) {
    throw new ProtocolError('UNSUPPORTED_VERSION', `ratchet message: version ${version} is not supported`);
  }
  const dh = r.x25519Key('ratchet key');
  const pn = r.u32('PN');
  const n = r.u32('N');
  if (r.remaining < AEAD_TAG_SIZE)
    throw new ProtocolError('TRUNCATED', 'ratchet message: ciphertext shorter than its tag');
  const sealed = r.rest();
  return { header: { dh, pn, n }, headerBytes: bytes.slice(0, RATCHET_HEADER_SIZE), sealed };
}

export function encodeRatchetMessage(headerBytes: Uint8Array, sealed: Uint8Array): Uint8Array {
  const out = new Uint8Array(headerBytes.length + sealed.length);
  out.set(headerBytes);
  out.set(sealed, headerBytes.length);
  return out;
}
