/**
 * Sealed by default: the SessionManager a RelayClient uses when given the
 * `sessions` option (docs/client.md#sealed-sessions). It keeps this peer's
 * prekey private keys and one PersistentSession per remote DID (plus a few
 * older ones, so messages in flight under them still open) in a
 * SessionStore, publishes and refills prekeys, seals outbound payloads and
 * opens inbound ones.
 *
 * Sealed payload (the body inside the DID envelope):
 *   u8 type ‖ message
 * type 0x01 = initial: a PQXDH initial message (pqxdh-message.ts) whose
 *   ratchet message carries the payload; the initiator sends every message
 *   as an initial one until it has received from the responder, so any of
 *   them can start the session (the responder recognizes the same handshake
 *   by its ephemeral key and just decrypts the ratchet message);
 * type 0x02 = ratchet: a Double Ratchet message of the session whose 16-byte
 *   id travels in the SEND's sessionId field.
 *
 * Rotation: every session counts its messages and knows its age
 * (PersistentSession.rotationDue, under the manager's `rotation` policy).
 * When the current session with a peer is due, the next seal runs a fresh
 * PQXDH (a new bundle, a new session id) and the old session moves among the
 * older ones, so messages still in flight under it open. Either side rotates
 * this way: the responder of a due session becomes the initiator of the next.
 *
 * Opened, not yet acknowledged: a durable message's plaintext is stored in
 * the peer's record, in the same atomic put as the ratchet state that
 * consumed its key, until the application acknowledges it
 * (acknowledge()). A redelivery of that frame (same message id, same sealed
 * bytes) after a crash gets the stored plaintext instead of a spent key.
 *
 * Browser-safe: no Node imports (the provider and verifier are passed in).
 */

import {
  acceptEphemeralRequest,
  acceptPersistentSession,
  type CryptoProvider,
  DEFAULT_ROTATION_POLICY,
  decodeInitialMessage,
  type EphemeralResponder,
  generateKemPrekey,
  generateOneTimePrekeys,
  generatePrekeyPublication,
  type IdentityDhKey,
  identityDhKeyFromPrivate,
  initiatePersistentSession,
  type LifecycleLogger,
  type LifecycleState,
  type LifecycleTransition,
  type LocalIdentity,
  type OneTimePrekeyKind,
  type OneTimePrekeyStore,
  type ResponderPrekeys,
  type RotationPolicy,
  type RotationReason,
  SessionError,
  SessionLifecycle,
  type SessionOptions,
  signPrekey,
  type TicketStore,
} from '@libertaria/crypto';
import type { PeerSigner } from '@libertaria/identity';
import {
  bytesEqual,
  type PrekeyBundle,
  PrekeyKind,
  type PrekeyPublication,
  type PrekeyVerifier,
  ProtocolError,
  verifyBundle,
} from '@libertaria/protocol';
import { toHex } from './bytes.js';
import { decodePeerRecord, encodePeerRecord, type PeerEntry, type PeerSessions } from './peer-record.js';
import { packFields, readU32, type SessionStore, u32, unpackFields } from './session-store.js';

export const SealedType = { INITIAL: 0x01, RATCHET: 0x02 } as const;

/** What a SessionManager needs from the RelayClient it serves. */
export interface SessionTransport {
  publishPrekeys(publication: PrekeyPublication, options?: { replaceOneTime?: boolean }): Promise<PrekeyStatusLike>;
  fetchPrekeys(to: string): Promise<PrekeyBundle>;
  prekeyStatus(): Promise<PrekeyStatusLike>;
}

export interface PrekeyStatusLike {
  published: boolean;
  oneTimeX25519: number;
  oneTimeKem: number;
  lowWater: number;
  lastOneTimeX25519Id?: number;
  lastOneTimeKemId?: number;
}

export interface SessionManagerOptions {
  identity: PeerSigner;
  store: SessionStore;
  /** nodeCrypto in Node, nobleCrypto in a browser. */
  provider: CryptoProvider;
  /** Ed25519 verifier for fetched bundles (verifyEd25519 in Node). */
  verify: PrekeyVerifier;
  /** One-time prekeys of each kind to keep published (default 20). */
  oneTimePrekeys?: number;
  /** Older sessions per peer kept for messages in flight (default 3). */
  maxOldSessions?: number;
  /**
   * When a session is due for replacement by a fresh PQXDH: after
   * `maxMessages` messages (sent + received) or `maxAgeMs` of age, whichever
   * comes first (defaults DEFAULT_ROTATION_POLICY: 100,000 messages, 7 days).
   * Applies to stored sessions too when they are loaded.
   */
  rotation?: Partial<RotationPolicy>;
  /** Milliseconds since the epoch (default Date.now); sessions' ages are measured with it. */
  clock?: () => number;
  /** Called after a seal started (and stored) a new session because the current one was due; a throw is ignored. */
  onRotation?: (event: RotationEvent) => void;
  /**
   * Each peer's session lifecycle (session/lifecycle.ts): handshaking until
   * the peer answers our first message (active at once on the responding
   * side), rotating from a rotation's new handshake until the peer answers on
   * the new session. Called for every transition; also logged through `log`.
   */
  onSessionState?: (peerDid: string, transition: LifecycleTransition) => void;
  log?: LifecycleLogger;
  /**
   * After a rotation's bundle fetch failed, the wait before the next seal to
   * that peer tries again (default 60,000: the relay's fetch limit is per
   * minute); meanwhile seals use the due session without asking the relay.
   */
  rotationRetryMs?: number;
  /**
   * Durable messages per peer kept opened but not yet acknowledged (default
   * 4096, the client's maxUnackedInbound). Beyond it the oldest is
   * forgotten: if its frame is redelivered it no longer opens.
   */
  maxOpenedPerPeer?: number;
  /**
   * New-session handshakes (initial messages with an ephemeral key not seen
   * before) accepted from one peer DID per minute, with a burst of as many
   * (default 20). Each costs an ML-KEM decapsulation, four X25519 and a
   * signature check, and may consume a one-time prekey; beyond the budget a
   * handshake is refused (HANDSHAKE_RATE_LIMITED) before any of that work.
   */
  maxHandshakesPerMinute?: number;
  /**
   * The store is shared with other processes of the same identity (a bridge
   * scaled out over one Redis): peer records are read from the store for
   * every seal, open and acknowledge instead of being cached here (a cached
   * copy would be stale once another process advanced the ratchet), and the
   * prekey record is read again before publishing. Pair it with `lock`.
   */
  shared?: boolean;
  /**
   * Runs `work` holding a lock shared with the other processes using this
   * store, per key (a peer DID, or `prekeys` for the first creation of the
   * prekey record), inside this manager's own per-peer chain. A Redis lease
   * in a scaled-out bridge (@libertaria/bridge-kit/worker RedisSessionStore).
   */
  lock?: <T>(key: string, work: () => Promise<T>) => Promise<T>;
}

export interface RotationEvent {
  peerDid: string;
  reason: RotationReason;
  /** The session that was due (still kept among the older ones). */
  previousSessionId: Uint8Array;
  sessionId: Uint8Array;
}

function rotationPolicy(policy: Partial<RotationPolicy> | undefined): RotationPolicy {
  const merged = { ...DEFAULT_ROTATION_POLICY, ...policy };
  for (const [name, value] of Object.entries(merged)) {
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new ProtocolError('BAD_FIELD', `sessions: rotation.${name} must be a positive integer`);
    }
  }
  return merged;
}

interface PrekeyState {
  identityDh: IdentityDhKey;
  spkId: number;
  spkPrivate: Uint8Array;
  spkPublic: Uint8Array;
  lrId: number;
  lrSecret: Uint8Array;
  lrPublic: Uint8Array;
  nextX25519: number;
  nextKem: number;
}

const RECORD_PREKEYS = 'prekeys';
const OPENED_HASH_INFO = new TextEncoder().encode('libertaria-opened-body/1');
const otkName = (kind: OneTimePrekeyKind, id: number): string => `otk-${kind}-${id}`;
/**
 * Last-resort handshakes accepted (lastResortReplayId), one empty record
 * each, named after the last-resort prekey they used: the replay guard must
 * remember them for as long as that prekey accepts handshakes, across
 * restarts (a FileSessionStore), and can be dropped with it.
 */
const replayName = (lrId: number, id: Uint8Array): string => `replay-lr${lrId}-${toHex(id)}`;
/** Most peers whose handshake budgets are tracked at once; full (idle) budgets are forgotten first. */
const MAX_HANDSHAKE_BUDGETS = 10_000;

function sessionRecordName(peerDid: string, provider: CryptoProvider): string {
  // A DID may hold characters file names should not; the record is named by a hash of it.
  return `session-${toHex(provider.hkdf(new TextEncoder().encode(peerDid), new Uint8Array(32), new TextEncoder().encode('libertaria-session-record/1'), 16))}`;
}

function bad(message: string): ProtocolError {
  return new ProtocolError('BAD_FIELD', `sealed payload: ${message}`);
}

export class SessionManager {
  readonly identity: PeerSigner;
  readonly store: SessionStore;
  readonly #p: CryptoProvider;
  readonly #verify: PrekeyVerifier;
  readonly #oneTimeTarget: number;
  readonly #maxOld: number;
  readonly #policy: RotationPolicy;
  readonly #clock: () => number;
  readonly #onRotation: ((event: RotationEvent) => void) | undefined;
  readonly #onSessionState: SessionManagerOptions['onSessionState'];
  readonly #log: LifecycleLogger | undefined;
  readonly #lifecycles = new Map<string, SessionLifecycle>();
  readonly #maxOpened: number;
  readonly #rotationRetryMs: number;
  readonly #handshakesPerMinute: number;
  /** Peer DID → its new-session handshake budget (tokens, at clock time). */
  readonly #handshakeBudgets = new Map<string, { tokens: number; at: number }>();
  /** Peer DID → clock time before which a failed rotation is not tried again. */
  readonly #rotationRetryAt = new Map<string, number>();
  #prekeys: PrekeyState | undefined;
  #loaded: Promise<void> | undefined;
  readonly #peers = new Map<string, PeerSessions>();
  readonly #recordNames = new Map<string, string>();
  /** Per-peer chains: seal and open of one peer's sessions run one at a time. */
  readonly #locks = new Map<string, Promise<unknown>>();
  readonly #shared: boolean;
  readonly #sharedLock: SessionManagerOptions['lock'];
  #publishing: Promise<void> | undefined;

  constructor(options: SessionManagerOptions) {
    this.identity = options.identity;
    this.store = options.store;
    this.#p = options.provider;
    this.#verify = options.verify;
    this.#oneTimeTarget = options.oneTimePrekeys ?? 20;
    this.#maxOld = options.maxOldSessions ?? 3;
    this.#policy = rotationPolicy(options.rotation);
    this.#clock = options.clock ?? Date.now;
    this.#onRotation = options.onRotation;
    this.#onSessionState = options.onSessionState;
    this.#log = options.log;
    this.#maxOpened = options.maxOpenedPerPeer ?? 4096;
    this.#rotationRetryMs = options.rotationRetryMs ?? 60_000;
    this.#handshakesPerMinute = options.maxHandshakesPerMinute ?? 20;
    this.#shared = options.shared ?? false;
    this.#sharedLock = options.lock;
    if (!Number.isSafeInteger(this.#handshakesPerMinute) || this.#handshakesPerMinute < 1) {
      throw new ProtocolError('BAD_FIELD', 'sessions: maxHandshakesPerMinute must be a positive integer');
    }
    if (!Number.isSafeInteger(this.#rotationRetryMs) || this.#rotationRetryMs < 0) {
      throw new ProtocolError('BAD_FIELD', 'sessions: rotationRetryMs must be a non-negative integer');
    }
    if (!Number.isSafeInteger(this.#maxOpened) || this.#maxOpened < 1) {
      throw new ProtocolError('BAD_FIELD', 'sessions: maxOpenedPerPeer must be a positive integer');
    }
  }

  /** The rotation policy in force (defaults filled in). */
  get rotation(): RotationPolicy {
    return { ...this.#policy };
  }

  /** What every session this manager creates or loads is given. */
  #sessionOptions(): SessionOptions {
    return { policy: this.#policy, clock: this.#clock };
  }

  #lock<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(key) ?? Promise.resolve();
    const shared = this.#sharedLock;
    const locked = shared === undefined ? work : () => shared(key, work);
    const next = previous.then(locked, locked);
    const tail = next.catch(() => undefined);
    this.#locks.set(key, tail);
    void tail.then(() => {
      if (this.#locks.get(key) === tail) this.#locks.delete(key);
    });
    return next;
  }

  #localIdentity(): LocalIdentity {
    if (this.#prekeys === undefined) throw new SessionError('PREKEY_UNAVAILABLE', 'prekeys not loaded');
    return { signer: this.identity, identityDh: this.#prekeys.identityDh };
  }

  /** Loads (or creates) the identity DH key and the signed prekeys. */
  load(): Promise<void> {
    this.#loaded ??= this.#lock('prekeys', async () => {
      if (await this.#readPrekeys()) return;
      const idh = this.#p.x25519Generate();
      const identityDh = identityDhKeyFromPrivate(this.#p, this.identity, idh.privateKey);
      const { secrets } = generatePrekeyPublication(
        this.#p,
        { signer: this.identity, identityDh },
        { signedPrekeyId: 1, lastResortKemPrekeyId: 1 },
      );
      this.#prekeys = {
        identityDh,
        spkId: 1,
        spkPrivate: secrets.signedPrekey.privateKey,
        spkPublic: secrets.signedPrekey.public.publicKey,
        lrId: 1,
        lrSecret: secrets.lastResortKemPrekey.secretKey,
        lrPublic: secrets.lastResortKemPrekey.public.publicKey,
        nextX25519: 1,
        nextKem: 1,
      };
      await this.#savePrekeys();
    }).catch((error: unknown) => {
      // A store that failed (Redis down, a busy shared lock) is asked again next time, not remembered as failed.
      this.#loaded = undefined;
      throw error;
    });
    return this.#loaded;
  }

  /** Reads the prekey record into memory; false when there is none yet. */
  async #readPrekeys(): Promise<boolean> {
    const bytes = await this.store.get(RECORD_PREKEYS);
    if (bytes === undefined) return false;
    const f = unpackFields(bytes);
    if (f.length !== 8) throw new SessionError('SESSION_STATE_INVALID', 'prekey record is malformed');
    this.#prekeys = {
      identityDh: identityDhKeyFromPrivate(this.#p, this.identity, f[0] as Uint8Array),
      spkId: readU32(f[1]),
      spkPrivate: f[2] as Uint8Array,
      spkPublic: this.#p.x25519PublicKey(f[2] as Uint8Array),
      lrId: readU32(f[3]),
      lrSecret: f[4] as Uint8Array,
      lrPublic: f[5] as Uint8Array,
      nextX25519: readU32(f[6]),
      nextKem: readU32(f[7]),
    };
    return true;
  }

  async #savePrekeys(): Promise<void> {
    const k = this.#prekeys;
    if (k === undefined) return;
    await this.store.put(
      RECORD_PREKEYS,
      packFields([
        k.identityDh.privateKey,
        u32(k.spkId),
        k.spkPrivate,
        u32(k.lrId),
        k.lrSecret,
        k.lrPublic,
        u32(k.nextX25519),
        u32(k.nextKem),
      ]),
    );
  }

  /**
   * Makes sure the relay holds our signed prekeys and about `oneTimePrekeys`
   * one-time keys of each kind; publishes what is missing. Called on every
   * connect and on 'prekeys-low'. Concurrent calls share one run.
   */
  ensurePublished(relay: SessionTransport): Promise<void> {
    this.#publishing ??= this.#publish(relay).finally(() => {
      this.#publishing = undefined;
    });
    return this.#publishing;
  }

  async #publish(relay: SessionTransport): Promise<void> {
    await this.load();
    // Another process may have published (and moved the one-time key counters) since we loaded.
    if (this.#shared) await this.#lock('prekeys', () => this.#readPrekeys());
    const k = this.#prekeys as PrekeyState;
    const status = await relay.prekeyStatus();
    const localX = (await this.store.list('otk-x25519-')).length;
    const localKem = (await this.store.list('otk-kem-')).length;
    // One-time keys the relay holds but we do not (lost state) can never be used: start over with them.
    const replaceOneTime = status.published && (status.oneTimeX25519 > localX || status.oneTimeKem > localKem);
    const haveX = replaceOneTime ? 0 : status.oneTimeX25519;
    const haveKem = replaceOneTime ? 0 : status.oneTimeKem;
    const low = Math.max(status.lowWater, Math.ceil(this.#oneTimeTarget / 2));
    const addX = status.published && haveX >= low ? 0 : Math.max(0, this.#oneTimeTarget - haveX);
    const addKem = status.published && haveKem >= low ? 0 : Math.max(0, this.#oneTimeTarget - haveKem);
    if (status.published && addX === 0 && addKem === 0) return;
    k.nextX25519 = Math.max(k.nextX25519, (status.lastOneTimeX25519Id ?? 0) + 1);
    k.nextKem = Math.max(k.nextKem, (status.lastOneTimeKemId ?? 0) + 1);
    const oneTimeX = generateOneTimePrekeys(this.#p, k.nextX25519, addX);
    const oneTimeKem = [];
    for (let i = 0; i < addKem; i++) {
      oneTimeKem.push(generateKemPrekey(this.#p, this.identity, k.nextKem + i, PrekeyKind.ONE_TIME_KEM));
    }
    // Private halves are stored before the public ones are published: a fetched key is always openable.
    for (const key of oneTimeX) await this.store.put(otkName('x25519', key.public.id), key.privateKey);
    for (const key of oneTimeKem) await this.store.put(otkName('kem', key.public.id), key.secretKey);
    k.nextX25519 += addX;
    k.nextKem += addKem;
    await this.#savePrekeys();
    const publication: PrekeyPublication = {
      identityKey: this.identity.publicKey,
      identityDhKey: { id: 0, publicKey: k.identityDh.publicKey, signature: k.identityDh.signature },
      signedPrekey: {
        id: k.spkId,
        publicKey: k.spkPublic,
        signature: signPrekey(this.identity, PrekeyKind.SIGNED_X25519, k.spkId, k.spkPublic),
      },
      lastResortKemPrekey: {
        id: k.lrId,
        publicKey: k.lrPublic,
        signature: signPrekey(this.identity, PrekeyKind.LAST_RESORT_KEM, k.lrId, k.lrPublic),
      },
      oneTimePrekeys: oneTimeX.map((x) => x.public),
      oneTimeKemPrekeys: oneTimeKem.map((x) => x.public),
    };
    await relay.publishPrekeys(publication, { replaceOneTime });
  }

  /**
   * Opens an anonymous request (client/anonymous.ts) sealed to our signed
   * and last-resort prekeys; `replayGuard` refuses a request seen before.
   */
  acceptAnonymousRequest(request: Uint8Array, replayGuard?: TicketStore): Promise<EphemeralResponder> {
    return acceptEphemeralRequest({
      provider: this.#p,
      prekeys: this.#responderPrekeys(),
      request,
      ...(replayGuard !== undefined ? { replayGuard } : {}),
    });
  }

  #responderPrekeys(): ResponderPrekeys {
    const k = this.#prekeys as PrekeyState;
    const store = this.store;
    const oneTime: OneTimePrekeyStore = {
      peek: (kind, id) => store.get(otkName(kind, id)),
      consume: (kind, id) => store.take(otkName(kind, id)),
    };
    return {
      identity: this.#localIdentity(),
      signedPrekey: (id) => (id === k.spkId ? { privateKey: k.spkPrivate, publicKey: k.spkPublic } : undefined),
      lastResortKemPrekey: (id) => (id === k.lrId ? k.lrSecret : undefined),
      oneTime,
    };
  }

  /** The record's name, derived once per peer (an HKDF per save showed up in profiles). */
  #recordName(peerDid: string): string {
    let name = this.#recordNames.get(peerDid);
    if (name === undefined) {
      name = sessionRecordName(peerDid, this.#p);
      this.#recordNames.set(peerDid, name);
    }
    return name;
  }

  async #peer(peerDid: string): Promise<PeerSessions> {
    let peer = this.#peers.get(peerDid);
    if (peer !== undefined) return peer;
    const bytes = await this.store.get(this.#recordName(peerDid));
    peer =
      bytes === undefined
        ? { entries: [], opened: new Map() }
        : decodePeerRecord(this.#p, bytes, this.#sessionOptions());
    // Shared: never cached, every locked operation starts from what the store holds now.
    if (!this.#shared) this.#peers.set(peerDid, peer);
    return peer;
  }

  async #savePeer(peerDid: string, peer: PeerSessions): Promise<void> {
    await this.store.put(this.#recordName(peerDid), encodePeerRecord(peer));
  }

  /**
   * The durable replay guard of last-resort handshakes (no one-time prekey,
   * so the message itself stays acceptable): a record per accepted
   * handshake in our session store. Without it a relay, Redis or anyone who
   * saw the frame could replay it after the session was replaced and have
   * its first payload delivered again.
   */
  #lastResortReplayGuard(): TicketStore {
    const store = this.store;
    const lrId = (this.#prekeys as PrekeyState).lrId;
    return {
      async consumeOnce(id: Uint8Array): Promise<boolean> {
        const name = replayName(lrId, id);
        if ((await store.get(name)) !== undefined) return false;
        await store.put(name, new Uint8Array(0));
        return true;
      },
    };
  }

  /** Takes one new-session handshake from `peerDid`'s budget, or refuses it before any expensive work. */
  #spendHandshake(peerDid: string): void {
    const now = this.#clock();
    const capacity = this.#handshakesPerMinute;
    const refill = (b: { tokens: number; at: number }): number =>
      Math.min(capacity, b.tokens + ((now - b.at) * capacity) / 60_000);
    let budget = this.#handshakeBudgets.get(peerDid);
    if (budget === undefined) {
      if (this.#handshakeBudgets.size >= MAX_HANDSHAKE_BUDGETS) {
        for (const [did, b] of this.#handshakeBudgets) if (refill(b) >= capacity) this.#handshakeBudgets.delete(did);
      }
      budget = { tokens: capacity, at: now };
      // Still full of busy peers: refuse newcomers rather than grow without bound.
      if (this.#handshakeBudgets.size >= MAX_HANDSHAKE_BUDGETS) {
        throw new SessionError('HANDSHAKE_RATE_LIMITED', 'too many peers are starting sessions; retry later');
      }
      this.#handshakeBudgets.set(peerDid, budget);
    }
    budget.tokens = refill(budget);
    budget.at = now;
    if (budget.tokens < 1) {
      throw new SessionError(
        'HANDSHAKE_RATE_LIMITED',
        `${peerDid} started more than ${capacity} sessions in a minute; handshake refused`,
      );
    }
    budget.tokens -= 1;
  }

  /** What a redelivered frame is recognized by: a hash of its sealed bytes. */
  #bodyHash(body: Uint8Array): Uint8Array {
    return this.#p.hkdf(body, new Uint8Array(32), OPENED_HASH_INFO, 32);
  }

  /** The lifecycle of our sessions with `peerDid` (created on first use, in `initial`). */
  #lifecycle(peerDid: string, initial: LifecycleState = 'handshaking'): SessionLifecycle {
    let lifecycle = this.#lifecycles.get(peerDid);
    if (lifecycle === undefined) {
      lifecycle = new SessionLifecycle({
        name: `session ${this.identity.did} ↔ ${peerDid}`,
        log: this.#log,
        initial,
        clock: this.#clock,
      });
      const listener = this.#onSessionState;
      if (listener !== undefined) lifecycle.onTransition((t) => listener(peerDid, t));
      this.#lifecycles.set(peerDid, lifecycle);
    }
    return lifecycle;
  }

  /** Where our sessions with `peerDid` stand, if any was started or accepted in this process. */
  sessionState(peerDid: string): LifecycleState | undefined {
    return this.#lifecycles.get(peerDid)?.state;
  }

  #adopt(peer: PeerSessions, entry: PeerEntry): void {
    peer.entries.unshift(entry);
    while (peer.entries.length > 1 + this.#maxOld) peer.entries.pop()?.session.destroy();
  }

  /** Whether we hold a session with this peer (loaded from the store if need be). */
  async hasSession(peerDid: string): Promise<boolean> {
    return (await this.#peer(peerDid)).entries.length > 0;
  }

  /** A fresh PQXDH against `bundle`: the new session becomes the current one. */
  #initiate(
    peer: PeerSessions,
    peerDid: string,
    bundle: PrekeyBundle,
    payload: Uint8Array,
  ): { entry: PeerEntry; body: Uint8Array } {
    verifyBundle(bundle, this.#verify);
    const { session, initialMessage } = initiatePersistentSession({
      ...this.#sessionOptions(),
      provider: this.#p,
      identity: this.#localIdentity(),
      peerDid,
      bundle,
      payload,
    });
    const { ratchetMessage } = decodeInitialMessage(initialMessage);
    // The handshake part, repeated in front of every message until the peer answers.
    const entry = { session, header: initialMessage.slice(0, initialMessage.length - ratchetMessage.length) };
    this.#adopt(peer, entry);
    return { entry, body: withType(SealedType.INITIAL, initialMessage) };
  }

  /**
   * Seals `payload` for `peerDid`: returns the sealed body and the 16-byte
   * session id to put in the SEND. Without a session, or when the current one
   * is due for rotation, it fetches the peer's bundle (which consumes one of
   * its one-time prekeys), verifies it and runs PQXDH; the session state is
   * stored before the body is returned. A rotation whose bundle fetch fails
   * (rate limit, no connection) seals with the current session instead and
   * tries again on the next seal: rotation is never worth a lost message.
   */
  seal(
    relay: SessionTransport,
    peerDid: string,
    payload: Uint8Array,
  ): Promise<{ body: Uint8Array; sessionId: Uint8Array }> {
    return this.#lock(peerDid, async () => {
      await this.load();
      const peer = await this.#peer(peerDid);
      const current = peer.entries[0];
      const now = this.#clock();
      const due = current?.session.rotationDue(now);
      let entry: PeerEntry;
      let body: Uint8Array;
      let rotated: RotationEvent | undefined;
      // Without a session a failed fetch fails the send; a due rotation keeps the current session instead.
      let bundle: PrekeyBundle | undefined;
      if (current === undefined) {
        bundle = await relay.fetchPrekeys(peerDid);
      } else if (due !== undefined && now >= (this.#rotationRetryAt.get(peerDid) ?? 0)) {
        bundle = await relay.fetchPrekeys(peerDid).catch(() => undefined);
        if (bundle === undefined) this.#rotationRetryAt.set(peerDid, now + this.#rotationRetryMs);
        else this.#rotationRetryAt.delete(peerDid);
      }
      if (bundle !== undefined) {
        ({ entry, body } = this.#initiate(peer, peerDid, bundle, payload));
        // A first handshake starts in handshaking; a new one over a live session is a rotation.
        if (current !== undefined) this.#lifecycle(peerDid, 'active').applyIfAllowed('rotation_started', due);
        else this.#lifecycle(peerDid);
        if (current !== undefined && due !== undefined) {
          rotated = {
            peerDid,
            reason: due,
            previousSessionId: current.session.sessionId,
            sessionId: entry.session.sessionId,
          };
        }
      } else {
        entry = current as PeerEntry;
        if (entry.header !== undefined && entry.session.messagesReceived === 0) {
          const ratchet = entry.session.encrypt(payload);
          body = new Uint8Array(1 + entry.header.length + ratchet.length);
          body[0] = SealedType.INITIAL;
          body.set(entry.header, 1);
          body.set(ratchet, 1 + entry.header.length);
        } else {
          entry.header = undefined;
          body = withType(SealedType.RATCHET, entry.session.encrypt(payload));
        }
      }
      await this.#savePeer(peerDid, peer);
      if (rotated !== undefined) {
        try {
          this.#onRotation?.(rotated);
        } catch {
          // An observer's failure is not the send's: the new session is stored and in use.
        }
      }
      return { body, sessionId: entry.session.sessionId };
    });
  }

  /**
   * Opens a sealed body from `fromDid` (already authenticated by the DID
   * envelope). Throws (ProtocolError, SessionError) on anything that does not
   * open; state is stored before the plaintext is returned.
   *
   * With `messageId` (durable frames: the relay redelivers them until
   * acknowledged) the plaintext is kept in the same stored record until
   * acknowledge(fromDid, messageId), and a frame with that id and the same
   * sealed bytes returns the kept plaintext instead of being decrypted again
   * (its key is spent). Any other frame, including a replay of the same
   * bytes under a new message id, is decrypted as usual.
   */
  open(fromDid: string, sessionId: Uint8Array, body: Uint8Array, messageId?: Uint8Array): Promise<Uint8Array> {
    return this.#lock(fromDid, async () => {
      await this.load();
      const peer = await this.#peer(fromDid);
      const key = messageId === undefined ? undefined : toHex(messageId);
      const bodyHash = key === undefined ? undefined : this.#bodyHash(body);
      if (key !== undefined && bodyHash !== undefined) {
        const kept = peer.opened.get(key);
        if (kept !== undefined && bytesEqual(kept.bodyHash, bodyHash)) return Uint8Array.from(kept.plaintext);
      }
      const plaintext = await this.#openSealed(peer, fromDid, sessionId, body);
      if (key !== undefined && bodyHash !== undefined) {
        peer.opened.delete(key);
        peer.opened.set(key, {
          messageId: Uint8Array.from(messageId as Uint8Array),
          bodyHash,
          plaintext: Uint8Array.from(plaintext),
        });
        for (const [oldest, m] of peer.opened) {
          if (peer.opened.size <= this.#maxOpened) break;
          m.plaintext.fill(0);
          peer.opened.delete(oldest);
        }
      }
      await this.#savePeer(fromDid, peer);
      return plaintext;
    });
  }

  /**
   * The application is done with durable message `messageId` from `fromDid`:
   * forgets its kept plaintext (stored before this resolves). Call it before
   * acknowledging the frame to the relay, so a crash in between means a
   * redelivery that is refused as a duplicate, never a plaintext kept forever.
   */
  acknowledge(fromDid: string, messageId: Uint8Array): Promise<void> {
    return this.#lock(fromDid, async () => {
      const peer = await this.#peer(fromDid);
      const key = toHex(messageId);
      const kept = peer.opened.get(key);
      if (kept === undefined) return;
      kept.plaintext.fill(0);
      peer.opened.delete(key);
      await this.#savePeer(fromDid, peer);
    });
  }

  /** Durable messages from `peerDid` opened and not yet acknowledged (kept in the store). */
  openedUnacknowledged(peerDid: string): Promise<number> {
    return this.#lock(peerDid, async () => (await this.#peer(peerDid)).opened.size);
  }

  /** Decrypts (and, for a new handshake, accepts) a sealed body; the caller stores the peer's state. */
  async #openSealed(peer: PeerSessions, fromDid: string, sessionId: Uint8Array, body: Uint8Array): Promise<Uint8Array> {
    if (body.length < 2) throw bad('too short');
    const type = body[0];
    const message = body.subarray(1);
    if (type === SealedType.INITIAL) {
      const decoded = decodeInitialMessage(message);
      const ephemeral = toHex(decoded.ephemeralKey);
      const known = peer.entries.find((e) => e.ephemeral === ephemeral);
      if (known !== undefined) return known.session.decrypt(decoded.ratchetMessage);
      this.#spendHandshake(fromDid);
      const { session, payload } = await acceptPersistentSession({
        ...this.#sessionOptions(),
        provider: this.#p,
        prekeys: this.#responderPrekeys(),
        initialMessage: message,
        replayGuard: this.#lastResortReplayGuard(),
      });
      if (session.peerDid !== fromDid) {
        session.destroy();
        throw new SessionError(
          'PREKEY_BUNDLE_INVALID',
          `initial message names ${session.peerDid}, but ${fromDid} sent it`,
        );
      }
      this.#adopt(peer, { session, ephemeral });
      // The responder holds confirmed keys at once: established, or a rotation the peer made, done.
      const lifecycle = this.#lifecycle(fromDid);
      if (!lifecycle.applyIfAllowed('established')) {
        lifecycle.applyIfAllowed('rotation_started', 'peer');
        lifecycle.applyIfAllowed('rotation_done', 'peer');
      }
      return payload;
    }
    if (type === SealedType.RATCHET) {
      const id = toHex(sessionId);
      const entry = peer.entries.find((e) => toHex(e.session.sessionId) === id);
      if (entry === undefined) {
        throw new SessionError('DECRYPT_FAILED', `no session ${id} with ${fromDid}`);
      }
      const plaintext = entry.session.decrypt(message);
      // The peer answered: this session is confirmed, stop repeating the handshake.
      if (entry.header !== undefined && entry === peer.entries[0]) {
        const lifecycle = this.#lifecycle(fromDid);
        if (!lifecycle.applyIfAllowed('established')) lifecycle.applyIfAllowed('rotation_done');
      }
      entry.header = undefined;
      return plaintext;
    }
    throw bad(`unknown type ${type}`);
  }
}

function withType(type: number, message: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + message.length);
  out[0] = type;
  out.set(message, 1);
  return out;
}
