/**
 * In-memory limits of one node. They protect this node's CPU and sockets;
 * nothing here must survive the node, so Redis is not involved.
 */

import { FrameType, type FrameTypeName } from '@libertaria/protocol';

/** Fixed one-minute windows of failure counts, at most `maxKeys` of them (the oldest forgotten first). */
class FailureWindows {
  private readonly windows = new Map<string, { start: number; failures: number }>();
  constructor(
    private readonly maxKeys: number,
    private readonly windowMs: number,
  ) {}

  count(key: string, now: number): number {
    const w = this.windows.get(key);
    if (!w) return 0;
    if (now - w.start >= this.windowMs) {
      this.windows.delete(key);
      return 0;
    }
    return w.failures;
  }

  record(key: string, now: number): void {
    const w = this.windows.get(key);
    if (w && now - w.start < this.windowMs) {
      w.failures++;
      return;
    }
    if (w) this.windows.delete(key);
    if (this.windows.size >= this.maxKeys) {
      // Maps iterate in insertion order: the first key is the oldest window.
      const oldest = this.windows.keys().next().value;
      if (oldest !== undefined) this.windows.delete(oldest);
    }
    this.windows.set(key, { start: now, failures: 1 });
  }

  get size(): number {
    return this.windows.size;
  }
}

export interface HandshakeFailureLimits {
  /** Failures of one DID from one address per minute before that pair is refused (RELAY_AUTH_FAILURES_PER_MINUTE). */
  perPeer: number;
  /**
   * Failures of any kind from one address per minute before the address is
   * refused to every DID that has not authenticated from it lately
   * (RELAY_AUTH_FAILURES_PER_ADDRESS_PER_MINUTE).
   */
  perAddress: number;
  /** Addresses (and address+DID pairs) tracked at most; the oldest are forgotten first. */
  maxAddresses?: number;
  /** DIDs remembered per address as having authenticated from it. */
  knownPeersPerAddress?: number;
  windowMs?: number;
}

/**
 * Failed handshakes, counted so that one abuser behind an address (a NAT, a
 * carrier-grade NAT, a shared proxy) does not lock out the honest peers
 * behind the same address:
 *
 * - Failures that name a DID (a bad AUTH) count against that DID at that
 *   address: after `perPeer` in a minute, that pair is refused.
 * - Every failure (bad AUTH, protocol violation, timeout, bad anonymous
 *   stamp) counts against the address too. After `perAddress` in a minute
 *   (a higher bound, which caps the signature checks one address can make
 *   the node do), the address is refused to anonymous connections and to
 *   DIDs new to it, but not to a DID that authenticated from it in the
 *   current or the previous window: the peers already living behind that
 *   address keep connecting.
 *
 * In memory and per node, bounded (`maxAddresses` windows of each kind,
 * `knownPeersPerAddress` DIDs each): an attacker with more addresses than
 * that is a job for the ingress.
 */
export class HandshakeFailureLimiter {
  private readonly peers: FailureWindows;
  private readonly addresses: FailureWindows;
  /** address -> DIDs that authenticated from it, in this window and the previous one. */
  private readonly known = new Map<string, { start: number; current: Set<string>; previous: Set<string> }>();
  private readonly maxAddresses: number;
  private readonly knownPerAddress: number;
  private readonly windowMs: number;

  constructor(private readonly limits: HandshakeFailureLimits) {
    this.maxAddresses = limits.maxAddresses ?? 100_000;
    this.knownPerAddress = limits.knownPeersPerAddress ?? 64;
    this.windowMs = limits.windowMs ?? 60_000;
    this.peers = new FailureWindows(this.maxAddresses, this.windowMs);
    this.addresses = new FailureWindows(this.maxAddresses, this.windowMs);
  }

  /** An address over its bound: refused to anonymous connections (no DID to tell peers apart). */
  addressBlocked(address: string, now = Date.now()): boolean {
    return this.addresses.count(address, now) >= this.limits.perAddress;
  }

  /** Whether an AUTH naming `did` from `address` is refused before its signature is checked. */
  peerBlocked(address: string, did: string, now = Date.now()): boolean {
    if (this.peers.count(pairKey(address, did), now) >= this.limits.perPeer) return true;
    return this.addressBlocked(address, now) && !this.isKnown(address, did, now);
  }

  recordFailure(address: string, did: string | undefined, now = Date.now()): void {
    this.addresses.record(address, now);
    if (did !== undefined) this.peers.record(pairKey(address, did), now);
  }

  /** `did` proved its key from `address`: it keeps connecting from there even while the address is over its bound. */
  recordSuccess(address: string, did: string, now = Date.now()): void {
    let k = this.known.get(address);
    if (k && now - k.start >= this.windowMs) {
      // A new window: the last one's DIDs are still known (previous), older ones not.
      const previous = now - k.start < 2 * this.windowMs ? k.current : new Set<string>();
      k = { start: now, current: new Set(), previous };
      this.known.set(address, k);
    }
    if (!k) {
      if (this.known.size >= this.maxAddresses) {
        const oldest = this.known.keys().next().value;
        if (oldest !== undefined) this.known.delete(oldest);
      }
      k = { start: now, current: new Set(), previous: new Set() };
      this.known.set(address, k);
    }
    if (k.current.size < this.knownPerAddress) k.current.add(did);
  }

  private isKnown(address: string, did: string, now: number): boolean {
    const k = this.known.get(address);
    if (!k) return false;
    const age = now - k.start;
    if (age < this.windowMs) return k.current.has(did) || k.previous.has(did);
    return age < 2 * this.windowMs && k.current.has(did);
  }

  get trackedAddresses(): number {
    return this.addresses.size;
  }
}

function pairKey(address: string, did: string): string {
  return `${address} ${did}`;
}

/** A token bucket: `ratePerSecond` sustained, `burst` at once. */
export class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    now = Date.now(),
  ) {
    this.tokens = burst;
    this.last = now;
  }
  /** Takes one token if the bucket holds it. */
  take(now = Date.now()): boolean {
    return this.spend(1, now);
  }

  /** Takes `cost` tokens (any positive number, fractions too) if the bucket holds them; else takes none. */
  spend(cost: number, now = Date.now()): boolean {
    if (this.tokens < cost) {
      const elapsed = now - this.last;
      if (elapsed > 0) {
        this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
        this.last = now;
      }
      if (this.tokens < cost) return false;
    }
    this.tokens -= cost;
    return true;
  }
}

/** A bounded count of things held at once (anonymous connections): take before, release after. */
export class ConcurrencyLimit {
  private held = 0;
  constructor(private readonly max: number) {}

  get active(): number {
    return this.held;
  }

  tryTake(): boolean {
    if (this.held >= this.max) return false;
    this.held++;
    return true;
  }

  release(): void {
    if (this.held > 0) this.held--;
  }
}

/**
 * Connections held open per source address on this node
 * (RELAY_CONNECTIONS_PER_ADDRESS; addresses as budgets.ts's addressKey
 * gives them, IPv6 by /64). Per node: a cluster-wide count would cost a Redis
 * round trip per connection and a cleanup when a node dies, and what it
 * protects (file descriptors, memory, handshake CPU) is per node too.
 * `max` 0: no limit, nothing tracked.
 */
export class ConnectionsPerAddress {
  private readonly held = new Map<string, number>();
  constructor(private readonly max: number) {}

  /** Takes a slot for `address`; false when it holds `max` already. */
  tryTake(address: string): boolean {
    if (this.max === 0) return true;
    const n = this.held.get(address) ?? 0;
    if (n >= this.max) return false;
    this.held.set(address, n + 1);
    return true;
  }

  /** Gives back a slot taken by tryTake. */
  release(address: string): void {
    if (this.max === 0) return;
    const n = this.held.get(address) ?? 0;
    if (n <= 1) this.held.delete(address);
    else this.held.set(address, n - 1);
  }

  /** Connections held by `address` (tests, metrics). */
  count(address: string): number {
    return this.held.get(address) ?? 0;
  }
}

/**
 * At most `max` holders at once; the others wait, in order (durable fetches
 * of one node: `acquire` before, `release` after, exactly once each).
 */
export class WaitingSlots {
  private held = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly max: number) {}

  get active(): number {
    return this.held;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Takes a slot if one is free, at once (no turn of the event loop): true if taken. */
  tryAcquire(): boolean {
    if (this.held >= this.max) return false;
    this.held++;
    return true;
  }

  acquire(): Promise<void> {
    if (this.held < this.max) {
      this.held++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    // The slot passes straight to the next waiter; otherwise it is free.
    if (next !== undefined) next();
    else if (this.held > 0) this.held--;
  }
}

/**
 * What each frame type an open connection sends costs from its control
 * budget (RELAY_RATE_CONTROL_PER_SECOND tokens a second, RELAY_RATE_CONTROL_BURST
 * at most), roughly in proportion to the work it makes the node do
 * (docs/relay.md#limits-and-backpressure). The one table of these costs.
 *
 * - SEND is not here: it has its own bucket on the hot path
 *   (RELAY_RATE_FRAMES_PER_SECOND / RELAY_RATE_BURST).
 * - ACK costs nothing while the connection has been written more durable
 *   frames than it acknowledged (each durable DELIVER written grants one
 *   ACK credit), so an SDK acknowledging every frame of a backlog drain,
 *   however fast, is never throttled. ACKs beyond the credit (frames
 *   delivered on an earlier connection and acknowledged on this one; at most
 *   the SDK's maxUnackedInbound, 4,096) cost ACK_UNCOVERED.
 * - Requests that also have their own per-minute bucket (prekeys, ONCE_CHECK,
 *   membrane requests) cost 1 here: this bounds their decoding, their own
 *   bucket the Redis work behind them.
 * - Frames a peer may never send once open (HELLO, DELIVER…) cost 1; they
 *   close the connection anyway.
 */
export const CONTROL_COSTS: Readonly<Record<Exclude<FrameTypeName, 'SEND'>, number>> = {
  PING: 1, // a PONG written back
  PONG: 1, // ignored
  ERROR: 1, // a log line at debug
  ACK: 0.25, // beyond the ACK credit; batched into one Redis script call per turn
  PRESENCE_QUERY: 4, // a Redis lookup when the peer is not on this node
  BRIDGE_QUERY: 2, // an in-memory lookup
  RESUME: 50, // a Redis ack-up-to plus a re-read of the queue from the given position
  MIGRATE: 50, // an Ed25519 verification and a pub/sub publish
  PREKEY_PUBLISH: 1, // also RELAY_PREKEY_PUBLISHES_PER_MINUTE
  PREKEY_STATUS_QUERY: 1, // also RELAY_PREKEY_PUBLISHES_PER_MINUTE
  PREKEY_FETCH: 1, // also RELAY_PREKEY_FETCHES_PER_MINUTE
  ONCE_CHECK: 1, // also RELAY_ONCE_CHECKS_PER_MINUTE
  GRANT_PRESENT: 1, // also RELAY_MEMBRANE_REQUESTS_PER_MINUTE
  GRANT_REVOKE: 1, // also RELAY_MEMBRANE_REQUESTS_PER_MINUTE
  POLICY_PUT: 1,
  POLICY_GET: 1,
  AUDIT_QUERY: 1,
  // Never valid from a peer once open: a fatal UNEXPECTED_FRAME follows.
  HELLO: 1,
  AUTH: 1,
  ANON_AUTH: 1,
  CHALLENGE: 1,
  ANON_CHALLENGE: 1,
  WELCOME: 1,
  DELIVER: 1,
  NACK: 1,
  PEER_PRESENT: 1,
  PEER_GONE: 1,
  GOAWAY: 1,
  PREKEY_BUNDLE: 1,
  PREKEY_STATUS: 1,
  ONCE_RESULT: 1,
  GRANT_ACCEPTED: 1,
  GRANT_REVOKED: 1,
  POLICY: 1,
  AUDIT_RESULT: 1,
  BRIDGE_INFO: 1,
};

/** CONTROL_COSTS by type byte (1 for bytes that name no frame: decoding refuses them). */
export const CONTROL_COST_BY_TYPE: Float64Array = (() => {
  const costs = new Float64Array(256).fill(1);
  for (const [name, cost] of Object.entries(CONTROL_COSTS)) costs[FrameType[name as FrameTypeName]] = cost;
  return costs;
})();

/**
 * Request frames whose body opens with a 16-byte request id: a refusal is a
 * NACK carrying that id (read from the raw bytes, no decode), so the
 * requester's promise settles; other frames are refused with a non-fatal ERROR.
 */
export const REQUEST_ID_FRAMES: Uint8Array = (() => {
  const flags = new Uint8Array(256);
  for (const name of [
    'PREKEY_PUBLISH',
    'PREKEY_FETCH',
    'PREKEY_STATUS_QUERY',
    'ONCE_CHECK',
    'GRANT_PRESENT',
    'GRANT_REVOKE',
    'POLICY_PUT',
    'POLICY_GET',
    'AUDIT_QUERY',
    'BRIDGE_QUERY',
  ] as const)
    flags[FrameType[name]] = 1;
  return flags;
})();
