/**
 * The primitives the session layer needs, behind one interface so the core
 * (PQXDH, Double Ratchet, session kinds) runs on node:crypto in Node and on
 * the audited pure-JS @noble libraries in browsers. Nothing the core imports
 * pulls in a Node module; the core receives a provider.
 *
 *  - X25519 (RFC 7748) for every Diffie-Hellman.
 *  - HKDF-SHA256 (RFC 5869) and HMAC-SHA256 (RFC 2104) for the KDFs.
 *  - ChaCha20-Poly1305 (RFC 8439) as the AEAD. Chosen over AES-GCM because it
 *    is constant-time in plain software (no table lookups, no need for AES-NI
 *    or carry-less multiply), so the browser build (@noble/ciphers) is as
 *    side-channel-safe as the native one, and both implementations exist:
 *    OpenSSL's through node:crypto and @noble/ciphers'. It also has a 256-bit
 *    key with no per-key message limit that matters at our rates.
 *  - ML-KEM-768 (FIPS 203) through @noble/post-quantum in both providers:
 *    Node 20 has no native ML-KEM.
 *  - Ed25519 verification (RFC 8032), for prekey signatures.
 *  - A CSPRNG.
 *
 * Both implementations must give byte-identical outputs for the same inputs;
 * shared/crypto/test/session-crypto-provider.test.ts checks that.
 */

export const X25519_PRIVATE_KEY_SIZE = 32;
export const X25519_PUBLIC_KEY_SIZE = 32;
export const AEAD_KEY_SIZE = 32;
export const AEAD_NONCE_SIZE = 12;
export const AEAD_TAG_SIZE = 16;
export const HASH_SIZE = 32;
/** FIPS 203 deterministic key generation seed d ‖ z. */
export const MLKEM_KEYGEN_SEED_SIZE = 64;
/** FIPS 203 encapsulation randomness m. */
export const MLKEM_ENCAPS_SEED_SIZE = 32;
export const MLKEM768_SECRET_KEY_SIZE = 2400;
export const MLKEM_SHARED_SECRET_SIZE = 32;

export interface X25519KeyPair {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
}

export interface KemKeyPair {
  /** 1184-byte encapsulation key. */
  publicKey: Uint8Array;
  /** 2400-byte decapsulation key (FIPS 203 expanded form). */
  secretKey: Uint8Array;
}

export interface KemEncapsulation {
  cipherText: Uint8Array;
  sharedSecret: Uint8Array;
}

export interface CryptoProvider {
  /** "node" or "noble"; for benchmarks and logs. */
  readonly name: string;
  randomBytes(length: number): Uint8Array;

  /** A fresh key pair from the CSPRNG. */
  x25519Generate(): X25519KeyPair;
  /** The public key of a 32-byte private key (clamped as RFC 7748 says). */
  x25519PublicKey(privateKey: Uint8Array): Uint8Array;
  /**
   * X25519(privateKey, publicKey). Throws SessionError INVALID_PUBLIC_KEY when
   * the result is all zeros (a low-order public key), as both OpenSSL and
   * noble refuse it.
   */
  x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array;

  /** HKDF-SHA256: extract with `salt` (empty = 32 zero bytes, RFC 5869), expand with `info`. */
  hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array;
  hmac(key: Uint8Array, data: Uint8Array): Uint8Array;

  /** ChaCha20-Poly1305: ciphertext ‖ 16-byte tag. */
  aeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array;
  /** The plaintext, or SessionError DECRYPT_FAILED; the tag check is constant-time inside the AEAD. */
  aeadOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Uint8Array;

  /** Never throws: false for anything malformed. Strict RFC 8032 (canonical encodings). */
  verifyEd25519(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;

  /** ML-KEM-768 key pair; deterministic from a 64-byte d ‖ z seed when given. */
  kemGenerate(seed?: Uint8Array): KemKeyPair;
  /** Throws SessionError INVALID_PUBLIC_KEY when the key fails the FIPS 203 modulus check. */
  kemEncapsulate(publicKey: Uint8Array, seed?: Uint8Array): KemEncapsulation;
  /** Implicit rejection: a wrong ciphertext gives a pseudo-random secret, never an error (FIPS 203). */
  kemDecapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array;
}
