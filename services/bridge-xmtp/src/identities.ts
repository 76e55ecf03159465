/**
 * The XMTP account of each bridged DID.
 *
 * A bridged DID gets a random secp256k1 key (its Ethereum address names its
 * XMTP inbox) and a random 32-byte SQLCipher key for its local XMTP database;
 * both are one sealed record (64 bytes: key ‖ database key) in the
 * bridge-kit's `RedisSealedStore` (Redis, under the KEK; namespace `xmtp`),
 * its address a unique index. Beside
 * it, the hash `<prefix>:xmtp:accounts` (DID → JSON) lists the bridged DIDs
 * with their inbox id and, once a client opened, their installation id:
 * what the bridge opens at start, and the proof an installation exists, so a
 * missing database is refused (BRIDGE_STATE_MISSING) instead of silently
 * registering another installation (XMTP caps them per inbox).
 *
 * The database of an account lives at `<dbDir>/<address>.db3` (plus
 * SQLCipher's `-shm`, `-wal` and `.sqlcipher_salt` files beside it).
 */
import { join } from 'node:path';
import { BridgeError, type ForeignIdentity } from '@libertaria/bridge-kit';
import type { RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { parseDid } from '@libertaria/identity';
import type { RedisClient } from '@libertaria/redis';
import { EOA_SECRET_BYTES, eoaAddress, generateEoaSecret } from './eoa.js';
import type { XmtpAccount } from './network.js';

export interface AccountInfo {
  readonly did: string;
  readonly address: string;
  readonly inboxId: string;
  /** Set once a client of this account opened (registered) on the network. */
  readonly installationId: string | undefined;
}

export interface XmtpIdentitiesOptions {
  readonly store: RedisSealedStore;
  readonly redis: RedisClient;
  readonly prefix: string;
  readonly dbDir: string;
  /** The inbox id an address gets (XmtpNetwork.inboxIdOf). */
  readonly inboxIdOf: (address: string) => string;
  readonly maxIdentities: number;
}

export function addressIdentity(address: string): ForeignIdentity & { type: 'xmtp' } {
  return { type: 'xmtp', uri: `xmtp:${address}`, kind: 'address', value: address };
}

export class XmtpIdentities {
  private readonly accountsKey: string;
  /** Accounts read once per process: their info changes only through this class. */
  private readonly cache = new Map<string, AccountInfo>();

  constructor(private readonly o: XmtpIdentitiesOptions) {
    this.accountsKey = `${o.prefix}:xmtp:accounts`;
  }

  private parse(did: string, json: string): AccountInfo {
    const v = JSON.parse(json) as { address: string; inboxId: string; installationId?: string };
    return { did, address: v.address, inboxId: v.inboxId, installationId: v.installationId };
  }

  private async write(info: AccountInfo): Promise<void> {
    await this.o.redis.hset(
      this.accountsKey,
      info.did,
      JSON.stringify({ address: info.address, inboxId: info.inboxId, installationId: info.installationId }),
    );
    this.cache.set(info.did, info);
  }

  /** The account of a DID, or undefined when it was never bridged. */
  async get(did: string): Promise<AccountInfo | undefined> {
    const cached = this.cache.get(did);
    if (cached) return cached;
    const json = await this.o.redis.hget(this.accountsKey, did);
    if (json === null) return undefined;
    const info = this.parse(did, json);
    this.cache.set(did, info);
    return info;
  }

  /** Every bridged DID with its account (one HGETALL: the bridge's start). */
  async all(): Promise<AccountInfo[]> {
    const entries = await this.o.redis.hgetall(this.accountsKey);
    return Object.entries(entries).map(([did, json]) => {
      const info = this.parse(did, json);
      this.cache.set(did, info);
      return info;
    });
  }

  async count(): Promise<number> {
    return this.o.redis.hlen(this.accountsKey);
  }

  /** Bridges a DID: makes its keys on first use (idempotent, atomic across processes). */
  async ensure(did: string): Promise<AccountInfo> {
    parseDid(did); // INVALID_DID
    const known = await this.get(did);
    if (known) return known;
    const existing = await this.o.store.get(did);
    if (!existing && (await this.count()) >= this.o.maxIdentities) {
      throw new BridgeError(
        'BRIDGE_IDENTITY_LIMIT',
        `the bridge holds its maximum of ${this.o.maxIdentities} XMTP identities`,
      );
    }
    // Made before the call: the address is the unique index the store checks atomically.
    const eoa = generateEoaSecret();
    const address = eoaAddress(eoa);
    const secret = new Uint8Array(EOA_SECRET_BYTES + 32);
    secret.set(eoa, 0);
    secret.set(crypto.getRandomValues(new Uint8Array(32)), EOA_SECRET_BYTES);
    eoa.fill(0);
    const { record } = await this.o.store.getOrCreate(
      did,
      () => ({ meta: { address, inboxId: this.o.inboxIdOf(address) }, secret }),
      { unique: { address } },
    );
    // The store wiped ours when it sealed it; theirs (another process won) is ours to wipe too.
    secret.fill(0);
    record.secret.fill(0);
    const recordAddress = String(record.meta.address);
    // HSETNX: a concurrent ensure() of the same DID elsewhere must not erase an installation id written meanwhile.
    await this.o.redis.hsetnx(
      this.accountsKey,
      did,
      JSON.stringify({ address: recordAddress, inboxId: String(record.meta.inboxId) }),
    );
    this.cache.delete(did);
    return (await this.get(did)) as AccountInfo;
  }

  /** The DID whose XMTP account has this address or inbox id, if any. */
  async didOfAddress(address: string): Promise<string | undefined> {
    return this.o.store.findBy('address', address.toLowerCase());
  }

  /** Records the installation a client of this DID opened (the first time, or again after an operator reset). */
  async recordInstallation(did: string, installationId: string, inboxId: string): Promise<void> {
    const info = await this.get(did);
    if (!info) throw new BridgeError('BRIDGE_IDENTITY_UNKNOWN', `${did} is not bridged to XMTP`);
    if (info.installationId === installationId && info.inboxId === inboxId) return;
    await this.write({ ...info, installationId, inboxId });
  }

  dbPath(address: string): string {
    return join(this.o.dbDir, `${address}.db3`);
  }

  /** Unseals the account of a DID for the network adapter; the caller wipes the keys with `wipeAccount`. */
  async account(did: string): Promise<XmtpAccount> {
    const record = await this.o.store.get(did);
    if (!record) throw new BridgeError('BRIDGE_IDENTITY_UNKNOWN', `${did} is not bridged to XMTP`);
    if (record.secret.length !== EOA_SECRET_BYTES + 32) {
      throw new BridgeError('BRIDGE_KEY_STORE', `the sealed XMTP keys of ${did} have a bad length`);
    }
    const eoaSecret = record.secret.slice(0, EOA_SECRET_BYTES);
    const address = eoaAddress(eoaSecret);
    if (address !== record.meta.address) {
      throw new BridgeError('BRIDGE_KEY_STORE', `the XMTP key of ${did} does not match its address`);
    }
    const dbEncryptionKey = record.secret.slice(EOA_SECRET_BYTES);
    record.secret.fill(0);
    return { eoaSecret, address, dbEncryptionKey, dbPath: this.dbPath(address) };
  }
}

export function wipeAccount(account: XmtpAccount): void {
  account.eoaSecret.fill(0);
  account.dbEncryptionKey.fill(0);
}
