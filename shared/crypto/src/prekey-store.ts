/**
 * The responder's private prekeys. These live on the peer (never on a relay:
 * the relay only ever holds the public PrekeyPublication). One-time prekeys
 * sit behind OneTimePrekeyStore so a persistent, multi-process store can
 * implement the "exactly once" rule atomically.
 */
import { wipe } from './bytes.js';
import type { CryptoProvider, X25519KeyPair } from './crypto-provider.js';
import type { LocalIdentity, PrekeySecrets } from './prekeys.js';

export type OneTimePrekeyKind = 'x25519' | 'kem';

export interface OneTimePrekeyStore {
  /**
   * A copy of the private key of one-time prekey `id` of `kind`, if still
   * held, without consuming it. The responder computes with it and consumes
   * the key only once the initial message has authenticated, so a forged
   * message naming a real id cannot burn it.
   */
  peek(kind: OneTimePrekeyKind, id: number): Promise<Uint8Array | undefined>;
  /**
   * The private key of one-time prekey `id` of `kind`, exactly once: the
   * first call returns it and forgets it, every later call (and any call for
   * an id never added) returns undefined. Must be atomic across concurrent
   * callers; the handshake refuses an id this does not return.
   */
  consume(kind: OneTimePrekeyKind, id: number): Promise<Uint8Array | undefined>;
}

/** A OneTimePrekeyStore in memory (tests, short-lived peers). JavaScript's single thread makes consume atomic. */
export class InMemoryOneTimePrekeyStore implements OneTimePrekeyStore {
  readonly #keys = new Map<string, Uint8Array>();

  add(kind: OneTimePrekeyKind, id: number, privateKey: Uint8Array): void {
    this.#keys.set(`${kind}:${id}`, Uint8Array.from(privateKey));
  }

  /** Adds every one-time key of a fresh publication's secrets. */
  addSecrets(secrets: PrekeySecrets): void {
    for (const k of secrets.oneTimePrekeys) this.add('x25519', k.public.id, k.privateKey);
    for (const k of secrets.oneTimeKemPrekeys) this.add('kem', k.public.id, k.secretKey);
  }

  size(kind: OneTimePrekeyKind): number {
    let n = 0;
    for (const key of this.#keys.keys()) if (key.startsWith(`${kind}:`)) n++;
    return n;
  }

  async peek(kind: OneTimePrekeyKind, id: number): Promise<Uint8Array | undefined> {
    const key = this.#keys.get(`${kind}:${id}`);
    return key === undefined ? undefined : Uint8Array.from(key);
  }

  async consume(kind: OneTimePrekeyKind, id: number): Promise<Uint8Array | undefined> {
    const name = `${kind}:${id}`;
    const key = this.#keys.get(name);
    if (key === undefined) return undefined;
    this.#keys.delete(name);
    const out = Uint8Array.from(key);
    wipe(key);
    return out;
  }
}

/** What the PQXDH responder looks up by the ids an initial message names. */
export interface ResponderPrekeys {
  identity: LocalIdentity;
  /** A signed prekey still accepted: the current one and, during rotation, recently replaced ones. */
  signedPrekey(id: number): X25519KeyPair | undefined;
  /** The decapsulation key of a last-resort ML-KEM prekey still accepted. */
  lastResortKemPrekey(id: number): Uint8Array | undefined;
  oneTime: OneTimePrekeyStore;
}

/**
 * ResponderPrekeys kept in memory. Rotating the signed and last-resort
 * prekeys: add the new ones, publish, and retire the old ids only after the
 * relay has served the new bundle for a while (in-flight handshakes still
 * name the old ids).
 */
export class InMemoryResponderPrekeys implements ResponderPrekeys {
  readonly #signed = new Map<number, X25519KeyPair>();
  readonly #lastResort = new Map<number, Uint8Array>();

  constructor(
    readonly identity: LocalIdentity,
    readonly oneTime: OneTimePrekeyStore = new InMemoryOneTimePrekeyStore(),
  ) {}

  /** Builds the responder side of a fresh publication; one-time keys go to a new in-memory store. */
  static fromSecrets(p: CryptoProvider, identity: LocalIdentity, secrets: PrekeySecrets): InMemoryResponderPrekeys {
    const store = new InMemoryOneTimePrekeyStore();
    store.addSecrets(secrets);
    const prekeys = new InMemoryResponderPrekeys(identity, store);
    prekeys.addSecrets(p, secrets);
    return prekeys;
  }

  addSecrets(p: CryptoProvider, secrets: PrekeySecrets): void {
    const spk = secrets.signedPrekey;
    this.addSignedPrekey(spk.public.id, { privateKey: spk.privateKey, publicKey: p.x25519PublicKey(spk.privateKey) });
    this.addLastResortKemPrekey(secrets.lastResortKemPrekey.public.id, secrets.lastResortKemPrekey.secretKey);
  }

  addSignedPrekey(id: number, pair: X25519KeyPair): void {
    this.#signed.set(id, { privateKey: Uint8Array.from(pair.privateKey), publicKey: Uint8Array.from(pair.publicKey) });
  }

  addLastResortKemPrekey(id: number, secretKey: Uint8Array): void {
    this.#lastResort.set(id, Uint8Array.from(secretKey));
  }

  retireSignedPrekey(id: number): void {
    const pair = this.#signed.get(id);
    if (pair) wipe(pair.privateKey);
    this.#signed.delete(id);
  }

  retireLastResortKemPrekey(id: number): void {
    wipe(this.#lastResort.get(id));
    this.#lastResort.delete(id);
  }

  signedPrekey(id: number): X25519KeyPair | undefined {
    return this.#signed.get(id);
  }

  lastResortKemPrekey(id: number): Uint8Array | undefined {
    return this.#lastResort.get(id);
  }
}
