/**
 * The error every bridge raises on purpose. `retryable` is what a queue worker
 * reads to decide between retrying with backoff and failing the job at once:
 * an unreachable foreign relay may come back, a malformed address never will.
 */
import { type ErrorCode, LibertariaError } from '../errors.js';

/** Codes whose cause may go away by itself; every other bridge error is final. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['BRIDGE_UNAVAILABLE', 'BRIDGE_CLOSED']);

export class BridgeError extends LibertariaError {
  /** True when trying the same operation again later may succeed. */
  readonly retryable: boolean;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(code, message, options);
    this.retryable = options?.retryable ?? RETRYABLE.has(code);
  }
}

/** A foreign identity URI that is malformed or names no supported network. */
export class ForeignIdentityError extends BridgeError {}
