/**
 * Ed25519 in pure JavaScript (@noble/curves): the backend of Ed25519Identity
 * in browser bundles, where package.json's "browser" field puts this file in
 * place of ed25519-node.ts (esbuild, webpack and rollup's node-resolve honour
 * it; Node ignores it). Same exports as ed25519-node.ts.
 *
 * Verification applies the strict rules of ed25519-strict.ts and then the
 * cofactorless equation [S]B = R + [k]A, which is what OpenSSL checks. noble's
 * own verify checks the cofactored one ([8][S]B = [8]R + [8][k]A), which
 * accepts some signatures with mixed-order A or R that OpenSSL refuses
 * ("Taming the many EdDSAs", cases 4 and 5), so the equation is written out
 * here from noble's point arithmetic. Both backends must accept exactly the
 * same signatures (shared/identity/test/ed25519-backends.test.ts).
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { ED25519_ORDER } from './ed25519-strict.js';

export const ED25519_BACKEND = 'noble';

/** A private key that signs, with its public key. */
export interface SigningKey {
  readonly publicKey: Uint8Array;
  sign(data: Uint8Array): Uint8Array;
}

/** 32 bytes from the platform CSPRNG (globalThis.crypto.getRandomValues). */
export function randomSeed(): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(32));
}

export function signingKey(seed: Uint8Array): SigningKey {
  const secret = Uint8Array.from(seed);
  return { publicKey: ed25519.getPublicKey(secret), sign: (data) => ed25519.sign(data, secret) };
}

/**
 * The cofactorless equation for a key and signature that already passed
 * passesEd25519StrictRules (lengths checked by the caller). Throws on an
 * encoding noble cannot decode; the caller turns that into false.
 */
export function verifySignature(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  const Point = ed25519.Point;
  // zip215 false: y < p (already checked) and x recoverable, else it throws.
  const A = Point.fromBytes(publicKey, false);
  const rBytes = signature.subarray(0, 32);
  const R = Point.fromBytes(rBytes, false);
  const s = littleEndian(signature.subarray(32, 64));
  const hashed = new Uint8Array(64 + data.length);
  hashed.set(rBytes, 0);
  hashed.set(publicKey, 32);
  hashed.set(data, 64);
  const k = littleEndian(sha512(hashed)) % ED25519_ORDER;
  return Point.BASE.multiplyUnsafe(s).equals(R.add(A.multiplyUnsafe(k)));
}

function littleEndian(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]!);
  return n;
}
