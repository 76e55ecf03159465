/**
 * Binary codecs for the prekey model of prekey-types.ts (what PREKEY_PUBLISH
 * and PREKEY_BUNDLE carry, see docs/protocol.md#prekeys), the bytes each
 * prekey signature covers, and signature checks.
 *
 * Encodings (all integers big-endian; "signed X25519" = u32 id ‖ 32-byte key
 * ‖ 64-byte signature, 100 bytes; "signed KEM" = u32 id ‖ 1184-byte ML-KEM-768
 * key ‖ 64-byte signature, 1252 bytes; "one-time X25519" = u32 id ‖ 32-byte
 * key, 36 bytes):
 *
 *   publication  u8 version (1) ‖ 32B identityKey ‖ signed X25519 identityDhKey
 *                (id 0) ‖ signed X25519 signedPrekey ‖ signed KEM
 *                lastResortKemPrekey ‖ u16 n ‖ n × one-time X25519 ‖ u16 m ‖
 *                m × signed KEM (one-time)          n, m ≤ 1000
 *   bundle       u8 version (1) ‖ u8 flags (0x01 one-time X25519 present,
 *                0x02 one-time KEM present) ‖ 32B identityKey ‖ identityDhKey
 *                ‖ signedPrekey ‖ lastResortKemPrekey ‖ [one-time X25519] ‖
 *                [signed KEM (one-time)]
 *
 * Decoding is as strict as the frame codec: every length is checked before
 * it is read, a count is checked against both its bound and the bytes left
 * before any array is built, undefined flag bits, a wrong version, an
 * identity DH key id other than 0 and leftover bytes are refused, and every
 * failure is a ProtocolError (BAD_LENGTH, BAD_FIELD, TRAILING_BYTES). Decoded
 * keys and signatures are views into the input: copy what outlives it.
 *
 * No Node-only imports: the client SDK runs in browsers, so signature checks
 * take the Ed25519 verifier as a parameter (the relay passes verifyEd25519).
 */
import { ByteWriter } from './byte-writer.js';
import { bytesEqual, writeU32 } from './bytes.js';
import { IdentityError, ProtocolError } from './errors.js';
import {
  ED25519_SIGNATURE_SIZE,
  MLKEM768_PUBLIC_KEY_SIZE,
  type OneTimeX25519Key,
  type PrekeyBundle,
  PrekeyKind,
  type PrekeyKindValue,
  type PrekeyPublication,
  type SignedKemKey,
  type SignedX25519Key,
  X25519_KEY_SIZE,
} from './prekey-types.js';

/** Version byte that opens both encodings. */
export const PREKEY_ENCODING_VERSION = 1;
/** Domain separator at the start of every prekey signature transcript. */
export const PREKEY_SIGNATURE_DOMAIN = 'libertaria-prekey/1';
/** Most one-time prekeys of each kind one publication may carry. */
export const MAX_ONE_TIME_PREKEYS_PER_PUBLICATION = 1000;
export const ED25519_PUBLIC_KEY_SIZE = 32;

export const SIGNED_X25519_KEY_ENCODED_SIZE = 4 + X25519_KEY_SIZE + ED25519_SIGNATURE_SIZE; // 100
export const SIGNED_KEM_KEY_ENCODED_SIZE = 4 + MLKEM768_PUBLIC_KEY_SIZE + ED25519_SIGNATURE_SIZE; // 1252
export const ONE_TIME_X25519_KEY_ENCODED_SIZE = 4 + X25519_KEY_SIZE; // 36
/** identityKey ‖ identityDhKey ‖ signedPrekey ‖ lastResortKemPrekey: the part every publication and bundle holds. */
export const SIGNED_PART_SIZE =
  ED25519_PUBLIC_KEY_SIZE + 2 * SIGNED_X25519_KEY_ENCODED_SIZE + SIGNED_KEM_KEY_ENCODED_SIZE; // 1484
/** A publication without one-time prekeys. */
export const MIN_PUBLICATION_SIZE = 1 + SIGNED_PART_SIZE + 2 + 2; // 1489
/** A bundle without one-time prekeys. */
export const MIN_BUNDLE_SIZE = 2 + SIGNED_PART_SIZE; // 1486
/** A bundle with both one-time prekeys. */
export const MAX_BUNDLE_SIZE = MIN_BUNDLE_SIZE + ONE_TIME_X25519_KEY_ENCODED_SIZE + SIGNED_KEM_KEY_ENCODED_SIZE; // 2774

/** PrekeyBundle flags byte. Undefined bits must be zero. */
export const PrekeyBundleFlags = {
  ONE_TIME_X25519: 0x01,
  ONE_TIME_KEM: 0x02,
} as const;
const KNOWN_BUNDLE_FLAGS = PrekeyBundleFlags.ONE_TIME_X25519 | PrekeyBundleFlags.ONE_TIME_KEM;

/** An Ed25519 verifier: verifyEd25519 in Node, any implementation in a browser. Must return false, not throw, on bad input. */
export type PrekeyVerifier = (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array) => boolean;

const MAX_U32 = 0xffffffff;
const domainBytes = new TextEncoder().encode(PREKEY_SIGNATURE_DOMAIN);

function fail(code: 'BAD_LENGTH' | 'BAD_FIELD' | 'TRAILING_BYTES', message: string): never {
  throw new ProtocolError(code, message);
}

// ---------------------------------------------------------------------------
// Signature transcript

function keySizeOf(kind: number): number {
  switch (kind) {
    case PrekeyKind.IDENTITY_DH:
    case PrekeyKind.SIGNED_X25519:
      return X25519_KEY_SIZE;
    case PrekeyKind.LAST_RESORT_KEM:
    case PrekeyKind.ONE_TIME_KEM:
      return MLKEM768_PUBLIC_KEY_SIZE;
    default:
      return fail('BAD_FIELD', `prekey kind ${kind} is not 1..4`);
  }
}

/**
 * The bytes the DID key signs for one prekey:
 * "libertaria-prekey/1" ‖ 0x00 ‖ u8 kind ‖ u32 id (big-endian) ‖ public key.
 * Throws ProtocolError BAD_FIELD for an unknown kind, an id outside u32, a
 * key of the wrong size for the kind, or an identity DH key id other than 0.
 */
export function prekeySignatureMessage(kind: PrekeyKindValue, id: number, publicKey: Uint8Array): Uint8Array {
  const size = keySizeOf(kind);
  checkU32(id, 'prekey id');
  if (kind === PrekeyKind.IDENTITY_DH && id !== 0) fail('BAD_FIELD', 'the identity DH key has id 0');
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== size) {
    fail('BAD_FIELD', `a kind ${kind} prekey is ${size} bytes, got ${publicKey?.length}`);
  }
  const out = new Uint8Array(domainBytes.length + 1 + 1 + 4 + size);
  out.set(domainBytes, 0);
  let o = domainBytes.length;
  out[o++] = 0;
  out[o++] = kind;
  writeU32(out, o, id);
  out.set(publicKey, o + 4);
  return out;
}

// ---------------------------------------------------------------------------
// Decoding

class Reader {
  private pos = 0;
  constructor(
    private readonly buf: Uint8Array,
    private readonly what: string,
  ) {}
  get left(): number {
    return this.buf.length - this.pos;
  }
  private need(n: number, field: string): number {
    const at = this.pos;
    if (n > this.buf.length - at) fail('BAD_LENGTH', `${this.what}: too short for ${field}`);
    this.pos = at + n;
    return at;
  }
  u8(field: string): number {
    return this.buf[this.need(1, field)]!;
  }
  u16(field: string): number {
    const o = this.need(2, field);
    return (this.buf[o]! << 8) | this.buf[o + 1]!;
  }
  u32(field: string): number {
    const o = this.need(4, field);
    return ((this.buf[o]! << 24) | (this.buf[o + 1]! << 16) | (this.buf[o + 2]! << 8) | this.buf[o + 3]!) >>> 0;
  }
  bytes(n: number, field: string): Uint8Array {
    const o = this.need(n, field);
    return this.buf.subarray(o, o + n);
  }
  /** A count of `entrySize`-byte entries: bounded, and backed by the bytes left, before anything is allocated. */
  count(max: number, entrySize: number, field: string): number {
    const n = this.u16(`${field} count`);
    if (n > max) fail('BAD_FIELD', `${this.what}: ${n} ${field} exceed the limit of ${max}`);
    if (n * entrySize > this.left) fail('BAD_LENGTH', `${this.what}: too short for ${n} ${field}`);
    return n;
  }
  done(): void {
    if (this.pos !== this.buf.length) {
      fail('TRAILING_BYTES', `${this.what}: ${this.buf.length - this.pos} bytes after the last field`);
    }
  }
  signedX25519(field: string): SignedX25519Key {
    const id = this.u32(`${field}.id`);
    const publicKey = this.bytes(X25519_KEY_SIZE, `${field}.publicKey`);
    const signature = this.bytes(ED25519_SIGNATURE_SIZE, `${field}.signature`);
    return { id, publicKey, signature };
  }
  signedKem(field: string): SignedKemKey {
    const id = this.u32(`${field}.id`);
    const publicKey = this.bytes(MLKEM768_PUBLIC_KEY_SIZE, `${field}.publicKey`);
    const signature = this.bytes(ED25519_SIGNATURE_SIZE, `${field}.signature`);
    return { id, publicKey, signature };
  }
  oneTimeX25519(field: string): OneTimeX25519Key {
    const id = this.u32(`${field}.id`);
    return { id, publicKey: this.bytes(X25519_KEY_SIZE, `${field}.publicKey`) };
  }
  version(): void {
    const v = this.u8('version');
    if (v !== PREKEY_ENCODING_VERSION) fail('BAD_FIELD', `${this.what}: encoding version ${v} is not 1`);
  }
  signedPart(): Pick<PrekeyBundle, 'identityKey' | 'identityDhKey' | 'signedPrekey' | 'lastResortKemPrekey'> {
    const identityKey = this.bytes(ED25519_PUBLIC_KEY_SIZE, 'identityKey');
    const identityDhKey = this.signedX25519('identityDhKey');
    if (identityDhKey.id !== 0) fail('BAD_FIELD', `${this.what}: identityDhKey.id must be 0, got ${identityDhKey.id}`);
    const signedPrekey = this.signedX25519('signedPrekey');
    const lastResortKemPrekey = this.signedKem('lastResortKemPrekey');
    return { identityKey, identityDhKey, signedPrekey, lastResortKemPrekey };
  }
}

/** Decodes a publication (see the module comment); byte fields are views into `bytes`. */
export function decodePrekeyPublication(bytes: Uint8Array): PrekeyPublication {
  const r = new Reader(bytes, 'prekey publication');
  r.version();
  const signed = r.signedPart();
  const n = r.count(MAX_ONE_TIME_PREKEYS_PER_PUBLICATION, ONE_TIME_X25519_KEY_ENCODED_SIZE, 'one-time X25519 prekeys');
  const oneTimePrekeys: OneTimeX25519Key[] = [];
  for (let i = 0; i < n; i++) oneTimePrekeys.push(r.oneTimeX25519(`oneTimePrekeys[${i}]`));
  const m = r.count(MAX_ONE_TIME_PREKEYS_PER_PUBLICATION, SIGNED_KEM_KEY_ENCODED_SIZE, 'one-time KEM prekeys');
  const oneTimeKemPrekeys: SignedKemKey[] = [];
  for (let i = 0; i < m; i++) oneTimeKemPrekeys.push(r.signedKem(`oneTimeKemPrekeys[${i}]`));
  r.done();
  return { ...signed, oneTimePrekeys, oneTimeKemPrekeys };
}

/** Decodes a bundle (see the module comment); byte fields are views into `bytes`. */
export function decodePrekeyBundle(bytes: Uint8Array): PrekeyBundle {
  const r = new Reader(bytes, 'prekey bundle');
  r.version();
  const flags = r.u8('flags');
  if ((flags & ~KNOWN_BUNDLE_FLAGS) !== 0) {
    fail('BAD_FIELD', `prekey bundle: undefined flag bits set (0x${flags.toString(16)})`);
  }
  const bundle: PrekeyBundle = r.signedPart();
  if (flags & PrekeyBundleFlags.ONE_TIME_X25519) bundle.oneTimePrekey = r.oneTimeX25519('oneTimePrekey');
  if (flags & PrekeyBundleFlags.ONE_TIME_KEM) bundle.oneTimeKemPrekey = r.signedKem('oneTimeKemPrekey');
  r.done();
  return bundle;
}

// ---------------------------------------------------------------------------
// Encoding

function checkU32(value: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32)
    fail('BAD_FIELD', `${field} must be an integer 0..${MAX_U32}`);
}
function checkBytes(value: Uint8Array, size: number, field: string): void {
  if (!(value instanceof Uint8Array) || value.length !== size) {
    fail(
      'BAD_FIELD',
      `${field} must be ${size} bytes, got ${value instanceof Uint8Array ? value.length : typeof value}`,
    );
  }
}

class Writer extends ByteWriter {
  signedX25519(k: SignedX25519Key, field: string): void {
    checkU32(k.id, `${field}.id`);
    checkBytes(k.publicKey, X25519_KEY_SIZE, `${field}.publicKey`);
    checkBytes(k.signature, ED25519_SIGNATURE_SIZE, `${field}.signature`);
    this.u32(k.id);
    this.bytes(k.publicKey);
    this.bytes(k.signature);
  }
  signedKem(k: SignedKemKey, field: string): void {
    checkU32(k.id, `${field}.id`);
    checkBytes(k.publicKey, MLKEM768_PUBLIC_KEY_SIZE, `${field}.publicKey`);
    checkBytes(k.signature, ED25519_SIGNATURE_SIZE, `${field}.signature`);
    this.u32(k.id);
    this.bytes(k.publicKey);
    this.bytes(k.signature);
  }
  oneTimeX25519(k: OneTimeX25519Key, field: string): void {
    checkU32(k.id, `${field}.id`);
    checkBytes(k.publicKey, X25519_KEY_SIZE, `${field}.publicKey`);
    this.u32(k.id);
    this.bytes(k.publicKey);
  }
  signedPart(p: Pick<PrekeyBundle, 'identityKey' | 'identityDhKey' | 'signedPrekey' | 'lastResortKemPrekey'>): void {
    checkBytes(p.identityKey, ED25519_PUBLIC_KEY_SIZE, 'identityKey');
    if (p.identityDhKey?.id !== 0) fail('BAD_FIELD', 'identityDhKey.id must be 0');
    this.bytes(p.identityKey);
    this.signedX25519(p.identityDhKey, 'identityDhKey');
    this.signedX25519(p.signedPrekey, 'signedPrekey');
    this.signedKem(p.lastResortKemPrekey, 'lastResortKemPrekey');
  }
}

/** Encoded size of a publication with this many one-time prekeys of each kind. */
export function prekeyPublicationSize(oneTimeX25519: number, oneTimeKem: number): number {
  return (
    MIN_PUBLICATION_SIZE + oneTimeX25519 * ONE_TIME_X25519_KEY_ENCODED_SIZE + oneTimeKem * SIGNED_KEM_KEY_ENCODED_SIZE
  );
}

/** Encodes a publication; fields are validated as the decoder would (ProtocolError BAD_FIELD). */
export function encodePrekeyPublication(pub: PrekeyPublication): Uint8Array {
  const otp = pub.oneTimePrekeys;
  const otk = pub.oneTimeKemPrekeys;
  if (!Array.isArray(otp) || !Array.isArray(otk)) fail('BAD_FIELD', 'one-time prekeys must be arrays');
  for (const [name, list] of [
    ['oneTimePrekeys', otp],
    ['oneTimeKemPrekeys', otk],
  ] as const) {
    if (list.length > MAX_ONE_TIME_PREKEYS_PER_PUBLICATION) {
      fail('BAD_FIELD', `${name}: ${list.length} exceed the limit of ${MAX_ONE_TIME_PREKEYS_PER_PUBLICATION}`);
    }
  }
  const w = new Writer(prekeyPublicationSize(otp.length, otk.length));
  w.u8(PREKEY_ENCODING_VERSION);
  w.signedPart(pub);
  w.u16(otp.length);
  for (const [i, k] of otp.entries()) w.oneTimeX25519(k, `oneTimePrekeys[${i}]`);
  w.u16(otk.length);
  for (const [i, k] of otk.entries()) w.signedKem(k, `oneTimeKemPrekeys[${i}]`);
  return w.buf;
}

/** Encodes a bundle; fields are validated as the decoder would (ProtocolError BAD_FIELD). */
export function encodePrekeyBundle(bundle: PrekeyBundle): Uint8Array {
  let flags = 0;
  let size = MIN_BUNDLE_SIZE;
  if (bundle.oneTimePrekey !== undefined) {
    flags |= PrekeyBundleFlags.ONE_TIME_X25519;
    size += ONE_TIME_X25519_KEY_ENCODED_SIZE;
  }
  if (bundle.oneTimeKemPrekey !== undefined) {
    flags |= PrekeyBundleFlags.ONE_TIME_KEM;
    size += SIGNED_KEM_KEY_ENCODED_SIZE;
  }
  const w = new Writer(size);
  w.u8(PREKEY_ENCODING_VERSION);
  w.u8(flags);
  w.signedPart(bundle);
  if (bundle.oneTimePrekey !== undefined) w.oneTimeX25519(bundle.oneTimePrekey, 'oneTimePrekey');
  if (bundle.oneTimeKemPrekey !== undefined) w.signedKem(bundle.oneTimeKemPrekey, 'oneTimeKemPrekey');
  return w.buf;
}

/**
 * Splits a publication into publications whose encodings are at most
 * `maxBytes` each, for sending as several PREKEY_PUBLISH frames: every part
 * repeats the signed keys (so each is complete and verifiable on its own)
 * and carries a slice of the one-time prekeys, in order (X25519 ones first).
 * Returns one part for a publication that fits. Throws BAD_FIELD when not
 * even the signed keys plus one one-time KEM prekey fit.
 */
export function splitPrekeyPublication(pub: PrekeyPublication, maxBytes: number): PrekeyPublication[] {
  const fits =
    pub.oneTimePrekeys.length <= MAX_ONE_TIME_PREKEYS_PER_PUBLICATION &&
    pub.oneTimeKemPrekeys.length <= MAX_ONE_TIME_PREKEYS_PER_PUBLICATION &&
    prekeyPublicationSize(pub.oneTimePrekeys.length, pub.oneTimeKemPrekeys.length) <= maxBytes;
  if (fits) return [pub];
  if (maxBytes < MIN_PUBLICATION_SIZE + SIGNED_KEM_KEY_ENCODED_SIZE) {
    fail(
      'BAD_FIELD',
      `a prekey publication part needs at least ${MIN_PUBLICATION_SIZE + SIGNED_KEM_KEY_ENCODED_SIZE} bytes, ${maxBytes} allowed`,
    );
  }
  const parts: PrekeyPublication[] = [];
  let x = 0;
  let k = 0;
  const { oneTimePrekeys: otp, oneTimeKemPrekeys: otk } = pub;
  while (x < otp.length || k < otk.length || parts.length === 0) {
    let room = maxBytes - MIN_PUBLICATION_SIZE;
    const nx = Math.min(
      otp.length - x,
      MAX_ONE_TIME_PREKEYS_PER_PUBLICATION,
      Math.floor(room / ONE_TIME_X25519_KEY_ENCODED_SIZE),
    );
    room -= nx * ONE_TIME_X25519_KEY_ENCODED_SIZE;
    const nk = Math.min(
      otk.length - k,
      MAX_ONE_TIME_PREKEYS_PER_PUBLICATION,
      Math.floor(room / SIGNED_KEM_KEY_ENCODED_SIZE),
    );
    parts.push({ ...pub, oneTimePrekeys: otp.slice(x, x + nx), oneTimeKemPrekeys: otk.slice(k, k + nk) });
    x += nx;
    k += nk;
  }
  return parts;
}

// ---------------------------------------------------------------------------
// Verification

function checkSignature(
  verify: PrekeyVerifier,
  identityKey: Uint8Array,
  kind: PrekeyKindValue,
  key: SignedX25519Key | SignedKemKey,
  field: string,
): void {
  let ok: boolean;
  try {
    ok = verify(identityKey, prekeySignatureMessage(kind, key.id, key.publicKey), key.signature);
  } catch {
    ok = false;
  }
  if (!ok)
    throw new IdentityError('PREKEY_BAD_SIGNATURE', `${field} (kind ${kind}, id ${key.id}): signature does not verify`);
}

function checkSignedPart(
  p: Pick<PrekeyBundle, 'identityKey' | 'identityDhKey' | 'signedPrekey' | 'lastResortKemPrekey'>,
  verify: PrekeyVerifier,
  expectedIdentityKey: Uint8Array | undefined,
): void {
  if (expectedIdentityKey !== undefined && !bytesEqual(p.identityKey, expectedIdentityKey)) {
    throw new IdentityError('PREKEY_IDENTITY_MISMATCH', 'the prekeys are signed by another identity key');
  }
  if (p.identityDhKey.id !== 0) {
    throw new IdentityError('PREKEY_BAD_SIGNATURE', 'identityDhKey: id must be 0');
  }
  checkSignature(verify, p.identityKey, PrekeyKind.IDENTITY_DH, p.identityDhKey, 'identityDhKey');
  checkSignature(verify, p.identityKey, PrekeyKind.SIGNED_X25519, p.signedPrekey, 'signedPrekey');
  checkSignature(verify, p.identityKey, PrekeyKind.LAST_RESORT_KEM, p.lastResortKemPrekey, 'lastResortKemPrekey');
}

/**
 * Checks a publication: its identityKey is `expectedIdentityKey` (the
 * publisher's authenticated key; IdentityError PREKEY_IDENTITY_MISMATCH) and
 * every signature verifies under it with its kind and id
 * (PREKEY_BAD_SIGNATURE naming the first key that fails). One-time X25519
 * prekeys carry no signature (prekey-types.ts).
 */
export function verifyPublication(
  pub: PrekeyPublication,
  expectedIdentityKey: Uint8Array,
  verify: PrekeyVerifier,
): void {
  checkSignedPart(pub, verify, expectedIdentityKey);
  for (const [i, k] of pub.oneTimeKemPrekeys.entries()) {
    checkSignature(verify, pub.identityKey, PrekeyKind.ONE_TIME_KEM, k, `oneTimeKemPrekeys[${i}]`);
  }
}

/**
 * Checks every signature of a fetched bundle under its identityKey, and, if
 * given, that the identityKey is the one expected (the DID's key). Throws
 * IdentityError PREKEY_BAD_SIGNATURE or PREKEY_IDENTITY_MISMATCH.
 */
export function verifyBundle(bundle: PrekeyBundle, verify: PrekeyVerifier, expectedIdentityKey?: Uint8Array): void {
  checkSignedPart(bundle, verify, expectedIdentityKey);
  if (bundle.oneTimeKemPrekey !== undefined) {
    checkSignature(verify, bundle.identityKey, PrekeyKind.ONE_TIME_KEM, bundle.oneTimeKemPrekey, 'oneTimeKemPrekey');
  }
}
