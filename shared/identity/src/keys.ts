/**
 * Ed25519 identities. Signing and verification go through ed25519-node.ts
 * (node:crypto, OpenSSL) in Node and through ed25519-noble.ts (@noble/curves)
 * in browser bundles, which package.json's "browser" field swaps in; both
 * accept exactly the same signatures.
 */
import { IdentityError } from '@libertaria/protocol';
import { formatDidKey, formatLibertariaDid, routingHint } from './did.js';
import { verifySignature as nobleVerifySignature } from './ed25519-noble.js';
import { randomSeed, type SigningKey, signingKey, verifySignature } from './ed25519-node.js';
import { passesEd25519StrictRules } from './ed25519-strict.js';

export { ED25519_BACKEND } from './ed25519-node.js';

export const SEED_LENGTH = 32;
export const PUBLIC_KEY_LENGTH = 32;
export const SIGNATURE_LENGTH = 64;

const INSPECT = Symbol.for('nodejs.util.inspect.custom');

/**
 * Verifies an Ed25519 signature. Returns false, never throws, for anything
 * malformed (wrong types or lengths, a key OpenSSL will not import), because
 * its inputs usually come straight from a peer. Keys are imported per call and
 * nothing is cached, so a peer cannot grow our memory by cycling keys.
 * Small-order and non-canonical keys and signatures are refused before the
 * backend sees them (ed25519-strict.ts): OpenSSL alone accepts the identity
 * key with (R = identity, S = 0) for every message.
 */
export function verifyEd25519(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  return strictVerify(verifySignature, publicKey, data, signature);
}

/**
 * verifyEd25519 on the pure-JS backend whatever the platform: for the noble
 * crypto provider, whose results must not depend on node:crypto (the
 * providers are compared byte for byte in the tests).
 */
export function verifyEd25519Noble(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  return strictVerify(nobleVerifySignature, publicKey, data, signature);
}

function strictVerify(
  equation: (publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array) => boolean,
  publicKey: Uint8Array,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== PUBLIC_KEY_LENGTH) return false;
  if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_LENGTH) return false;
  if (!(data instanceof Uint8Array)) return false;
  if (!passesEd25519StrictRules(publicKey, signature)) return false;
  try {
    return equation(publicKey, data, signature);
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
  readonly #key: SigningKey;
  readonly #publicKey: Uint8Array;
  /** did:libertaria form: the self-certifying, hash-based DID. */
  readonly did: string;
  /** did:key form: carries the public key itself. */
  readonly didKey: string;
  readonly #hint: Uint8Array;

  private constructor(seed: Uint8Array, key: SigningKey) {
    const publicKey = key.publicKey;
    this.#seed = seed;
    this.#key = key;
    this.#publicKey = publicKey;
    this.did = formatLibertariaDid(publicKey);
    this.didKey = formatDidKey(publicKey);
    this.#hint = routingHint(publicKey);
  }

  /** A fresh identity from the operating system's CSPRNG. */
  static generate(): Ed25519Identity {
    return Ed25519Identity.fromSeed(randomSeed());
  }

  /** The identity for a 32-byte RFC 8032 seed (the "private key" of the RFC). */
  static fromSeed(seed: Uint8Array): Ed25519Identity {
    if (!(seed instanceof Uint8Array) || seed.length !== SEED_LENGTH) {
      throw new IdentityError('INVALID_KEY', `an Ed25519 seed is ${SEED_LENGTH} bytes`);
    }
    // Copy the seed so later changes to the caller's buffer cannot alter us.
    const copy = Uint8Array.from(seed);
    return new Ed25519Identity(copy, signingKey(copy));
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
    return this.#key.sign(data);
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
