/**
 * A SessionStore in Redis (docs/bridges.md#running-several-processes), so
 * that every process of a scaled-out bridge works on the same sessions,
 * prekeys and opened messages. Node-only.
 *
 * Keys, under the federation prefix's `{…}` hash tag (one slot: the fenced
 * writes touch a lease and a record in one script):
 *
 *   <prefix>:sessions:<scope>:r:<name>          the record's bytes
 *   <prefix>:sessions:<scope>:names:<family>    set of the names of a family (the name up to its first '-'), for list()
 *   <prefix>:sessions:<scope>:families          set of the families (prekeys, otk, session, replay)
 *   <prefix>:sessions:<scope>:lock:<key hash>   per-peer leases (RedisLeaseLock)
 *
 * - `take` is one script (GET, DEL, SREM): a one-time prekey goes to exactly
 *   one caller across every process.
 * - Writes (`put`, `delete`) made inside `lock()` are fenced: the script
 *   writes only while the lease's token is still the one in Redis, else
 *   BRIDGE_LEASE_LOST (retryable); the SessionManager that called it fails
 *   the seal or open, and the job is retried from what the store holds.
 * - Any Redis failure is BRIDGE_UNAVAILABLE (retryable): a job retries rather
 *   than failing for good because Redis blinked.
 * - With `sealKey`, every value is sealed (AES-256-GCM, the record's key name
 *   as associated data): session records hold ratchet keys and opened
 *   messages' plaintext, which the cluster's Redis must not see in clear. A
 *   value that does not open is SESSION_STATE_INVALID.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { SessionStore } from '@libertaria/client';
import { LibertariaError } from '@libertaria/protocol';
import type { RedisClient } from '@libertaria/redis';
import { BridgeError } from './errors.js';
import { currentLease, type LeaseEvent, RedisLeaseLock } from './redis-lease.js';

const NAME = /^[a-z0-9-]+$/;

/**
 * KEYS[1] record, KEYS[2] names set, KEYS[3] families set, KEYS[4] lease
 * (absent: unfenced); ARGV[1] value, ARGV[2] name, ARGV[3] token, ARGV[4]
 * 'put' or 'del', ARGV[5] the name's family. 1 written, 0 the lease is not
 * ours (nothing written).
 */
const WRITE = `
if #KEYS == 4 and redis.call('GET', KEYS[4]) ~= ARGV[3] then return 0 end
if ARGV[4] == 'del' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('SADD', KEYS[3], ARGV[5])
end
return 1
`;

/** KEYS[1] record, KEYS[2] names set; ARGV[1] name. The value, or nil; removed either way. */
const TAKE = `
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
end
return v
`;

export interface RedisSessionStoreOptions {
  readonly redis: RedisClient;
  /** Key prefix with a `{…}` hash tag on a Cluster (the federation prefix). */
  readonly prefix: string;
  /** Whose state this is: the bridge's routing hint (hex), so two bridges on one Redis never mix. */
  readonly scope: string;
  /** Per-peer lease length (renewed while held). Default 10 s. */
  readonly lockTtlMs?: number;
  /** Wait for a busy per-peer lease before the operation fails (retryable). Default 30 s. */
  readonly lockWaitMs?: number;
  readonly onLockEvent?: (event: LeaseEvent) => void;
  /** 32 bytes: values are sealed under it (BridgeFederation derives it from the bridge's identity seed). */
  readonly sealKey?: Uint8Array;
}

const NONCE = 12;
const TAG = 16;

function checkName(name: string): string {
  if (!NAME.test(name)) throw new RangeError(`bad record name ${JSON.stringify(name)}`);
  return name;
}

function family(name: string): string {
  const dash = name.indexOf('-');
  return dash < 0 ? name : name.slice(0, dash);
}

function unavailable(err: unknown): BridgeError {
  if (err instanceof BridgeError) return err;
  return new BridgeError('BRIDGE_UNAVAILABLE', `the session store in Redis failed: ${(err as Error)?.message}`, {
    cause: err,
    retryable: true,
  });
}

export class RedisSessionStore implements SessionStore {
  readonly base: string;
  readonly #redis: RedisClient;
  readonly #lock: RedisLeaseLock;
  readonly #sealKey: Buffer | undefined;

  constructor(options: RedisSessionStoreOptions) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(options.scope)) throw new RangeError('scope: 1-64 of A-Z a-z 0-9 _ -');
    this.#redis = options.redis;
    this.base = `${options.prefix}:sessions:${options.scope}`;
    if (options.sealKey !== undefined && options.sealKey.length !== 32) throw new RangeError('sealKey: 32 bytes');
    this.#sealKey = options.sealKey === undefined ? undefined : Buffer.from(options.sealKey);
    this.#lock = new RedisLeaseLock({
      redis: options.redis,
      ttlMs: options.lockTtlMs ?? 10_000,
      waitMs: options.lockWaitMs ?? 30_000,
      ...(options.onLockEvent ? { onEvent: options.onLockEvent } : {}),
    });
  }

  #seal(name: string, value: Uint8Array): Buffer {
    const plain = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    if (this.#sealKey === undefined) return plain;
    const nonce = randomBytes(NONCE);
    const cipher = createCipheriv('aes-256-gcm', this.#sealKey, nonce, { authTagLength: TAG });
    cipher.setAAD(Buffer.from(`${this.base}\n${name}`, 'utf8'));
    return Buffer.concat([nonce, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
  }

  #open(name: string, raw: Buffer): Uint8Array {
    if (this.#sealKey === undefined) return new Uint8Array(raw);
    try {
      if (raw.length < NONCE + TAG) throw new RangeError('too short');
      const decipher = createDecipheriv('aes-256-gcm', this.#sealKey, raw.subarray(0, NONCE), { authTagLength: TAG });
      decipher.setAAD(Buffer.from(`${this.base}\n${name}`, 'utf8'));
      decipher.setAuthTag(raw.subarray(raw.length - TAG));
      return new Uint8Array(Buffer.concat([decipher.update(raw.subarray(NONCE, raw.length - TAG)), decipher.final()]));
    } catch (err) {
      throw new LibertariaError(
        'SESSION_STATE_INVALID',
        `session record ${name} does not open under this bridge's key`,
        {
          cause: err,
        },
      );
    }
  }

  #record(name: string): string {
    return `${this.base}:r:${checkName(name)}`;
  }

  #names(name: string): string {
    return `${this.base}:names:${family(name)}`;
  }

  /** The lease key of a lock key (a peer DID, `prekeys`): hashed, so any DID makes a short, safe key. */
  lockKey(key: string): string {
    return `${this.base}:lock:${createHash('sha256').update(key).digest('hex').slice(0, 32)}`;
  }

  /** SessionManagerOptions.lock: `work` runs holding this store's lease on `key`, and its writes are fenced by it. */
  lock = <T>(key: string, work: () => Promise<T>): Promise<T> => this.#lock.run(this.lockKey(key), work);

  async get(name: string): Promise<Uint8Array | undefined> {
    const key = this.#record(name);
    try {
      const value = await this.#redis.getBuffer(key);
      return value === null ? undefined : this.#open(name, value);
    } catch (err) {
      if (err instanceof LibertariaError) throw err;
      throw unavailable(err);
    }
  }

  async #write(name: string, value: Uint8Array | undefined): Promise<void> {
    const lease = currentLease();
    const keys = [this.#record(name), this.#names(name), `${this.base}:families`];
    if (lease !== undefined) keys.push(lease.key);
    let written: unknown;
    try {
      written = await this.#redis.eval(
        WRITE,
        keys.length,
        ...keys,
        value === undefined ? '' : this.#seal(name, value),
        name,
        lease?.token ?? '',
        value === undefined ? 'del' : 'put',
        family(name),
      );
    } catch (err) {
      throw unavailable(err);
    }
    if (written !== 1) {
      throw new BridgeError('BRIDGE_LEASE_LOST', `the lease on ${lease?.key} expired before ${name} was written`, {
        retryable: true,
      });
    }
  }

  put(name: string, value: Uint8Array): Promise<void> {
    return this.#write(name, value);
  }

  delete(name: string): Promise<void> {
    return this.#write(name, undefined);
  }

  async take(name: string): Promise<Uint8Array | undefined> {
    const keys = [this.#record(name), this.#names(name)];
    try {
      const value = (await this.#redis.callBuffer('EVAL', TAKE, 2, ...keys, name)) as Buffer | null;
      return value === null ? undefined : this.#open(name, value);
    } catch (err) {
      if (err instanceof LibertariaError) throw err;
      throw unavailable(err);
    }
  }

  async list(prefix: string): Promise<string[]> {
    try {
      const families =
        prefix.includes('-') || prefix === ''
          ? prefix === ''
            ? await this.#families()
            : [family(prefix)]
          : (await this.#families()).filter((f) => f.startsWith(prefix));
      const out: string[] = [];
      for (const f of families) {
        let cursor = '0';
        do {
          const [next, names] = await this.#redis.sscan(`${this.base}:names:${f}`, cursor, 'COUNT', 1000);
          cursor = next;
          for (const n of names) if (n.startsWith(prefix)) out.push(n);
        } while (cursor !== '0');
      }
      return [...new Set(out)].sort();
    } catch (err) {
      throw unavailable(err);
    }
  }

  /** The families ever written (a handful: prekeys, otk, session, replay). */
  async #families(): Promise<string[]> {
    return this.#redis.smembers(`${this.base}:families`);
  }
}
