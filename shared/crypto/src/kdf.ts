/**
 * Every key derivation of the session layer, with its HKDF info string, in one
 * place so docs/crypto.md and the known-answer vectors
 * (shared/crypto/test/vectors/session-kdf.json) have a single source.
 *
 * All HKDF calls are HKDF-SHA256. "Zero salt" means 32 zero bytes, which
 * RFC 5869 defines as equal to an absent salt.
 */
import { concatBytes, utf8, wipe } from './bytes.js';
import { AEAD_KEY_SIZE, AEAD_NONCE_SIZE, type CryptoProvider, HASH_SIZE } from './crypto-provider.js';

/** Names the curve, hash and KEM, as Signal's PQXDH spec asks of the info string. */
export const PQXDH_INFO = 'Libertaria_PQXDH_X25519_SHA-256_ML-KEM-768';
export const ROOT_KDF_INFO = 'Libertaria_DoubleRatchet_Root';
export const MESSAGE_KEYS_INFO = 'Libertaria_DoubleRatchet_MessageKeys';
export const SESSION_ID_INFO = 'Libertaria_Session_Id';
export const RESUMPTION_SECRET_INFO = 'Libertaria_Resumption_Secret';
export const TICKET_ID_INFO = 'Libertaria_0RTT_TicketId';
export const TICKET_PSK_INFO = 'Libertaria_0RTT_PSK';
export const ZERO_RTT_KEYS_INFO = 'Libertaria_0RTT_Keys';
export const EPHEMERAL_INFO = 'Libertaria_Ephemeral_X25519_SHA-256_ML-KEM-768';
export const EPHEMERAL_RESPONSE_INFO = 'Libertaria_Ephemeral_Response';

export const ZERO_SALT = new Uint8Array(HASH_SIZE);
/** The 32 0xFF bytes PQXDH (like X3DH) puts before the DH outputs, for domain separation from XEdDSA. */
export const PQXDH_PREFIX = new Uint8Array(32).fill(0xff);
export const SESSION_ID_SIZE = 16;
const MESSAGE_KEY_CONSTANT = Uint8Array.of(0x01);
const CHAIN_KEY_CONSTANT = Uint8Array.of(0x02);

const infoCache = new Map<string, Uint8Array>();
export function info(label: string): Uint8Array {
  let bytes = infoCache.get(label);
  if (bytes === undefined) {
    bytes = utf8(label);
    infoCache.set(label, bytes);
  }
  return bytes;
}

/**
 * SK = HKDF(salt = zero, ikm = 0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS, info = PQXDH_INFO), 32 bytes.
 * Wipes the concatenated input; the caller wipes the parts.
 */
export function pqxdhKdf(p: CryptoProvider, dhs: readonly Uint8Array[], kemSecret: Uint8Array): Uint8Array {
  const ikm = concatBytes(PQXDH_PREFIX, ...dhs, kemSecret);
  try {
    return p.hkdf(ikm, ZERO_SALT, info(PQXDH_INFO), 32);
  } finally {
    wipe(ikm);
  }
}

export interface RootStep {
  rootKey: Uint8Array;
  chainKey: Uint8Array;
}

/** KDF_RK(RK, DH out) = HKDF(salt = RK, ikm = DH out, info = ROOT_KDF_INFO) → RK' (32) ‖ CK (32). */
export function kdfRk(p: CryptoProvider, rootKey: Uint8Array, dhOut: Uint8Array): RootStep {
  const out = p.hkdf(dhOut, rootKey, info(ROOT_KDF_INFO), 64);
  const step = { rootKey: out.slice(0, 32), chainKey: out.slice(32, 64) };
  wipe(out);
  return step;
}

export interface ChainStep {
  chainKey: Uint8Array;
  messageKey: Uint8Array;
}

/** KDF_CK(CK): MK = HMAC-SHA256(CK, 0x01), CK' = HMAC-SHA256(CK, 0x02) (Signal's constants). */
export function kdfCk(p: CryptoProvider, chainKey: Uint8Array): ChainStep {
  return { messageKey: p.hmac(chainKey, MESSAGE_KEY_CONSTANT), chainKey: p.hmac(chainKey, CHAIN_KEY_CONSTANT) };
}

export interface AeadKeys {
  key: Uint8Array;
  nonce: Uint8Array;
}

/**
 * An AEAD key and nonce from a single-use secret:
 * HKDF(salt = zero, ikm = secret, info) → key (32) ‖ nonce (12).
 * The nonce may be deterministic because the key encrypts exactly one message.
 */
export function aeadKeys(p: CryptoProvider, secret: Uint8Array, label: string, salt: Uint8Array = ZERO_SALT): AeadKeys {
  const out = p.hkdf(secret, salt, info(label), AEAD_KEY_SIZE + AEAD_NONCE_SIZE);
  const keys = { key: out.slice(0, AEAD_KEY_SIZE), nonce: out.slice(AEAD_KEY_SIZE) };
  wipe(out);
  return keys;
}

/** Message key → AEAD key and nonce (replaces Signal's AES-CBC + HMAC expansion). */
export function messageAeadKeys(p: CryptoProvider, messageKey: Uint8Array): AeadKeys {
  return aeadKeys(p, messageKey, MESSAGE_KEYS_INFO);
}

/** The public session id both ends compute from SK: HKDF(SK, zero salt, SESSION_ID_INFO), 16 bytes. */
export function sessionIdFromSharedKey(p: CryptoProvider, sk: Uint8Array): Uint8Array {
  return p.hkdf(sk, ZERO_SALT, info(SESSION_ID_INFO), SESSION_ID_SIZE);
}

/** The 0-RTT resumption secret both ends compute from SK: HKDF(SK, zero salt, RESUMPTION_SECRET_INFO), 32 bytes. */
export function resumptionSecretFromSharedKey(p: CryptoProvider, sk: Uint8Array): Uint8Array {
  return p.hkdf(sk, ZERO_SALT, info(RESUMPTION_SECRET_INFO), 32);
}
