/**
 * Anonymous request/response through a relay (the seed's ephemeral
 * sessions): the requester reveals no DID and no key to the relay or to the
 * responder. It opens an anonymous connection (a proof-of-work stamp instead
 * of a signature), fetches the responder's prekey bundle (no one-time key is
 * consumed), seals one request to it with fresh ephemeral keys
 * (session/ephemeral.ts), sends it fast, waits for the one response and
 * closes. The relay sees an IP address, a random reply hint and ciphertext.
 *
 * Anonymous request envelope (the payload of that SEND):
 *
 *     offset  size  field
 *     0       1     kind        0x02 (a DID envelope starts with its version, 1)
 *     1       rest  request     an ephemeral request (docs/crypto.md#ephemeral-sessions)
 *
 * whose sealed plaintext is `u64 sentAtMs ‖ application bytes`: the
 * responder refuses requests older than ANON_REQUEST_MAX_AGE_MS (or further
 * ahead than ANON_REQUEST_SKEW_MS) and remembers the exchange's session id
 * for that long in a TicketStore (the relay cluster's ONCE_CHECK by default),
 * so a captured request cannot be replayed. The response travels back in an
 * ordinary DID envelope from the responder (so the requester checks that it
 * comes from the DID it asked), whose body is the ephemeral response.
 *
 * Browser-safe: no Node imports (the crypto provider is passed in).
 */

import { type CryptoProvider, EphemeralSession } from '@libertaria/crypto';
import { hintFromDid } from '@libertaria/identity';
import {
  concatBytes,
  encodeFrame,
  errorCodeFromWire,
  type Frame,
  ID_SIZE,
  LibertariaError,
  RelayError,
} from '@libertaria/protocol';
import { bytesEqual, copyBytes, randomBytes } from './bytes.js';
import { ClientErrorCode } from './codes.js';
import { checkEnvelopeSender, decodeEnvelope } from './envelope.js';
import { DEFAULT_MAX_POW_BITS, performHandshake } from './handshake.js';
import type { TlsClientOptions } from './transport.js';
import { parseRelayUrls } from './url.js';

export const ANONYMOUS_REQUEST_KIND = 0x02;
/** A responder refuses anonymous requests sent longer ago than this. */
export const ANON_REQUEST_MAX_AGE_MS = 5 * 60 * 1000;
/** …or stamped further in the future than this (clock skew). */
export const ANON_REQUEST_SKEW_MS = 30 * 1000;
/** How long a responder's replay guard remembers a request: its whole acceptance window. */
export const ANON_REQUEST_RETENTION_MS = ANON_REQUEST_MAX_AGE_MS + 2 * ANON_REQUEST_SKEW_MS;

export interface AnonymousRequestOptions {
  /** Relay URLs, tried in order until one accepts the anonymous connection. */
  relays: string | readonly string[];
  /** The responder's DID; its prekey bundle must verify against it. */
  to: string;
  payload: Uint8Array;
  provider: CryptoProvider;
  /** Whole request: connect, proof of work, fetch, send and response (default 30 s). */
  timeoutMs?: number;
  /** Refuse relays that ask for more proof of work than this (default 24 bits). */
  maxPowBits?: number;
  tls?: TlsClientOptions;
  clock?: () => number;
}

export interface AnonymousResponse {
  payload: Uint8Array;
  /** The relay node that carried the exchange, and the proof of work it asked for. */
  nodeId: string;
  powBits: number;
}

/** The sealed plaintext of an anonymous request: u64 sentAtMs ‖ application bytes. */
export function encodeAnonymousPlaintext(sentAtMs: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, Math.floor(sentAtMs / 0x100000000));
  view.setUint32(4, sentAtMs >>> 0);
  out.set(payload, 8);
  return out;
}

/** Splits the plaintext and checks its freshness; SESSION_EXPIRED when out of the window. */
export function decodeAnonymousPlaintext(plaintext: Uint8Array, nowMs: number): Uint8Array {
  if (plaintext.length < 8) throw new RelayError('TRUNCATED', 'anonymous request: shorter than its timestamp');
  const view = new DataView(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength);
  const sentAt = view.getUint32(0) * 0x100000000 + view.getUint32(4);
  if (sentAt < nowMs - ANON_REQUEST_MAX_AGE_MS || sentAt > nowMs + ANON_REQUEST_SKEW_MS) {
    throw new RelayError('SESSION_EXPIRED', `anonymous request sent at ${sentAt} is outside the acceptance window`);
  }
  return plaintext.subarray(8);
}

/**
 * Sends one anonymous request and resolves with the response. Rejects with a
 * RelayError: ANON_DISABLED / ANON_TOO_COSTLY / ANON_BAD_STAMP (no relay
 * would take the connection), PREKEY_NOT_FOUND (the responder never published
 * prekeys), PEER_GONE (the responder is connected nowhere: anonymous requests
 * are never stored), TIMEOUT, or what the relay NACKed.
 */
export async function anonymousRequest(options: AnonymousRequestOptions): Promise<AnonymousResponse> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const clock = options.clock ?? Date.now;
  const deadline = Date.now() + timeoutMs;
  const destHint = hintFromDid(options.to);
  let lastError: RelayError | undefined;
  for (const url of parseRelayUrls(options.relays)) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    let handshake: Awaited<ReturnType<typeof performHandshake>>;
    try {
      handshake = await performHandshake(url, {
        anonymous: { maxPowBits: options.maxPowBits ?? DEFAULT_MAX_POW_BITS },
        timeoutMs: remaining,
        tls: options.tls,
      });
    } catch (error) {
      lastError = error instanceof RelayError ? error : new RelayError(ClientErrorCode.unreachable, String(error));
      continue;
    }
    const { transport, version, welcome } = handshake;
    // Once a relay took the connection, its answer is final: a refusal of the request would not improve elsewhere.
    return await new Promise<AnonymousResponse>((resolve, reject) => {
      const fetchId = randomBytes(ID_SIZE);
      const messageId = randomBytes(ID_SIZE);
      let session: EphemeralSession | undefined;
      const timer = setTimeout(
        () => finish(new RelayError(ClientErrorCode.timeout, `anonymous request: no response within ${timeoutMs} ms`)),
        Math.max(0, deadline - Date.now()),
      );
      const finish = (error: Error | undefined, response?: Uint8Array): void => {
        clearTimeout(timer);
        transport.onFrames = undefined;
        transport.onClose = undefined;
        session?.destroy();
        transport.close();
        if (error !== undefined) reject(error);
        else resolve({ payload: response!, nodeId: welcome.nodeId, powBits: handshake.anonymous?.powBits ?? 0 });
      };
      const write = (frame: Frame): void => transport.send(encodeFrame(frame, version));
      const onFrame = (frame: Frame): void => {
        switch (frame.type) {
          case 'PREKEY_BUNDLE': {
            if (!bytesEqual(frame.requestId, fetchId) || session !== undefined) return;
            const sealed = EphemeralSession.request({
              provider: options.provider,
              peerDid: options.to,
              bundle: frame.bundle,
              payload: encodeAnonymousPlaintext(clock(), options.payload),
              ttlMs: Math.max(1, deadline - Date.now()),
              clock,
            });
            session = sealed.session;
            const payload = concatBytes([Uint8Array.of(ANONYMOUS_REQUEST_KIND), sealed.request]);
            if (payload.length > welcome.maxPayload) {
              finish(
                new RelayError(
                  ClientErrorCode.invalidArgument,
                  `anonymous request of ${payload.length} bytes exceeds the relay's ${welcome.maxPayload}`,
                ),
              );
              return;
            }
            write({
              type: 'SEND',
              dest: destHint,
              source: welcome.hint,
              sessionId: session.sessionId,
              messageId,
              flags: 0,
              ttl: 0,
              position: 0,
              payload,
            });
            return;
          }
          case 'DELIVER': {
            if (session === undefined || !bytesEqual(frame.sessionId, session.sessionId)) return;
            const envelope = decodeEnvelope(frame.payload);
            if (envelope.senderDid !== options.to) return;
            checkEnvelopeSender(envelope, frame.source);
            finish(undefined, session.openResponse(envelope.body));
            return;
          }
          case 'NACK':
            finish(new RelayError(errorCodeFromWire(frame.code), `anonymous request: relay refused: ${frame.message}`));
            return;
          case 'PEER_GONE':
            if (bytesEqual(frame.messageId, messageId)) {
              finish(new RelayError('PEER_GONE', `anonymous request: ${options.to} is connected nowhere`));
            }
            return;
          case 'PING':
            write({ type: 'PONG', data: frame.data });
            return;
          case 'GOAWAY':
            finish(new RelayError('DRAINING', `anonymous request: relay closed the connection: ${frame.reason}`));
            return;
          case 'ERROR':
            finish(new RelayError(errorCodeFromWire(frame.code), `anonymous request: ${frame.message}`));
            return;
          default:
            return;
        }
      };
      transport.onFrames = (frames) => {
        for (const frame of frames) {
          try {
            onFrame(frame);
          } catch (error) {
            finish(error instanceof LibertariaError ? error : new RelayError('INTERNAL', String(error)));
            return;
          }
        }
      };
      transport.onClose = (error) =>
        finish(
          new RelayError(
            ClientErrorCode.unreachable,
            `anonymous request: connection closed${error ? ` (${error.message})` : ''}`,
          ),
        );
      for (const frame of handshake.leftover) onFrame(frame);
      write({ type: 'PREKEY_FETCH', requestId: fetchId, hint: copyBytes(destHint) });
    });
  }
  throw lastError ?? new RelayError(ClientErrorCode.unreachable, 'anonymous request: no relay given');
}
