/**
 * Ed25519 identities. Signing and verification go through `node:crypto`
 * (OpenSSL), which is roughly twenty times faster than a pure-JS Ed25519 and
 * keeps the private key inside a KeyObject rather than a JS buffer we pass
 * around.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';
import { IdentityError } from '../errors.js';
import { formatDidKey, formatLibertariaDid, routingHint } from './did.js';
import { passesEd25519StrictRules } from './ed25519-strict.js';

export const SEED_LENGTH = 32;
export const PUBLIC_KEY_LENGTH = 32;
export const SIGNATURE_LENGTH = 64;

// DER framing that turns raw Ed25519 bytes into the structures OpenSSL imports:
// PKCS#8 PrivateKeyInfo wrapping the 32-byte seed, and SPKI wrapping the 32-byte key.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

const INSPECT = Symbol.for('nodejs.util.inspect.custom');

/** Imports a raw 32-byte Ed25519 public key. Throws IdentityError INVALID_KEY on a wrong length. */
export function publicKeyObject(raw: Uint8Array): KeyObject {
  if (!(raw instanceof Uint8Array) || raw.length !== PUBLIC_KEY_LENGTH) {
    throw new IdentityError('INVALID_KEY', `an Ed25519 public key is ${PUBLIC_KEY_LENGTH} bytes`);
  }
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
}

/**
 * Verifies an Ed25519 signature. Returns false, never throws, for anything
 * malformed (wrong types or lengths, a key OpenSSL will not import), because
 * its inputs usually come straight from a peer. Keys are imported per call and
 * nothing is cached, so a peer cannot grow our memory by cycling keys.
 * Small-order and non-canonical keys and signatures are refused before
 * OpenSSL sees them (ed25519-strict.ts): OpenSSL alone accepts the identity
 * key with (R = identity, S = 0) for every message.
 */
export function verifyEd25519(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== PUBLIC_KEY_LENGTH) return false;
  if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_LENGTH) return false;
  if (!(data instanceof Uint8Array)) return false;
  if (!passesEd25519StrictRules(publicKey, signature)) return false;
  try {
    return verify(null, data, publicKeyObject(publicKey), signature);
  } catch {
    return false;
  }
}

/**
 * An Ed25519 key pair with its derived DIDs and routing hint. The seed lives
 * in a private field and every way Node prints an object (JSON, String(),
 * util.inspect / console.log) is overridden to show only the DID, so an
 * identity that ends up in a log line does not leak its secret.
 */
export class Ed25519Identity {
  readonly #seed: Uint8Array;
  readonly #privateKey: KeyObject;
  readonly #publicKey: Uint8Array;
  /** did:libertaria form: the self-certifying, hash-based DID. */
  readonly did: string;
  /** did:key form: carries the public key itself. */
  readonly didKey: string;
  readonly #hint: Uint8Array;

  private constructor(seed: Uint8Array, privateKey: KeyObject, publicKey: Uint8Array) {
    this.#seed = seed;
    this.#privateKey = privateKey;
    this.#publicKey = publicKey;
    this.did = formatLibertariaDid(publicKey);
    this.didKey = formatDidKey(publicKey);
    this.#hint = routingHint(publicKey);
  }

  /** A fresh identity from the operating system's CSPRNG. */
  static generate(): Ed25519Identity {
    const { privateKey } = generateKeyPairSync('ed25519');
    const der = privateKey.export({ format: 'der', type: 'pkcs8' });
    return Ed25519Identity.fromSeed(new Uint8Array(der.subarray(PKCS8_ED25519_PREFIX.length)));
  }

  /** The identity for a 32-byte RFC 8032 seed (the "private key" of the RFC). */
  static fromSeed(seed: Uint8Array): Ed25519Identity {
    if (!(seed instanceof Uint8Array) || seed.length !== SEED_LENGTH) {
      throw new IdentityError('INVALID_KEY', `an Ed25519 seed is ${SEED_LENGTH} bytes`);
    }
    const privateKey = createPrivateKey({
      key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
      format: 'der',
      type: 'pkcs8',
    });
    const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
    const publicKey = new Uint8Array(spki.subarray(SPKI_ED25519_PREFIX.length));
    // Copy the seed so later changes to the caller's buffer cannot alter us.
    return new Ed25519Identity(Uint8Array.from(seed), privateKey, publicKey);
  }

  /** The raw 32-byte public key (a copy). */
  get publicKey(): Uint8Array {
    return Uint8Array.from(this.#publicKey);
  }

  /** The 24-byte routing hint (a copy): the first 24 bytes of BLAKE3-256(public key). */
  get hint(): Uint8Array {
    return Uint8Array.from(this.#hint);
  }

  /** A 64-byte Ed25519 signature of `data`. */
  sign(data: Uint8Array): Uint8Array {
    return new Uint8Array(sign(null, data, this.#privateKey));
  }

  /** The secret seed (a copy). Only for writing key files; never log it. */
  exportSeed(): Uint8Array {
    return Uint8Array.from(this.#seed);
  }

  toJSON(): { did: string } {
    return { did: this.did };
  }

  toString(): string {
    return `Ed25519Identity(${this.did})`;
  }

  [INSPECT](): string {
    return this.toString();
  }
}
