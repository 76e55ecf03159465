/**
 * In-memory limits of one node. They protect this node's CPU and sockets;
 * nothing here must survive the node, so Redis is not involved.
 */

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
  take(now = Date.now()): boolean {
    if (this.tokens < 1) {
      const elapsed = now - this.last;
      if (elapsed > 0) {
        this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
        this.last = now;
      }
      if (this.tokens < 1) return false;
    }
    this.tokens--;
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
