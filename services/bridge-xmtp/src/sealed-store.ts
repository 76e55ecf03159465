/**
 * Secrets of bridged identities, sealed under a key-encryption key (KEK) in
 * Redis, shared by every replica of the bridge.
 *
 * `SealedStore` is the API of bridge-kit's `RedisSealedStore`
 * (`@libertaria/bridge-kit/worker`, being written in parallel); this bridge
 * codes against that interface only. `InterimRedisSealedStore` implements the
 * same API until that lands on main, and is then deleted in favour of it
 * (service.ts builds the store in one place).
 *
 * Each record: `meta` in clear (address, inbox id: what lookups need), the
 * secret sealed with AES-256-GCM under the KEK, with associated data binding
 * it to its namespace, id and meta, so a record moved to another id or edited
 * no longer opens. `getOrCreate` is atomic across processes (one Lua script):
 * two replicas bridging one DID at once get the same record, and a `unique`
 * value (an address) already held by another id is refused with
 * `BRIDGE_IDENTITY_CONFLICT`.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { BridgeError } from '@libertaria/bridge-kit';
import type { RedisClient } from '@libertaria/redis';

export type SealedMeta = Record<string, string | number>;

export interface SealedRecord {
  readonly id: string;
  readonly meta: SealedMeta;
  readonly secret: Uint8Array;
  readonly createdAt: number;
}

/** The API of bridge-kit's RedisSealedStore, as far as this bridge uses it. */
export interface SealedStore {
  get(id: string): Promise<SealedRecord | undefined>;
  getOrCreate(
    id: string,
    make: () => { meta: SealedMeta; secret: Uint8Array },
    options?: { unique?: Record<string, string> },
  ): Promise<{ record: SealedRecord; created: boolean }>;
  findBy(index: string, value: string): Promise<string | undefined>;
  count(): Promise<number>;
}

export interface SealedStoreOptions {
  readonly redis: RedisClient;
  /** 32 bytes. */
  readonly kek: Uint8Array;
  /** Keeps the records of one bridge apart from another's (`xmtp`). */
  readonly namespace: string;
  /** Key prefix; a `{…}` hash tag keeps a namespace in one Redis Cluster slot. */
  readonly prefix?: string;
  /** Most records; one more fails with BRIDGE_IDENTITY_LIMIT. */
  readonly maxRecords?: number;
}

const NONCE = 12;
const TAG = 16;

// KEYS[1] records hash, KEYS[2..] unique index hashes; ARGV[1] id, ARGV[2] record JSON,
// ARGV[3] max records, ARGV[4..] the unique values (same order as KEYS[2..]).
// Returns {0, json} existing, {1} created, {2, n} the n-th unique value is taken, {3} full.
const GET_OR_CREATE = `
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return {0, existing} end
for i = 2, #KEYS do
  local owner = redis.call('HGET', KEYS[i], ARGV[i + 2])
  if owner and owner ~= ARGV[1] then return {2, i - 1} end
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return {3} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
for i = 2, #KEYS do redis.call('HSET', KEYS[i], ARGV[i + 2], ARGV[1]) end
return {1}
`;

interface Stored {
  meta: SealedMeta;
  sealed: string;
  createdAt: number;
}

function storeError(message: string, cause?: unknown): BridgeError {
  return new BridgeError('BRIDGE_KEY_STORE', message, { cause, retryable: false });
}

export class InterimRedisSealedStore implements SealedStore {
  private readonly recordsKey: string;
  private readonly maxRecords: number;

  private constructor(private readonly o: SealedStoreOptions) {
    const prefix = o.prefix ?? '{lr-bridge}';
    this.recordsKey = `${prefix}:sealed:${o.namespace}:records`;
    this.maxRecords = o.maxRecords ?? 1_000_000;
  }

  static async open(options: SealedStoreOptions): Promise<InterimRedisSealedStore> {
    if (options.kek.length !== 32) throw storeError('the key-encryption key is 32 bytes');
    const store = new InterimRedisSealedStore({ ...options, kek: Uint8Array.from(options.kek) });
    // A wrong KEK fails at start, not at the first message: open one record if there is any.
    const [, first] = await options.redis.hscan(store.recordsKey, '0', 'COUNT', 1);
    if (first[0] !== undefined && first[1] !== undefined) store.decode(first[0], first[1]);
    return store;
  }

  private indexKey(index: string): string {
    return `${this.recordsKey.slice(0, -'records'.length)}idx:${index}`;
  }

  private aad(id: string, meta: SealedMeta): Buffer {
    return Buffer.from(`libertaria sealed record v1\n${this.o.namespace}\n${id}\n${JSON.stringify(meta)}`, 'utf8');
  }

  private decode(id: string, json: string): SealedRecord {
    let stored: Stored;
    try {
      stored = JSON.parse(json) as Stored;
    } catch (err) {
      throw storeError(`the sealed record ${id} is not JSON`, err);
    }
    const raw = Buffer.from(String(stored.sealed), 'base64');
    if (raw.length < NONCE + TAG) throw storeError(`the sealed record ${id} is too short`);
    const decipher = createDecipheriv('aes-256-gcm', this.o.kek, raw.subarray(0, NONCE), { authTagLength: TAG });
    decipher.setAAD(this.aad(id, stored.meta));
    decipher.setAuthTag(raw.subarray(raw.length - TAG));
    try {
      const secret = Buffer.concat([decipher.update(raw.subarray(NONCE, raw.length - TAG)), decipher.final()]);
      return { id, meta: stored.meta, secret: new Uint8Array(secret), createdAt: stored.createdAt };
    } catch (err) {
      throw storeError(`the record ${id} does not open under this key-encryption key (wrong KEK, or altered)`, err);
    }
  }

  async get(id: string): Promise<SealedRecord | undefined> {
    const json = await this.o.redis.hget(this.recordsKey, id);
    return json === null ? undefined : this.decode(id, json);
  }

  async getOrCreate(
    id: string,
    make: () => { meta: SealedMeta; secret: Uint8Array },
    options: { unique?: Record<string, string> } = {},
  ): Promise<{ record: SealedRecord; created: boolean }> {
    const existing = await this.get(id);
    if (existing) return { record: existing, created: false };
    const { meta, secret } = make();
    const nonce = randomBytes(NONCE);
    const cipher = createCipheriv('aes-256-gcm', this.o.kek, nonce, { authTagLength: TAG });
    cipher.setAAD(this.aad(id, meta));
    const body = Buffer.concat([cipher.update(secret), cipher.final()]);
    const stored: Stored = {
      meta,
      createdAt: Date.now(),
      sealed: Buffer.concat([nonce, body, cipher.getAuthTag()]).toString('base64'),
    };
    const unique = Object.entries(options.unique ?? {});
    const reply = (await this.o.redis.eval(
      GET_OR_CREATE,
      1 + unique.length,
      this.recordsKey,
      ...unique.map(([index]) => this.indexKey(index)),
      id,
      JSON.stringify(stored),
      String(this.maxRecords),
      ...unique.map(([, value]) => value),
    )) as [number, string | number | undefined];
    switch (reply[0]) {
      case 0:
        // Another process created it first: theirs is the record; ours was never stored.
        secret.fill(0);
        return { record: this.decode(id, String(reply[1])), created: false };
      case 1:
        return { record: { id, meta, secret, createdAt: stored.createdAt }, created: true };
      case 2: {
        const [index, value] = unique[Number(reply[1]) - 1] ?? ['?', '?'];
        throw new BridgeError('BRIDGE_IDENTITY_CONFLICT', `${index} ${value} already belongs to another record`);
      }
      default:
        throw new BridgeError('BRIDGE_IDENTITY_LIMIT', `the store holds its maximum of ${this.maxRecords} records`);
    }
  }

  async findBy(index: string, value: string): Promise<string | undefined> {
    return (await this.o.redis.hget(this.indexKey(index), value)) ?? undefined;
  }

  async count(): Promise<number> {
    return this.o.redis.hlen(this.recordsKey);
  }
}
