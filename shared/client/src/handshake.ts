/**
 * The opening of a relay connection: HELLO {clientNonce} → CHALLENGE (the
 * relay's key and its signature over our nonce, verified here, and checked
 * against the DID we expect, before we sign anything) → AUTH (our signature
 * names that key) → WELCOME; or for an anonymous connection HELLO(ANONYMOUS)
 * → ANON_CHALLENGE → ANON_AUTH (a proof-of-work stamp) → WELCOME with a
 * random reply hint.
 *
 * Timers are per step (docs/client.md#delay-tolerance): opening the transport
 * gets 2 × timeoutMs (TCP, TLS and the WebSocket upgrade are up to three
 * round trips), and each of CHALLENGE and WELCOME gets timeoutMs from our
 * HELLO and AUTH, so a slow link needs a step budget above one round trip,
 * not above the whole handshake.
 *
 * Everything that can go wrong becomes a RelayError whose code says what to
 * do next (connection-loop.ts decides): AUTH_FAILED, UNSUPPORTED_VERSION and
 * RELAY_IDENTITY_MISMATCH will not get better by retrying the same relay;
 * everything else may.
 */

import { nobleCrypto } from '@libertaria/crypto';
import {
  authTranscript,
  didMatchesKey,
  formatLibertariaDid,
  type PeerSigner,
  relayChallengeTranscript,
} from '@libertaria/identity';
import {
  ErrorFlags,
  encodeFrame,
  errorCodeFromWire,
  type Frame,
  HelloFeatures,
  LibertariaError,
  MAX_PAYLOAD_LIMIT,
  MAX_PROTOCOL_VERSION,
  MIN_PROTOCOL_VERSION,
  NONCE_SIZE,
  RelayError,
  solvePowStamp,
} from '@libertaria/protocol';
import { bytesEqual, copyBytes, randomBytes, toHex } from './bytes.js';
import { ClientErrorCode } from './codes.js';
import { openTransport, type TlsClientOptions, type Transport } from './transport.js';
import type { RelayUrl } from './url.js';

export interface Welcome {
  readonly hint: Uint8Array;
  readonly connectionId: Uint8Array;
  readonly maxPayload: number;
  readonly heartbeatMs: number;
  readonly nodeId: string;
}

export interface Handshake {
  readonly transport: Transport;
  /** Protocol version chosen in CHALLENGE; every later frame is encoded with it. */
  readonly version: number;
  /** The relay's DID as CHALLENGE named it (for an anonymous connection: as ANON_CHALLENGE claimed it, unproven). */
  readonly relayIdentity: string;
  /** The did:libertaria DID of the key the relay proved (absent on an anonymous connection, which proves none). */
  readonly relayDid?: string;
  readonly welcome: Welcome;
  /** Frames that arrived in the same message as WELCOME, to be handled first. */
  readonly leftover: Frame[];
  /** For an anonymous connection: what the relay announced in ANON_CHALLENGE. */
  readonly anonymous?: AnonymousTerms;
}

export interface AnonymousTerms {
  readonly powBits: number;
  readonly maxSends: number;
  readonly lifetimeMs: number;
}

/** Default bound on the proof of work an anonymous client agrees to do (2^24 hashes: seconds, not minutes). */
export const DEFAULT_MAX_POW_BITS = 24;

/** Ed25519 verification (strict rules, docs/identity.md#signature-rules). */
export type SignatureVerifier = (publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array) => boolean;

/** The relay key a handshake must meet, and where that expectation came from (for the error message). */
export interface RelayExpectation {
  /** did:libertaria or did:key of the key the relay must prove. */
  did: string;
  /** Where it came from, e.g. "the relay URL's fragment" or "the pin made on first use in …". */
  source: string;
  /** Added to the mismatch message: what to do if the key changed legitimately. */
  advice?: string;
}

export interface HandshakeOptions {
  /** The DID to authenticate as; absent for an anonymous connection (then `anonymous` is required). */
  identity?: PeerSigner | undefined;
  /** Open an anonymous connection, refusing (ANON_TOO_COSTLY) a relay that asks for more than maxPowBits. */
  anonymous?: { maxPowBits: number } | undefined;
  /** Refuse (RELAY_IDENTITY_MISMATCH, before signing) any relay that does not prove this key. */
  expectRelay?: RelayExpectation | undefined;
  /** Per step: CHALLENGE within this of HELLO, WELCOME within this of AUTH; the transport gets twice it to open. */
  timeoutMs: number;
  tls?: TlsClientOptions | undefined;
  /** Verifies the relay's CHALLENGE signature (default: the browser-safe noble verifier; Node callers pass verifyEd25519). */
  verify?: SignatureVerifier | undefined;
}

/** A relay-reported error carries whether the relay marked it FATAL. */
export class HandshakeError extends RelayError {
  readonly fatal: boolean;
  constructor(code: RelayError['code'], message: string, fatal = false, cause?: unknown) {
    super(code, message, cause === undefined ? undefined : { cause });
    this.fatal = fatal;
  }
}

function asRelayError(url: RelayUrl, error: unknown): RelayError {
  if (error instanceof RelayError) return error;
  if (error instanceof LibertariaError)
    return new RelayError(error.code, `${url.href}: ${error.message}`, { cause: error });
  const message = error instanceof Error ? error.message : String(error);
  return new RelayError(ClientErrorCode.unreachable, `${url.href}: ${message}`, { cause: error });
}

/** Connects to `url` and authenticates; rejects with a RelayError. */
export async function performHandshake(url: RelayUrl, options: HandshakeOptions): Promise<Handshake> {
  const stepMs = options.timeoutMs;
  const verify = options.verify ?? nobleCrypto.verifyEd25519;
  const identity = options.identity;
  const anonymous = options.anonymous;
  if ((identity === undefined) === (anonymous === undefined)) {
    throw new RelayError(
      ClientErrorCode.invalidArgument,
      'performHandshake: give exactly one of identity and anonymous',
    );
  }
  let transport: Transport;
  try {
    transport = await openTransport(url, {
      timeoutMs: 2 * stepMs,
      maxPayload: MAX_PAYLOAD_LIMIT,
      tls: options.tls,
    });
  } catch (error) {
    throw asRelayError(url, error);
  }
  return new Promise<Handshake>((resolve, reject) => {
    let step: 'challenge' | 'welcome' | 'done' = 'challenge';
    let version = MIN_PROTOCOL_VERSION;
    let relayIdentity = '';
    let relayDid: string | undefined;
    let terms: AnonymousTerms | undefined;
    const clientNonce = randomBytes(NONCE_SIZE);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const fail = (error: RelayError): void => {
      if (step === 'done') return;
      step = 'done';
      clearTimeout(timer);
      transport.onFrames = undefined;
      transport.onClose = undefined;
      transport.close();
      reject(error);
    };
    /** We just sent HELLO or AUTH: the answer is due within one step. */
    const awaitAnswer = (what: string): void => {
      clearTimeout(timer);
      timer = setTimeout(
        () =>
          fail(
            new RelayError(
              ClientErrorCode.handshakeTimeout,
              `${url.href}: no ${what} within ${stepMs} ms of our last handshake message`,
            ),
          ),
        stepMs,
      );
    };

    /** The version a challenge names, checked before we answer it. */
    const acceptable = (challenge: { version: number; relayIdentity: string }): boolean => {
      if (challenge.version < MIN_PROTOCOL_VERSION || challenge.version > MAX_PROTOCOL_VERSION) {
        fail(new RelayError('UNSUPPORTED_VERSION', `${url.href}: relay chose version ${challenge.version}`));
        return false;
      }
      version = challenge.version;
      relayIdentity = challenge.relayIdentity;
      return true;
    };
    const mismatch = (message: string): false => {
      fail(new RelayError('RELAY_IDENTITY_MISMATCH', `${url.href}: ${message}`));
      return false;
    };
    /** The relay proved its key over our nonce, and it is the key we expect: only then do we sign. */
    const relayProven = (challenge: Extract<Frame, { type: 'CHALLENGE' }>): boolean => {
      const params = {
        relayNonce: challenge.nonce,
        clientNonce,
        relayKey: challenge.relayKey,
        binding: url.binding,
        channelBinding: transport.channelBinding,
      };
      if (!didMatchesKey(challenge.relayIdentity, challenge.relayKey)) {
        return mismatch(`relay names DID ${JSON.stringify(challenge.relayIdentity)} but presents another key`);
      }
      if (!verify(challenge.relayKey, relayChallengeTranscript(params), challenge.signature)) {
        return mismatch(
          `the relay's CHALLENGE signature does not verify over our nonce and this ${url.binding} connection: ` +
            'it was made for another connection (a relay passing another relay’s CHALLENGE through) or is forged',
        );
      }
      const expected = options.expectRelay;
      if (expected !== undefined && !didMatchesKey(expected.did, challenge.relayKey)) {
        return mismatch(
          `relay proved key ${formatLibertariaDid(challenge.relayKey)}, but ${expected.source} expects ${expected.did}` +
            (expected.advice === undefined ? '' : `. ${expected.advice}`),
        );
      }
      relayDid = formatLibertariaDid(challenge.relayKey);
      return true;
    };
    const onFrame = (frame: Frame): boolean => {
      if (frame.type === 'ERROR') {
        const fatal = (frame.flags & ErrorFlags.FATAL) !== 0;
        const code = errorCodeFromWire(frame.code);
        if (step === 'challenge' && (code === 'TRAILING_BYTES' || code === 'BAD_LENGTH')) {
          // A version-1 relay cannot read our longer HELLO (its client nonce).
          fail(
            new HandshakeError(
              'UNSUPPORTED_VERSION',
              `${url.href}: relay speaks an older protocol (version 1: its identity is not a key) and refused our HELLO (${code}: ${frame.message}); upgrade the relay`,
              fatal,
            ),
          );
          return false;
        }
        fail(new HandshakeError(code, `${url.href}: relay refused: ${frame.message}`, fatal));
        return false;
      }
      if (step === 'challenge' && frame.type === 'ANON_CHALLENGE' && anonymous !== undefined) {
        if (!acceptable(frame)) return false;
        if (frame.powBits > anonymous.maxPowBits) {
          fail(
            new RelayError(
              'ANON_TOO_COSTLY',
              `${url.href}: relay asks for ${frame.powBits} bits of proof of work, more than maxPowBits ${anonymous.maxPowBits}`,
            ),
          );
          return false;
        }
        terms = { powBits: frame.powBits, maxSends: frame.maxSends, lifetimeMs: frame.lifetimeMs };
        // Synchronous: 2^powBits hashes (about 0.1 s at 16 bits here), bounded by maxPowBits above.
        const stamp = solvePowStamp(frame.nonce, frame.powBits);
        transport.send(encodeFrame({ type: 'ANON_AUTH', stamp }, version));
        step = 'welcome';
        awaitAnswer('WELCOME');
        return true;
      }
      if (step === 'challenge' && frame.type === 'CHALLENGE' && anonymous !== undefined) {
        // A relay that ignores the ANONYMOUS feature bit (an older version): we have no DID to offer.
        fail(new RelayError('ANON_DISABLED', `${url.href}: relay does not offer anonymous connections`));
        return false;
      }
      if (step === 'challenge' && frame.type === 'CHALLENGE' && identity !== undefined) {
        if (!acceptable(frame) || !relayProven(frame)) return false;
        const signature = identity.sign(
          authTranscript({
            relayNonce: frame.nonce,
            clientNonce,
            relayKey: frame.relayKey,
            binding: url.binding,
            channelBinding: transport.channelBinding,
          }),
        );
        transport.send(
          encodeFrame(
            { type: 'AUTH', keyType: 1, publicKey: identity.publicKey, signature, did: identity.did },
            version,
          ),
        );
        step = 'welcome';
        awaitAnswer('WELCOME');
        return true;
      }
      if (step === 'welcome' && frame.type === 'WELCOME') {
        // An anonymous connection's hint is whatever random reply address the relay chose.
        if (identity !== undefined && !bytesEqual(frame.hint, identity.hint)) {
          fail(
            new RelayError(
              ClientErrorCode.wrongRelay,
              `${url.href}: relay assigned hint ${toHex(frame.hint)}, ours is ${toHex(identity.hint)}`,
            ),
          );
          return false;
        }
        return true;
      }
      fail(
        new RelayError(ClientErrorCode.unexpectedFrame, `${url.href}: unexpected ${frame.type} during the handshake`),
      );
      return false;
    };

    transport.onClose = (error) =>
      fail(
        error instanceof LibertariaError
          ? asRelayError(url, error)
          : new RelayError(
              ClientErrorCode.unreachable,
              `${url.href}: connection closed during the handshake${error ? ` (${error.message})` : ''}`,
            ),
      );
    transport.onFrames = (frames) => {
      for (let i = 0; i < frames.length; i++) {
        if (step === 'done') return;
        const frame = frames[i]!;
        let ok: boolean;
        try {
          ok = onFrame(frame);
        } catch (error) {
          fail(asRelayError(url, error));
          return;
        }
        if (ok && frame.type === 'WELCOME') {
          step = 'done';
          clearTimeout(timer);
          // Frames from here on are the client's; it installs its own handlers.
          transport.onFrames = undefined;
          transport.onClose = undefined;
          resolve({
            transport,
            version,
            relayIdentity,
            ...(relayDid !== undefined ? { relayDid } : {}),
            welcome: {
              hint: copyBytes(frame.hint),
              connectionId: copyBytes(frame.connectionId),
              maxPayload: frame.maxPayload,
              heartbeatMs: frame.heartbeatMs,
              nodeId: frame.nodeId,
            },
            leftover: frames.slice(i + 1),
            ...(terms !== undefined ? { anonymous: terms } : {}),
          });
          return;
        }
      }
    };
    try {
      transport.send(
        encodeFrame({
          type: 'HELLO',
          minVersion: MIN_PROTOCOL_VERSION,
          maxVersion: MAX_PROTOCOL_VERSION,
          features: anonymous !== undefined ? HelloFeatures.ANONYMOUS : 0,
          clientNonce,
        }),
      );
      awaitAnswer(anonymous !== undefined ? 'ANON_CHALLENGE' : 'CHALLENGE');
    } catch (error) {
      fail(asRelayError(url, error));
    }
  });
}

/**
 * Codes after which retrying the same relay cannot succeed. INVALID_RELAY_URL
 * comes from openTransport: a tcp:// or tls:// relay outside Node.
 */
export function isPermanentRefusal(error: RelayError): boolean {
  return (
    error.code === 'AUTH_FAILED' ||
    error.code === 'UNSUPPORTED_VERSION' ||
    error.code === 'RELAY_IDENTITY_MISMATCH' ||
    error.code === 'INVALID_RELAY_URL'
  );
}
