/**
 * One connection of RelayClient: one authenticated transport link to a
 * relay node (the end-to-end sessions live in the SessionManager and outlast
 * it). The parts of the client key their per-connection state on this
 * record: the send window its in-flight count, the probes and the request
 * table what waits for an answer on it, the inbound side whether it leaves
 * frames unread on it, the link its liveness.
 *
 * `over` is set once, when the connection ends (ConnectionLoop's end(), the
 * only place that sets it), and never cleared: a part still holding the
 * record (a timer, a path update being sealed) sees that it must not write
 * on it any more. The connection loop drops its current connection at the
 * same moment, so `over` is true exactly for the records that are no longer
 * the current one.
 *
 * Types only: browser-safe.
 */
import type { GoawayFrame, RelayError } from '@libertaria/protocol';
import type { Welcome } from './handshake.js';
import type { Transport } from './transport.js';
import type { RelayUrl } from './url.js';

/** How a connection ended: what the connection loop does next depends on it. */
export interface ConnectionEnd {
  /** When the connection's WELCOME arrived (set by ConnectionLoop's end()). */
  startedAt?: number;
  error?: Error;
  goaway?: GoawayFrame;
  /** Replace the connection at once so the relay redelivers what was left unread. */
  resync?: boolean;
  /** The relay refused us for good (AUTH_FAILED after WELCOME). */
  refused?: RelayError;
}

export interface Connection {
  readonly url: RelayUrl;
  readonly transport: Transport;
  readonly version: number;
  readonly welcome: Welcome;
  readonly ended: Promise<ConnectionEnd>;
  readonly transportClosed: Promise<void>;
  resolveEnded: (end: ConnectionEnd) => void;
  over: boolean;
  inFlight: number;
  lastRx: number;
  lastTx: number;
  lastKeepalive: number;
  readonly startedAt: number;
  /** A durable frame was left unread on this connection: every later one is too, until it is replaced. */
  leavingUnread: boolean;
  timer: ReturnType<typeof setInterval> | undefined;
  /** Keepalive PINGs in flight (hex data → performance.now() at send), for RTT samples. */
  keepalives: Map<string, number>;
  /** The PING after RESUME on a new path: its PONG ends the migration (PING is a barrier on the relay). */
  migrationPing: string | undefined;
  /** performance.now() at which the newest answered keepalive PING was sent. */
  lastAnsweredPing: number | undefined;
}
