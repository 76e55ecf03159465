/**
 * Ephemeral sessions (the seed's EphemeralSession): one anonymous request and
 * its response. The requester reveals no DID and no long-term key: it seals
 * to the responder's signed prekey with a fresh ephemeral X25519 key and an
 * ML-KEM-768 encapsulation to the responder's last-resort KEM prekey (never a
 * one-time one: anonymous requests must not drain them), so the exchange is
 * hybrid post-quantum like a persistent session's.
 *
 *   IKM   = 0xFF×32 ‖ DH(EK, SPK_B) ‖ SS
 *   OKM   = HKDF(salt = zero, ikm = IKM, info = "Libertaria_Ephemeral_X25519_SHA-256_ML-KEM-768"), 92 bytes
 *         = request key (32) ‖ request nonce (12) ‖ response secret (32) ‖ session id (16)
 *   R     = 32 fresh random bytes of the responder, one per response
 *   response key (32) ‖ response nonce (12) = HKDF(salt = R, ikm = response secret,
 *                                               info = "Libertaria_Ephemeral_Response", 44)
 *
 * Request, version 2:  u8 version ‖ u32 SPK id ‖ u32 KEM prekey id ‖ 32 EK ‖ 1088 KEM ciphertext
 *                      ‖ AEAD(request key/nonce, payload, AD = those 1129 bytes ‖ Encode(B))
 * Response, version 2: u8 version ‖ 32 R ‖ AEAD(response key/nonce, payload, AD = 0x01 ‖ Encode(B) ‖ R)
 *
 * The request key seals exactly one message (the requester's), so its
 * derived nonce never repeats. The response key is NOT a function of the
 * request alone: a relay (or anyone) that replays a request and gets it past
 * the replay guards (a lying ONCE_CHECK, a second device of the responder)
 * obtains responses under different keys, never two plaintexts under one
 * ChaCha20-Poly1305 key and nonce (which would leak their XOR and the
 * Poly1305 key, and let it forge a response). Version 1 derived the response
 * key from the request only; it is refused (UNSUPPORTED_VERSION) rather than
 * answered, because answering it is exactly that weakness.
 * The responder is authenticated (its prekeys are signed by its DID key and
 * Encode(B) is in both ADs); the requester is anonymous by design, and abuse
 * control (a proof-of-work stamp or a capability token) belongs in the
 * payload. Forward secrecy: the request stays readable to whoever later
 * obtains both SPK_B and the last-resort KEM key, until those are rotated.
 */
import { MLKEM768_CIPHERTEXT_SIZE, type PrekeyBundle, ProtocolError } from '@libertaria/protocol';
import { ByteReader, ByteWriter, concatBytes, wipe } from './bytes.js';
import { AEAD_TAG_SIZE, type CryptoProvider } from './crypto-provider.js';
import { SessionError } from './errors.js';
import { EPHEMERAL_INFO, EPHEMERAL_RESPONSE_INFO, info, PQXDH_PREFIX, ZERO_SALT } from './kdf.js';
import { encodeIdentity, type PublicIdentity } from './pqxdh.js';
import type { ResponderPrekeys } from './prekey-store.js';
import { verifyPrekeyBundle } from './prekeys.js';
import type { TicketStore } from './ticket-store.js';

export const EPHEMERAL_VERSION = 2;
/** The responder's fresh randomness at the front of each response. */
export const EPHEMERAL_RESPONSE_RANDOM_SIZE = 32;
export const EPHEMERAL_REQUEST_HEADER_SIZE = 1 + 4 + 4 + 32 + MLKEM768_CIPHERTEXT_SIZE;
export const DEFAULT_EPHEMERAL_TTL_MS = 60 * 1000;
const RESPONSE_AD_TAG = 0x01;

interface ExchangeKeys {
  requestKey: Uint8Array;
  requestNonce: Uint8Array;
  responseSecret: Uint8Array;
  sessionId: Uint8Array;
}

function exchangeKeys(p: CryptoProvider, dh: Uint8Array, ss: Uint8Array): ExchangeKeys {
  const ikm = concatBytes(PQXDH_PREFIX, dh, ss);
  const okm = p.hkdf(ikm, ZERO_SALT, info(EPHEMERAL_INFO), 92);
  const keys = {
    requestKey: okm.slice(0, 32),
    requestNonce: okm.slice(32, 44),
    responseSecret: okm.slice(44, 76),
    sessionId: okm.slice(76, 92),
  };
  wipe(ikm, okm);
  return keys;
}

/** The one-response key and nonce: the exchange's response secret salted with the responder's fresh R. */
function responseKeys(
  p: CryptoProvider,
  responseSecret: Uint8Array,
  random: Uint8Array,
): { key: Uint8Array; nonce: Uint8Array } {
  const okm = p.hkdf(responseSecret, random, info(EPHEMERAL_RESPONSE_INFO), 44);
  const keys = { key: okm.slice(0, 32), nonce: okm.slice(32, 44) };
  wipe(okm);
  return keys;
}

function responseAd(responder: PublicIdentity, random: Uint8Array): Uint8Array {
  return concatBytes(Uint8Array.of(RESPONSE_AD_TAG), encodeIdentity(responder), random);
}

export interface EphemeralRequestParams {
  provider: CryptoProvider;
  /** The responder's DID; its bundle must verify against it. */
  peerDid: string;
  bundle: PrekeyBundle;
  payload: Uint8Array;
  /** How long the requester waits for the response; default one minute. */
  ttlMs?: number;
  clock?: () => number;
}

/** The requester's side of one anonymous request/response. */
export class EphemeralSession {
  readonly sessionId: Uint8Array;
  readonly peerDid: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  #p: CryptoProvider;
  #responder: PublicIdentity;
  #keys: ExchangeKeys | undefined;
  #clock: () => number;

  private constructor(
    p: CryptoProvider,
    peerDid: string,
    responder: PublicIdentity,
    keys: ExchangeKeys,
    ttlMs: number,
    clock: () => number,
  ) {
    this.#p = p;
    this.peerDid = peerDid;
    this.#responder = responder;
    this.#keys = keys;
    this.sessionId = Uint8Array.from(keys.sessionId);
    this.#clock = clock;
    this.createdAt = clock();
    this.expiresAt = this.createdAt + ttlMs;
  }

  /** Seals `payload` to the responder; returns the session (to open the response) and the request bytes. */
  static request(params: EphemeralRequestParams): { session: EphemeralSession; request: Uint8Array } {
    const { provider: p, bundle } = params;
    verifyPrekeyBundle(p, bundle, params.peerDid);
    const ek = p.x25519Generate();
    const dh = p.x25519(ek.privateKey, bundle.signedPrekey.publicKey);
    const { cipherText, sharedSecret } = p.kemEncapsulate(bundle.lastResortKemPrekey.publicKey);
    const keys = exchangeKeys(p, dh, sharedSecret);
    wipe(ek.privateKey, dh, sharedSecret);
    const responder = {
      identityKey: Uint8Array.from(bundle.identityKey),
      identityDhKey: Uint8Array.from(bundle.identityDhKey.publicKey),
    };
    const header = new ByteWriter(EPHEMERAL_REQUEST_HEADER_SIZE)
      .u8(EPHEMERAL_VERSION)
      .u32(bundle.signedPrekey.id)
      .u32(bundle.lastResortKemPrekey.id)
      .raw(ek.publicKey)
      .raw(cipherText)
      .done();
    const sealed = p.aeadSeal(
      keys.requestKey,
      keys.requestNonce,
      params.payload,
      concatBytes(header, encodeIdentity(responder)),
    );
    wipe(keys.requestKey, keys.requestNonce);
    const session = new EphemeralSession(
      p,
      params.peerDid,
      responder,
      keys,
      params.ttlMs ?? DEFAULT_EPHEMERAL_TTL_MS,
      params.clock ?? Date.now,
    );
    return { session, request: concatBytes(header, sealed) };
  }

  /** Opens the response, once. SESSION_EXPIRED after the TTL or a second call; DECRYPT_FAILED if it does not authenticate. */
  openResponse(response: Uint8Array): Uint8Array {
    const keys = this.#keys;
    if (keys === undefined)
      throw new SessionError('SESSION_EXPIRED', 'this ephemeral session already took its response');
    if (this.#clock() > this.expiresAt) {
      this.destroy();
      throw new SessionError('SESSION_EXPIRED', 'the ephemeral session expired before its response arrived');
    }
    const { random, sealed } = decodeEphemeralResponse(response);
    const rk = responseKeys(this.#p, keys.responseSecret, random);
    try {
      const payload = this.#p.aeadOpen(rk.key, rk.nonce, sealed, responseAd(this.#responder, random));
      this.destroy();
      return payload;
    } finally {
      wipe(rk.key, rk.nonce);
    }
  }

  destroy(): void {
    if (this.#keys) wipe(this.#keys.responseSecret, this.#keys.requestKey, this.#keys.requestNonce);
    this.#keys = undefined;
  }
}

export interface DecodedEphemeralRequest {
  signedPrekeyId: number;
  kemPrekeyId: number;
  ephemeralKey: Uint8Array;
  kemCipherText: Uint8Array;
  header: Uint8Array;
  sealed: Uint8Array;
}

export function decodeEphemeralRequest(bytes: Uint8Array): DecodedEphemeralRequest {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError('BAD_FIELD', 'ephemeral request: not bytes');
  const r = new ByteReader(bytes, 'ephemeral request');
  const version = r.u8('version');
  if (version !== EPHEMERAL_VERSION) {
    throw new ProtocolError('UNSUPPORTED_VERSION', `ephemeral request: version ${version} is not supported`);
  }
  const signedPrekeyId = r.u32('signed prekey id');
  const kemPrekeyId = r.u32('KEM prekey id');
  const ephemeralKey = r.x25519Key('ephemeral key');
  const kemCipherText = r.bytesN(MLKEM768_CIPHERTEXT_SIZE, 'KEM ciphertext');
  if (r.remaining < AEAD_TAG_SIZE)
    throw new ProtocolError('TRUNCATED', 'ephemeral request: ciphertext shorter than its tag');
  const sealed = r.rest();
  return {
    signedPrekeyId,
    kemPrekeyId,
    ephemeralKey,
    kemCipherText,
    header: bytes.slice(0, EPHEMERAL_REQUEST_HEADER_SIZE),
    sealed,
  };
}

export function decodeEphemeralResponse(bytes: Uint8Array): { random: Uint8Array; sealed: Uint8Array } {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError('BAD_FIELD', 'ephemeral response: not bytes');
  const r = new ByteReader(bytes, 'ephemeral response');
  const version = r.u8('version');
  if (version !== EPHEMERAL_VERSION) {
    throw new ProtocolError('UNSUPPORTED_VERSION', `ephemeral response: version ${version} is not supported`);
  }
  const random = r.bytesN(EPHEMERAL_RESPONSE_RANDOM_SIZE, 'responder random');
  if (r.remaining < AEAD_TAG_SIZE)
    throw new ProtocolError('TRUNCATED', 'ephemeral response: ciphertext shorter than its tag');
  return { random, sealed: r.rest() };
}

export interface AcceptEphemeralParams {
  provider: CryptoProvider;
  prekeys: ResponderPrekeys;
  request: Uint8Array;
  /** Refuses a replayed request (keyed by the exchange's session id). */
  replayGuard?: TicketStore;
}

/** The responder's side: the request payload, and a one-shot function that seals the response. */
export interface EphemeralResponder {
  sessionId: Uint8Array;
  payload: Uint8Array;
  sealResponse(payload: Uint8Array): Uint8Array;
}

export async function acceptEphemeralRequest(params: AcceptEphemeralParams): Promise<EphemeralResponder> {
  const { provider: p, prekeys } = params;
  const m = decodeEphemeralRequest(params.request);
  const spk = prekeys.signedPrekey(m.signedPrekeyId);
  const kemSecret = prekeys.lastResortKemPrekey(m.kemPrekeyId);
  if (spk === undefined || kemSecret === undefined) {
    throw new SessionError('PREKEY_UNAVAILABLE', 'the ephemeral request names a prekey that is not held');
  }
  const dh = p.x25519(spk.privateKey, m.ephemeralKey);
  const ss = p.kemDecapsulate(m.kemCipherText, kemSecret);
  const keys = exchangeKeys(p, dh, ss);
  wipe(dh, ss);
  const self: PublicIdentity = {
    identityKey: prekeys.identity.signer.publicKey,
    identityDhKey: prekeys.identity.identityDh.publicKey,
  };
  let payload: Uint8Array;
  try {
    payload = p.aeadOpen(keys.requestKey, keys.requestNonce, m.sealed, concatBytes(m.header, encodeIdentity(self)));
  } catch (err) {
    wipe(keys.responseSecret);
    throw err;
  } finally {
    wipe(keys.requestKey, keys.requestNonce);
  }
  if (params.replayGuard && !(await params.replayGuard.consumeOnce(keys.sessionId))) {
    wipe(keys.responseSecret, payload);
    throw new SessionError('REPLAYED', 'this ephemeral request was accepted before');
  }
  let answered = false;
  return {
    sessionId: keys.sessionId,
    payload,
    sealResponse(response: Uint8Array): Uint8Array {
      if (answered) throw new SessionError('SESSION_EXPIRED', 'this ephemeral request was already answered');
      answered = true;
      // Fresh per response: a replayed request that slips past every replay guard still gets a new key and nonce.
      const random = p.randomBytes(EPHEMERAL_RESPONSE_RANDOM_SIZE);
      const rk = responseKeys(p, keys.responseSecret, random);
      const sealed = p.aeadSeal(rk.key, rk.nonce, response, responseAd(self, random));
      wipe(rk.key, rk.nonce, keys.responseSecret);
      return concatBytes(Uint8Array.of(EPHEMERAL_VERSION), random, sealed);
    },
  };
}
