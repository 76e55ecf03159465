/**
 * Prekey generation, signing and bundle verification (the model is in
 * prekey-types.ts). Private keys never leave the peer: what goes to the relay
 * is a PrekeyPublication; what stays is the matching PrekeySecrets.
 *
 * Signature transcript (Ed25519 by the DID key):
 *   "libertaria-prekey/1" ‖ 0x00 ‖ u8 kind ‖ u32 id (big-endian) ‖ public key
 */
import { didMatchesKey, type PeerSigner } from '@libertaria/identity';
import {
  ED25519_SIGNATURE_SIZE,
  MLKEM768_PUBLIC_KEY_SIZE,
  type OneTimeX25519Key,
  type PrekeyBundle,
  PrekeyKind,
  type PrekeyKindValue,
  type PrekeyPublication,
  prekeySignatureMessage,
  type SignedKemKey,
  type SignedX25519Key,
  X25519_KEY_SIZE,
} from '@libertaria/protocol';
import { isCanonicalX25519PublicKey } from './bytes.js';
import type { CryptoProvider, KemKeyPair, X25519KeyPair } from './crypto-provider.js';
import { SessionError } from './errors.js';

export const MAX_PREKEY_ID = 0xffffffff;
const ED25519_KEY_SIZE = 32;

/**
 * The bytes the DID key signs for one prekey: one definition, shared with the
 * relay's publication checks (prekey-bundle.ts), so signer and verifier can
 * never disagree. Throws ProtocolError BAD_FIELD for an id or key size the
 * transcript cannot carry.
 */
export function prekeyTranscript(kind: PrekeyKindValue, id: number, publicKey: Uint8Array): Uint8Array {
  return prekeySignatureMessage(kind, id, publicKey);
}

export function signPrekey(signer: PeerSigner, kind: PrekeyKindValue, id: number, publicKey: Uint8Array): Uint8Array {
  return signer.sign(prekeyTranscript(kind, id, publicKey));
}

export function verifyPrekeySignature(
  p: CryptoProvider,
  identityKey: Uint8Array,
  kind: PrekeyKindValue,
  id: number,
  publicKey: Uint8Array,
  signature: Uint8Array,
): boolean {
  let transcript: Uint8Array;
  try {
    transcript = prekeyTranscript(kind, id, publicKey);
  } catch {
    // An id or key the transcript cannot carry was never signed: not valid, not an exception.
    return false;
  }
  return p.verifyEd25519(identityKey, transcript, signature);
}

/** The X25519 identity DH key (IK_dh) with its kind-1 signature: part of a peer's long-term identity. */
export interface IdentityDhKey extends X25519KeyPair {
  signature: Uint8Array;
}

/** Everything a peer needs to run PQXDH as itself. */
export interface LocalIdentity {
  signer: PeerSigner;
  identityDh: IdentityDhKey;
}

export function generateIdentityDhKey(p: CryptoProvider, signer: PeerSigner): IdentityDhKey {
  const pair = p.x25519Generate();
  return { ...pair, signature: signPrekey(signer, PrekeyKind.IDENTITY_DH, 0, pair.publicKey) };
}

/** Re-creates IK_dh from its stored private key (the signature is deterministic Ed25519, so it is re-made). */
export function identityDhKeyFromPrivate(p: CryptoProvider, signer: PeerSigner, privateKey: Uint8Array): IdentityDhKey {
  const publicKey = p.x25519PublicKey(privateKey);
  return {
    privateKey: Uint8Array.from(privateKey),
    publicKey,
    signature: signPrekey(signer, PrekeyKind.IDENTITY_DH, 0, publicKey),
  };
}

export interface SignedX25519Prekey {
  public: SignedX25519Key;
  privateKey: Uint8Array;
}

export interface SignedKemPrekey {
  public: SignedKemKey;
  secretKey: Uint8Array;
}

export interface OneTimeX25519Prekey {
  public: OneTimeX25519Key;
  privateKey: Uint8Array;
}

export function generateSignedPrekey(p: CryptoProvider, signer: PeerSigner, id: number): SignedX25519Prekey {
  const { privateKey, publicKey } = p.x25519Generate();
  return {
    public: { id, publicKey, signature: signPrekey(signer, PrekeyKind.SIGNED_X25519, id, publicKey) },
    privateKey,
  };
}

export function generateKemPrekey(
  p: CryptoProvider,
  signer: PeerSigner,
  id: number,
  kind: typeof PrekeyKind.LAST_RESORT_KEM | typeof PrekeyKind.ONE_TIME_KEM,
  seed?: Uint8Array,
): SignedKemPrekey {
  const { publicKey, secretKey }: KemKeyPair = p.kemGenerate(seed);
  return { public: { id, publicKey, signature: signPrekey(signer, kind, id, publicKey) }, secretKey };
}

export function generateOneTimePrekeys(p: CryptoProvider, firstId: number, count: number): OneTimeX25519Prekey[] {
  const out: OneTimeX25519Prekey[] = [];
  for (let i = 0; i < count; i++) {
    const { privateKey, publicKey } = p.x25519Generate();
    out.push({ public: { id: firstId + i, publicKey }, privateKey });
  }
  return out;
}

export interface PrekeySecrets {
  signedPrekey: SignedX25519Prekey;
  lastResortKemPrekey: SignedKemPrekey;
  oneTimePrekeys: OneTimeX25519Prekey[];
  oneTimeKemPrekeys: SignedKemPrekey[];
}

export interface PublicationOptions {
  signedPrekeyId: number;
  lastResortKemPrekeyId: number;
  /** First id and count of the one-time X25519 prekeys. */
  oneTimePrekeyIds?: { first: number; count: number };
  /** First id and count of the one-time ML-KEM prekeys. */
  oneTimeKemPrekeyIds?: { first: number; count: number };
}

/**
 * A fresh publication (what the relay stores) and the matching secrets (what
 * the peer keeps, e.g. in an InMemoryOneTimePrekeyStore and a ResponderPrekeys).
 */
export function generatePrekeyPublication(
  p: CryptoProvider,
  identity: LocalIdentity,
  options: PublicationOptions,
): { publication: PrekeyPublication; secrets: PrekeySecrets } {
  const { signer, identityDh } = identity;
  const signedPrekey = generateSignedPrekey(p, signer, options.signedPrekeyId);
  const lastResortKemPrekey = generateKemPrekey(p, signer, options.lastResortKemPrekeyId, PrekeyKind.LAST_RESORT_KEM);
  const oneTime = options.oneTimePrekeyIds;
  const oneTimePrekeys = oneTime ? generateOneTimePrekeys(p, oneTime.first, oneTime.count) : [];
  const oneTimeKemPrekeys: SignedKemPrekey[] = [];
  const kem = options.oneTimeKemPrekeyIds;
  for (let i = 0; kem && i < kem.count; i++) {
    oneTimeKemPrekeys.push(generateKemPrekey(p, signer, kem.first + i, PrekeyKind.ONE_TIME_KEM));
  }
  return {
    publication: {
      identityKey: signer.publicKey,
      identityDhKey: { id: 0, publicKey: identityDh.publicKey, signature: identityDh.signature },
      signedPrekey: signedPrekey.public,
      lastResortKemPrekey: lastResortKemPrekey.public,
      oneTimePrekeys: oneTimePrekeys.map((k) => k.public),
      oneTimeKemPrekeys: oneTimeKemPrekeys.map((k) => k.public),
    },
    secrets: { signedPrekey, lastResortKemPrekey, oneTimePrekeys, oneTimeKemPrekeys },
  };
}

function invalid(problem: string): never {
  throw new SessionError('PREKEY_BUNDLE_INVALID', `prekey bundle: ${problem}`);
}

function isBytes(value: unknown, size: number): value is Uint8Array {
  return value instanceof Uint8Array && value.length === size;
}

function checkSignedX25519(
  p: CryptoProvider,
  identityKey: Uint8Array,
  key: SignedX25519Key,
  kind: PrekeyKindValue,
  name: string,
): void {
  if (!isBytes(key?.publicKey, X25519_KEY_SIZE) || !isCanonicalX25519PublicKey(key.publicKey)) {
    invalid(`${name} is not a canonical 32-byte X25519 key`);
  }
  if (!isBytes(key.signature, ED25519_SIGNATURE_SIZE)) invalid(`${name} signature is not 64 bytes`);
  if (!verifyPrekeySignature(p, identityKey, kind, key.id, key.publicKey, key.signature)) {
    invalid(`${name} (id ${key.id}) signature does not verify under the identity key`);
  }
}

function checkSignedKem(
  p: CryptoProvider,
  identityKey: Uint8Array,
  key: SignedKemKey,
  kind: PrekeyKindValue,
  name: string,
): void {
  if (!isBytes(key?.publicKey, MLKEM768_PUBLIC_KEY_SIZE)) invalid(`${name} is not a 1184-byte ML-KEM-768 key`);
  if (!isBytes(key.signature, ED25519_SIGNATURE_SIZE)) invalid(`${name} signature is not 64 bytes`);
  if (!verifyPrekeySignature(p, identityKey, kind, key.id, key.publicKey, key.signature)) {
    invalid(`${name} (id ${key.id}) signature does not verify under the identity key`);
  }
}

/**
 * Checks a fetched bundle before anything is derived from it: the identity key
 * is the key `did` names, and every signature verifies under it (IK_dh as
 * kind 1 with id 0, the signed prekey as kind 2, the KEM prekeys as kinds 3
 * and 4). One-time X25519 prekeys are unsigned by design (prekey-types.ts) and
 * only checked for form. Throws SessionError PREKEY_BUNDLE_INVALID.
 */
export function verifyPrekeyBundle(p: CryptoProvider, bundle: PrekeyBundle, did: string): void {
  if (!isBytes(bundle?.identityKey, ED25519_KEY_SIZE)) invalid('identity key is not 32 bytes');
  if (!didMatchesKey(did, bundle.identityKey)) invalid('identity key is not the key the DID names');
  if (bundle.identityDhKey?.id !== 0) invalid('identity DH key id must be 0');
  checkSignedX25519(p, bundle.identityKey, bundle.identityDhKey, PrekeyKind.IDENTITY_DH, 'identity DH key');
  checkSignedX25519(p, bundle.identityKey, bundle.signedPrekey, PrekeyKind.SIGNED_X25519, 'signed prekey');
  checkSignedKem(
    p,
    bundle.identityKey,
    bundle.lastResortKemPrekey,
    PrekeyKind.LAST_RESORT_KEM,
    'last-resort KEM prekey',
  );
  if (bundle.oneTimeKemPrekey !== undefined) {
    checkSignedKem(p, bundle.identityKey, bundle.oneTimeKemPrekey, PrekeyKind.ONE_TIME_KEM, 'one-time KEM prekey');
  }
  const otp = bundle.oneTimePrekey;
  if (otp !== undefined) {
    if (!isBytes(otp.publicKey, X25519_KEY_SIZE) || !isCanonicalX25519PublicKey(otp.publicKey)) {
      invalid('one-time prekey is not a canonical 32-byte X25519 key');
    }
    if (!Number.isInteger(otp.id) || otp.id < 0 || otp.id > MAX_PREKEY_ID) invalid('one-time prekey id is not a u32');
  }
}
