/**
 * Round-trip time estimation for delay-tolerant timers (RFC 6298's
 * smoothed RTT and variance). The client feeds it PING/PONG round trips and
 * half of each handshake's duration (HELLO → WELCOME is two round trips), and
 * stretches its timers with it: a link with tens of seconds of one-way delay
 * must not look dead merely because answers take long.
 *
 *   first sample R:  srtt = R, rttvar = R / 2
 *   later samples:   rttvar = 3/4 rttvar + 1/4 |srtt - R|,  srtt = 7/8 srtt + 1/8 R
 *   rto            = srtt + max(10 ms, 4 rttvar)
 */
export class RttEstimator {
  #srtt: number | undefined;
  #rttvar = 0;
  #samples = 0;

  /** Adds a round trip of `ms` milliseconds (negative or non-finite samples are ignored). */
  sample(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    this.#samples++;
    if (this.#srtt === undefined) {
      this.#srtt = ms;
      this.#rttvar = ms / 2;
      return;
    }
    this.#rttvar = 0.75 * this.#rttvar + 0.25 * Math.abs(this.#srtt - ms);
    this.#srtt = 0.875 * this.#srtt + 0.125 * ms;
  }

  get samples(): number {
    return this.#samples;
  }

  /** Smoothed round trip in ms; undefined before the first sample. */
  get srtt(): number | undefined {
    return this.#srtt;
  }

  /** Retransmission-timeout style bound on one round trip; 0 before the first sample. */
  get rto(): number {
    if (this.#srtt === undefined) return 0;
    return this.#srtt + Math.max(10, 4 * this.#rttvar);
  }

  /**
   * A timeout for something that takes `roundTrips` round trips: `floorMs`
   * (the configured value) or, on a slower link, that many RTOs plus the
   * floor's worth of processing slack, whichever is larger; capped at `capMs`.
   */
  timeout(floorMs: number, roundTrips: number, capMs: number): number {
    return Math.min(capMs, Math.max(floorMs, Math.ceil(roundTrips * this.rto + floorMs / 2)));
  }
}
