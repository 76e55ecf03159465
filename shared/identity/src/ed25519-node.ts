/**
 * Ed25519 on node:crypto (OpenSSL): the backend of Ed25519Identity in Node.
 * Roughly twenty times faster than a pure-JS Ed25519, and the private key
 * stays inside a KeyObject rather than a JS buffer we pass around. Browser
 * bundles get ed25519-noble.ts in this file's place (package.json "browser"
 * field); both files have the same exports.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';
import { IdentityError } from '@libertaria/protocol';

export const ED25519_BACKEND = 'node:crypto';

// DER framing that turns raw Ed25519 bytes into the structures OpenSSL imports:
// PKCS#8 PrivateKeyInfo wrapping the 32-byte seed, and SPKI wrapping the 32-byte key.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** A private key that signs, with its public key. */
export interface SigningKey {
  readonly publicKey: Uint8Array;
  sign(data: Uint8Array): Uint8Array;
}

/** 32 bytes from OpenSSL's CSPRNG, through a key generation (the seed of a fresh key pair). */
export function randomSeed(): Uint8Array {
  const der = generateKeyPairSync('ed25519').privateKey.export({ format: 'der', type: 'pkcs8' });
  return new Uint8Array(der.subarray(PKCS8_ED25519_PREFIX.length));
}

export function signingKey(seed: Uint8Array): SigningKey {
  const privateKey = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  return {
    publicKey: new Uint8Array(spki.subarray(SPKI_ED25519_PREFIX.length)),
    sign: (data) => new Uint8Array(sign(null, data, privateKey)),
  };
}

/** OpenSSL's verification; the caller has applied the strict rules and catches a throw. */
export function verifySignature(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  return verify(null, data, publicKeyObject(publicKey), signature);
}

/**
 * Imports a raw 32-byte Ed25519 public key. Throws IdentityError INVALID_KEY
 * on a wrong length. As JWK, not SPKI DER: OpenSSL 3 imports DER through its
 * decoder framework, about 75 µs a key on our machines against about 6 µs for
 * JWK, and a relay imports one key per handshake (the reconnect storm spent
 * a fifth of its CPU here; docs/crypto.md). The same bytes either way (a
 * test compares them); only JWK *exports* are unsafe on Node 20
 * (crypto-node.ts, publicKeyOf).
 */
export function publicKeyObject(raw: Uint8Array): KeyObject {
  if (!(raw instanceof Uint8Array) || raw.length !== 32) {
    throw new IdentityError('INVALID_KEY', 'an Ed25519 public key is 32 bytes');
  }
  return createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw.buffer, raw.byteOffset, 32).toString('base64url') },
    format: 'jwk',
  });
}
