/**
 * The timing of RelayClient's link (docs/client.md#delay-tolerance): the
 * round-trip estimate (rtt.ts) and the timeouts it stretches (ACK, PING,
 * presence and requests; the handshake), the handshake's own back-off
 * before anything was measured, the PING data and the keepalive PINGs whose
 * PONGs feed the estimate, and whether a late ACK means a stuck path or a
 * slower one. The connection loop decides what to do with the answers.
 *
 * Browser-safe: no Node-only imports.
 */
import type { Frame } from '@libertaria/protocol';
import { toHex } from './bytes.js';
import { CLIENT_DEFAULTS } from './client-types.js';
import { ClientErrorCode } from './codes.js';
import type { Connection } from './connection.js';
import { HandshakeError } from './handshake.js';
import { RttEstimator } from './rtt.js';

/** The first byte of a PING's data: the application's ping() or our keepalive. */
export const PING_APP = 0x01;
export const PING_KEEPALIVE = 0x02;

export interface LinkTimingOptions {
  /** RelayClientOptions.adaptiveTimeouts (default true). */
  adaptive: boolean;
  /** The floors: RelayClientOptions.ackTimeoutMs and handshakeTimeoutMs. */
  ackTimeoutMs: number;
  handshakeTimeoutMs: number;
  /** Cap on any adapted timeout. */
  maxTimeoutMs: number;
}

export class LinkTiming {
  readonly adaptive: boolean;
  readonly ackTimeoutFloor: number;
  readonly #handshakeTimeoutMs: number;
  readonly #maxTimeoutMs: number;
  readonly #rtt = new RttEstimator();
  /**
   * Doubles after each handshake that ran out of time, up to maxTimeoutMs,
   * and resets on success: before the first measurement nothing else tells
   * a 10 ms link from a light-minutes one (TCP backs off its SYN timer alike).
   */
  #handshakeStretch = 1;
  #pingCounter = 0;

  constructor(options: LinkTimingOptions) {
    this.adaptive = options.adaptive;
    this.ackTimeoutFloor = options.ackTimeoutMs;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs;
    this.#maxTimeoutMs = options.maxTimeoutMs;
  }

  /** The smoothed round trip (ms), once measured. */
  get srtt(): number | undefined {
    return this.#rtt.srtt;
  }

  /** The retransmission timeout of the estimate (ms). */
  get rto(): number {
    return this.#rtt.rto;
  }

  /** A round trip measured (a PONG, half a handshake). */
  sample(ms: number): void {
    this.#rtt.sample(ms);
  }

  /** The handshake timeout: the floor, stretched by the measured round trip and by earlier timeouts. */
  handshakeTimeout(): number {
    if (!this.adaptive) return this.#handshakeTimeoutMs;
    const floor = Math.min(this.#maxTimeoutMs, this.#handshakeTimeoutMs * this.#handshakeStretch);
    return this.#rtt.timeout(floor, 3, this.#maxTimeoutMs);
  }

  /** The ACK/PING/request timeout in force: the configured floor, stretched by the measured round trip. */
  ackTimeout(): number {
    return this.adaptive ? this.#rtt.timeout(this.ackTimeoutFloor, 2, this.#maxTimeoutMs) : this.ackTimeoutFloor;
  }

  /** A handshake completed in `ms`: HELLO → CHALLENGE → AUTH → WELCOME is two round trips (and a signature each side). */
  handshakeDone(ms: number): void {
    this.#rtt.sample(ms / 2);
    this.#handshakeStretch = 1;
  }

  /** A handshake failed: if our own timer ran out (not a relay's refusal), the next attempt gets longer. */
  handshakeFailed(error: unknown): void {
    const ours =
      !(error instanceof HandshakeError) && (error as { code?: string }).code === ClientErrorCode.handshakeTimeout;
    if (this.adaptive && ours) this.#handshakeStretch = Math.min(this.#handshakeStretch * 2, 1 << 20);
  }

  /** Fresh PING data: the kind, then a counter. */
  pingData(kind: number): Uint8Array {
    this.#pingCounter = (this.#pingCounter + 1) % 0x100000000;
    const data = new Uint8Array(8);
    data[0] = kind;
    const n = this.#pingCounter;
    data[4] = n >>> 24;
    data[5] = (n >>> 16) & 0xff;
    data[6] = (n >>> 8) & 0xff;
    data[7] = n & 0xff;
    return data;
  }

  /** A keepalive PING for `connection`, tracked for its RTT sample; the caller writes the frame. */
  keepalive(connection: Connection): Frame {
    const data = this.pingData(PING_KEEPALIVE);
    if (connection.keepalives.size >= CLIENT_DEFAULTS.maxTrackedKeepalives) connection.keepalives.clear();
    connection.keepalives.set(toHex(data), performance.now());
    return { type: 'PING', data };
  }

  /** A PONG on `connection` for the PING whose data has hex `key`: a keepalive's is a round-trip sample. */
  pong(connection: Connection, key: string): void {
    const sentAt = connection.keepalives.get(key);
    if (sentAt === undefined) return;
    connection.keepalives.delete(key);
    this.#rtt.sample(performance.now() - sentAt);
    connection.lastAnsweredPing = Math.max(connection.lastAnsweredPing ?? 0, sentAt);
  }

  /**
   * An ACK is late by the current RTT estimate (`sendAge` > ackTimeout): is the
   * path stuck, or did it just get slower (the estimate learns only from the
   * next PONG)? PING is a barrier on the relay, so a PONG for a PING sent
   * after the SEND means the ACK should have come first: stuck. A PING still
   * on its way means the link is slow: wait, up to 4 × the ACK limit (beyond,
   * a one-way partition: our frames no longer arrive). With no PING on its
   * way, one is sent now as the probe (through `write`).
   */
  ackIsOverdue(
    connection: Connection,
    sendAge: number,
    ackTimeout: number,
    write: (connection: Connection, frame: Frame) => boolean,
  ): boolean {
    if (!this.adaptive) return true;
    const perf = performance.now();
    if (connection.lastAnsweredPing !== undefined && perf - connection.lastAnsweredPing < sendAge) return true;
    let inFlight = false;
    for (const sentAt of connection.keepalives.values()) {
      if (perf - sentAt >= 4 * ackTimeout) return true;
      inFlight = true;
    }
    if (!inFlight) {
      const data = this.pingData(PING_KEEPALIVE);
      connection.keepalives.set(toHex(data), perf);
      connection.lastKeepalive = Date.now();
      write(connection, { type: 'PING', data });
    }
    return false;
  }
}
