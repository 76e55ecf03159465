/**
 * The Nostr keys of bridged identities in Redis, for a bridge scaled out over
 * several processes (docs/bridges.md#running-several-processes).
 *
 * The keys are records of a RedisSealedStore (namespace `nostr-keys`): the
 * secp256k1 secret sealed under the KEK, the DID as id, the public key (and
 * the NIP-05 name chosen at creation) as meta, bound into the AAD. Names are
 * the unique index `nip05` (name → DID), so two processes can never give one
 * name to two DIDs; the public keys are the index `pubkey`.
 *
 * Every process keeps an index of the public data in memory (the bridge's
 * reads are synchronous: the inbound path looks up every event's `p` tag),
 * filled at open, updated on the store's `created` notice (a record made by
 * another process), and read again in full every `refreshMs` (a notice missed
 * while the subscriber was disconnected, a name claimed later by another
 * process). Secrets are read from Redis per use and wiped after.
 */
import { BridgeError } from '@libertaria/bridge-kit';
import { RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { parseDid } from '@libertaria/identity';
import type { RedisClient } from '@libertaria/redis';
import { generateSecretKey, getPublicKey } from 'nostr-tools/pure';
import { type BridgedIdentity, IndexedIdentities, type NostrKeyStore, type NostrKeys } from './key-store.js';
import type { Logger } from './log.js';
import { validateNip05Name } from './nip05.js';

export const NOSTR_KEYS_NAMESPACE = 'nostr-keys';

export interface RedisNostrKeyStoreOptions {
  readonly redis: RedisClient;
  readonly kek: Uint8Array;
  readonly prefix: string;
  readonly maxIdentities: number;
  readonly refreshMs: number;
  readonly log: Logger;
}

export class RedisNostrKeyStore extends IndexedIdentities implements NostrKeys {
  private readonly listeners: Array<() => void> = [];
  private subscriber: RedisClient | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    readonly store: RedisSealedStore,
    private readonly o: RedisNostrKeyStoreOptions,
  ) {
    super();
  }

  /** Opens the store (a wrong KEK fails here: BRIDGE_KEY_STORE), reads the index and follows changes. */
  static async open(options: RedisNostrKeyStoreOptions): Promise<RedisNostrKeyStore> {
    const store = await RedisSealedStore.open({
      redis: options.redis,
      kek: options.kek,
      namespace: NOSTR_KEYS_NAMESPACE,
      prefix: options.prefix,
      maxRecords: options.maxIdentities,
    });
    const keys = new RedisNostrKeyStore(store, options);
    // Subscribed before the first read: a record made in between is announced, not missed.
    keys.subscriber = options.redis.duplicate();
    keys.subscriber.on('error', (err) => options.log.debug('key store subscriber error', { err }));
    keys.subscriber.on('message', (_channel: string, did: string) => {
      if (!keys.get(did) !== undefined) void keys.learn(did);
    });
    await keys.subscriber.subscribe(store.createdChannel);
    await keys.reload();
    keys.timer = setInterval(() => {
      keys.reload().catch((err: unknown) => options.log.warn('reading the bridged identities failed', { err }));
    }, options.refreshMs);
    keys.timer.unref();
    return keys;
  }

  private index(did: string, pubkey: string, name: string | undefined, createdAt: number): boolean {
    const known = this.get(did);
    if (known && known.pubkey === pubkey && known.name === (name ?? known.name)) return false;
    this.indexIdentity(Object.freeze({ did, pubkey, name: name ?? known?.name, createdAt }));
    return known === undefined;
  }

  /** Reads every record's public data and every name; tells listeners when identities were added. */
  async reload(): Promise<void> {
    let added = false;
    // Public data, read without opening: get() and withSecretKey() check each record against the KEK.
    for await (const { id, meta, createdAt } of this.store.list()) {
      if (typeof meta.pubkey !== 'string') continue;
      const name = typeof meta.name === 'string' ? meta.name : undefined;
      added = this.index(id, meta.pubkey, name, createdAt) || added;
    }
    for await (const { value, id } of this.store.listUnique('nip05')) {
      const known = this.get(id);
      if (known && known.name === undefined) this.index(id, known.pubkey, value, known.createdAt);
    }
    if (added) this.notify();
  }

  /** A record another process announced: read it (opening it proves it is ours) and index it. */
  private async learn(did: string): Promise<void> {
    try {
      const record = await this.store.get(did);
      if (!record) return;
      record.secret.fill(0);
      const name = typeof record.meta.name === 'string' ? record.meta.name : undefined;
      if (this.index(did, String(record.meta.pubkey), name, record.createdAt)) this.notify();
    } catch (err) {
      this.o.log.warn('an announced bridged identity could not be read', { did, err });
    }
  }

  private notify(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (err) {
        this.o.log.warn('identity listener failed', { err });
      }
    }
  }

  onAdded(listener: () => void): void {
    this.listeners.push(listener);
  }

  /**
   * Bridges a DID, atomically across processes: the first process to create
   * its key wins and every caller gets that key. The same rules as the file
   * store: a name may be given the first time or later to an identity that
   * has none; renaming, or a name of another DID, is BRIDGE_NAME_TAKEN.
   */
  async bridge(did: string, name?: string): Promise<BridgedIdentity> {
    parseDid(did);
    if (name !== undefined) validateNip05Name(name);
    const known = this.get(did);
    if (known && (name === undefined || known.name === name)) return known;
    if (known?.name !== undefined) {
      throw new BridgeError('BRIDGE_NAME_TAKEN', `${did} is already bridged as ${JSON.stringify(known.name)}`);
    }
    let record: Awaited<ReturnType<RedisSealedStore['getOrCreate']>>['record'];
    try {
      ({ record } = await this.store.getOrCreate(
        did,
        () => {
          const secret = generateSecretKey();
          return { meta: { pubkey: getPublicKey(secret), ...(name === undefined ? {} : { name }) }, secret };
        },
        name === undefined ? undefined : { unique: { nip05: name } },
      ));
    } catch (err) {
      throw this.translate(err, name);
    }
    record.secret.fill(0);
    const pubkey = String(record.meta.pubkey);
    let current = typeof record.meta.name === 'string' ? record.meta.name : this.get(did)?.name;
    if (name !== undefined && current === undefined) {
      // An identity made without a name (here or by another process) takes one now.
      try {
        await this.store.claimUnique(did, 'nip05', name);
      } catch (err) {
        throw this.translate(err, name);
      }
      current = name;
    } else if (name !== undefined && current !== name) {
      throw new BridgeError('BRIDGE_NAME_TAKEN', `${did} is already bridged as ${JSON.stringify(current)}`);
    }
    this.index(did, pubkey, current, record.createdAt);
    return this.get(did) as BridgedIdentity;
  }

  private translate(err: unknown, name: string | undefined): unknown {
    if (!(err instanceof BridgeError)) return err;
    if (err.code === 'BRIDGE_IDENTITY_CONFLICT') {
      return new BridgeError('BRIDGE_NAME_TAKEN', `the name ${JSON.stringify(name)} belongs to another peer`, {
        cause: err,
      });
    }
    if (err.code === 'BRIDGE_KEY_STORE_FULL') {
      return new BridgeError(
        'BRIDGE_IDENTITY_LIMIT',
        `the bridge holds its maximum of ${this.o.maxIdentities} identities`,
        { cause: err },
      );
    }
    return err;
  }

  /** Runs `use` with the secret key of a bridged DID, read from Redis; the key is wiped when `use` settles. */
  async withSecretKey<T>(did: string, use: (secret: Uint8Array) => T | Promise<T>): Promise<T> {
    const record = await this.store.get(did);
    if (!record) throw new BridgeError('BRIDGE_IDENTITY_UNKNOWN', `${did} is not bridged to Nostr`);
    try {
      return await use(record.secret);
    } finally {
      record.secret.fill(0);
    }
  }

  /**
   * One-shot import of a file key store (BRIDGE_NOSTR_KEY_STORE_FILE): every
   * identity not in Redis yet is written with its key and name; the ones
   * already there are left alone (the import is safe to run on every start,
   * from every process). A DID keeps its npub whatever happens: a name that
   * another DID holds in Redis is dropped (logged), not the key; a DID that
   * Redis maps to another key keeps Redis's (logged). Any other failure stops
   * the start: a key left behind would make the DID a new npub later.
   * Returns how many were imported.
   */
  async importFrom(file: NostrKeyStore): Promise<number> {
    let imported = 0;
    for (const identity of file.all()) {
      const created = await file.withSecretKey(identity.did, async (secret) => {
        const write = (name: string | undefined) =>
          this.store.getOrCreate(
            identity.did,
            () => ({
              meta: { pubkey: identity.pubkey, ...(name === undefined ? {} : { name }) },
              secret: Uint8Array.from(secret),
            }),
            name === undefined ? undefined : { unique: { nip05: name } },
          );
        let result: Awaited<ReturnType<typeof write>>;
        try {
          result = await write(identity.name);
        } catch (err) {
          if (!(err instanceof BridgeError && err.code === 'BRIDGE_IDENTITY_CONFLICT')) throw err;
          this.o.log.warn('a name of the key file belongs to another identity in Redis: imported without it', {
            did: identity.did,
            name: identity.name,
          });
          result = await write(undefined);
        }
        result.record.secret.fill(0);
        if (!result.created && result.record.meta.pubkey !== identity.pubkey) {
          this.o.log.warn("Redis holds another key for an identity of the key file: Redis's is kept", {
            did: identity.did,
            file: identity.pubkey,
            redis: result.record.meta.pubkey,
          });
        }
        return result.created;
      });
      if (created) imported++;
    }
    if (imported > 0) await this.reload();
    return imported;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.subscriber?.quit().catch(() => undefined);
  }
}
