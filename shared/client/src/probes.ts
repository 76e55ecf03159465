/**
 * RelayClient's probes of the relay: application PINGs (ping(), answered by
 * the PONG echoing their data) and presence queries (presence(), answered
 * by PEER_PRESENT or a PEER_GONE with a zero messageId). Each is tied to the
 * connection it was written on: a lost connection rejects it
 * (CONNECTION_FAILED) and one without an answer within the ACK timeout
 * rejects with TIMEOUT. Keepalive PINGs are the connection's own business
 * and not kept here.
 *
 * Browser-safe: no Node-only imports.
 */
import { RelayError } from '@libertaria/protocol';
import { toHex } from './bytes.js';
import { ClientErrorCode } from './codes.js';

interface PendingPing<S> {
  readonly session: S;
  readonly startedAt: number;
  readonly resolve: (rtt: number) => void;
  readonly reject: (error: Error) => void;
}

interface PendingPresence<S> {
  readonly session: S;
  readonly startedAt: number;
  /** Timed out: kept until its late answer arrives, so that answer is not taken for a newer query's. */
  expired: boolean;
  readonly resolve: (present: boolean) => void;
  readonly reject: (error: Error) => void;
}

/** Application PINGs in flight, by the hex of their data; `S` is the client's connection record. */
export class PingTable<S> {
  readonly #pending = new Map<string, PendingPing<S>>();

  /** Registers a PING (written right after this call on `session`); resolves with the round trip in ms. */
  add(key: string, session: S): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.#pending.set(key, { session, startedAt: performance.now(), resolve, reject });
    });
  }

  /** A PONG: resolves the PING its data names and returns the round trip, or undefined when none waits. */
  answer(key: string): number | undefined {
    const ping = this.#pending.get(key);
    if (ping === undefined) return undefined;
    this.#pending.delete(key);
    const rtt = performance.now() - ping.startedAt;
    ping.resolve(rtt);
    return rtt;
  }

  /** Rejects the PINGs written on `session` that have waited longer than `timeoutMs` (TIMEOUT). */
  expire(session: S, now: number, timeoutMs: number): void {
    for (const [key, ping] of this.#pending) {
      if (ping.session === session && now - ping.startedAt > timeoutMs) {
        this.#pending.delete(key);
        ping.reject(new RelayError(ClientErrorCode.timeout, `ping: no PONG within ${timeoutMs} ms`));
      }
    }
  }

  /** `session` ended: its PINGs can get no PONG. */
  connectionLost(session: S, lost: Error): void {
    for (const [key, ping] of this.#pending) {
      if (ping.session !== session) continue;
      this.#pending.delete(key);
      ping.reject(new RelayError(ClientErrorCode.unreachable, `ping: connection lost before PONG (${lost.message})`));
    }
  }

  rejectAll(reason: Error): void {
    for (const ping of this.#pending.values()) ping.reject(reason);
    this.#pending.clear();
  }
}

/** Presence queries by the hex of the hint they ask about; PRESENCE_QUERY answers carry only the hint: queries per hint are answered in order. */
export class PresenceTable<S> {
  readonly #pending = new Map<string, PendingPresence<S>[]>();

  /** Registers a query for `hint` (written right after this call on `session`). */
  add(hint: Uint8Array, session: S): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      const key = toHex(hint);
      const list = this.#pending.get(key) ?? [];
      list.push({ session, startedAt: performance.now(), expired: false, resolve, reject });
      this.#pending.set(key, list);
    });
  }

  /** An answer for `hint`: settles its oldest query; false when none was pending (not even a timed-out one). */
  answer(hint: Uint8Array, present: boolean): boolean {
    const key = toHex(hint);
    const list = this.#pending.get(key);
    const first = list?.shift();
    if (list !== undefined && list.length === 0) this.#pending.delete(key);
    if (first !== undefined && !first.expired) first.resolve(present);
    return first !== undefined;
  }

  /** Rejects (TIMEOUT) the queries written on `session` that have waited longer than `timeoutMs`; they stay until answered. */
  expire(session: S, now: number, timeoutMs: number): void {
    for (const list of this.#pending.values()) {
      for (const p of list) {
        if (p.expired || p.session !== session || now - p.startedAt <= timeoutMs) continue;
        p.expired = true;
        p.reject(new RelayError(ClientErrorCode.timeout, `presence: no answer within ${timeoutMs} ms`));
      }
    }
  }

  /** `session` ended: its queries can get no answer. */
  connectionLost(session: S, lost: Error): void {
    this.#settle(
      (p) => p.session === session,
      () =>
        new RelayError(ClientErrorCode.unreachable, `presence: connection lost before the answer (${lost.message})`),
    );
  }

  rejectAll(reason: Error): void {
    this.#settle(
      () => true,
      () => reason,
    );
  }

  /** Rejects and forgets the presence queries `match` selects (their connection is gone: no answer can come). */
  #settle(match: (p: PendingPresence<S>) => boolean, error: () => Error): void {
    for (const [key, list] of this.#pending) {
      const keep = list.filter((p) => {
        if (!match(p)) return true;
        if (!p.expired) p.reject(error());
        return false;
      });
      if (keep.length === 0) this.#pending.delete(key);
      else this.#pending.set(key, keep);
    }
  }
}
