/**
 * Secrets of bridged identities sealed in Redis, shared by every process of
 * a bridge (docs/bridges.md#sealed-records-in-redis). Node-only
 * (`@libertaria/bridge-kit/worker`).
 *
 * A record is an id (a DID), public metadata kept in clear (a public key, a
 * handle, …) and one secret sealed with AES-256-GCM under the
 * key-encryption key (KEK). The associated data binds the namespace, the id,
 * the metadata and the creation time: a record copied onto another id or into
 * another store, or edited, no longer opens.
 *
 * Keys (all under the prefix's `{…}` hash tag, so on a Redis Cluster one
 * store lives in one slot and every script touches one slot):
 *
 *   <prefix>:sealed:<namespace>:records        hash  id → record JSON
 *   <prefix>:sealed:<namespace>:unique:<index> hash  value → id (secondary keys, e.g. handles)
 *   <prefix>:sealed:<namespace>:check          string: a sealed check value, written at first open
 *   <prefix>:sealed:<namespace>:created        pub/sub channel: the id of each record created
 *
 * Creating is one Lua script (GET_OR_CREATE below): of concurrent creators of
 * one id, in any processes, the first wins and every caller gets the
 * winner's record; unique keys are checked and claimed in the same script.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { isCluster, type RedisClient } from '@libertaria/redis';
import { BridgeError } from './errors.js';
import { FEDERATION_PREFIX } from './federation.js';

export interface SealedRecord {
  /** E.g. a DID. */
  readonly id: string;
  /** Public data stored in clear (pubkey, handle, createdAt…). */
  readonly meta: Readonly<Record<string, string | number>>;
  /** Sealed at rest (AES-256-GCM under the KEK). The caller owns this copy: wipe it when done. */
  readonly secret: Uint8Array;
  /** Milliseconds since the epoch. */
  readonly createdAt: number;
}

export interface RedisSealedStoreOptions {
  /** From @libertaria/redis (single server or Cluster). */
  readonly redis: RedisClient;
  /** 32 bytes. */
  readonly kek: Uint8Array;
  /** E.g. 'nostr-keys', 'activitypub-actors'; bound into the AAD and the key names. */
  readonly namespace: string;
  /** Default FEDERATION_PREFIX '{lr-bridge}' (hash tag: every key of a store in one slot). */
  readonly prefix?: string;
  /** Refuse creating beyond it: BridgeError BRIDGE_KEY_STORE_FULL (not retryable). Default: no limit. */
  readonly maxRecords?: number;
}

/** Limits on what a record may hold: a record is read whole on every get. */
export const SEALED_STORE_LIMITS = {
  idBytes: 512,
  metaEntries: 32,
  metaKeyPattern: /^[A-Za-z][A-Za-z0-9_-]{0,63}$/,
  metaValueBytes: 2048,
  secretBytes: 64 * 1024,
  uniqueEntries: 8,
  uniqueValueBytes: 512,
} as const;

const RECORD_VERSION = 1;
const KEK_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;
/** The plaintext of the check record: opening it proves the KEK is the one the store was made with. */
const CHECK_PLAINTEXT = Buffer.from('libertaria sealed store check v1', 'utf8');

/**
 * KEYS[1] records hash, KEYS[2..n] unique-index hashes; ARGV[1] id, ARGV[2]
 * the new record's JSON, ARGV[3] maxRecords (0: none), ARGV[4] the channel
 * to announce a creation on, ARGV[5..] the unique value for each KEYS[2..].
 * Result: {0, record} existing (nothing written; its unique keys are not
 * checked or claimed), {1, record} created, {2, index key, owner} a unique
 * value belongs to another id, {3, count} full.
 */
const GET_OR_CREATE = `
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return {0, existing} end
for i = 2, #KEYS do
  local owner = redis.call('HGET', KEYS[i], ARGV[i + 3])
  if owner and owner ~= ARGV[1] then return {2, KEYS[i], owner} end
end
local max = tonumber(ARGV[3])
if max > 0 then
  local n = redis.call('HLEN', KEYS[1])
  if n >= max then return {3, n} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
for i = 2, #KEYS do redis.call('HSET', KEYS[i], ARGV[i + 3], ARGV[1]) end
redis.call('PUBLISH', ARGV[4], ARGV[1])
return {1, ARGV[2]}
`;

/**
 * KEYS[1] records hash, KEYS[2] the unique-index hash; ARGV[1] id, ARGV[2]
 * value. Result: 1 claimed (or already this id's), 0 no such record, -1 the
 * value belongs to another id (its owner in the second field).
 */
const CLAIM = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {0} end
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if owner and owner ~= ARGV[1] then return {-1, owner} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return {1}
`;

interface StoredRecord {
  v: number;
  id: string;
  meta: Record<string, string | number>;
  createdAt: number;
  /** base64 of nonce ‖ ciphertext ‖ tag. */
  sealed: string;
}

function storeError(message: string, cause?: unknown): BridgeError {
  return new BridgeError('BRIDGE_KEY_STORE', message, { cause, retryable: false });
}

function utf8Length(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** Metadata with its keys sorted: the one encoding the AAD binds, whatever order the caller used. */
function canonicalMeta(meta: Readonly<Record<string, string | number>>): string {
  const sorted: Record<string, string | number> = {};
  for (const key of Object.keys(meta).sort()) sorted[key] = meta[key] as string | number;
  return JSON.stringify(sorted);
}

function checkId(id: string): void {
  if (typeof id !== 'string' || id.length === 0 || utf8Length(id) > SEALED_STORE_LIMITS.idBytes) {
    throw new BridgeError('BAD_FIELD', `a sealed record id is 1 to ${SEALED_STORE_LIMITS.idBytes} bytes`);
  }
}

function checkMeta(meta: Record<string, string | number>): void {
  const entries = Object.entries(meta);
  if (entries.length > SEALED_STORE_LIMITS.metaEntries) {
    throw new BridgeError('BAD_FIELD', `a sealed record has at most ${SEALED_STORE_LIMITS.metaEntries} meta entries`);
  }
  for (const [key, value] of entries) {
    if (!SEALED_STORE_LIMITS.metaKeyPattern.test(key)) {
      throw new BridgeError('BAD_FIELD', `meta key ${JSON.stringify(key)} is not a name`);
    }
    const ok =
      typeof value === 'number'
        ? Number.isFinite(value)
        : typeof value === 'string' && utf8Length(value) <= SEALED_STORE_LIMITS.metaValueBytes;
    if (!ok) throw new BridgeError('BAD_FIELD', `meta ${key}: a finite number or a string of at most 2 KiB`);
  }
}

function checkUnique(index: string, value: string): void {
  if (!NAME.test(index)) throw new BridgeError('BAD_FIELD', `unique index ${JSON.stringify(index)} is not a name`);
  if (typeof value !== 'string' || value.length === 0 || utf8Length(value) > SEALED_STORE_LIMITS.uniqueValueBytes) {
    throw new BridgeError('BAD_FIELD', `unique ${index}: 1 to ${SEALED_STORE_LIMITS.uniqueValueBytes} bytes`);
  }
}

export class RedisSealedStore {
  readonly namespace: string;
  readonly prefix: string;
  readonly #redis: RedisClient;
  readonly #kek: Buffer;
  readonly #maxRecords: number;
  readonly #base: string;

  private constructor(options: RedisSealedStoreOptions) {
    this.#redis = options.redis;
    this.#kek = Buffer.from(options.kek);
    this.namespace = options.namespace;
    this.prefix = options.prefix ?? FEDERATION_PREFIX;
    this.#maxRecords = options.maxRecords ?? 0;
    this.#base = `${this.prefix}:sealed:${this.namespace}`;
  }

  /** Checks the KEK against a check record stored at first open: a wrong KEK fails here (BridgeError 'BRIDGE_KEY_STORE', not retryable). */
  static async open(options: RedisSealedStoreOptions): Promise<RedisSealedStore> {
    if (!(options.kek instanceof Uint8Array) || options.kek.length !== KEK_BYTES) {
      throw storeError(`the key-encryption key is ${KEK_BYTES} bytes`);
    }
    if (!NAME.test(options.namespace)) {
      throw storeError(`the namespace ${JSON.stringify(options.namespace)} is not 1-32 of a-z, 0-9 and -`);
    }
    const max = options.maxRecords ?? 0;
    if (!Number.isSafeInteger(max) || max < 0) throw storeError('maxRecords is a non-negative integer (0: no limit)');
    const prefix = options.prefix ?? FEDERATION_PREFIX;
    // One script reads and writes several keys of the store: on a Cluster they must share a slot.
    if (isCluster(options.redis) && !/\{[^}]+\}/.test(prefix)) {
      throw storeError(`on a Redis Cluster the prefix needs a {…} hash tag (got ${JSON.stringify(prefix)})`);
    }
    const store = new RedisSealedStore(options);
    await store.#checkKek();
    return store;
  }

  get #records(): string {
    return `${this.#base}:records`;
  }

  #uniqueKey(index: string): string {
    return `${this.#base}:unique:${index}`;
  }

  /** The channel each created record's id is published on (other processes refresh their view). */
  get createdChannel(): string {
    return `${this.#base}:created`;
  }

  async #checkKek(): Promise<void> {
    const key = `${this.#base}:check`;
    let stored: string | null;
    try {
      await this.#redis.set(key, this.#seal(CHECK_PLAINTEXT, this.#checkAad()).toString('base64'), 'NX');
      stored = await this.#redis.get(key);
    } catch (err) {
      throw new BridgeError('BRIDGE_UNAVAILABLE', `cannot read the sealed store ${this.#base}`, { cause: err });
    }
    if (stored === null) throw storeError(`the check record of ${this.#base} vanished as it was written`);
    let opened: Buffer;
    try {
      opened = this.#unseal(Buffer.from(stored, 'base64'), this.#checkAad());
    } catch (err) {
      throw storeError(
        `the sealed store ${this.#base} was made under another key-encryption key (its check record does not open)`,
        err,
      );
    }
    if (!opened.equals(CHECK_PLAINTEXT)) throw storeError(`the check record of ${this.#base} is not ours`);
  }

  #checkAad(): Buffer {
    return Buffer.from(`libertaria sealed-store check v${RECORD_VERSION}\n${this.namespace}`, 'utf8');
  }

  #aad(id: string, meta: Readonly<Record<string, string | number>>, createdAt: number): Buffer {
    return Buffer.from(
      `libertaria sealed-store v${RECORD_VERSION}\n${this.namespace}\n${id}\n${canonicalMeta(meta)}\n${createdAt}`,
      'utf8',
    );
  }

  #seal(plaintext: Uint8Array, aad: Buffer): Buffer {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#kek, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(aad);
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([nonce, body, cipher.getAuthTag()]);
  }

  #unseal(raw: Buffer, aad: Buffer): Buffer {
    if (raw.length < NONCE_BYTES + TAG_BYTES) throw new RangeError('sealed value too short');
    const decipher = createDecipheriv('aes-256-gcm', this.#kek, raw.subarray(0, NONCE_BYTES), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(aad);
    decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
    return Buffer.concat([decipher.update(raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES)), decipher.final()]);
  }

  /** Parses and opens a stored record; anything that does not open under this KEK, id and meta is BRIDGE_KEY_STORE. */
  #decode(id: string, json: string): SealedRecord {
    let r: Partial<StoredRecord>;
    try {
      r = JSON.parse(json) as Partial<StoredRecord>;
    } catch (err) {
      throw storeError(`the sealed record of ${id} in ${this.#base} is not JSON`, err);
    }
    if (
      typeof r !== 'object' ||
      r === null ||
      r.v !== RECORD_VERSION ||
      r.id !== id ||
      typeof r.meta !== 'object' ||
      r.meta === null ||
      Array.isArray(r.meta) ||
      typeof r.createdAt !== 'number' ||
      typeof r.sealed !== 'string'
    ) {
      throw storeError(`the sealed record of ${id} in ${this.#base} is not a version ${RECORD_VERSION} record`);
    }
    const meta = r.meta;
    for (const value of Object.values(meta)) {
      if (typeof value !== 'string' && typeof value !== 'number') {
        throw storeError(`the sealed record of ${id} in ${this.#base} has malformed meta`);
      }
    }
    let secret: Buffer;
    try {
      secret = this.#unseal(Buffer.from(r.sealed, 'base64'), this.#aad(id, meta, r.createdAt));
    } catch (err) {
      throw storeError(
        `the sealed record of ${id} in ${this.#base} does not open (wrong key-encryption key, or the record was altered or moved)`,
        err,
      );
    }
    const out = new Uint8Array(secret);
    secret.fill(0);
    return Object.freeze({ id, meta: Object.freeze({ ...meta }), secret: out, createdAt: r.createdAt });
  }

  async get(id: string): Promise<SealedRecord | undefined> {
    checkId(id);
    const json = await this.#redis.hget(this.#records, id);
    return json === null ? undefined : this.#decode(id, json);
  }

  /**
   * Creates the record when absent, atomically across processes (one Lua
   * script: the first writer wins; every caller gets the winner's record).
   * `unique` entries (e.g. { handle: 'alice' }) are secondary keys that must
   * belong to this id only: a clash throws BridgeError
   * 'BRIDGE_IDENTITY_CONFLICT' and writes nothing. For a record that exists
   * already, `create` is not called and `unique` is neither checked nor
   * claimed (compare `record.meta` if it matters).
   */
  async getOrCreate(
    id: string,
    create: () => { meta: Record<string, string | number>; secret: Uint8Array },
    options?: { unique?: Record<string, string> },
  ): Promise<{ record: SealedRecord; created: boolean }> {
    checkId(id);
    const existing = await this.#redis.hget(this.#records, id);
    if (existing !== null) return { record: this.#decode(id, existing), created: false };
    const unique = Object.entries(options?.unique ?? {});
    if (unique.length > SEALED_STORE_LIMITS.uniqueEntries) {
      throw new BridgeError('BAD_FIELD', `at most ${SEALED_STORE_LIMITS.uniqueEntries} unique keys per record`);
    }
    for (const [index, value] of unique) checkUnique(index, value);
    const made = create();
    const meta = { ...made.meta };
    checkMeta(meta);
    if (!(made.secret instanceof Uint8Array) || made.secret.length > SEALED_STORE_LIMITS.secretBytes) {
      throw new BridgeError('BAD_FIELD', `a sealed secret is at most ${SEALED_STORE_LIMITS.secretBytes} bytes`);
    }
    const createdAt = Date.now();
    const stored: StoredRecord = {
      v: RECORD_VERSION,
      id,
      meta,
      createdAt,
      sealed: this.#seal(made.secret, this.#aad(id, meta, createdAt)).toString('base64'),
    };
    made.secret.fill(0);
    const keys = [this.#records, ...unique.map(([index]) => this.#uniqueKey(index))];
    const args = [id, JSON.stringify(stored), String(this.#maxRecords), this.createdChannel];
    for (const [, value] of unique) args.push(value);
    const reply = (await this.#redis.eval(GET_OR_CREATE, keys.length, ...keys, ...args)) as [number, ...unknown[]];
    switch (reply[0]) {
      case 0:
        return { record: this.#decode(id, String(reply[1])), created: false };
      case 1:
        return { record: this.#decode(id, String(reply[1])), created: true };
      case 2: {
        const index = String(reply[1]).slice(this.#uniqueKey('').length);
        throw new BridgeError(
          'BRIDGE_IDENTITY_CONFLICT',
          `${index} ${JSON.stringify(options?.unique?.[index])} already belongs to another identity`,
        );
      }
      case 3:
        throw new BridgeError(
          'BRIDGE_KEY_STORE_FULL',
          `the sealed store ${this.#base} holds its maximum of ${this.#maxRecords} records`,
          { retryable: false },
        );
      default:
        throw storeError(`unexpected reply from the sealed store script: ${JSON.stringify(reply[0])}`);
    }
  }

  /**
   * Gives an existing record one more unique key (e.g. a handle chosen after
   * the record was made), atomically: BRIDGE_IDENTITY_CONFLICT when the value
   * belongs to another id, BRIDGE_IDENTITY_UNKNOWN when `id` has no record.
   * Claiming a value the id already owns is a no-op. Unique keys are public
   * lookups, not bound into the record's AAD: keep in `meta` what must be.
   */
  async claimUnique(id: string, index: string, value: string): Promise<void> {
    checkId(id);
    checkUnique(index, value);
    const reply = (await this.#redis.eval(CLAIM, 2, this.#records, this.#uniqueKey(index), id, value)) as number[];
    if (reply[0] === 1) return;
    if (reply[0] === 0) throw new BridgeError('BRIDGE_IDENTITY_UNKNOWN', `${id} has no record in ${this.#base}`);
    throw new BridgeError(
      'BRIDGE_IDENTITY_CONFLICT',
      `${index} ${JSON.stringify(value)} already belongs to another identity`,
    );
  }

  /** The id that owns a unique key, or undefined. */
  async findBy(index: string, value: string): Promise<string | undefined> {
    if (!NAME.test(index)) throw new BridgeError('BAD_FIELD', `unique index ${JSON.stringify(index)} is not a name`);
    const id = await this.#redis.hget(this.#uniqueKey(index), value);
    return id ?? undefined;
  }

  /** Every value of a unique index with its owner, a page of HSCAN at a time. */
  async *listUnique(index: string, pageSize = 500): AsyncGenerator<{ value: string; id: string }> {
    if (!NAME.test(index)) throw new BridgeError('BAD_FIELD', `unique index ${JSON.stringify(index)} is not a name`);
    let cursor = '0';
    do {
      const [next, flat] = await this.#redis.hscan(this.#uniqueKey(index), cursor, 'COUNT', pageSize);
      cursor = next;
      for (let i = 0; i + 1 < flat.length; i += 2) yield { value: flat[i] as string, id: flat[i + 1] as string };
    } while (cursor !== '0');
  }

  async count(): Promise<number> {
    return this.#redis.hlen(this.#records);
  }

  /**
   * Every record's id and meta (not opened: no secret leaves Redis), a page
   * of HSCAN at a time; a record created during the scan may or may not be
   * seen (subscribe to `createdChannel` for those).
   */
  async *list(
    pageSize = 500,
  ): AsyncGenerator<{ id: string; meta: Readonly<Record<string, string | number>>; createdAt: number }> {
    let cursor = '0';
    do {
      const [next, flat] = await this.#redis.hscan(this.#records, cursor, 'COUNT', pageSize);
      cursor = next;
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const id = flat[i] as string;
        try {
          const r = JSON.parse(flat[i + 1] as string) as Partial<StoredRecord>;
          if (r.id === id && typeof r.meta === 'object' && r.meta !== null && typeof r.createdAt === 'number') {
            yield { id, meta: Object.freeze(r.meta), createdAt: r.createdAt };
          }
        } catch {
          // Not a record: get() of it says why.
        }
      }
    } while (cursor !== '0');
  }
}
