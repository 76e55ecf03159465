/**
 * In-memory limits of one node. They protect this node's CPU and sockets;
 * nothing here must survive the node, so Redis is not involved.
 */

/**
 * Failed handshakes per source address in a fixed one-minute window. Bounded:
 * at most `maxAddresses` windows are tracked; beyond that the oldest are
 * forgotten (an attacker with that many addresses is a job for the ingress).
 */
export class AuthFailureLimiter {
  private readonly windows = new Map<string, { start: number; failures: number }>();
  constructor(
    private readonly maxFailuresPerMinute: number,
    private readonly maxAddresses = 100_000,
    private readonly windowMs = 60_000,
  ) {}

  isBlocked(address: string, now = Date.now()): boolean {
    const w = this.windows.get(address);
    if (!w) return false;
    if (now - w.start >= this.windowMs) {
      this.windows.delete(address);
      return false;
    }
    return w.failures >= this.maxFailuresPerMinute;
  }

  recordFailure(address: string, now = Date.now()): void {
    const w = this.windows.get(address);
    if (w && now - w.start < this.windowMs) {
      w.failures++;
      return;
    }
    if (w) this.windows.delete(address);
    if (this.windows.size >= this.maxAddresses) {
      // Maps iterate in insertion order: the first key is the oldest window.
      const oldest = this.windows.keys().next().value;
      if (oldest !== undefined) this.windows.delete(oldest);
    }
    this.windows.set(address, { start: now, failures: 1 });
  }

  get trackedAddresses(): number {
    return this.windows.size;
  }
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
