/**
 * The session layer's error class. Codes live in ERROR_CODES (0x08xx block);
 * wire-format problems in session messages raise ProtocolError with the codec
 * codes instead, so a caller can tell "malformed bytes" from "bytes that
 * decoded but did not verify".
 */
import { type ErrorCode, LibertariaError } from '@libertaria/protocol';

/** A session handshake, message, ticket or state that is not acceptable. */
export class SessionError extends LibertariaError {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
