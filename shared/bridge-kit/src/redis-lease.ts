/**
 * Leases in Redis for the processes of one scaled-out bridge
 * (docs/bridges.md#running-several-processes). Node-only.
 *
 * - `RedisLeaseLock`: a per-key lock held as a lease (`SET key token NX PX`),
 *   renewed while the work runs, released by compare-and-delete. The token is
 *   the fence: writes made under the lock check it in the same script
 *   (`currentLease()` gives it to RedisSessionStore), so a process that
 *   stalled past its lease (a GC pause, a frozen VM) cannot overwrite what the
 *   next holder wrote.
 * - `RedisLeader`: one leader among the processes (the one holding the
 *   bridge's relay connection), elected and kept with the same kind of lease.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import type { RedisClient } from '@libertaria/redis';
import { BridgeError } from './errors.js';

/** Renews the lease when it is still ours. KEYS[1] lease; ARGV[1] token, ARGV[2] ttl ms. 1 renewed, 0 lost. */
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;
/** Deletes the lease when it is still ours. KEYS[1] lease; ARGV[1] token. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

export interface Lease {
  readonly key: string;
  readonly token: string;
}

const held = new AsyncLocalStorage<Lease>();

/** The lease the current async context runs under (inside RedisLeaseLock.run), if any. */
export function currentLease(): Lease | undefined {
  return held.getStore();
}

export type LeaseEvent = 'acquired' | 'waited' | 'busy' | 'lost' | 'error';

export interface RedisLeaseLockOptions {
  readonly redis: RedisClient;
  /** Lease length; renewed every third of it while the work runs. */
  readonly ttlMs: number;
  /** How long to wait for a busy lock before giving up with a retryable BRIDGE_UNAVAILABLE. */
  readonly waitMs: number;
  /** Called for each acquisition (after a wait or not), give-up, lost renewal and Redis error: metrics. */
  readonly onEvent?: (event: LeaseEvent) => void;
}

function unavailable(message: string, cause?: unknown): BridgeError {
  return new BridgeError('BRIDGE_UNAVAILABLE', message, { cause, retryable: true });
}

export class RedisLeaseLock {
  constructor(private readonly o: RedisLeaseLockOptions) {
    if (!Number.isSafeInteger(o.ttlMs) || o.ttlMs < 30) throw new RangeError('ttlMs: an integer of at least 30');
    if (!Number.isSafeInteger(o.waitMs) || o.waitMs < 0) throw new RangeError('waitMs: a non-negative integer');
  }

  /** Runs `work` holding the lease on `key`; writes fenced by `currentLease()` fail once it is lost. */
  async run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const token = randomBytes(16).toString('hex');
    const deadline = Date.now() + this.o.waitMs;
    let waited = false;
    let pause = 5;
    for (;;) {
      let ok: string | null;
      try {
        ok = await this.o.redis.set(key, token, 'PX', this.o.ttlMs, 'NX');
      } catch (err) {
        this.o.onEvent?.('error');
        throw unavailable(`cannot take the lease ${key}`, err);
      }
      if (ok === 'OK') break;
      if (Date.now() >= deadline) {
        this.o.onEvent?.('busy');
        throw unavailable(`the lease ${key} stayed busy for ${this.o.waitMs} ms`);
      }
      waited = true;
      // Short at first (locks are held for one seal or open, milliseconds), capped so a waiter does not hammer Redis.
      await new Promise((r) => setTimeout(r, pause + Math.random() * pause));
      pause = Math.min(pause * 2, 100);
    }
    this.o.onEvent?.(waited ? 'waited' : 'acquired');
    let lost = false;
    const renew = setInterval(
      () => {
        this.o.redis.eval(RENEW, 1, key, token, String(this.o.ttlMs)).then(
          (r) => {
            if (r === 0 && !lost) {
              lost = true;
              this.o.onEvent?.('lost');
            }
          },
          () => this.o.onEvent?.('error'),
        );
      },
      Math.max(10, Math.floor(this.o.ttlMs / 3)),
    );
    renew.unref();
    try {
      return await held.run({ key, token }, work);
    } finally {
      clearInterval(renew);
      await this.o.redis.eval(RELEASE, 1, key, token).catch(() => this.o.onEvent?.('error'));
    }
  }
}

export interface RedisLeaderOptions {
  readonly redis: RedisClient;
  readonly key: string;
  /** Lease length: a leader that stops renewing (killed, cut off) is replaced within about this. */
  readonly ttlMs: number;
  /** Called on every change; `leader` true when this process just became leader. May be async: changes are serialized. */
  readonly onChange: (leader: boolean) => void | Promise<void>;
  readonly onError?: (err: unknown) => void;
}

/**
 * Leader election by lease: every process tries `SET key token NX PX ttl`
 * every third of the ttl; the holder renews it. A leader whose renewal fails
 * (the key expired or is someone else's, or Redis is unreachable for longer
 * than the lease) steps down at once, so two leaders overlap at most by the
 * time a stalled process takes to notice.
 */
export class RedisLeader {
  readonly token = randomBytes(16).toString('hex');
  #leader = false;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #chain: Promise<void> = Promise.resolve();
  /** When the lease was last confirmed ours: without a renewal for a whole ttl we step down even if Redis is unreachable. */
  #confirmedAt = 0;

  constructor(private readonly o: RedisLeaderOptions) {
    if (!Number.isSafeInteger(o.ttlMs) || o.ttlMs < 300) throw new RangeError('ttlMs: an integer of at least 300');
  }

  get isLeader(): boolean {
    return this.#leader;
  }

  /** Tries once at once, then every third of the ttl. */
  async start(): Promise<void> {
    await this.#tick();
    this.#timer = setInterval(() => void this.#tick(), Math.floor(this.o.ttlMs / 3));
    this.#timer.unref();
  }

  #set(leader: boolean): Promise<void> {
    if (this.#leader === leader) return this.#chain;
    this.#leader = leader;
    this.#chain = this.#chain.then(async () => {
      try {
        await this.o.onChange(leader);
      } catch (err) {
        this.o.onError?.(err);
      }
    });
    return this.#chain;
  }

  async #tick(): Promise<void> {
    if (this.#stopped) return;
    try {
      if (this.#leader) {
        const renewed = await this.o.redis.eval(RENEW, 1, this.o.key, this.token, String(this.o.ttlMs));
        if (renewed === 1) this.#confirmedAt = Date.now();
        else await this.#set(false);
      } else {
        const ok = await this.o.redis.set(this.o.key, this.token, 'PX', this.o.ttlMs, 'NX');
        if (ok === 'OK' && !this.#stopped) {
          this.#confirmedAt = Date.now();
          await this.#set(true);
        }
      }
    } catch (err) {
      this.o.onError?.(err);
      // Cut off from Redis: the lease may have expired and another process taken over.
      if (this.#leader && Date.now() - this.#confirmedAt >= this.o.ttlMs) await this.#set(false);
    }
  }

  /** Stops campaigning; a leader releases its lease so another process takes over at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    const was = this.#leader;
    await this.#set(false);
    if (was) await this.o.redis.eval(RELEASE, 1, this.o.key, this.token).catch((err) => this.o.onError?.(err));
  }
}
