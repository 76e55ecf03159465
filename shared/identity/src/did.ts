/**
 * The two DID forms an identity can be named by, and routing hints.
 *
 *   did:libertaria:z<base58btc(BLAKE3-256(pk))>   self-certifying; the key is
 *       presented separately and checked with didMatchesKey().
 *   did:key:z<base58btc(0xed 0x01 || pk)>         carries the key itself
 *       (multicodec ed25519-pub, unsigned varint 0xed).
 *
 * 'z' is the multibase prefix for base58btc. See docs/identity.md.
 */

import { bytesEqual, IdentityError } from '@libertaria/protocol';
import { blake3 } from '@noble/hashes/blake3.js';
import { base58 } from '@scure/base';

export const HINT_LENGTH = 24;
export const KEY_HASH_LENGTH = 32;
/** Longer than any valid DID of either method (about 60 characters); checked before decoding. */
export const MAX_DID_LENGTH = 128;

const ED25519_KEY_LENGTH = 32;
/** Multicodec ed25519-pub (0xed) as an unsigned varint. */
const ED25519_PUB_MULTICODEC = Uint8Array.of(0xed, 0x01);
const BASE58BTC_MULTIBASE = 'z';
const BASE58BTC_ALPHABET = /^[1-9A-HJ-NP-Za-km-z]+$/;
const HINT_HEX = /^[0-9a-fA-F]+$/;

export type ParsedDid =
  | { method: 'libertaria'; keyHash: Uint8Array; did: string }
  | { method: 'key'; publicKey: Uint8Array; did: string };

/** Quoted and escaped, so a hostile DID cannot forge log lines through an error message. */
function quote(did: string): string {
  return JSON.stringify(did);
}

function requirePublicKey(publicKey: Uint8Array): void {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== ED25519_KEY_LENGTH) {
    throw new IdentityError('INVALID_KEY', `an Ed25519 public key is ${ED25519_KEY_LENGTH} bytes`);
  }
}

function keyHash(publicKey: Uint8Array): Uint8Array {
  return blake3(publicKey);
}

/** did:libertaria for a raw 32-byte Ed25519 public key. */
export function formatLibertariaDid(publicKey: Uint8Array): string {
  requirePublicKey(publicKey);
  return `did:libertaria:${BASE58BTC_MULTIBASE}${base58.encode(keyHash(publicKey))}`;
}

/** did:key for a raw 32-byte Ed25519 public key. */
export function formatDidKey(publicKey: Uint8Array): string {
  requirePublicKey(publicKey);
  const bytes = new Uint8Array(ED25519_PUB_MULTICODEC.length + publicKey.length);
  bytes.set(ED25519_PUB_MULTICODEC, 0);
  bytes.set(publicKey, ED25519_PUB_MULTICODEC.length);
  return `did:key:${BASE58BTC_MULTIBASE}${base58.encode(bytes)}`;
}

/** Decodes the multibase part of a DID; every failure is INVALID_DID with the reason. */
function decodeMultibase(did: string, id: string): Uint8Array {
  if (!id.startsWith(BASE58BTC_MULTIBASE)) {
    throw new IdentityError('INVALID_DID', `${quote(did)}: the identifier lacks the 'z' (base58btc) multibase prefix`);
  }
  const encoded = id.slice(BASE58BTC_MULTIBASE.length);
  // Checked by hand so the message names the problem rather than a decoder internal.
  if (!BASE58BTC_ALPHABET.test(encoded)) {
    throw new IdentityError('INVALID_DID', `${quote(did)}: the identifier is empty or not in the base58btc alphabet`);
  }
  return base58.decode(encoded);
}

/**
 * Parses a did:libertaria or did:key string. Throws IdentityError:
 * INVALID_DID for a malformed string, UNSUPPORTED_DID_METHOD for another method.
 */
export function parseDid(did: string): ParsedDid {
  if (typeof did !== 'string') throw new IdentityError('INVALID_DID', 'a DID must be a string');
  // Bounded first: base58 decoding is quadratic, so a huge string must not reach it.
  if (did.length > MAX_DID_LENGTH) {
    throw new IdentityError('INVALID_DID', `a DID is at most ${MAX_DID_LENGTH} characters, got ${did.length}`);
  }
  if (!did.startsWith('did:')) throw new IdentityError('INVALID_DID', `${quote(did)}: missing 'did:' prefix`);
  const rest = did.slice('did:'.length);
  const colon = rest.indexOf(':');
  if (colon <= 0) throw new IdentityError('INVALID_DID', `${quote(did)}: expected did:<method>:<identifier>`);
  const method = rest.slice(0, colon);
  const id = rest.slice(colon + 1);
  if (method === 'libertaria') {
    const hash = decodeMultibase(did, id);
    if (hash.length !== KEY_HASH_LENGTH) {
      throw new IdentityError(
        'INVALID_DID',
        `${quote(did)}: did:libertaria decodes to ${hash.length} bytes, expected ${KEY_HASH_LENGTH}`,
      );
    }
    return { method: 'libertaria', keyHash: hash, did };
  }
  if (method === 'key') {
    const bytes = decodeMultibase(did, id);
    const expected = ED25519_PUB_MULTICODEC.length + ED25519_KEY_LENGTH;
    if (bytes.length < ED25519_PUB_MULTICODEC.length || bytes[0] !== 0xed || bytes[1] !== 0x01) {
      throw new IdentityError('INVALID_DID', `${quote(did)}: did:key multicodec is not ed25519-pub (0xed 0x01)`);
    }
    if (bytes.length !== expected) {
      throw new IdentityError(
        'INVALID_DID',
        `${quote(did)}: did:key decodes to ${bytes.length} bytes, expected ${expected}`,
      );
    }
    return { method: 'key', publicKey: bytes.slice(ED25519_PUB_MULTICODEC.length), did };
  }
  throw new IdentityError(
    'UNSUPPORTED_DID_METHOD',
    `${quote(did)}: DID method ${quote(method)} is not supported (use did:libertaria or did:key)`,
  );
}

/**
 * Whether `publicKey` is the key the DID names: BLAKE3-256(pk) equals the
 * decoded hash for did:libertaria, the embedded key for did:key. Never throws;
 * a malformed DID or key simply does not match.
 */
export function didMatchesKey(did: string, publicKey: Uint8Array): boolean {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== ED25519_KEY_LENGTH) return false;
  let parsed: ParsedDid;
  try {
    parsed = parseDid(did);
  } catch {
    return false;
  }
  return parsed.method === 'libertaria'
    ? bytesEqual(parsed.keyHash, keyHash(publicKey))
    : bytesEqual(parsed.publicKey, publicKey);
}

/** The routing hint of a key: the first 24 bytes of BLAKE3-256(public key). */
export function routingHint(publicKey: Uint8Array): Uint8Array {
  requirePublicKey(publicKey);
  return keyHash(publicKey).slice(0, HINT_LENGTH);
}

/**
 * The routing hint for a DID of either method. Both give the same hint for the
 * same key, because did:libertaria already carries BLAKE3-256(pk).
 */
export function hintFromDid(did: string): Uint8Array {
  const parsed = parseDid(did);
  return parsed.method === 'libertaria' ? parsed.keyHash.slice(0, HINT_LENGTH) : routingHint(parsed.publicKey);
}

/** Lower-case hex of a 24-byte hint. */
export function hintToHex(hint: Uint8Array): string {
  if (!(hint instanceof Uint8Array) || hint.length !== HINT_LENGTH) {
    throw new IdentityError('INVALID_HINT', `a routing hint is ${HINT_LENGTH} bytes`);
  }
  // A view, not Buffer.from(hint)'s copy: the relay names a queue's keys with this per durable frame.
  const bytes = Buffer.isBuffer(hint) ? hint : Buffer.from(hint.buffer, hint.byteOffset, HINT_LENGTH);
  return bytes.toString('hex');
}

/** Parses 48 hex characters (either case) into a 24-byte hint. */
export function hintFromHex(hex: string): Uint8Array {
  if (typeof hex !== 'string' || hex.length !== HINT_LENGTH * 2 || !HINT_HEX.test(hex)) {
    throw new IdentityError('INVALID_HINT', `a routing hint is ${HINT_LENGTH * 2} hex characters`);
  }
  return new Uint8Array(Buffer.from(hex, 'hex'));
}
