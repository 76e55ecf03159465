/**
 * Bridged actors: one per bridged DID, with its handle and its two key pairs
 * (RSA for HTTP Signatures, Ed25519 for Object Integrity Proofs), sealed in
 * Redis under the KEK by the bridge kit's RedisSealedStore, so every process
 * of the bridge behind one domain serves the same actors and signs with the
 * same keys.
 *
 * **The handle rule** (docs/bridges.md#activitypub): a DID's handle is
 * `l` followed by the first 24 characters (120 bits) of the lowercase RFC 4648
 * base32 of SHA-256(`libertaria/activitypub-handle/v1\n` ‖ DID).
 * - stable: a function of the DID alone, the same in every process and after
 *   any restart, and the store keeps the first one made for good;
 * - collision-free: 120 bits make an accidental clash negligible (about
 *   2^-60 among a billion DIDs), and the store's unique index on handles
 *   refuses one anyway (BRIDGE_IDENTITY_CONFLICT) rather than let two DIDs
 *   share an actor;
 * - reveals no more than the DID: it is a hash of the (public) DID, so it
 *   links an actor to its DID only for someone who already has the DID.
 * It fits Mastodon's username rule (`[a-z0-9_]`, at most 30) and is
 * case-insensitive. A peer may ask for a name instead on its first bridging
 * (`bridgeIdentity(did, { name })`), which then is public and chosen.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  type webcrypto,
} from 'node:crypto';
import { BridgeError } from '@libertaria/bridge-kit';
import { parseDid } from '@libertaria/identity';

/** The part of the bridge kit's RedisSealedStore the actors use. */
export interface SealedRecordLike {
  readonly id: string;
  readonly meta: Readonly<Record<string, string | number>>;
  readonly secret: Uint8Array;
  readonly createdAt: number;
}
export interface SealedStoreLike {
  get(id: string): Promise<SealedRecordLike | undefined>;
  getOrCreate(
    id: string,
    make: () => { meta: Record<string, string | number>; secret: Uint8Array },
    options?: { unique?: Record<string, string> },
  ): Promise<{ record: SealedRecordLike; created: boolean }>;
  findBy(index: string, value: string): Promise<string | undefined>;
  count(): Promise<number>;
}

export const HANDLE_PREFIX = 'l';
const HANDLE_HASH_CHARS = 24;
/** Names a peer may ask for: Mastodon's username alphabet and length. */
export const REQUESTED_NAME = /^[a-z0-9_]{1,30}$/;
/** The instance actor (shared inbox key, authorized fetch): not a DID, never a handle. */
export const INSTANCE_ACTOR = 'bridge';
const INSTANCE_RECORD_ID = 'instance:bridge';
const RESERVED = new Set([INSTANCE_ACTOR, 'admin', 'root', 'support', 'inbox', 'users', 'notes', 'nodeinfo']);

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** The handle of a DID (the rule above). */
export function handleOf(did: string): string {
  const digest = createHash('sha256').update(`libertaria/activitypub-handle/v1\n${did}`).digest();
  return HANDLE_PREFIX + base32(digest).slice(0, HANDLE_HASH_CHARS);
}

/** True for a string that can name an actor here (a derived handle or an allowed name). */
export function isHandle(value: string): boolean {
  return REQUESTED_NAME.test(value);
}

export interface Actor {
  /** The DID, or `instance:bridge` for the instance actor. */
  readonly id: string;
  readonly handle: string;
  readonly createdAt: number;
  /** PEM, SPKI. */
  readonly rsaPublicPem: string;
}

export interface ActorKeys {
  readonly rsa: webcrypto.CryptoKeyPair;
  readonly ed25519: webcrypto.CryptoKeyPair;
}

interface Secret {
  readonly rsa: string;
  readonly ed25519: string;
}

function makeKeys(): { meta: Record<string, string | number>; secret: Uint8Array } {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ed = generateKeyPairSync('ed25519');
  const secret: Secret = {
    rsa: rsa.privateKey.export({ type: 'pkcs8', format: 'der' }).toString('base64'),
    ed25519: ed.privateKey.export({ type: 'pkcs8', format: 'der' }).toString('base64'),
  };
  return {
    meta: {
      rsaPublic: rsa.publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
      ed25519Public: ed.publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
    },
    secret: new TextEncoder().encode(JSON.stringify(secret)),
  };
}

function toActor(record: SealedRecordLike): Actor {
  const handle = record.meta.handle;
  const rsaPublic = record.meta.rsaPublic;
  if (typeof handle !== 'string' || typeof rsaPublic !== 'string') {
    throw new BridgeError('BRIDGE_KEY_STORE', `the sealed record of ${record.id} lacks its handle or public key`);
  }
  const pem = createPublicKey({ key: Buffer.from(rsaPublic, 'base64'), format: 'der', type: 'spki' }).export({
    type: 'spki',
    format: 'pem',
  });
  return { id: record.id, handle, createdAt: record.createdAt, rsaPublicPem: String(pem) };
}

async function importPair(
  privateKey: KeyObject,
  algorithm: webcrypto.RsaHashedImportParams | { name: 'Ed25519' },
): Promise<webcrypto.CryptoKeyPair> {
  const publicKey = createPublicKey(privateKey);
  // Extractable: Fedify exports a sender's keys into a queued outbox message (sealed in the job).
  return {
    privateKey: await crypto.subtle.importKey(
      'pkcs8',
      privateKey.export({ type: 'pkcs8', format: 'der' }),
      algorithm,
      true,
      ['sign'],
    ),
    publicKey: await crypto.subtle.importKey(
      'spki',
      publicKey.export({ type: 'spki', format: 'der' }),
      algorithm,
      true,
      ['verify'],
    ),
  };
}

/** The actors of the bridge, on a sealed store. Records never change once made, so each process caches them (bounded). */
export class ActorStore {
  private readonly byId = new Map<string, Actor>();
  private readonly byHandleCache = new Map<string, Actor>();
  private readonly keys = new Map<string, Promise<ActorKeys>>();

  constructor(
    private readonly store: SealedStoreLike,
    private readonly cacheEntries = 10_000,
  ) {}

  private remember(actor: Actor): Actor {
    if (this.byId.size >= this.cacheEntries) {
      this.byId.clear();
      this.byHandleCache.clear();
    }
    this.byId.set(actor.id, actor);
    this.byHandleCache.set(actor.handle, actor);
    return actor;
  }

  /** Makes (or finds) the actor of a DID. `name`, on the first bridging only, replaces the derived handle. */
  async bridge(did: string, name?: string): Promise<Actor> {
    parseDid(did); // IdentityError INVALID_DID
    const known = await this.byDid(did);
    if (known) return known;
    let handle = handleOf(did);
    if (name !== undefined) {
      const wanted = name.toLowerCase();
      if (!REQUESTED_NAME.test(wanted) || RESERVED.has(wanted)) {
        throw new BridgeError('BRIDGE_NAME_INVALID', 'an ActivityPub name is 1 to 30 of a-z, 0-9 and _ (not reserved)');
      }
      handle = wanted;
    }
    const { record } = await this.store.getOrCreate(
      did,
      () => {
        const made = makeKeys();
        return { meta: { ...made.meta, handle }, secret: made.secret };
      },
      { unique: { handle } },
    );
    return this.remember(toActor(record));
  }

  /** The instance actor (`/users/bridge`): signs the shared inbox's key fetches. */
  async instance(): Promise<Actor> {
    const known = this.byId.get(INSTANCE_RECORD_ID);
    if (known) return known;
    const { record } = await this.store.getOrCreate(
      INSTANCE_RECORD_ID,
      () => {
        const made = makeKeys();
        return { meta: { ...made.meta, handle: INSTANCE_ACTOR }, secret: made.secret };
      },
      { unique: { handle: INSTANCE_ACTOR } },
    );
    return this.remember(toActor(record));
  }

  async byDid(did: string): Promise<Actor | undefined> {
    const cached = this.byId.get(did);
    if (cached) return cached;
    const record = await this.store.get(did);
    return record ? this.remember(toActor(record)) : undefined;
  }

  async byHandle(handle: string): Promise<Actor | undefined> {
    const wanted = handle.toLowerCase();
    if (!isHandle(wanted)) return undefined;
    const cached = this.byHandleCache.get(wanted);
    if (cached) return cached;
    if (wanted === INSTANCE_ACTOR) return this.instance();
    const id = await this.store.findBy('handle', wanted);
    return id === undefined ? undefined : this.byDid(id);
  }

  /** The actor's key pairs, RSA first (Fedify signs HTTP requests with the first RSA key). */
  keyPairs(actor: Actor): Promise<ActorKeys> {
    let pending = this.keys.get(actor.id);
    if (pending) return pending;
    pending = this.openKeys(actor.id);
    if (this.keys.size >= this.cacheEntries) this.keys.clear();
    this.keys.set(actor.id, pending);
    pending.catch(() => this.keys.delete(actor.id));
    return pending;
  }

  private async openKeys(id: string): Promise<ActorKeys> {
    const record = await this.store.get(id);
    if (!record) throw new BridgeError('BRIDGE_IDENTITY_UNKNOWN', `no actor for ${id}`);
    let secret: Secret;
    try {
      secret = JSON.parse(new TextDecoder().decode(record.secret)) as Secret;
    } finally {
      record.secret.fill(0);
    }
    const rsa = createPrivateKey({ key: Buffer.from(secret.rsa, 'base64'), format: 'der', type: 'pkcs8' });
    const ed = createPrivateKey({ key: Buffer.from(secret.ed25519, 'base64'), format: 'der', type: 'pkcs8' });
    return {
      rsa: await importPair(rsa, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }),
      ed25519: await importPair(ed, { name: 'Ed25519' }),
    };
  }

  /** Bridged actors (the instance actor included). */
  count(): Promise<number> {
    return this.store.count();
  }
}
