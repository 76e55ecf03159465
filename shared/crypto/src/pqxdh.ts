/**
 * PQXDH (Signal's Post-Quantum Extended Diffie-Hellman, revision 3) with
 * X25519, SHA-256 and ML-KEM-768. Identity: the DID names an Ed25519 key
 * IK (signing); Diffie-Hellman uses a separate X25519 identity key IK_dh
 * signed by IK (prekey-types.ts). A = initiator, B = responder:
 *
 *   DH1 = DH(IK_dh_A, SPK_B)    DH2 = DH(EK_A, IK_dh_B)
 *   DH3 = DH(EK_A, SPK_B)       DH4 = DH(EK_A, OPK_B)   only with a one-time prekey
 *   (CT, SS) = ML-KEM-768.Encaps(PQPK_B)   the one-time KEM prekey, else the last-resort one
 *   SK = HKDF-SHA256(salt = 32 zero bytes,
 *                    ikm  = 0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS,
 *                    info = "Libertaria_PQXDH_X25519_SHA-256_ML-KEM-768"), 32 bytes
 *   AD = Encode(A) ‖ Encode(B),  Encode(X) = 0x01 ‖ IK_X (32) ‖ 0x02 ‖ IK_dh_X (32)
 *
 * AD binds both identities in both forms (the DID key and the DH key), so a
 * message for Alice–Bob cannot be opened in Alice–Carol nor under a swapped
 * DH key. ML-KEM's shared secret already hashes the encapsulation key
 * (K = G(m ‖ H(ek))), which closes the KEM re-encapsulation gap raised
 * against PQXDH with round-3 Kyber.
 *
 * The initiator proves IK_dh_A is its own by sending IK_A's signature over
 * it (kind 1, id 0): without it anyone could pair Alice's public DID key with
 * a DH key of their own and be taken for Alice.
 */
import { formatLibertariaDid } from '@libertaria/identity';
import { type PrekeyBundle, PrekeyKind } from '@libertaria/protocol';
import { wipe } from './bytes.js';
import type { CryptoProvider, X25519KeyPair } from './crypto-provider.js';
import { SessionError } from './errors.js';
import { pqxdhKdf } from './kdf.js';
import type { InitialMessage } from './pqxdh-message.js';
import type { ResponderPrekeys } from './prekey-store.js';
import { type LocalIdentity, verifyPrekeyBundle, verifyPrekeySignature } from './prekeys.js';

export const IdentityEncoding = { ED25519: 0x01, X25519: 0x02 } as const;
export const ENCODED_IDENTITY_SIZE = 66;
export const SESSION_AD_SIZE = 2 * ENCODED_IDENTITY_SIZE;

export interface PublicIdentity {
  /** Ed25519 DID key. */
  identityKey: Uint8Array;
  /** X25519 identity DH key. */
  identityDhKey: Uint8Array;
}

/** Encode(IK) = 0x01 ‖ Ed25519 identity key ‖ 0x02 ‖ X25519 identity DH key: 66 bytes. */
export function encodeIdentity(id: PublicIdentity): Uint8Array {
  if (id.identityKey.length !== 32 || id.identityDhKey.length !== 32)
    throw new RangeError('identity keys are 32 bytes');
  const out = new Uint8Array(ENCODED_IDENTITY_SIZE);
  out[0] = IdentityEncoding.ED25519;
  out.set(id.identityKey, 1);
  out[33] = IdentityEncoding.X25519;
  out.set(id.identityDhKey, 34);
  return out;
}

/** AD = Encode(initiator) ‖ Encode(responder); both ends compute the same 132 bytes. */
export function sessionAssociatedData(initiator: PublicIdentity, responder: PublicIdentity): Uint8Array {
  const out = new Uint8Array(SESSION_AD_SIZE);
  out.set(encodeIdentity(initiator), 0);
  out.set(encodeIdentity(responder), ENCODED_IDENTITY_SIZE);
  return out;
}

export interface PqxdhInitiatorParams {
  provider: CryptoProvider;
  identity: LocalIdentity;
  /** The DID the bundle was fetched for; the bundle's identity key must be the key it names. */
  peerDid: string;
  bundle: PrekeyBundle;
  /** Known-answer tests only: fixes EK_A and the ML-KEM encapsulation randomness m. Never in production. */
  deterministic?: { ephemeralPrivateKey: Uint8Array; kemSeed: Uint8Array };
}

export interface PqxdhInitiatorResult {
  sharedKey: Uint8Array;
  ad: Uint8Array;
  /** SPK_B: the responder's first ratchet key. */
  remoteSignedPrekey: Uint8Array;
  peer: PublicIdentity;
  /** Every initial-message field except the ratchet message. */
  message: Omit<InitialMessage, 'ratchetMessage'>;
}

/** Verifies the bundle and runs the initiator's side. Throws SessionError (PREKEY_BUNDLE_INVALID, INVALID_PUBLIC_KEY). */
export function pqxdhInitiate(params: PqxdhInitiatorParams): PqxdhInitiatorResult {
  const { provider: p, identity, bundle } = params;
  verifyPrekeyBundle(p, bundle, params.peerDid);
  const ek: X25519KeyPair = params.deterministic
    ? {
        privateKey: Uint8Array.from(params.deterministic.ephemeralPrivateKey),
        publicKey: p.x25519PublicKey(params.deterministic.ephemeralPrivateKey),
      }
    : p.x25519Generate();
  const spk = bundle.signedPrekey.publicKey;
  const dhs = [
    p.x25519(identity.identityDh.privateKey, spk),
    p.x25519(ek.privateKey, bundle.identityDhKey.publicKey),
    p.x25519(ek.privateKey, spk),
  ];
  if (bundle.oneTimePrekey) dhs.push(p.x25519(ek.privateKey, bundle.oneTimePrekey.publicKey));
  const kemKey = bundle.oneTimeKemPrekey ?? bundle.lastResortKemPrekey;
  const { cipherText, sharedSecret } = p.kemEncapsulate(kemKey.publicKey, params.deterministic?.kemSeed);
  const sharedKey = pqxdhKdf(p, dhs, sharedSecret);
  wipe(ek.privateKey, sharedSecret, ...dhs);

  const self: PublicIdentity = { identityKey: identity.signer.publicKey, identityDhKey: identity.identityDh.publicKey };
  const peer: PublicIdentity = {
    identityKey: Uint8Array.from(bundle.identityKey),
    identityDhKey: Uint8Array.from(bundle.identityDhKey.publicKey),
  };
  const message: Omit<InitialMessage, 'ratchetMessage'> = {
    initiatorIdentityKey: self.identityKey,
    initiatorIdentityDhKey: self.identityDhKey,
    initiatorIdentityDhSignature: Uint8Array.from(identity.identityDh.signature),
    ephemeralKey: ek.publicKey,
    signedPrekeyId: bundle.signedPrekey.id,
    kemPrekeyId: kemKey.id,
    kemPrekeyOneTime: bundle.oneTimeKemPrekey !== undefined,
    kemCipherText: cipherText,
  };
  if (bundle.oneTimePrekey) message.oneTimePrekeyId = bundle.oneTimePrekey.id;
  return {
    sharedKey,
    ad: sessionAssociatedData(self, peer),
    remoteSignedPrekey: Uint8Array.from(spk),
    peer,
    message,
  };
}

export interface PqxdhResponderParams {
  provider: CryptoProvider;
  prekeys: ResponderPrekeys;
  message: InitialMessage;
}

export interface PqxdhResponderResult {
  sharedKey: Uint8Array;
  ad: Uint8Array;
  peer: PublicIdentity;
  /** did:libertaria of the initiator's identity key. */
  peerDid: string;
  /** SPK_B: the responder's first ratchet key pair (the ratchet keeps its own copy). */
  signedPrekey: X25519KeyPair;
  /** Whether a one-time prekey (X25519 or KEM) was named; without one the message could be replayed. */
  usedOneTimePrekey: boolean;
  /**
   * Consumes the one-time prekeys the message named (none: resolves true).
   * Call it only after the first ratchet message authenticated; false means
   * another message took one of them first (a replay or a race): refuse.
   */
  consumeOneTimePrekeys(): Promise<boolean>;
}

function unavailable(what: string, id: number): never {
  throw new SessionError('PREKEY_UNAVAILABLE', `the initial message names ${what} ${id}, which is not held`);
}

/**
 * The responder's side. Refuses (PREKEY_UNAVAILABLE) any prekey id it does
 * not hold, including a one-time prekey already consumed: a second message
 * naming it is a replay or a reuse. One-time keys are only looked at here;
 * the caller consumes them (consumeOneTimePrekeys, one atomic store call per
 * key) after the first ratchet message authenticated, so a forged message
 * naming a real one-time id does not burn it.
 */
export async function pqxdhRespond(params: PqxdhResponderParams): Promise<PqxdhResponderResult> {
  const { provider: p, prekeys, message: m } = params;
  if (
    !verifyPrekeySignature(
      p,
      m.initiatorIdentityKey,
      PrekeyKind.IDENTITY_DH,
      0,
      m.initiatorIdentityDhKey,
      m.initiatorIdentityDhSignature,
    )
  ) {
    throw new SessionError(
      'PREKEY_BUNDLE_INVALID',
      "the initiator's identity DH key is not signed by its identity key",
    );
  }
  const spk = prekeys.signedPrekey(m.signedPrekeyId) ?? unavailable('signed prekey', m.signedPrekeyId);
  const lastResort = m.kemPrekeyOneTime ? undefined : prekeys.lastResortKemPrekey(m.kemPrekeyId);
  if (!m.kemPrekeyOneTime && lastResort === undefined) unavailable('last-resort KEM prekey', m.kemPrekeyId);

  let opk: Uint8Array | undefined;
  if (m.oneTimePrekeyId !== undefined) {
    opk =
      (await prekeys.oneTime.peek('x25519', m.oneTimePrekeyId)) ?? unavailable('one-time prekey', m.oneTimePrekeyId);
  }
  let kemSecret = lastResort;
  if (m.kemPrekeyOneTime) {
    kemSecret = (await prekeys.oneTime.peek('kem', m.kemPrekeyId)) ?? unavailable('one-time KEM prekey', m.kemPrekeyId);
  }

  const ik = prekeys.identity.identityDh;
  const dhs: Uint8Array[] = [];
  let sharedKey: Uint8Array;
  try {
    dhs.push(
      p.x25519(spk.privateKey, m.initiatorIdentityDhKey),
      p.x25519(ik.privateKey, m.ephemeralKey),
      p.x25519(spk.privateKey, m.ephemeralKey),
    );
    if (opk) dhs.push(p.x25519(opk, m.ephemeralKey));
    const ss = p.kemDecapsulate(m.kemCipherText, kemSecret!);
    sharedKey = pqxdhKdf(p, dhs, ss);
    wipe(ss);
  } finally {
    // Peeked one-time keys are copies: wipe ours whatever happens (the store keeps its own until consumed).
    wipe(opk, ...dhs);
    if (m.kemPrekeyOneTime) wipe(kemSecret);
  }

  const peer: PublicIdentity = {
    identityKey: Uint8Array.from(m.initiatorIdentityKey),
    identityDhKey: Uint8Array.from(m.initiatorIdentityDhKey),
  };
  const self: PublicIdentity = { identityKey: prekeys.identity.signer.publicKey, identityDhKey: ik.publicKey };
  return {
    sharedKey,
    ad: sessionAssociatedData(peer, self),
    peer,
    peerDid: formatLibertariaDid(peer.identityKey),
    signedPrekey: spk,
    usedOneTimePrekey: opk !== undefined || m.kemPrekeyOneTime,
    async consumeOneTimePrekeys(): Promise<boolean> {
      let all = true;
      if (m.oneTimePrekeyId !== undefined) {
        const key = await prekeys.oneTime.consume('x25519', m.oneTimePrekeyId);
        all &&= key !== undefined;
        wipe(key);
      }
      if (m.kemPrekeyOneTime) {
        const key = await prekeys.oneTime.consume('kem', m.kemPrekeyId);
        all &&= key !== undefined;
        wipe(key);
      }
      return all;
    },
  };
}
