/**
 * The opening of a relay connection: HELLO → CHALLENGE → AUTH → WELCOME, or
 * for an anonymous connection HELLO(ANONYMOUS) → ANON_CHALLENGE → ANON_AUTH
 * (a proof-of-work stamp) → WELCOME with a random reply hint.
 *
 * Everything that can go wrong becomes a RelayError whose code says what to
 * do next (client.ts decides): AUTH_FAILED and UNSUPPORTED_VERSION will not
 * get better by retrying the same relay; everything else may.
 */

import { errorCodeFromWire, LibertariaError, RelayError } from '../errors.js';
import type { PeerSigner } from '../identity/auth.js';
import { authTranscript } from '../identity/auth-transcript.js';
import {
  ErrorFlags,
  encodeFrame,
  type Frame,
  HelloFeatures,
  MAX_PAYLOAD_LIMIT,
  MAX_PROTOCOL_VERSION,
  MIN_PROTOCOL_VERSION,
} from '../protocol/frames.js';
import { solvePowStamp } from '../protocol/pow.js';
import { bytesEqual, copyBytes, toHex } from './bytes.js';
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
  readonly relayIdentity: string;
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

export interface HandshakeOptions {
  /** The DID to authenticate as; absent for an anonymous connection (then `anonymous` is required). */
  identity?: PeerSigner | undefined;
  /** Open an anonymous connection, refusing (ANON_TOO_COSTLY) a relay that asks for more than maxPowBits. */
  anonymous?: { maxPowBits: number } | undefined;
  expectRelayIdentity?: string | undefined;
  timeoutMs: number;
  tls?: TlsClientOptions | undefined;
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
  const deadline = Date.now() + options.timeoutMs;
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
      timeoutMs: options.timeoutMs,
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
    let terms: AnonymousTerms | undefined;
    const fail = (error: RelayError): void => {
      if (step === 'done') return;
      step = 'done';
      clearTimeout(timer);
      transport.onFrames = undefined;
      transport.onClose = undefined;
      transport.close();
      reject(error);
    };
    const timer = setTimeout(
      () =>
        fail(
          new RelayError(
            ClientErrorCode.handshakeTimeout,
            `${url.href}: handshake not finished within ${options.timeoutMs} ms`,
          ),
        ),
      Math.max(0, deadline - Date.now()),
    );

    /** The version and relay identity a challenge names, checked before we answer it. */
    const acceptable = (challenge: { version: number; relayIdentity: string }): boolean => {
      if (challenge.version < MIN_PROTOCOL_VERSION || challenge.version > MAX_PROTOCOL_VERSION) {
        fail(new RelayError('UNSUPPORTED_VERSION', `${url.href}: relay chose version ${challenge.version}`));
        return false;
      }
      const expected = options.expectRelayIdentity;
      if (expected !== undefined && challenge.relayIdentity !== expected) {
        // Refused before signing: our signature should only ever name the relay we meant.
        fail(
          new RelayError(
            ClientErrorCode.wrongRelay,
            `${url.href}: relay identity ${JSON.stringify(challenge.relayIdentity)} is not the expected ${JSON.stringify(expected)}`,
          ),
        );
        return false;
      }
      version = challenge.version;
      relayIdentity = challenge.relayIdentity;
      return true;
    };
    const onFrame = (frame: Frame): boolean => {
      if (frame.type === 'ERROR') {
        const fatal = (frame.flags & ErrorFlags.FATAL) !== 0;
        fail(new HandshakeError(errorCodeFromWire(frame.code), `${url.href}: relay refused: ${frame.message}`, fatal));
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
        return true;
      }
      if (step === 'challenge' && frame.type === 'CHALLENGE' && anonymous !== undefined) {
        // A relay that ignores the ANONYMOUS feature bit (an older version): we have no DID to offer.
        fail(new RelayError('ANON_DISABLED', `${url.href}: relay does not offer anonymous connections`));
        return false;
      }
      if (step === 'challenge' && frame.type === 'CHALLENGE' && identity !== undefined) {
        if (!acceptable(frame)) return false;
        const signature = identity.sign(authTranscript({ nonce: frame.nonce, relayIdentity, binding: url.binding }));
        transport.send(
          encodeFrame(
            { type: 'AUTH', keyType: 1, publicKey: identity.publicKey, signature, did: identity.did },
            version,
          ),
        );
        step = 'welcome';
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
        }),
      );
    } catch (error) {
      fail(asRelayError(url, error));
    }
  });
}

/** Codes after which retrying the same relay cannot succeed. */
export function isPermanentRefusal(error: RelayError): boolean {
  return error.code === 'AUTH_FAILED' || error.code === 'UNSUPPORTED_VERSION';
}
