/**
 * The Nostr key of each bridged Libertaria identity, sealed at rest.
 *
 * Each key is a random secp256k1 secret (never derived from the DID, so
 * knowing a DID tells nothing about its Nostr key) sealed with AES-256-GCM
 * under the key-encryption key (KEK) from configuration. The associated data
 * binds the sealed key to its DID and public key: a record copied onto another
 * DID, or edited, no longer opens.
 *
 * Storage is an append-only file of JSON lines, one record per line, synced
 * before `bridge()` returns; the last record of a DID wins. Appending keeps
 * bridging one identity O(1) however many are stored. One bridge process owns
 * a key store file at a time.
 *
 * Opening checks every record against the KEK, so a wrong KEK fails at start
 * (BRIDGE_KEY_STORE), not at the first message.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { appendFile, mkdir, open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BridgeError } from '@libertaria/bridge-kit';
import { parseDid } from '@libertaria/identity';
import { generateSecretKey, getPublicKey } from 'nostr-tools/pure';
import { validateNip05Name } from './nip05.js';

const RECORD_VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEK_BYTES = 32;

export interface BridgedIdentity {
  readonly did: string;
  /** x-only secp256k1 public key, 64 lowercase hex digits. */
  readonly pubkey: string;
  /** NIP-05 local part, when the peer asked for one. */
  readonly name: string | undefined;
  /** Milliseconds since the epoch. */
  readonly createdAt: number;
}

interface SealedRecord {
  v: number;
  did: string;
  pubkey: string;
  name?: string;
  createdAt: number;
  /** base64 of nonce ‖ ciphertext ‖ tag. */
  sealed: string;
}

/**
 * What the bridge needs of a key store: NostrKeyStore (a file, one process)
 * or RedisNostrKeyStore (Redis, any number of processes). Reads are
 * synchronous, from an index of public data kept in memory; secrets are
 * opened per use.
 */
export interface NostrKeys {
  readonly size: number;
  get(did: string): BridgedIdentity | undefined;
  byPubkey(pubkey: string): BridgedIdentity | undefined;
  byName(name: string): BridgedIdentity | undefined;
  all(): IterableIterator<BridgedIdentity>;
  bridge(did: string, name?: string): Promise<BridgedIdentity>;
  withSecretKey<T>(did: string, use: (secret: Uint8Array) => T | Promise<T>): Promise<T>;
  /** Calls `listener` when identities bridged by another process become known here (to subscribe to them). */
  onAdded?(listener: () => void): void;
}

/**
 * The in-memory index both key stores answer lookups from: bridged
 * identities by DID, public key and NIP-05 name (public data only).
 */
export abstract class IndexedIdentities {
  private readonly byDid = new Map<string, BridgedIdentity>();
  private readonly didByPubkey = new Map<string, string>();
  private readonly didByName = new Map<string, string>();

  /** Adds or replaces an identity; a name its DID had before stops naming it. */
  protected indexIdentity(identity: BridgedIdentity): void {
    const previous = this.byDid.get(identity.did);
    if (previous?.name !== undefined && previous.name !== identity.name) this.didByName.delete(previous.name);
    this.byDid.set(identity.did, identity);
    this.didByPubkey.set(identity.pubkey, identity.did);
    if (identity.name !== undefined) this.didByName.set(identity.name, identity.did);
  }

  get size(): number {
    return this.byDid.size;
  }

  get(did: string): BridgedIdentity | undefined {
    return this.byDid.get(did);
  }

  byPubkey(pubkey: string): BridgedIdentity | undefined {
    const did = this.didByPubkey.get(pubkey);
    return did === undefined ? undefined : this.byDid.get(did);
  }

  byName(name: string): BridgedIdentity | undefined {
    const did = this.didByName.get(name);
    return did === undefined ? undefined : this.byDid.get(did);
  }

  all(): IterableIterator<BridgedIdentity> {
    return this.byDid.values();
  }
}

export interface KeyStoreLimits {
  readonly maxIdentities: number;
}

function storeError(message: string, cause?: unknown): BridgeError {
  return new BridgeError('BRIDGE_KEY_STORE', message, { cause, retryable: false });
}

function aad(did: string, pubkey: string): Buffer {
  return Buffer.from(`libertaria-bridge-nostr key v${RECORD_VERSION}\n${did}\n${pubkey}`, 'utf8');
}

function seal(kek: Uint8Array, did: string, pubkey: string, secret: Uint8Array): string {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', kek, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad(did, pubkey));
  const body = Buffer.concat([cipher.update(secret), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]).toString('base64');
}

function unseal(kek: Uint8Array, record: SealedRecord): Uint8Array {
  const raw = Buffer.from(record.sealed, 'base64');
  if (raw.length !== NONCE_BYTES + 32 + TAG_BYTES) throw storeError(`the sealed key of ${record.did} has a bad length`);
  const decipher = createDecipheriv('aes-256-gcm', kek, raw.subarray(0, NONCE_BYTES), { authTagLength: TAG_BYTES });
  decipher.setAAD(aad(record.did, record.pubkey));
  decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
  try {
    return new Uint8Array(
      Buffer.concat([decipher.update(raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES)), decipher.final()]),
    );
  } catch (err) {
    throw storeError(
      `the key of ${record.did} does not open under this key-encryption key (wrong KEK, or the record was altered)`,
      err,
    );
  }
}

function parseRecord(line: string, lineNo: number): SealedRecord {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw storeError(`key store line ${lineNo} is not JSON`, err);
  }
  const r = value as Partial<SealedRecord>;
  if (
    typeof r !== 'object' ||
    r === null ||
    r.v !== RECORD_VERSION ||
    typeof r.did !== 'string' ||
    typeof r.pubkey !== 'string' ||
    !/^[0-9a-f]{64}$/.test(r.pubkey) ||
    typeof r.createdAt !== 'number' ||
    typeof r.sealed !== 'string' ||
    (r.name !== undefined && typeof r.name !== 'string')
  ) {
    throw storeError(`key store line ${lineNo} is not a version ${RECORD_VERSION} key record`);
  }
  return r as SealedRecord;
}

/** Parses a KEK given as 64 hex digits. */
export function parseKek(hex: string): Uint8Array {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw storeError('the key-encryption key is 64 hex digits (32 bytes)');
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

export class NostrKeyStore extends IndexedIdentities implements NostrKeys {
  private readonly sealedByDid = new Map<string, SealedRecord>();
  /** Appends are chained so concurrent bridge() calls neither interleave lines nor race on names. */
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly file: string,
    private readonly kek: Uint8Array,
    private readonly limits: KeyStoreLimits,
  ) {
    super();
  }

  /** Opens (or creates) the key store and checks every record against the KEK. */
  static async open(file: string, kek: Uint8Array, limits: KeyStoreLimits): Promise<NostrKeyStore> {
    if (kek.length !== KEK_BYTES) throw storeError(`the key-encryption key is ${KEK_BYTES} bytes`);
    const store = new NostrKeyStore(file, Uint8Array.from(kek), limits);
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw storeError(`cannot read the key store ${file}`, err);
    }
    // Every record ends with a newline, so the last piece is '' or a line torn by a crash mid-append:
    // the identity it held was never reported bridged (bridge() returns after the sync), so dropping
    // it loses nothing promised.
    const complete = text.split('\n').slice(0, -1);
    complete.forEach((line, i) => {
      if (line.trim() === '') return;
      store.index(parseRecord(line, i + 1));
    });
    for (const record of store.sealedByDid.values()) {
      const secret = unseal(store.kek, record);
      const pubkey = getPublicKey(secret);
      secret.fill(0);
      if (pubkey !== record.pubkey) throw storeError(`the key of ${record.did} does not match its public key`);
    }
    return store;
  }

  private index(record: SealedRecord): void {
    this.indexIdentity(
      Object.freeze({ did: record.did, pubkey: record.pubkey, name: record.name, createdAt: record.createdAt }),
    );
    this.sealedByDid.set(record.did, record);
  }

  /**
   * Bridges a DID: creates its Nostr key on first use (idempotent after).
   * A name may be given the first time, or later to an identity that has none;
   * renaming is refused (BRIDGE_NAME_TAKEN) since others may already know the old one.
   */
  bridge(did: string, name?: string): Promise<BridgedIdentity> {
    const run = this.tail.then(() => this.bridgeNow(did, name));
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async bridgeNow(did: string, name: string | undefined): Promise<BridgedIdentity> {
    parseDid(did);
    if (name !== undefined) validateNip05Name(name);
    const existing = this.get(did);
    if (existing && (name === undefined || existing.name === name)) return existing;
    if (existing?.name !== undefined) {
      throw new BridgeError('BRIDGE_NAME_TAKEN', `${did} is already bridged as ${JSON.stringify(existing.name)}`);
    }
    if (name !== undefined && this.byName(name) !== undefined) {
      throw new BridgeError('BRIDGE_NAME_TAKEN', `the name ${JSON.stringify(name)} belongs to another peer`);
    }
    if (!existing && this.size >= this.limits.maxIdentities) {
      throw new BridgeError(
        'BRIDGE_IDENTITY_LIMIT',
        `the bridge holds its maximum of ${this.limits.maxIdentities} identities`,
      );
    }
    let record: SealedRecord;
    if (existing) {
      record = { ...this.sealedByDid.get(did)!, name: name! };
    } else {
      const secret = generateSecretKey();
      const pubkey = getPublicKey(secret);
      record = { v: RECORD_VERSION, did, pubkey, createdAt: Date.now(), sealed: seal(this.kek, did, pubkey, secret) };
      if (name !== undefined) record.name = name;
      secret.fill(0);
    }
    await this.append(record);
    this.index(record);
    return this.get(did)!;
  }

  private async append(record: SealedRecord): Promise<void> {
    try {
      await mkdir(dirname(this.file), { recursive: true });
      await appendFile(this.file, `${JSON.stringify(record)}\n`, { mode: 0o600 });
      const handle = await open(this.file, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (err) {
      throw storeError(`cannot write the key store ${this.file}`, err);
    }
  }

  /** Runs `use` with the secret key of a bridged DID; the key is wiped when `use` settles. */
  async withSecretKey<T>(did: string, use: (secret: Uint8Array) => T | Promise<T>): Promise<T> {
    const record = this.sealedByDid.get(did);
    if (!record) throw new BridgeError('BRIDGE_IDENTITY_UNKNOWN', `${did} is not bridged to Nostr`);
    const secret = unseal(this.kek, record);
    try {
      return await use(secret);
    } finally {
      secret.fill(0);
    }
  }
}
