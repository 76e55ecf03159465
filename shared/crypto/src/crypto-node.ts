/**
 * The node:crypto (OpenSSL) provider: the hot path on relays' peers and in
 * Node clients, roughly twenty times faster than pure JS for X25519 and
 * Ed25519 (docs/crypto.md has the measured figures). ML-KEM comes from
 * @noble/post-quantum because Node 20 has none.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  randomFillSync,
} from 'node:crypto';
// Ed25519 verification is identity's own (strict rules, then OpenSSL with the key imported as JWK).
import { verifyEd25519 } from '@libertaria/identity';
import { constantTimeEqual } from './bytes.js';
import {
  AEAD_TAG_SIZE,
  type CryptoProvider,
  X25519_PRIVATE_KEY_SIZE,
  X25519_PUBLIC_KEY_SIZE,
  type X25519KeyPair,
} from './crypto-provider.js';
import { SessionError } from './errors.js';
import { kemDecapsulate, kemEncapsulate, kemGenerate } from './mlkem.js';

// PKCS#8 framing of a raw X25519 private key (RFC 8410).
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** Filled in place: node's randomBytes() may hand out a slice of a shared pool we could not wipe. */
function randomBytes(length: number): Uint8Array {
  return randomFillSync(new Uint8Array(length));
}

/**
 * Private KeyObjects, cached per key array. Importing a raw X25519 private key
 * into OpenSSL costs about 370 µs on Node 20 (PKCS#8 decoding), ten times a
 * whole DH, so keys generated here are cached from birth and imported keys
 * after their first use. The entry keeps a copy of the bytes and is used only
 * while the array still holds them, so a wiped or reused array is never
 * mistaken for the old key; a WeakMap lets both go with the array.
 */
const privateKeys = new WeakMap<Uint8Array, { bytes: Uint8Array; key: KeyObject }>();

function privateKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== X25519_PRIVATE_KEY_SIZE) throw new RangeError('an X25519 private key is 32 bytes');
  const cached = privateKeys.get(raw);
  if (cached !== undefined && constantTimeEqual(cached.bytes, raw)) return cached.key;
  const der = Buffer.concat([PKCS8_X25519_PREFIX, raw]);
  try {
    const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    privateKeys.set(raw, { bytes: Uint8Array.from(raw), key });
    return key;
  } finally {
    der.fill(0);
  }
}

/** Public keys go in as JWK: about ten times faster than SPKI DER, and nothing secret passes through the string. */
function publicKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== X25519_PUBLIC_KEY_SIZE) throw new SessionError('INVALID_PUBLIC_KEY', 'an X25519 key is 32 bytes');
  return createPublicKey({
    key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(raw).toString('base64url') },
    format: 'jwk',
  });
}

/** The X25519 base point, u = 9 (RFC 7748 §4.1): X25519(k, 9) is k's public key. */
const BASE_POINT = createPublicKey({
  key: { kty: 'OKP', crv: 'X25519', x: Buffer.from([9, ...new Array<number>(31).fill(0)]).toString('base64url') },
  format: 'jwk',
});

/**
 * The public key of a private KeyObject, as X25519(k, 9): a DH with the base
 * point, never a JWK export. On Node 20 a JWK export holds the key's mutex
 * while it allocates strings; a garbage collection started by one of those
 * allocations may finalize the generateKeyPairSync job that made the key,
 * whose destructor takes the same mutex, and the thread waits on itself for
 * good (seen as test files hung in futex_wait, docs/crypto.md "Node
 * performance notes"). DER exports and DH hold no lock while they allocate.
 */
function publicKeyOf(key: KeyObject): Uint8Array {
  // A public value: no wipe, unlike x25519's shared secret.
  return new Uint8Array(diffieHellman({ privateKey: key, publicKey: BASE_POINT }));
}

function x25519PublicKey(privateKey: Uint8Array): Uint8Array {
  return publicKeyOf(privateKeyObject(privateKey));
}

/** A fresh pair from OpenSSL's generator; the private KeyObject is cached so its first DH needs no import. */
function x25519Generate(): X25519KeyPair {
  const { privateKey: key } = generateKeyPairSync('x25519');
  const der = key.export({ format: 'der', type: 'pkcs8' });
  const privateKey = new Uint8Array(der.subarray(PKCS8_X25519_PREFIX.length));
  der.fill(0);
  privateKeys.set(privateKey, { bytes: Uint8Array.from(privateKey), key });
  return { privateKey, publicKey: publicKeyOf(key) };
}

function x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  const pub = publicKeyObject(publicKey);
  const priv = privateKeyObject(privateKey);
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey: priv, publicKey: pub });
  } catch (err) {
    // OpenSSL refuses an all-zero result ("failed during derivation"), i.e. a low-order point.
    throw new SessionError('INVALID_PUBLIC_KEY', 'X25519 with this public key gives the all-zero secret', {
      cause: err,
    });
  }
  const out = new Uint8Array(shared);
  shared.fill(0);
  return out;
}

const ZERO_SALT = new Uint8Array(32);

/**
 * HKDF-SHA256 (RFC 5869) from HMAC calls. hkdfSync gives the same bytes but
 * wraps every input in a KeyObject first, which made it the largest cost of
 * a ratchet message (about 9 µs of 30); three HMACs for a 44-byte output
 * take about 5 µs. The provider-agreement test checks it against noble.
 */
function hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  if (!Number.isInteger(length) || length < 0 || length > 255 * 32) throw new RangeError('HKDF length out of range');
  const prk = createHmac('sha256', salt.length === 0 ? ZERO_SALT : salt)
    .update(ikm)
    .digest();
  const out = new Uint8Array(length);
  let block: Buffer = Buffer.alloc(0);
  for (let i = 1, at = 0; at < length; i++, at += 32) {
    const next = createHmac('sha256', prk).update(block).update(info).update(Uint8Array.of(i)).digest();
    block.fill(0);
    block = next;
    out.set(block.subarray(0, Math.min(32, length - at)), at);
  }
  block.fill(0);
  prk.fill(0);
  return out;
}

function aeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: AEAD_TAG_SIZE });
  cipher.setAAD(ad, { plaintextLength: plaintext.length });
  const out = new Uint8Array(plaintext.length + AEAD_TAG_SIZE);
  const body = cipher.update(plaintext);
  out.set(body, 0);
  const tail = cipher.final(); // empty for a stream cipher, but part of the API contract
  out.set(tail, body.length);
  out.set(cipher.getAuthTag(), body.length + tail.length);
  return out;
}

function aeadOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Uint8Array {
  if (sealed.length < AEAD_TAG_SIZE) throw new SessionError('DECRYPT_FAILED', 'ciphertext shorter than its tag');
  const bodyLength = sealed.length - AEAD_TAG_SIZE;
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: AEAD_TAG_SIZE });
  decipher.setAuthTag(sealed.subarray(bodyLength));
  decipher.setAAD(ad, { plaintextLength: bodyLength });
  const body = decipher.update(sealed.subarray(0, bodyLength));
  try {
    decipher.final(); // throws when the tag does not match
  } catch (err) {
    body.fill(0); // unauthenticated plaintext must not escape
    throw new SessionError('DECRYPT_FAILED', 'the message did not authenticate', { cause: err });
  }
  // A copy, then wipe: small Buffers live in a shared pool that other code can read through `.buffer`.
  const plaintext = new Uint8Array(body);
  body.fill(0);
  return plaintext;
}

export const nodeCrypto: CryptoProvider = {
  name: 'node',
  randomBytes,
  x25519Generate,
  x25519PublicKey,
  x25519,
  hkdf,
  hmac(key, data) {
    const digest = createHmac('sha256', key).update(data).digest();
    const out = new Uint8Array(digest);
    digest.fill(0);
    return out;
  },
  aeadSeal,
  aeadOpen,
  verifyEd25519,
  kemGenerate: (seed) => kemGenerate(randomBytes, seed),
  kemEncapsulate: (publicKey, seed) => kemEncapsulate(randomBytes, publicKey, seed),
  kemDecapsulate,
};
