/**
 * The stable error code the client SDK reports each of its own failures with.
 * Failures the relay reports (ERROR, NACK) keep the relay's code; this table
 * names the codes of failures that happen on the client side.
 */
import { type ErrorCode, LibertariaError, RelayError } from '@libertaria/protocol';

export const ClientErrorCode = {
  /** No transport could be opened, or the connection was lost. */
  unreachable: 'CONNECTION_FAILED',
  /** A PING or PRESENCE_QUERY got no answer in time. */
  timeout: 'TIMEOUT',
  /** The client was closed while the operation was pending. */
  closed: 'CLIENT_CLOSED',
  /** CHALLENGE/WELCOME did not arrive within handshakeTimeoutMs. */
  handshakeTimeout: 'AUTH_TIMEOUT',
  /** The relay named another identity than expectRelayIdentity, or assigned a hint that is not ours. */
  wrongRelay: 'AUTH_FAILED',
  /** A relay URL that cannot be used. */
  invalidUrl: 'INVALID_RELAY_URL',
  /** An argument the API does not accept (bad hint, ttl, id length, duplicate pending id). */
  invalidArgument: 'BAD_FIELD',
  /** The payload plus envelope exceeds the relay's maxPayload. */
  payloadTooLarge: 'FRAME_TOO_LARGE',
  /** Inbound fast frames dropped because the application did not consume messages(). */
  inboundOverflow: 'INBOUND_OVERFLOW',
  /** Outbound fast frames refused because the transport buffer is above its high-water mark. */
  outboundOverflow: 'SEND_QUEUE_OVERFLOW',
  /** The envelope's sender DID does not match the source hint the relay authenticated. */
  senderMismatch: 'SOURCE_MISMATCH',
  /** A frame that is not valid from a relay, or not in this state. */
  unexpectedFrame: 'UNEXPECTED_FRAME',
} as const satisfies Record<string, ErrorCode>;

/** Anything thrown, as an Error. */
export function toError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** Anything thrown, as a LibertariaError: ours pass through, others become `code` (CONNECTION_FAILED by default). */
export function toLibertariaError(
  error: unknown,
  what: string,
  code: ErrorCode = ClientErrorCode.unreachable,
): LibertariaError {
  if (error instanceof LibertariaError) return error;
  return new RelayError(code, `${what}: ${toError(error).message}`, { cause: error });
}
