/**
 * The Double Ratchet (Signal's specification, revision 4) over X25519,
 * HKDF-SHA256, HMAC-SHA256 and ChaCha20-Poly1305:
 *
 *   KDF_RK(RK, dh)  = HKDF(salt = RK, ikm = dh, info = ROOT_KDF_INFO) → RK', CK
 *   KDF_CK(CK)      = MK = HMAC(CK, 0x01), CK' = HMAC(CK, 0x02)
 *   MK → key, nonce = HKDF(salt = zero, ikm = MK, info = MESSAGE_KEYS_INFO), 32 + 12 bytes
 *   ENCRYPT(MK, pt, AD ‖ header) with ChaCha20-Poly1305
 *
 * The nonce is derived from MK rather than random or counted: every message
 * key encrypts exactly one message and is then deleted, so a (key, nonce)
 * pair can never repeat, and nothing depends on the RNG or on carrying a
 * nonce on the wire.
 *
 * Decryption is transactional: skipped keys, chain and root keys and the new
 * ratchet key pair are computed on the side and committed only once the
 * message authenticates, so a forged or corrupted message changes nothing.
 * A message key is deleted on use, so a duplicate or replay is refused
 * (DUPLICATE_MESSAGE).
 *
 * Skipped keys are bounded twice: one message may make us skip at most
 * `maxSkipPerChain` keys in one chain (Signal's MAX_SKIP, libsignal's 2,000);
 * beyond that the message is refused (TOO_MANY_SKIPPED) before any work. And
 * at most `maxSkippedKeys` skipped keys are kept in total, oldest evicted
 * first, so lost messages can never grow the state without bound nor wedge a
 * live session; a message older than the evicted keys is then undecryptable.
 *
 * This module is free of Node imports; the provider brings the primitives.
 */
import { type ByteReader, type ByteWriter, concatBytes, constantTimeEqual, toHex, wipe } from './bytes.js';
import type { CryptoProvider, X25519KeyPair } from './crypto-provider.js';
import { SessionError } from './errors.js';
import { type ChainStep, kdfCk, kdfRk, messageAeadKeys } from './kdf.js';
import {
  decodeRatchetMessage,
  encodeRatchetHeader,
  encodeRatchetMessage,
  type RatchetHeader,
} from './ratchet-message.js';

export interface RatchetLimits {
  /** Most keys one message may make us skip in one chain; beyond it the message is refused. */
  maxSkipPerChain: number;
  /** Most skipped keys kept in total (all chains); the oldest are evicted beyond it. */
  maxSkippedKeys: number;
}

export const DEFAULT_RATCHET_LIMITS: Readonly<RatchetLimits> = Object.freeze({
  maxSkipPerChain: 2000,
  maxSkippedKeys: 25_000,
});

/** Remote ratchet keys remembered after their chain is replaced, to tell a late duplicate from a forgery. */
const MAX_PREVIOUS_REMOTE_KEYS = 5;
const MAX_COUNTER = 0xffffffff;

interface SkippedKey {
  dh: Uint8Array;
  n: number;
  messageKey: Uint8Array;
}

function skippedId(dh: Uint8Array, n: number): string {
  return `${toHex(dh)}:${n}`;
}

export class DoubleRatchet {
  #rootKey: Uint8Array;
  #dhSelf: X25519KeyPair;
  #dhRemote: Uint8Array | undefined;
  #sendChainKey: Uint8Array | undefined;
  #recvChainKey: Uint8Array | undefined;
  #sendN = 0;
  #recvN = 0;
  #prevSendN = 0;
  readonly #skipped = new Map<string, SkippedKey>();
  #previousRemotes: string[] = [];
  /** False while the ratchet key is the responder's signed prekey, which it must not wipe. */
  #ownsSelfKey = true;
  readonly #ad: Uint8Array;
  readonly #p: CryptoProvider;
  readonly #limits: RatchetLimits;

  private constructor(
    p: CryptoProvider,
    ad: Uint8Array,
    rootKey: Uint8Array,
    dhSelf: X25519KeyPair,
    limits: RatchetLimits,
  ) {
    this.#p = p;
    this.#ad = Uint8Array.from(ad);
    this.#rootKey = rootKey;
    this.#dhSelf = dhSelf;
    this.#limits = checkLimits(limits);
  }

  /**
   * Alice, after PQXDH: RK = SK, a fresh ratchet key pair, and the first
   * sending chain from DH(ratchet key, Bob's signed prekey).
   */
  static initiator(
    p: CryptoProvider,
    sharedKey: Uint8Array,
    ad: Uint8Array,
    remoteSignedPrekey: Uint8Array,
    limits: RatchetLimits = DEFAULT_RATCHET_LIMITS,
    ratchetKey: X25519KeyPair = p.x25519Generate(),
  ): DoubleRatchet {
    const dh = p.x25519(ratchetKey.privateKey, remoteSignedPrekey);
    const step = kdfRk(p, sharedKey, dh);
    wipe(dh);
    const r = new DoubleRatchet(p, ad, step.rootKey, ratchetKey, limits);
    r.#dhRemote = Uint8Array.from(remoteSignedPrekey);
    r.#sendChainKey = step.chainKey;
    return r;
  }

  /** Bob, after PQXDH: RK = SK, his signed prekey as the first ratchet key; he can send once he has received. */
  static responder(
    p: CryptoProvider,
    sharedKey: Uint8Array,
    ad: Uint8Array,
    signedPrekey: X25519KeyPair,
    limits: RatchetLimits = DEFAULT_RATCHET_LIMITS,
  ): DoubleRatchet {
    // Borrowed, not copied: the signed prekey belongs to the prekey store (which may reuse it for other
    // handshakes and has its key already imported); the first DH ratchet step replaces it and must not wipe it.
    const r = new DoubleRatchet(p, ad, Uint8Array.from(sharedKey), signedPrekey, limits);
    r.#ownsSelfKey = false;
    return r;
  }

  /** Whether encrypt() may be called: Bob cannot send before Alice's first message arrives. */
  get canSend(): boolean {
    return this.#sendChainKey !== undefined;
  }

  get skippedKeyCount(): number {
    return this.#skipped.size;
  }

  /** The session AD this ratchet authenticates with every message. */
  get associatedData(): Uint8Array {
    return Uint8Array.from(this.#ad);
  }

  encrypt(plaintext: Uint8Array): Uint8Array {
    const chainKey = this.#sendChainKey;
    if (chainKey === undefined) {
      throw new SessionError('SESSION_STATE_INVALID', 'the responder cannot send before the first message arrives');
    }
    if (this.#sendN >= MAX_COUNTER) throw new SessionError('SESSION_EXPIRED', 'the sending chain is exhausted');
    const step = kdfCk(this.#p, chainKey);
    wipe(chainKey);
    this.#sendChainKey = step.chainKey;
    const headerBytes = encodeRatchetHeader({ dh: this.#dhSelf.publicKey, pn: this.#prevSendN, n: this.#sendN });
    this.#sendN++;
    const sealed = this.#seal(step.messageKey, headerBytes, plaintext);
    return encodeRatchetMessage(headerBytes, sealed);
  }

  decrypt(message: Uint8Array): Uint8Array {
    const { header, headerBytes, sealed } = decodeRatchetMessage(message);
    const id = skippedId(header.dh, header.n);
    const skipped = this.#skipped.get(id);
    if (skipped !== undefined) {
      // Kept until the message authenticates, so a forgery cannot burn a key a real message still needs.
      const plaintext = this.#open(skipped.messageKey, headerBytes, sealed);
      this.#skipped.delete(id);
      wipe(skipped.messageKey);
      return plaintext;
    }
    const current = this.#dhRemote !== undefined && constantTimeEqual(header.dh, this.#dhRemote);
    if (current && header.n < this.#recvN) {
      throw new SessionError('DUPLICATE_MESSAGE', `message ${header.n} of this chain was already received or evicted`);
    }
    if (!current && this.#previousRemotes.includes(toHex(header.dh))) {
      throw new SessionError('DUPLICATE_MESSAGE', 'message of an earlier chain whose key was already used or evicted');
    }
    return current
      ? this.#decryptInChain(header, headerBytes, sealed)
      : this.#decryptWithStep(header, headerBytes, sealed);
  }

  #checkSkip(from: number, until: number, what: string): void {
    if (until - from > this.#limits.maxSkipPerChain) {
      throw new SessionError(
        'TOO_MANY_SKIPPED',
        `${what}: ${until - from} skipped message keys exceed the bound of ${this.#limits.maxSkipPerChain}`,
      );
    }
  }

  /** A message in the current receiving chain. */
  #decryptInChain(header: RatchetHeader, headerBytes: Uint8Array, sealed: Uint8Array): Uint8Array {
    const chainKey = this.#recvChainKey;
    if (chainKey === undefined) throw new SessionError('DECRYPT_FAILED', 'no receiving chain for this ratchet key');
    this.#checkSkip(this.#recvN, header.n, 'message');
    const pending: SkippedKey[] = [];
    const { chainKey: next, messageKey } = this.#advance(chainKey, this.#recvN, header.n, header.dh, pending);
    let plaintext: Uint8Array;
    try {
      plaintext = this.#open(messageKey, headerBytes, sealed);
    } catch (err) {
      discard(pending, next, messageKey);
      throw err;
    }
    wipe(chainKey, messageKey);
    this.#recvChainKey = next;
    this.#recvN = header.n + 1;
    this.#storeSkipped(pending);
    return plaintext;
  }

  /** A message under a new remote ratchet key: a DH ratchet step, committed only if it authenticates. */
  #decryptWithStep(header: RatchetHeader, headerBytes: Uint8Array, sealed: Uint8Array): Uint8Array {
    const oldChain = this.#recvChainKey;
    if (oldChain !== undefined) this.#checkSkip(this.#recvN, header.pn, 'previous chain');
    this.#checkSkip(0, header.n, 'new chain');
    const p = this.#p;
    const pending: SkippedKey[] = [];
    let oldNext: Uint8Array | undefined;
    if (oldChain !== undefined && this.#dhRemote !== undefined && header.pn > this.#recvN) {
      // Keys of the previous chain that were never delivered: PN says how many it had.
      const tail = this.#advance(oldChain, this.#recvN, header.pn - 1, this.#dhRemote, pending);
      pending.push({ dh: this.#dhRemote, n: header.pn - 1, messageKey: tail.messageKey });
      oldNext = tail.chainKey;
    }
    const dhRecv = p.x25519(this.#dhSelf.privateKey, header.dh);
    const recvStep = kdfRk(p, this.#rootKey, dhRecv);
    const newSelf = p.x25519Generate();
    const dhSend = p.x25519(newSelf.privateKey, header.dh);
    const sendStep = kdfRk(p, recvStep.rootKey, dhSend);
    wipe(dhRecv, dhSend, recvStep.rootKey);
    const { chainKey: recvNext, messageKey } = this.#advance(recvStep.chainKey, 0, header.n, header.dh, pending);
    let plaintext: Uint8Array;
    try {
      plaintext = this.#open(messageKey, headerBytes, sealed);
    } catch (err) {
      const created = [oldNext, recvStep.chainKey, recvNext, messageKey, sendStep.rootKey, sendStep.chainKey];
      discard(pending, ...created, newSelf.privateKey);
      throw err;
    }
    // Commit.
    wipe(oldNext, recvStep.chainKey, messageKey, oldChain, this.#rootKey, this.#sendChainKey);
    if (this.#ownsSelfKey) wipe(this.#dhSelf.privateKey);
    this.#ownsSelfKey = true;
    if (this.#dhRemote !== undefined) {
      this.#previousRemotes.push(toHex(this.#dhRemote));
      if (this.#previousRemotes.length > MAX_PREVIOUS_REMOTE_KEYS) this.#previousRemotes.shift();
    }
    this.#dhRemote = Uint8Array.from(header.dh);
    this.#rootKey = sendStep.rootKey;
    this.#recvChainKey = recvNext;
    this.#recvN = header.n + 1;
    this.#sendChainKey = sendStep.chainKey;
    this.#prevSendN = this.#sendN;
    this.#sendN = 0;
    this.#dhSelf = newSelf;
    this.#storeSkipped(pending);
    return plaintext;
  }

  /**
   * Steps a chain from index `from` to message `until`: the keys of messages
   * from..until-1 go to `pending`, and the message key of `until` and the
   * chain key after it are returned. The input chain key is not wiped (the
   * caller still owns it until commit); every intermediate one is.
   */
  #advance(chainKey: Uint8Array, from: number, until: number, dh: Uint8Array, pending: SkippedKey[]): ChainStep {
    let ck = chainKey;
    for (let n = from; n < until; n++) {
      const step = kdfCk(this.#p, ck);
      if (ck !== chainKey) wipe(ck);
      pending.push({ dh, n, messageKey: step.messageKey });
      ck = step.chainKey;
    }
    const last = kdfCk(this.#p, ck);
    if (ck !== chainKey) wipe(ck);
    return last;
  }

  #storeSkipped(pending: SkippedKey[]): void {
    for (const k of pending) this.#skipped.set(skippedId(k.dh, k.n), k);
    this.#evict(this.#limits.maxSkippedKeys);
  }

  #evict(max: number): void {
    // A Map iterates in insertion order, so the first entries are the oldest.
    for (const [id, k] of this.#skipped) {
      if (this.#skipped.size <= max) break;
      wipe(k.messageKey);
      this.#skipped.delete(id);
    }
  }

  #seal(messageKey: Uint8Array, headerBytes: Uint8Array, plaintext: Uint8Array): Uint8Array {
    const { key, nonce } = messageAeadKeys(this.#p, messageKey);
    wipe(messageKey);
    const ad = concatBytes(this.#ad, headerBytes);
    try {
      return this.#p.aeadSeal(key, nonce, plaintext, ad);
    } finally {
      wipe(key, nonce);
    }
  }

  /** Does not wipe the message key: on failure the caller may still need it (a skipped key). */
  #open(messageKey: Uint8Array, headerBytes: Uint8Array, sealed: Uint8Array): Uint8Array {
    const { key, nonce } = messageAeadKeys(this.#p, messageKey);
    const ad = concatBytes(this.#ad, headerBytes);
    try {
      return this.#p.aeadOpen(key, nonce, sealed, ad);
    } finally {
      wipe(key, nonce);
    }
  }

  /** Wipes every secret; the ratchet is unusable afterwards. */
  destroy(): void {
    wipe(this.#rootKey, this.#sendChainKey, this.#recvChainKey);
    if (this.#ownsSelfKey) wipe(this.#dhSelf.privateKey);
    for (const k of this.#skipped.values()) wipe(k.messageKey);
    this.#skipped.clear();
    this.#sendChainKey = undefined;
    this.#recvChainKey = undefined;
  }

  // Serialization (see docs/crypto.md, "Session state"): fixed fields, then the lists.

  serializedSize(): number {
    let size = 2 + this.#ad.length + 32 * 3 + 1 + 12 + 1 + 32 * this.#previousRemotes.length + 4;
    if (this.#dhRemote) size += 32;
    if (this.#sendChainKey) size += 32;
    if (this.#recvChainKey) size += 32;
    return size + this.#skipped.size * (32 + 4 + 32);
  }

  writeTo(w: ByteWriter): void {
    w.u8(this.#ad.length >> 8)
      .u8(this.#ad.length & 0xff)
      .raw(this.#ad)
      .raw(this.#rootKey)
      .raw(this.#dhSelf.privateKey)
      .raw(this.#dhSelf.publicKey);
    const flags = (this.#dhRemote ? 1 : 0) | (this.#sendChainKey ? 2 : 0) | (this.#recvChainKey ? 4 : 0);
    w.u8(flags);
    if (this.#dhRemote) w.raw(this.#dhRemote);
    if (this.#sendChainKey) w.raw(this.#sendChainKey);
    if (this.#recvChainKey) w.raw(this.#recvChainKey);
    w.u32(this.#sendN).u32(this.#recvN).u32(this.#prevSendN);
    w.u8(this.#previousRemotes.length);
    for (const hex of this.#previousRemotes) w.raw(fromHex(hex));
    w.u32(this.#skipped.size);
    for (const k of this.#skipped.values()) w.raw(k.dh).u32(k.n).raw(k.messageKey);
  }

  /** Reads what writeTo wrote; the caller maps ProtocolError to SESSION_STATE_INVALID. */
  static readFrom(p: CryptoProvider, r: ByteReader, limits: RatchetLimits = DEFAULT_RATCHET_LIMITS): DoubleRatchet {
    const adLength = (r.u8('AD length') << 8) | r.u8('AD length');
    const ad = r.bytesN(adLength, 'AD');
    const rootKey = r.bytesN(32, 'root key');
    const privateKey = r.bytesN(32, 'ratchet private key');
    const publicKey = r.x25519Key('ratchet public key');
    if (!constantTimeEqual(p.x25519PublicKey(privateKey), publicKey)) {
      throw new SessionError('SESSION_STATE_INVALID', 'the ratchet key pair does not match');
    }
    const ratchet = new DoubleRatchet(p, ad, rootKey, { privateKey, publicKey }, limits);
    const flags = r.u8('flags');
    if (flags & ~7) throw new SessionError('SESSION_STATE_INVALID', 'unknown ratchet flags');
    if (flags & 1) ratchet.#dhRemote = r.x25519Key('remote ratchet key');
    if (flags & 2) ratchet.#sendChainKey = r.bytesN(32, 'sending chain key');
    if (flags & 4) ratchet.#recvChainKey = r.bytesN(32, 'receiving chain key');
    ratchet.#sendN = r.u32('sending counter');
    ratchet.#recvN = r.u32('receiving counter');
    ratchet.#prevSendN = r.u32('previous counter');
    const previous = r.u8('previous key count');
    if (previous > MAX_PREVIOUS_REMOTE_KEYS) throw new SessionError('SESSION_STATE_INVALID', 'too many previous keys');
    for (let i = 0; i < previous; i++) ratchet.#previousRemotes.push(toHex(r.x25519Key('previous remote key')));
    const count = r.u32('skipped key count');
    // Bounded by the input itself (68 bytes each), so a lying count cannot make us loop for long.
    if (count * 68 > r.remaining)
      throw new SessionError('SESSION_STATE_INVALID', 'skipped key count exceeds the input');
    for (let i = 0; i < count; i++) {
      const dh = r.x25519Key('skipped key ratchet key');
      const n = r.u32('skipped key counter');
      const messageKey = r.bytesN(32, 'skipped message key');
      const id = skippedId(dh, n);
      if (ratchet.#skipped.has(id)) throw new SessionError('SESSION_STATE_INVALID', 'a skipped key is listed twice');
      ratchet.#skipped.set(id, { dh, n, messageKey });
    }
    ratchet.#evict(ratchet.#limits.maxSkippedKeys);
    return ratchet;
  }
}

function checkLimits(limits: RatchetLimits): RatchetLimits {
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 0)
      throw new RangeError(`ratchet limit ${name} must be a non-negative integer`);
  }
  return { maxSkipPerChain: limits.maxSkipPerChain, maxSkippedKeys: limits.maxSkippedKeys };
}

function discard(pending: SkippedKey[], ...keys: (Uint8Array | undefined)[]): void {
  for (const k of pending) wipe(k.messageKey);
  // The caller's still-committed key must survive: only keys created in this attempt are passed here.
  wipe(...keys);
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}
