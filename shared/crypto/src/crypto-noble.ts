/**
 * The pure-JS provider on the audited @noble libraries, for browsers (and any
 * runtime without node:crypto). No Node import here or in anything this
 * imports; randomness comes from globalThis.crypto.getRandomValues.
 */

import { verifyEd25519Noble as verifyEd25519 } from '@libertaria/identity';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 as nobleX25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import {
  AEAD_TAG_SIZE,
  type CryptoProvider,
  X25519_PRIVATE_KEY_SIZE,
  X25519_PUBLIC_KEY_SIZE,
} from './crypto-provider.js';
import { SessionError } from './errors.js';
import { kemDecapsulate, kemEncapsulate, kemGenerate } from './mlkem.js';

function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  // getRandomValues fills at most 65,536 bytes per call.
  for (let at = 0; at < length; at += 65536) globalThis.crypto.getRandomValues(out.subarray(at, at + 65536));
  return out;
}

function x25519PublicKey(privateKey: Uint8Array): Uint8Array {
  if (privateKey.length !== X25519_PRIVATE_KEY_SIZE) throw new RangeError('an X25519 private key is 32 bytes');
  return nobleX25519.getPublicKey(privateKey);
}

function x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  if (privateKey.length !== X25519_PRIVATE_KEY_SIZE) throw new RangeError('an X25519 private key is 32 bytes');
  if (publicKey.length !== X25519_PUBLIC_KEY_SIZE)
    throw new SessionError('INVALID_PUBLIC_KEY', 'an X25519 key is 32 bytes');
  try {
    return nobleX25519.getSharedSecret(privateKey, publicKey);
  } catch (err) {
    // noble refuses an all-zero result, like OpenSSL.
    throw new SessionError('INVALID_PUBLIC_KEY', 'X25519 with this public key gives the all-zero secret', {
      cause: err,
    });
  }
}

function aeadOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Uint8Array {
  if (sealed.length < AEAD_TAG_SIZE) throw new SessionError('DECRYPT_FAILED', 'ciphertext shorter than its tag');
  try {
    // noble compares the tag in constant time and decrypts only after it matches.
    return chacha20poly1305(key, nonce, ad).decrypt(sealed);
  } catch (err) {
    throw new SessionError('DECRYPT_FAILED', 'the message did not authenticate', { cause: err });
  }
}

export const nobleCrypto: CryptoProvider = {
  name: 'noble',
  randomBytes,
  x25519Generate() {
    const privateKey = randomBytes(X25519_PRIVATE_KEY_SIZE);
    return { privateKey, publicKey: x25519PublicKey(privateKey) };
  },
  x25519PublicKey,
  x25519,
  hkdf(ikm, salt, info, length) {
    // An empty salt is HKDF's "not provided", i.e. HashLen zero bytes, exactly as node:crypto treats it.
    return hkdf(sha256, ikm, salt, info, length);
  },
  hmac(key, data) {
    return hmac(sha256, key, data);
  },
  aeadSeal(key, nonce, plaintext, ad) {
    return chacha20poly1305(key, nonce, ad).encrypt(plaintext);
  },
  aeadOpen,
  verifyEd25519,
  kemGenerate: (seed) => kemGenerate(randomBytes, seed),
  kemEncapsulate: (publicKey, seed) => kemEncapsulate(randomBytes, publicKey, seed),
  kemDecapsulate,
};
