/**
 * The client's request table: requests to the relay that one frame answers,
 * correlated by a random 16-byte request id. Prekeys (publish, fetch,
 * status), single-use ids (ONCE_CHECK), the membrane (grants, policy, audit)
 * and the bridge registry all go through it. The answer is the frame type
 * the request expects, or a NACK carrying the id (its code rejects the
 * request). Requests are not retried across reconnects: a lost connection
 * rejects those written on it, and one without an answer within the ACK
 * timeout rejects with TIMEOUT (the late answer is then dropped).
 *
 * Browser-safe: no Node-only imports.
 */
import {
  type AuditResultFrame,
  type BridgeInfoFrame,
  type ErrorCode,
  type GrantAcceptedFrame,
  type GrantRevokedFrame,
  type OnceResultFrame,
  type PolicyFrame,
  type PrekeyBundleFrame,
  type PrekeyStatusFrame,
  RelayError,
} from '@libertaria/protocol';
import { toHex } from './bytes.js';
import { ClientErrorCode } from './codes.js';

/** The frames that answer a request, each carrying the request's id. */
export type RequestAnswer =
  | PrekeyBundleFrame
  | PrekeyStatusFrame
  | OnceResultFrame
  | GrantAcceptedFrame
  | GrantRevokedFrame
  | PolicyFrame
  | AuditResultFrame
  | BridgeInfoFrame;

export type RequestAnswerType = RequestAnswer['type'];

interface PendingRequest<S> {
  /** The connection it was written on: only that one can answer it. */
  readonly session: S;
  readonly startedAt: number;
  /** The answer it expects: PREKEY_BUNDLE for a fetch, ONCE_RESULT for a single-use id, else PREKEY_STATUS; the membrane's answers. */
  readonly expects: RequestAnswerType;
  readonly operation: string;
  readonly resolve: (frame: RequestAnswer) => void;
  readonly reject: (error: Error) => void;
}

/** Pending requests by request id (hex); `S` is the client's connection record. */
export class RequestTable<S> {
  readonly #pending = new Map<string, PendingRequest<S>>();

  get size(): number {
    return this.#pending.size;
  }

  /**
   * Registers a request written (right after this call) on `session`; the
   * promise settles with its answer. Registered before the write, so a
   * write that fails and ends the connection rejects it.
   */
  add<K extends RequestAnswerType>(
    requestId: Uint8Array,
    session: S,
    operation: string,
    expects: K,
  ): Promise<Extract<RequestAnswer, { type: K }>> {
    return new Promise((resolve, reject) => {
      this.#pending.set(toHex(requestId), {
        session,
        startedAt: performance.now(),
        expects,
        operation,
        resolve: resolve as (frame: RequestAnswer) => void,
        reject,
      });
    });
  }

  /**
   * Settles the request `frame` answers: resolved when it is the expected
   * type, rejected (UNEXPECTED_FRAME) when not. False when nothing waits for
   * it (unsolicited, or a late answer to a request that timed out).
   */
  answer(frame: RequestAnswer): boolean {
    const key = toHex(frame.requestId);
    const pending = this.#pending.get(key);
    if (pending === undefined) return false;
    this.#pending.delete(key);
    if (frame.type === pending.expects) pending.resolve(frame);
    else {
      pending.reject(
        new RelayError(ClientErrorCode.unexpectedFrame, `${pending.operation}: relay answered with ${frame.type}`),
      );
    }
    return true;
  }

  /** A NACK whose messageId is a pending request's id rejects it with the NACK's code; false when none is. */
  refuse(requestId: Uint8Array, code: ErrorCode, message: string): boolean {
    const key = toHex(requestId);
    const pending = this.#pending.get(key);
    if (pending === undefined) return false;
    this.#pending.delete(key);
    pending.reject(new RelayError(code, `${pending.operation}: ${message || code}`));
    return true;
  }

  /** Rejects the requests written on `session` that have waited longer than `timeoutMs` (TIMEOUT). */
  expire(session: S, now: number, timeoutMs: number): void {
    this.#settle(
      (p) => p.session === session && now - p.startedAt > timeoutMs,
      (p) => new RelayError(ClientErrorCode.timeout, `${p.operation}: no answer within ${timeoutMs} ms`),
    );
  }

  /** `session` ended: its requests can get no answer (CONNECTION_FAILED, naming why). */
  connectionLost(session: S, lost: Error): void {
    this.#settle(
      (p) => p.session === session,
      (p) =>
        new RelayError(
          ClientErrorCode.unreachable,
          `${p.operation}: connection lost before the answer (${lost.message})`,
        ),
    );
  }

  /** The client stops: every request rejects with `reason`. */
  rejectAll(reason: Error): void {
    this.#settle(
      () => true,
      () => reason,
    );
  }

  /** Rejects and forgets the requests `match` selects. */
  #settle(match: (p: PendingRequest<S>) => boolean, error: (p: PendingRequest<S>) => Error): void {
    for (const [key, pending] of this.#pending) {
      if (!match(pending)) continue;
      this.#pending.delete(key);
      pending.reject(error(pending));
    }
  }
}
