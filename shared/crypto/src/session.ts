/**
 * Persistent sessions (the seed's PersistentSession): PQXDH to start, the
 * Double Ratchet for every message, rotation bookkeeping, serialization, and
 * 0-RTT resumption tickets.
 *
 * Rotation is advisory: the session counts messages and knows its age, and
 * rotationDue() (and the onRotationDue hook, fired once) tell the caller when
 * its policy says to start a new session with a fresh PQXDH. The session
 * keeps working past that point so no message in flight is lost; the
 * session-kind layer decides when to switch.
 */
import { toHex, wipe } from './bytes.js';
import type { CryptoProvider } from './crypto-provider.js';
import { DEFAULT_RATCHET_LIMITS, DoubleRatchet, type RatchetLimits } from './double-ratchet.js';
import { SessionError } from './errors.js';
import { resumptionSecretFromSharedKey, sessionIdFromSharedKey } from './kdf.js';
import { type PqxdhInitiatorParams, type PublicIdentity, pqxdhInitiate, pqxdhRespond } from './pqxdh.js';
import { decodeInitialMessage, encodeInitialMessage } from './pqxdh-message.js';
import type { ResponderPrekeys } from './prekey-store.js';
import { deriveTicketId, deriveTicketPsk, type ResumptionTicket, type TicketDirection } from './resumption.js';
import {
  type RotationPolicy,
  readSessionState,
  type SessionRole,
  type SessionStateFields,
  writeSessionState,
} from './session-state.js';

import type { TicketStore } from './ticket-store.js';

export type { RotationPolicy, SessionRole };

export const DEFAULT_ROTATION_POLICY: Readonly<RotationPolicy> = Object.freeze({
  maxMessages: 100_000,
  maxAgeMs: 7 * 24 * 60 * 60 * 1000,
});

export type RotationReason = 'messages' | 'age';

/** 0-RTT tickets each direction may issue over a session's life. */
export const DEFAULT_MAX_TICKETS = 32;
export const DEFAULT_TICKET_LIFETIME_MS = 24 * 60 * 60 * 1000;

export interface SessionOptions {
  policy?: Partial<RotationPolicy>;
  limits?: RatchetLimits;
  clock?: () => number;
  /** Called once, on the first encrypt/decrypt that finds the rotation policy exceeded. */
  onRotationDue?: (reason: RotationReason, session: PersistentSession) => void;
  maxTickets?: number;
}

export interface CreatePersistentSessionParams extends SessionOptions {
  provider: CryptoProvider;
  role: SessionRole;
  /** PQXDH's SK; the session derives its id and resumption secret from it (and wipes nothing of the caller's). */
  sharedKey: Uint8Array;
  ratchet: DoubleRatchet;
  localDid: string;
  peerDid: string;
  peer: PublicIdentity;
}

function policyOf(policy: Partial<RotationPolicy> | undefined): RotationPolicy {
  const merged = { ...DEFAULT_ROTATION_POLICY, ...policy };
  for (const [name, value] of Object.entries(merged)) {
    if (!Number.isSafeInteger(value) || value <= 0)
      throw new RangeError(`rotation policy ${name} must be a positive integer`);
  }
  return merged;
}

export class PersistentSession {
  readonly #p: CryptoProvider;
  readonly #state: SessionStateFields;
  readonly #ratchet: DoubleRatchet;
  readonly #clock: () => number;
  readonly #onRotationDue: SessionOptions['onRotationDue'];
  readonly #maxTickets: number;
  #rotationSignalled = false;
  #peerTicketIds: Map<string, number> | undefined;

  private constructor(p: CryptoProvider, state: SessionStateFields, ratchet: DoubleRatchet, options: SessionOptions) {
    this.#p = p;
    this.#state = state;
    this.#ratchet = ratchet;
    this.#clock = options.clock ?? Date.now;
    this.#onRotationDue = options.onRotationDue;
    this.#maxTickets = options.maxTickets ?? DEFAULT_MAX_TICKETS;
  }

  /** @internal Use createPersistentSession, initiatePersistentSession or acceptPersistentSession. */
  static fromParts(p: CryptoProvider, state: SessionStateFields, ratchet: DoubleRatchet, options: SessionOptions) {
    return new PersistentSession(p, state, ratchet, options);
  }

  get sessionId(): Uint8Array {
    return Uint8Array.from(this.#state.sessionId);
  }
  get role(): SessionRole {
    return this.#state.role;
  }
  get localDid(): string {
    return this.#state.localDid;
  }
  get peerDid(): string {
    return this.#state.peerDid;
  }
  get peer(): PublicIdentity {
    return {
      identityKey: Uint8Array.from(this.#state.peer.identityKey),
      identityDhKey: Uint8Array.from(this.#state.peer.identityDhKey),
    };
  }
  get createdAt(): number {
    return this.#state.createdAt;
  }
  get messagesSent(): number {
    return this.#state.messagesSent;
  }
  get messagesReceived(): number {
    return this.#state.messagesReceived;
  }
  get policy(): RotationPolicy {
    return { ...this.#state.policy };
  }
  get skippedKeyCount(): number {
    return this.#ratchet.skippedKeyCount;
  }
  get canSend(): boolean {
    return this.#ratchet.canSend;
  }

  /** Why a new session is due under the policy, or undefined. */
  rotationDue(now: number = this.#clock()): RotationReason | undefined {
    const s = this.#state;
    if (s.messagesSent + s.messagesReceived >= s.policy.maxMessages) return 'messages';
    if (now - s.createdAt >= s.policy.maxAgeMs) return 'age';
    return undefined;
  }

  #afterMessage(): void {
    if (this.#rotationSignalled || this.#onRotationDue === undefined) return;
    const reason = this.rotationDue();
    if (reason !== undefined) {
      this.#rotationSignalled = true;
      this.#onRotationDue(reason, this);
    }
  }

  encrypt(plaintext: Uint8Array): Uint8Array {
    const message = this.#ratchet.encrypt(plaintext);
    this.#state.messagesSent++;
    this.#afterMessage();
    return message;
  }

  /** Throws ProtocolError for malformed bytes, SessionError DECRYPT_FAILED / DUPLICATE_MESSAGE / TOO_MANY_SKIPPED. */
  decrypt(message: Uint8Array): Uint8Array {
    const plaintext = this.#ratchet.decrypt(message);
    this.#state.messagesReceived++;
    this.#afterMessage();
    return plaintext;
  }

  #direction(sending: boolean): TicketDirection {
    const initiatorSends = this.#state.role === 'initiator' ? sending : !sending;
    return initiatorSends ? 0 : 1;
  }

  /**
   * The next unused 0-RTT ticket for sending to the peer. The index advances
   * in the session state, so serialize the session after issuing (or a
   * restored older state could issue the same ticket again).
   */
  issueResumptionTicket(lifetimeMs: number = DEFAULT_TICKET_LIFETIME_MS): ResumptionTicket {
    const index = this.#state.ticketsIssued;
    if (index >= this.#maxTickets)
      throw new SessionError('SESSION_EXPIRED', 'this session has issued all its 0-RTT tickets');
    this.#state.ticketsIssued++;
    return this.#ticket(this.#direction(true), index, this.#clock() + lifetimeMs);
  }

  /** The receiving side: the peer's ticket with this id, or undefined. */
  resumptionTicketFor(ticketId: Uint8Array): ResumptionTicket | undefined {
    const direction = this.#direction(false);
    if (this.#peerTicketIds === undefined) {
      this.#peerTicketIds = new Map();
      for (let i = 0; i < this.#maxTickets; i++) {
        this.#peerTicketIds.set(toHex(deriveTicketId(this.#p, this.#state.resumptionSecret, direction, i)), i);
      }
    }
    const index = this.#peerTicketIds.get(toHex(ticketId));
    return index === undefined ? undefined : this.#ticket(direction, index, Number.MAX_SAFE_INTEGER);
  }

  #ticket(direction: TicketDirection, index: number, expiresAt: number): ResumptionTicket {
    const rs = this.#state.resumptionSecret;
    return {
      ticketId: deriveTicketId(this.#p, rs, direction, index),
      psk: deriveTicketPsk(this.#p, rs, direction, index),
      ad: this.#ratchet.associatedData,
      sessionId: Uint8Array.from(this.#state.sessionId),
      direction,
      index,
      expiresAt,
    };
  }

  /**
   * The whole state, versioned binary (docs/crypto.md). It holds secrets:
   * store it encrypted at rest, wipe the returned bytes after storing, and
   * never restore an older copy than the last one written after a send
   * (message keys would repeat).
   */
  serialize(): Uint8Array {
    return writeSessionState(this.#state, this.#ratchet);
  }

  /** Continues a serialized session. Throws SessionError SESSION_STATE_INVALID on anything malformed. */
  static restore(provider: CryptoProvider, bytes: Uint8Array, options: SessionOptions = {}): PersistentSession {
    const { state, ratchet } = readSessionState(provider, bytes, options.limits ?? DEFAULT_RATCHET_LIMITS);
    if (options.policy !== undefined) state.policy = policyOf({ ...state.policy, ...options.policy });
    return new PersistentSession(provider, state, ratchet, options);
  }

  destroy(): void {
    this.#ratchet.destroy();
    wipe(this.#state.resumptionSecret);
  }
}

/** A persistent session from a finished PQXDH (either side) and its ratchet. */
export function createPersistentSession(params: CreatePersistentSessionParams): PersistentSession {
  const p = params.provider;
  const state: SessionStateFields = {
    role: params.role,
    sessionId: sessionIdFromSharedKey(p, params.sharedKey),
    resumptionSecret: resumptionSecretFromSharedKey(p, params.sharedKey),
    peer: {
      identityKey: Uint8Array.from(params.peer.identityKey),
      identityDhKey: Uint8Array.from(params.peer.identityDhKey),
    },
    localDid: params.localDid,
    peerDid: params.peerDid,
    createdAt: (params.clock ?? Date.now)(),
    messagesSent: 0,
    messagesReceived: 0,
    ticketsIssued: 0,
    policy: policyOf(params.policy),
  };
  return PersistentSession.fromParts(p, state, params.ratchet, params);
}

export interface InitiateSessionParams extends PqxdhInitiatorParams, SessionOptions {
  /** The first application payload, carried in the initial message. */
  payload: Uint8Array;
}

/** Alice: PQXDH against a fetched bundle, the ratchet, and the initial message to send. */
export function initiatePersistentSession(params: InitiateSessionParams): {
  session: PersistentSession;
  initialMessage: Uint8Array;
} {
  const p = params.provider;
  const x = pqxdhInitiate(params);
  const ratchet = DoubleRatchet.initiator(p, x.sharedKey, x.ad, x.remoteSignedPrekey, params.limits);
  const session = createPersistentSession({
    ...params,
    role: 'initiator',
    sharedKey: x.sharedKey,
    ratchet,
    localDid: params.identity.signer.did,
    peerDid: params.peerDid,
    peer: x.peer,
  });
  wipe(x.sharedKey);
  const initialMessage = encodeInitialMessage({ ...x.message, ratchetMessage: session.encrypt(params.payload) });
  return { session, initialMessage };
}

export interface AcceptSessionParams extends SessionOptions {
  provider: CryptoProvider;
  prekeys: ResponderPrekeys;
  initialMessage: Uint8Array;
  /**
   * Refuses a replayed initial message that used no one-time prekey (only the
   * last-resort KEM prekey and the signed prekey, which stay valid). Keyed by
   * lastResortReplayId (ephemeral key and prekey ids). Without it such a message can be replayed
   * (as Signal's PQXDH spec notes); the replay yields no new secret but
   * repeats its payload.
   */
  replayGuard?: TicketStore;
}

/**
 * What a replay guard remembers of an initial message that used no one-time
 * prekey: the initiator's ephemeral key with the signed and last-resort KEM
 * prekey ids it names (40 bytes). The same ephemeral key against another
 * prekey is another handshake; the same triple is a replay.
 */
export function lastResortReplayId(message: {
  ephemeralKey: Uint8Array;
  signedPrekeyId: number;
  kemPrekeyId: number;
}): Uint8Array {
  const id = new Uint8Array(message.ephemeralKey.length + 8);
  id.set(message.ephemeralKey, 0);
  const view = new DataView(id.buffer);
  view.setUint32(message.ephemeralKey.length, message.signedPrekeyId);
  view.setUint32(message.ephemeralKey.length + 4, message.kemPrekeyId);
  return id;
}

/** Bob: checks and answers an initial message; returns the session and the first payload. */
export async function acceptPersistentSession(
  params: AcceptSessionParams,
): Promise<{ session: PersistentSession; payload: Uint8Array }> {
  const p = params.provider;
  const message = decodeInitialMessage(params.initialMessage);
  const x = await pqxdhRespond({ provider: p, prekeys: params.prekeys, message });
  const ratchet = DoubleRatchet.responder(p, x.sharedKey, x.ad, x.signedPrekey, params.limits);
  const session = createPersistentSession({
    ...params,
    role: 'responder',
    sharedKey: x.sharedKey,
    ratchet,
    localDid: params.prekeys.identity.signer.did,
    peerDid: x.peerDid,
    peer: x.peer,
  });
  wipe(x.sharedKey);
  let payload: Uint8Array;
  try {
    payload = session.decrypt(message.ratchetMessage);
  } catch (err) {
    session.destroy();
    throw err;
  }
  // Only now, with the message authenticated, are one-time prekeys consumed or the replay id recorded.
  if (x.usedOneTimePrekey) {
    if (!(await x.consumeOneTimePrekeys())) {
      session.destroy();
      wipe(payload);
      throw new SessionError(
        'REPLAYED',
        'a one-time prekey this initial message names was used by another message first',
      );
    }
  } else if (params.replayGuard && !(await params.replayGuard.consumeOnce(lastResortReplayId(message)))) {
    session.destroy();
    wipe(payload);
    throw new SessionError('REPLAYED', 'this initial message (no one-time prekey) was accepted before');
  }
  return { session, payload };
}
