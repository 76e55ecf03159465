/**
 * The run status RelayClient and MultipathSession share, and the part of
 * their shutdowns that is the same: one union, changed in one place (#move):
 *
 *   idle --connect()--> running --close()--> closed
 *     |                    `----gave up---> failed
 *     `--close()--> closed
 *
 * closed and failed are final. connect()'s promise is kept here: the first
 * connection resolves it, the shutdown rejects it (settleConnect). The
 * guards of the public methods read it: after close() an operation fails
 * CLIENT_CLOSED, after giving up with the failure, before connect() with
 * CONNECTION_FAILED. A durable send still pending when either stops rejects
 * through rejectUnacknowledged: the relay may or may not have stored it.
 *
 * Not here: RelayClient's link lifecycle (crypto/src/lifecycle.ts, which
 * says how the link is, not whether the client runs) and whether one
 * connection is over (connection.ts).
 *
 * Browser-safe: no Node-only imports.
 */
import { type LibertariaError, RelayError } from '@libertaria/protocol';
import { ClientErrorCode } from './codes.js';

export type RunState = 'idle' | 'running' | 'closed' | 'failed';

/** The moves #move allows; anything else is a bug in the caller. */
const NEXT: Readonly<Record<RunState, readonly RunState[]>> = {
  idle: ['running', 'closed', 'failed'],
  running: ['closed', 'failed'],
  closed: [],
  failed: [],
};

export class RunStatus {
  #state: RunState = 'idle';
  #failure: LibertariaError | undefined;
  #connected: Promise<void> | undefined;
  #resolveConnected: (() => void) | undefined;
  #rejectConnected: ((error: Error) => void) | undefined;
  /** What the errors call the thing that runs ('client', 'multipath session'). */
  readonly #name: string;

  constructor(name: string) {
    this.#name = name;
  }

  get state(): RunState {
    return this.#state;
  }

  get running(): boolean {
    return this.#state === 'running';
  }

  /** Closed or failed: nothing runs any more. */
  get ended(): boolean {
    return this.#state === 'closed' || this.#state === 'failed';
  }

  /** The error it gave up with (state failed). */
  get failure(): LibertariaError | undefined {
    return this.#failure;
  }

  /** What `operation` fails with after close() (CLIENT_CLOSED). */
  closedError(operation: string): RelayError {
    return new RelayError(ClientErrorCode.closed, `${operation}: the ${this.#name} is closed`);
  }

  /** Throws what `operation` meets once ended: CLIENT_CLOSED after close(), the failure after giving up. */
  throwIfEnded(operation: string): void {
    if (this.#state === 'closed') throw this.closedError(operation);
    if (this.#state === 'failed') throw this.#failure;
  }

  /** As throwIfEnded, and CONNECTION_FAILED before connect(). */
  throwIfNotRunning(operation: string): void {
    this.throwIfEnded(operation);
    if (this.#state === 'idle') throw new RelayError(ClientErrorCode.unreachable, `${operation}: call connect() first`);
  }

  /**
   * connect(): the promise of the first connection. The first call moves
   * idle → running and hands the new promise to `start` (which starts the
   * work); later calls get the same promise, or, once ended, a rejection.
   */
  connect(start: (connected: Promise<void>) => void): Promise<void> {
    if (this.#state === 'closed') return Promise.reject(this.closedError('connect'));
    if (this.#state === 'failed') return Promise.reject(this.#failure);
    if (this.#connected !== undefined) return this.#connected;
    this.#move('running');
    const connected = new Promise<void>((resolve, reject) => {
      this.#resolveConnected = resolve;
      this.#rejectConnected = reject;
    });
    this.#connected = connected;
    start(connected);
    return connected;
  }

  /** A connection is up: resolves connect()'s promise (the first time; later calls change nothing). */
  markConnected(): void {
    this.#resolveConnected?.();
  }

  /** close(): → closed. False when already ended (nothing to do). */
  close(): boolean {
    if (this.ended) return false;
    this.#move('closed');
    return true;
  }

  /** Giving up: → failed with `error`. False when already ended. */
  fail(error: LibertariaError): boolean {
    if (this.ended) return false;
    this.#move('failed');
    this.#failure = error;
    return true;
  }

  /** The first step of a shutdown: connect()'s promise, if still pending, rejects with `reason`. */
  settleConnect(reason: LibertariaError): void {
    this.#rejectConnected?.(reason);
    this.#resolveConnected = undefined;
    this.#rejectConnected = undefined;
  }

  #move(next: RunState): void {
    if (!NEXT[this.#state].includes(next)) {
      throw new Error(`run status: ${this.#state} -> ${next} is not a move (a bug)`);
    }
    this.#state = next;
  }
}

/** A durable send the relay has not acknowledged yet, as the shutdown sees it. */
export interface UnacknowledgedSend {
  readonly key: string;
  readonly reject: (error: Error) => void;
}

/**
 * The client or session stops: every send of `pending` rejects with
 * `reason`'s code, saying the relay may or may not have stored it (resend
 * with the same message id to find out), with `reason` as its cause
 * (MultipathSession tells a path that ended from a NACK by it); then
 * `pending` is emptied.
 */
export function rejectUnacknowledged<T extends UnacknowledgedSend>(
  pending: Map<string, T>,
  reason: LibertariaError,
): void {
  for (const entry of pending.values()) {
    entry.reject(
      new RelayError(
        reason.code,
        `message ${entry.key} not acknowledged (${reason.message}); it may or may not have been stored`,
        { cause: reason },
      ),
    );
  }
  pending.clear();
}
