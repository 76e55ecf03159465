/**
 * The error every bridge raises on purpose. `retryable` is what a queue worker
 * reads to decide between retrying with backoff and failing the job at once:
 * an unreachable foreign relay may come back, a malformed address never will.
 */
import { type ErrorCode, LibertariaError } from '@libertaria/protocol';

/** Codes whose cause may go away by itself; every other bridge error is final. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['BRIDGE_UNAVAILABLE', 'BRIDGE_CLOSED']);

export interface BridgeErrorOptions {
  cause?: unknown;
  retryable?: boolean;
  /**
   * The foreign network asked us to slow down (Nostr `rate-limited:`, HTTP
   * 429). The federation worker then pauses the bridge's whole outbound queue
   * and puts the job back without spending an attempt.
   */
  rateLimited?: boolean;
  /** How long the remote asked us to wait (e.g. from `Retry-After`); absent: the bridge's configured pause. */
  retryAfterMs?: number;
}

export class BridgeError extends LibertariaError {
  /** True when trying the same operation again later may succeed. */
  readonly retryable: boolean;
  readonly rateLimited: boolean;
  readonly retryAfterMs: number | undefined;
  constructor(code: ErrorCode, message: string, options?: BridgeErrorOptions) {
    super(code, message, options);
    this.retryable = options?.retryable ?? RETRYABLE.has(code);
    this.rateLimited = options?.rateLimited ?? false;
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/** A foreign identity URI that is malformed or names no supported network. */
export class ForeignIdentityError extends BridgeError {}
