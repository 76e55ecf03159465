/**
 * The prekey bundle model shared by the PQXDH handshake (pqxdh.ts), the
 * bundle codec (prekey-bundle.ts) and the relays' prekey service. See
 * docs/crypto.md for the construction and docs/protocol.md for the frames.
 *
 * Identity keys. A peer's DID names its Ed25519 key, which signs. For
 * Diffie-Hellman it keeps a separate X25519 identity key (IK_dh), signed by
 * the Ed25519 key, rather than converting Ed25519 to X25519: node:crypto has
 * no conversion, and one key per purpose keeps the proofs simple.
 *
 * Every signature is Ed25519 by the DID key over
 *   "libertaria-prekey/1" ‖ 0x00 ‖ u8 kind ‖ u32 id (big-endian) ‖ public key
 * with kind 1 = X25519 identity DH key (id 0), 2 = signed X25519 prekey,
 * 3 = ML-KEM-768 last-resort prekey, 4 = ML-KEM-768 one-time prekey.
 * X25519 one-time prekeys are not signed (as in Signal): a forged one only
 * costs the forger's own handshake, since DH1..DH3 bind the identities.
 */
export const PrekeyKind = {
  IDENTITY_DH: 1,
  SIGNED_X25519: 2,
  LAST_RESORT_KEM: 3,
  ONE_TIME_KEM: 4,
} as const;
export type PrekeyKindValue = (typeof PrekeyKind)[keyof typeof PrekeyKind];

export const X25519_KEY_SIZE = 32;
/** ML-KEM-768 encapsulation key. */
export const MLKEM768_PUBLIC_KEY_SIZE = 1184;
export const MLKEM768_CIPHERTEXT_SIZE = 1088;
export const ED25519_SIGNATURE_SIZE = 64;

export interface SignedX25519Key {
  id: number;
  publicKey: Uint8Array; // 32 bytes
  signature: Uint8Array; // 64 bytes
}

export interface SignedKemKey {
  id: number;
  publicKey: Uint8Array; // 1184 bytes
  signature: Uint8Array; // 64 bytes
}

export interface OneTimeX25519Key {
  id: number;
  publicKey: Uint8Array; // 32 bytes
}

/** What a peer publishes (replaces its signed keys, appends one-time keys). */
export interface PrekeyPublication {
  /** Ed25519 public key the DID names (must be the publishing connection's key). */
  identityKey: Uint8Array;
  identityDhKey: SignedX25519Key; // kind 1, id 0
  signedPrekey: SignedX25519Key; // kind 2
  lastResortKemPrekey: SignedKemKey; // kind 3
  oneTimePrekeys: OneTimeX25519Key[];
  oneTimeKemPrekeys: SignedKemKey[]; // kind 4
}

/** What a fetch hands out: the signed keys plus at most one one-time key of each kind (consumed). */
export interface PrekeyBundle {
  identityKey: Uint8Array;
  identityDhKey: SignedX25519Key;
  signedPrekey: SignedX25519Key;
  lastResortKemPrekey: SignedKemKey;
  oneTimePrekey?: OneTimeX25519Key;
  oneTimeKemPrekey?: SignedKemKey;
}
