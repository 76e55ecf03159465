/**
 * Signing and verifying the relay auth transcript (auth-transcript.ts builds
 * it). Verification uses node:crypto (relay side); signing needs only a
 * PeerSigner, so a browser can bring its own Ed25519 implementation.
 */
import { type AuthParams, authTranscript, relayChallengeTranscript } from './auth-transcript.js';
import { didMatchesKey } from './did.js';
import { verifyEd25519 } from './keys.js';

export {
  AUTH_DOMAIN,
  AUTH_MAX_FIELD_BYTES,
  AUTH_NONCE_LENGTH,
  type AuthParams,
  authTranscript,
  CHALLENGE_DOMAIN,
  CHANNEL_BINDING_LENGTH,
  MIGRATE_DOMAIN,
  migrationTranscript,
  RELAY_KEY_LENGTH,
  relayChallengeTranscript,
  TLS_EXPORTER_LABEL,
} from './auth-transcript.js';

/**
 * What signs for a peer: an Ed25519Identity in Node, or any object with the
 * same public shape (e.g. a WebCrypto- or noble-backed key in a browser).
 */
export interface PeerSigner {
  /** did:libertaria or did:key of the key. */
  readonly did: string;
  /** Raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** 24-byte routing hint of the key. */
  readonly hint: Uint8Array;
  /** Ed25519 signature (64 bytes) over data. */
  sign(data: Uint8Array): Uint8Array;
}

export interface VerifyAuthParams extends AuthParams {
  /** The DID the peer claims, did:libertaria or did:key. */
  did: string;
  /** The peer's raw 32-byte Ed25519 public key. */
  publicKey: Uint8Array;
  /** The peer's signature over authTranscript(params). */
  signature: Uint8Array;
}

/** The peer side: the 64-byte signature over the transcript. */
export function signAuth(identity: PeerSigner, params: AuthParams): Uint8Array {
  return identity.sign(authTranscript(params));
}

/**
 * The relay side: true only if `publicKey` is the key `did` names and the
 * signature over the transcript verifies. A malformed DID, key or signature
 * (the peer's inputs) gives false; only malformed params throw.
 */
export function verifyAuth({ did, publicKey, signature, ...params }: VerifyAuthParams): boolean {
  const transcript = authTranscript(params);
  // The DID check is a hash, far cheaper than a signature verification, so it goes first.
  return didMatchesKey(did, publicKey) && verifyEd25519(publicKey, transcript, signature);
}

/**
 * The client side of CHALLENGE: true only if `relayKey` is the key the
 * relay's DID names and its signature over relayChallengeTranscript verifies
 * (node:crypto; the browser-safe client uses its own verifier with
 * relayChallengeTranscript).
 */
export function verifyRelayChallenge({
  relayDid,
  signature,
  ...params
}: AuthParams & { relayDid: string; signature: Uint8Array }): boolean {
  return (
    didMatchesKey(relayDid, params.relayKey) &&
    verifyEd25519(params.relayKey, relayChallengeTranscript(params), signature)
  );
}
