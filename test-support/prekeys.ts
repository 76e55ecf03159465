/**
 * Prekey publications for tests: random public keys (the relay never looks
 * inside a key; ML-KEM keys are 1,184 random bytes) with real Ed25519
 * signatures by the identity, as prekey-types.ts defines them.
 */
import { randomBytes } from 'node:crypto';
import {
  MLKEM768_PUBLIC_KEY_SIZE,
  type OneTimeX25519Key,
  PrekeyKind,
  type PrekeyKindValue,
  type PrekeyPublication,
  prekeySignatureMessage,
  type SignedKemKey,
  X25519_KEY_SIZE,
} from '@libertaria/protocol';

/** Anything that signs with the DID key: an Ed25519Identity of either build (src or dist). */
export interface PrekeySigner {
  readonly publicKey: Uint8Array;
  sign(data: Uint8Array): Uint8Array;
}

export interface PublicationOptions {
  /** One-time X25519 prekeys, ids firstId, firstId + 1, … (default 0). */
  oneTimeX25519?: number;
  /** One-time KEM prekeys, ids firstId, firstId + 1, … (default 0). */
  oneTimeKem?: number;
  /** First one-time id of each kind (default 1). */
  firstId?: number;
  /** Id of the signed X25519 prekey (default 1). */
  signedPrekeyId?: number;
}

function signed(signer: PrekeySigner, kind: PrekeyKindValue, id: number, size: number) {
  const publicKey = new Uint8Array(randomBytes(size));
  return { id, publicKey, signature: signer.sign(prekeySignatureMessage(kind, id, publicKey)) };
}

export function signedKemKey(signer: PrekeySigner, id: number, kind: PrekeyKindValue = PrekeyKind.ONE_TIME_KEM) {
  return signed(signer, kind, id, MLKEM768_PUBLIC_KEY_SIZE) as SignedKemKey;
}

export function makePublication(signer: PrekeySigner, options: PublicationOptions = {}): PrekeyPublication {
  const first = options.firstId ?? 1;
  const oneTimePrekeys: OneTimeX25519Key[] = Array.from({ length: options.oneTimeX25519 ?? 0 }, (_, i) => ({
    id: first + i,
    publicKey: new Uint8Array(randomBytes(X25519_KEY_SIZE)),
  }));
  const oneTimeKemPrekeys = Array.from({ length: options.oneTimeKem ?? 0 }, (_, i) => signedKemKey(signer, first + i));
  return {
    identityKey: signer.publicKey,
    identityDhKey: signed(signer, PrekeyKind.IDENTITY_DH, 0, X25519_KEY_SIZE),
    signedPrekey: signed(signer, PrekeyKind.SIGNED_X25519, options.signedPrekeyId ?? 1, X25519_KEY_SIZE),
    lastResortKemPrekey: signedKemKey(signer, 1, PrekeyKind.LAST_RESORT_KEM),
    oneTimePrekeys,
    oneTimeKemPrekeys,
  };
}
