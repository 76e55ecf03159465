/**
 * RelayClient: one authenticated connection at a time to the first relay of
 * a failover list that works, with reconnection, durable-send retries,
 * RESUME and duplicate suppression. See docs/client.md for the guarantees.
 *
 * This file is the façade: the public API and its documentation, the
 * options, and the wiring of the parts, each in a module with one job:
 *
 *   connection-loop.ts   the link: the failover loop, each connection from
 *                        RESUME to its end, liveness, the run status and the
 *                        lifecycle (timing in link-timing.ts, the record in
 *                        connection.ts, whether it runs in run-status.ts)
 *   frame-dispatch.ts    each frame from a relay to the part that handles it
 *   send-window.ts       durable sends until ACKed or NACKed, in send order
 *   client-outbox.ts     the offline-first outbox
 *   inbound.ts           DELIVERs: duplicates, flow control, opening, acks
 *   anonymous-responder.ts  answering anonymous requests
 *   probes.ts, request-table.ts, relay-requests.ts
 *                        pings, presence queries and the requests to the relay
 *   path-updates.ts      telling peers where we moved, and where they did
 *   relay-list.ts, relay-trust.ts  the relays to try and the keys they must prove
 *   sealing.ts           whether payloads are sealed, and the warnings if not
 *   client-types.ts      the public types and CLIENT_DEFAULTS
 *
 * No Node-only imports here: with the WebSocket transport this runs in
 * browsers (the identity module still needs a browser port, see the docs).
 */

import type { SessionLifecycle } from '@libertaria/crypto';
import { HINT_LENGTH, hintFromDid, type PeerSigner, parseDid } from '@libertaria/identity';
import {
  encodeFrame,
  type Frame,
  ID_SIZE,
  type LibertariaError,
  MAX_PAYLOAD_LIMIT,
  type PrekeyBundle,
  type PrekeyPublication,
  RelayError,
  SendFlags,
  type SendFrame,
} from '@libertaria/protocol';
import { AnonymousResponder } from './anonymous-responder.js';
import { resolveReconnectOptions } from './backoff.js';
import { copyBytes, randomBytes, toHex } from './bytes.js';
import { ClientOutbox } from './client-outbox.js';
import {
  type AcceptedGrant,
  type AuditPageResult,
  type AuditQueryOptions,
  CLIENT_DEFAULTS,
  type ClientLogger,
  type FetchPrekeysOptions,
  type InboundMessage,
  type PrekeyStatus,
  type PublishPrekeysOptions,
  type RelayClientEvents,
  type RelayClientOptions,
  type RelayClientStats,
  type SendOptions,
  type SendResult,
} from './client-types.js';
import { ClientErrorCode, toError, toLibertariaError } from './codes.js';
import type { Connection } from './connection.js';
import { ConnectionLoop } from './connection-loop.js';
import { DedupeTracker } from './dedupe.js';
import { TypedEmitter } from './emitter.js';
import { encodeEnvelope } from './envelope.js';
import { FrameDispatch } from './frame-dispatch.js';
import { InboundSide } from './inbound.js';
import { LinkTiming, PING_APP } from './link-timing.js';
import { OnceEpochTracker } from './once-epoch.js';
import { PathUpdates, type PeerLocation } from './path-updates.js';
import { PingTable, PresenceTable } from './probes.js';
import { RelayList } from './relay-list.js';
import { RelayRequests } from './relay-requests.js';
import { type RequestAnswer, type RequestAnswerType, RequestTable } from './request-table.js';
import { isZero, sealingSessions, UNSEALED_WARNING, warnOnce, ZERO_SESSION } from './sealing.js';
import { type OutboundEntry, SendWindow } from './send-window.js';
import { InMemorySessionStore } from './session-store.js';
import type { SessionManager } from './sessions.js';
import { parseRelayUrls } from './url.js';

// The public types live in client-types.ts; exported from here as before, so no import breaks.
export type {
  AcceptedGrant,
  AnonymousRequest,
  AuditPageResult,
  AuditQueryOptions,
  ClientLogger,
  FetchPrekeysOptions,
  InboundMessage,
  PrekeyStatus,
  PublishPrekeysOptions,
  RelayClientEvents,
  RelayClientOptions,
  RelayClientStats,
  SendOptions,
  SendResult,
} from './client-types.js';

const MAX_TTL = 0xffffffff;

function positiveInt(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new RelayError(ClientErrorCode.invalidArgument, `${name} must be a positive integer`);
  }
  return value;
}

export class RelayClient {
  readonly events: TypedEmitter<RelayClientEvents>;
  /** Our own did:libertaria DID. */
  readonly did: string;
  /**
   * The lifecycle of this client's link to the cluster (the seed's
   * SessionState for the relay path): transitions are logged and emitted as
   * 'state' events.
   */
  readonly lifecycle: SessionLifecycle;

  readonly #hint: Uint8Array;
  readonly #maxBufferedBytes: number;
  readonly #log: ClientLogger;
  readonly #sessions: SessionManager | undefined;
  /** The link: connections, their liveness, the run status and the lifecycle (connection-loop.ts). */
  readonly #link: ConnectionLoop;
  /** Durable sends until ACKed or NACKed, and the in-flight window (send-window.ts). */
  readonly #window: SendWindow<Connection>;
  /** The offline-first outbox (client-outbox.ts), when options.outbox is given. */
  readonly #outbox: ClientOutbox | undefined;
  /** Application PINGs awaiting their PONG (probes.ts). */
  readonly #pings = new PingTable<Connection>();
  /** PRESENCE_QUERY answers carry only the hint: queries per hint are answered in order (probes.ts). */
  readonly #presence = new PresenceTable<Connection>();
  /** Requests answered by one frame (prekeys, once-checks, grants, policy, audit, bridge queries), by request id. */
  readonly #requests = new RequestTable<Connection>();
  /** What each request to the relay sends and how its answer is read; the grants presented (relay-requests.ts). */
  readonly #relayRequests: RelayRequests;
  /** Duplicate suppression and the RESUME watermark (dedupe.ts), shared by the inbound side, the link and the outbox. */
  readonly #tracker: DedupeTracker;
  /** DELIVERs: duplicates, flow control, opening, acknowledgements (inbound.ts). */
  readonly #inbound: InboundSide;
  /** Our recent peers (they get our path updates) and where peers said they are (path-updates.ts). */
  readonly #paths: PathUpdates;

  constructor(options: RelayClientOptions) {
    // Options are checked in this order: the first bad one is the error.
    const identity: PeerSigner = options.identity;
    this.did = identity.did;
    this.#hint = identity.hint;
    const relays = new RelayList(parseRelayUrls(options.relays));
    if (options.expectRelayDid !== undefined) parseDid(options.expectRelayDid);
    const reconnect = resolveReconnectOptions(options.reconnect);
    const timing = new LinkTiming({
      handshakeTimeoutMs: positiveInt(
        options.handshakeTimeoutMs,
        CLIENT_DEFAULTS.handshakeTimeoutMs,
        'handshakeTimeoutMs',
      ),
      ackTimeoutMs: positiveInt(options.ackTimeoutMs, CLIENT_DEFAULTS.ackTimeoutMs, 'ackTimeoutMs'),
      adaptive: options.adaptiveTimeouts !== false,
      maxTimeoutMs: positiveInt(options.maxTimeoutMs, CLIENT_DEFAULTS.maxTimeoutMs, 'maxTimeoutMs'),
    });
    this.#window = new SendWindow(
      positiveInt(options.maxInFlight, CLIENT_DEFAULTS.maxInFlight, 'maxInFlight'),
      (connection, frame) => this.#link.write(connection, frame),
    );
    const maxUnacked = positiveInt(options.maxUnackedInbound, CLIENT_DEFAULTS.maxUnackedInbound, 'maxUnackedInbound');
    this.#maxBufferedBytes = positiveInt(
      options.maxBufferedBytes,
      CLIENT_DEFAULTS.maxBufferedBytes,
      'maxBufferedBytes',
    );
    const log: ClientLogger = options.logger ?? {};
    this.#log = log;
    this.#tracker = new DedupeTracker({
      maxIds: positiveInt(options.dedupeSize, CLIENT_DEFAULTS.dedupeSize, 'dedupeSize'),
    });
    const capacity = positiveInt(options.inboundBufferSize, CLIENT_DEFAULTS.inboundBufferSize, 'inboundBufferSize');
    this.events = new TypedEmitter((error, event) =>
      log.error?.('event listener threw', { event: String(event), error: toError(error).message }),
    );
    const emitError = (event: RelayClientEvents['error']): void => this.#emitError(event);
    this.#link = new ConnectionLoop({
      name: `relay link ${this.did}`,
      identity,
      relays,
      expectRelayDid: options.expectRelayDid,
      relayPins: options.relayPins,
      verifyRelay: options.verifyRelaySignature,
      reconnect,
      tls: options.tls,
      log,
      timing,
      parts: {
        window: this.#window,
        tracker: this.#tracker,
        pings: this.#pings,
        presence: this.#presence,
        requests: this.#requests,
        events: this.events,
        grants: () => this.#relayRequests.grants(),
        onFrames: (connection, frames) => dispatch.frames(connection, frames),
        onMigrated: (connection) => void this.#paths.announce(connection),
        emitError,
        fail: (error) => this.#fail(error),
      },
    });
    this.lifecycle = this.#link.lifecycle;
    const sessions = sealingSessions(options, log);
    this.#sessions = sessions;
    // Kept with our keys (or the outbox) so a restart still knows the epoch it saw.
    const onceEpoch = new OnceEpochTracker(sessions?.store ?? options.outbox ?? new InMemorySessionStore(), log);
    this.#relayRequests = new RelayRequests(
      (operation, expects, build) => this.#request(operation, expects, build),
      onceEpoch,
    );
    this.#outbox = options.outbox === undefined ? undefined : new ClientOutbox(options.outbox, log, this.#tracker);
    const responder = new AnonymousResponder({
      did: this.did,
      hint: this.#hint,
      sessions,
      handler: options.onAnonymousRequest,
      replayGuard: options.anonymousReplayGuard,
      once: this,
      link: this.#link,
      emitError,
    });
    this.#paths = new PathUpdates({
      did: this.did,
      hint: this.#hint,
      seal: sessions === undefined ? undefined : (did, record) => sessions.seal(this, did, record),
      write: (connection, frame) => this.#link.write(connection, frame),
      log,
    });
    this.#inbound = new InboundSide({
      did: this.did,
      hint: this.#hint,
      tracker: this.#tracker,
      capacity,
      maxUnacked,
      sessions,
      outbox: this.#outbox,
      paths: this.#paths,
      responder,
      link: this.#link,
      events: this.events,
      log,
      emitError,
    });
    const dispatch = new FrameDispatch({
      hint: this.#hint,
      link: this.#link,
      inbound: this.#inbound,
      window: this.#window,
      outbox: this.#outbox,
      pings: this.#pings,
      presence: this.#presence,
      requests: this.#requests,
      events: this.events,
      log,
      emitError,
    });
    if (sessions !== undefined) {
      if (sessions.identity.did !== this.did) {
        throw new RelayError(ClientErrorCode.invalidArgument, 'sessions: the SessionManager is for another identity');
      }
      const publish = (): void => {
        sessions.ensurePublished(this).catch((error: unknown) => {
          if (this.#link.status.running) this.#emitError({ error: toLibertariaError(error, 'publishing prekeys') });
        });
      };
      this.events.on('connected', publish);
      this.events.on('prekeys-low', publish);
    }
  }

  /** Whether payloads are sealed end to end (true unless `sealing: false`). */
  get sealed(): boolean {
    return this.#sessions !== undefined;
  }

  /** Whether a relay connection is authenticated right now. */
  get connected(): boolean {
    return this.#link.live !== undefined;
  }

  get stats(): RelayClientStats {
    return {
      pendingSends: this.#window.size,
      unackedInbound: this.#tracker.unacked,
      bufferedInbound: this.#inbound.buffered,
      lastAcked: this.#tracker.lastAcked,
      droppedFast: this.#inbound.droppedFast,
      duplicates: this.#inbound.duplicates,
      connections: this.#link.connections,
      rttMs: this.#link.timing.srtt,
      ackTimeoutMs: this.#link.timing.ackTimeout(),
      state: this.lifecycle.state,
    };
  }

  /**
   * Starts connecting (and reconnecting, for the life of the client).
   * Resolves on the first WELCOME; rejects with a RelayError only when the
   * client gives up: every relay failed for `reconnect.maxAttempts` rounds,
   * or every relay refused us for good, or close() was called first.
   */
  connect(): Promise<void> {
    return this.#link.status.connect(() => {
      const start = this.#outbox === undefined ? Promise.resolve() : this.#restoreOutbox(this.#outbox);
      void start
        .then(() => this.#link.run())
        .catch((error: unknown) => this.#fail(toLibertariaError(error, 'connection loop failed')));
    });
  }

  /**
   * Sends `payload` to a DID or a 24-byte routing hint.
   *
   * Durable (default): resolves with the queue position once the relay
   * ACKed; rejects with the relay's code on NACK. Survives reconnects (the
   * same messageId is written again). Rejects without an ACK only when the
   * client is closed or gives up; the message may then or may not be stored.
   *
   * Fast: resolves once written to the current connection; rejects when
   * there is none. If the recipient is connected nowhere the relay answers
   * PEER_GONE, surfaced as the 'peer-gone' event.
   */
  async send(to: string | Uint8Array, payload: Uint8Array, options: SendOptions = {}): Promise<SendResult> {
    this.#link.status.throwIfNotRunning('send');
    const sessions = this.#sessions;
    if (sessions === undefined) {
      // A caller that sealed the payload itself (MultipathSession) names its session.
      if (options.sessionId === undefined || isZero(options.sessionId))
        warnOnce('unsealed', this.#log, UNSEALED_WARNING);
      if (typeof to === 'string') this.#paths.notePeer(to);
      return this.#send(to, payload, options);
    }
    if (typeof to !== 'string') {
      throw new RelayError(ClientErrorCode.invalidArgument, 'send: sealing needs the recipient DID, not a hint');
    }
    this.#destination(to);
    if (!(payload instanceof Uint8Array)) {
      throw new RelayError(ClientErrorCode.invalidArgument, 'send: payload must be a Uint8Array');
    }
    const { body, sessionId } = await sessions.seal(this, to, payload);
    this.#paths.notePeer(to);
    return this.#send(to, body, { ...options, sessionId });
  }

  async #send(to: string | Uint8Array, payload: Uint8Array, options: SendOptions): Promise<SendResult> {
    this.#link.status.throwIfEnded('send');
    const dest = this.#destination(to);
    if (!(payload instanceof Uint8Array)) {
      throw new RelayError(ClientErrorCode.invalidArgument, 'send: payload must be a Uint8Array');
    }
    const durable = options.durable ?? true;
    const messageId = options.messageId === undefined ? randomBytes(ID_SIZE) : copyBytes(options.messageId);
    if (messageId.length !== ID_SIZE) {
      throw new RelayError(ClientErrorCode.invalidArgument, `send: messageId must be ${ID_SIZE} bytes`);
    }
    const sessionId = options.sessionId === undefined ? ZERO_SESSION : copyBytes(options.sessionId);
    if (sessionId.length !== ID_SIZE) {
      throw new RelayError(ClientErrorCode.invalidArgument, `send: sessionId must be ${ID_SIZE} bytes`);
    }
    const ttl = options.ttlSeconds ?? 0;
    if (!Number.isInteger(ttl) || ttl < 0 || ttl > MAX_TTL) {
      throw new RelayError(ClientErrorCode.invalidArgument, `send: ttlSeconds must be an integer 0..${MAX_TTL}`);
    }
    // encodeEnvelope copies the payload, so the caller may reuse its buffer at once.
    const body = encodeEnvelope(this.did, payload);
    const limit = this.#link.current?.welcome.maxPayload ?? MAX_PAYLOAD_LIMIT;
    if (body.length > limit) {
      throw new RelayError(
        ClientErrorCode.payloadTooLarge,
        `send: ${payload.length} bytes plus a ${body.length - payload.length}-byte envelope exceed the relay's ${limit}`,
      );
    }
    const frame: SendFrame = {
      type: 'SEND',
      dest,
      source: this.#hint,
      sessionId,
      messageId,
      flags: durable ? SendFlags.DURABLE : 0,
      ttl: durable ? ttl : 0,
      position: 0,
      payload: body,
    };
    const key = toHex(messageId);
    if (!durable) {
      const connection = this.#link.live;
      if (connection === undefined) {
        throw new RelayError(ClientErrorCode.unreachable, 'send: not connected (fast messages are not queued)');
      }
      if (connection.transport.bufferedAmount > this.#maxBufferedBytes) {
        throw new RelayError(
          ClientErrorCode.outboundOverflow,
          `send: ${connection.transport.bufferedAmount} bytes already buffered; fast message refused`,
        );
      }
      if (!this.#link.write(connection, frame)) {
        throw new RelayError(ClientErrorCode.unreachable, 'send: connection lost while writing');
      }
      return { messageId };
    }
    if (this.#window.has(key)) {
      throw new RelayError(ClientErrorCode.invalidArgument, `send: message ${key} is already pending`);
    }
    let outboxName: string | undefined;
    if (this.#outbox !== undefined) {
      // Written before it can go out: a restart from here on resends it.
      const record = this.#outbox.writeSend(key, frame);
      outboxName = record.name;
      await record.written;
      if (!this.#link.status.running) throw this.#link.status.failure ?? this.#link.status.closedError('send');
      if (this.#window.has(key)) {
        throw new RelayError(ClientErrorCode.invalidArgument, `send: message ${key} is already pending`);
      }
    }
    return new Promise<SendResult>((resolve, reject) => {
      this.#enqueue({ key, messageId, frame, resolve, reject, session: undefined, sentAt: 0, outboxName });
    });
  }

  #enqueue(entry: OutboundEntry<Connection>): void {
    this.#window.add(entry, this.#link.current);
  }

  /** Where `did` said it is after its last migration (its relay node), if it told us. */
  peerLocation(did: string): PeerLocation | undefined {
    return this.#paths.location(did);
  }

  /**
   * Inbound messages, in arrival order, without duplicates. Several
   * iterators share one buffer. Ends when the client is closed; throws the
   * error the client gave up with.
   */
  messages(): AsyncIterable<InboundMessage> {
    return { [Symbol.asyncIterator]: () => this.#inbound.iterator() };
  }

  /**
   * Round-trip time to the relay in milliseconds. The relay answers frames
   * of a connection in order, so the PONG also means every frame sent
   * before the PING was handled (a barrier). Rejects when the connection
   * is lost first or no PONG comes within ackTimeoutMs.
   */
  ping(): Promise<number> {
    const connection = this.#link.live;
    if (connection === undefined) {
      return Promise.reject(new RelayError(ClientErrorCode.unreachable, 'ping: not connected'));
    }
    const data = this.#link.timing.pingData(PING_APP);
    const rtt = this.#pings.add(toHex(data), connection);
    this.#link.write(connection, { type: 'PING', data });
    return rtt;
  }

  /**
   * Whether the peer (a DID or a 24-byte hint) is connected to some relay
   * of the cluster right now (PRESENCE_QUERY). Rejects when the connection
   * is lost first or no answer comes within ackTimeoutMs.
   */
  presence(peer: string | Uint8Array): Promise<boolean> {
    let hint: Uint8Array;
    try {
      hint = this.#destination(peer);
    } catch (error) {
      return Promise.reject(error);
    }
    const connection = this.#link.live;
    if (connection === undefined) {
      return Promise.reject(new RelayError(ClientErrorCode.unreachable, 'presence: not connected'));
    }
    const present = this.#presence.add(hint, connection);
    this.#link.write(connection, { type: 'PRESENCE_QUERY', hint });
    return present;
  }

  /**
   * Publishes our prekeys (PREKEY_PUBLISH): the relay replaces our signed
   * keys and appends the one-time keys whose ids are above the highest it
   * ever stored for their kind, up to its cap (so publishing the same keys
   * again changes nothing). A publication larger than one frame is sent as
   * several, one after the other, each repeating the signed keys. Resolves
   * with the status after the last; rejects with the relay's code
   * (PREKEY_BAD_SIGNATURE, PREKEY_IDENTITY_MISMATCH, PREKEY_RATE_LIMITED,
   * STORE_UNAVAILABLE), BAD_FIELD for a malformed publication,
   * CONNECTION_FAILED when not connected or the connection is lost (parts
   * already answered are stored; publishing again is safe), TIMEOUT after
   * ackTimeoutMs per part.
   */
  async publishPrekeys(pub: PrekeyPublication, options: PublishPrekeysOptions = {}): Promise<PrekeyStatus> {
    const connection = this.#link.live;
    if (connection === undefined) {
      throw new RelayError(ClientErrorCode.unreachable, 'publishPrekeys: not connected');
    }
    return this.#relayRequests.publishPrekeys(connection.welcome.maxPayload, pub, options);
  }

  /**
   * Fetches a peer's prekey bundle (PREKEY_FETCH), consuming one of its
   * one-time prekeys of each kind on the relay (absent from the bundle when
   * none are left: then only the signed and last-resort keys come back).
   * `to` is a DID or a 24-byte hint; the bundle's identity key must be the
   * one the DID (or hint) names, else PREKEY_IDENTITY_MISMATCH: the relay is
   * not trusted with identities. With `verify`, every signature is checked
   * (PREKEY_BAD_SIGNATURE). Other rejections: PREKEY_NOT_FOUND,
   * PREKEY_RATE_LIMITED, STORE_UNAVAILABLE, CONNECTION_FAILED, TIMEOUT.
   */
  async fetchPrekeys(to: string | Uint8Array, options: FetchPrekeysOptions = {}): Promise<PrekeyBundle> {
    const hint = this.#destination(to);
    return this.#relayRequests.fetchPrekeys(to, hint, options);
  }

  /**
   * The DID of the bridge that serves `network` (`nostr`, `activitypub`,
   * `xmtp`, `custom-<scheme>`) in this relay cluster (BRIDGE_QUERY, from the
   * cluster's bridge registry). Rejects BRIDGE_NOT_REGISTERED when none does.
   */
  findBridge(network: string): Promise<string> {
    return this.#relayRequests.findBridge(network);
  }

  /**
   * True the first time this DID presents `id` to the relay cluster within
   * `retentionMs` (rounded up to whole seconds), false every later time, from
   * any node and any connection of this DID (ONCE_CHECK; one Redis SET NX).
   * The replay guard behind RelayTicketStore. False as well, whatever the
   * relay says, within `retentionMs` of noticing that the cluster lost its
   * memory of our ids (its epoch changed: once-epoch.ts). Rejections:
   * ONCE_RETENTION_TOO_LONG, RATE_LIMITED, STORE_UNAVAILABLE,
   * CONNECTION_FAILED, TIMEOUT.
   */
  consumeOnce(id: Uint8Array, retentionMs: number): Promise<boolean> {
    return this.#relayRequests.consumeOnce(id, retentionMs);
  }

  /**
   * Presents a membrane grant token (GRANT_PRESENT): from now on the relay
   * decides this DID's sends to (and sessions with) the token's root issuer by
   * the token. Kept and presented again on every later connection (the relay
   * holds grants per connection; at most 64 here). Rejections: the token's
   * GRANT_* code, MEMBRANE_TOO_MANY_GRANTS, MEMBRANE_DISABLED, RATE_LIMITED,
   * STORE_UNAVAILABLE, CONNECTION_FAILED, TIMEOUT.
   */
  presentGrant(token: Uint8Array): Promise<AcceptedGrant> {
    return this.#relayRequests.presentGrant(token);
  }

  /**
   * Revokes, cluster-wide, the links of a grant token that this DID issued
   * (GRANT_REVOKE), and so every delegation made under them: the token (and
   * any token built on those links) is refused from then on, on every relay
   * of the cluster, until the links expire. Resolves with the revoked cids
   * (hex, root first). Rejections: GRANT_WRONG_ISSUER (this DID issued no
   * link of the token), GRANT_MALFORMED, MEMBRANE_DISABLED, RATE_LIMITED,
   * STORE_UNAVAILABLE, CONNECTION_FAILED, TIMEOUT.
   */
  revokeGrant(token: Uint8Array): Promise<string[]> {
    return this.#relayRequests.revokeGrant(token);
  }

  /**
   * Sets this DID's membrane policy (POLICY_PUT): JSON text or a value
   * (docs/membrane.md#policy-json); null removes it. Resolves to the stored,
   * normalized JSON (null after a removal). Rejections: POLICY_INVALID (the
   * message names the field), MEMBRANE_DISABLED, RATE_LIMITED, STORE_UNAVAILABLE.
   */
  setPolicy(policy: string | object | null): Promise<string | null> {
    return this.#relayRequests.setPolicy(policy);
  }

  /** This DID's stored membrane policy as normalized JSON, or null (POLICY_GET). */
  getPolicy(): Promise<string | null> {
    return this.#relayRequests.getPolicy();
  }

  /** One page of the audit trail of decisions about this DID's resources (AUDIT_QUERY; an owner reads only its own). */
  queryAudit(options: AuditQueryOptions = {}): Promise<AuditPageResult> {
    return this.#relayRequests.queryAudit(options);
  }

  /** What the relay stores of our prekeys (PREKEY_STATUS_QUERY); call it after connecting to learn whether to refill. */
  prekeyStatus(): Promise<PrekeyStatus> {
    return this.#relayRequests.prekeyStatus();
  }

  /**
   * Stops for good: pending durable sends and pings reject (code CLIENT_CLOSED,
   * see codes.ts), messages() ends, the connection is closed (its queued
   * writes, e.g. ACKs, are flushed first).
   */
  async close(): Promise<void> {
    if (!this.#link.close()) return;
    await this.#shutdown(this.#link.status.closedError('close'), undefined);
    // The outbox must say what happened before the process may exit: settled sends gone from it,
    // the inbound state written.
    await Promise.allSettled(this.#outbox?.pendingWrites() ?? []);
    this.#link.closed();
  }

  /** Writes one request (request-table.ts) on the current connection and waits for the answer carrying its request id. */
  #request<K extends RequestAnswerType>(
    operation: string,
    expects: K,
    build: (requestId: Uint8Array) => Frame,
  ): Promise<Extract<RequestAnswer, { type: K }>> {
    if (this.#link.status.state === 'closed') return Promise.reject(this.#link.status.closedError(operation));
    const connection = this.#link.live;
    if (connection === undefined) {
      return Promise.reject(new RelayError(ClientErrorCode.unreachable, `${operation}: not connected`));
    }
    const requestId = randomBytes(ID_SIZE);
    const frame = build(requestId);
    try {
      // Encoded once here so a malformed argument is refused instead of failing the connection's write.
      encodeFrame(frame, connection.version);
    } catch (error) {
      return Promise.reject(new RelayError(ClientErrorCode.invalidArgument, `${operation}: ${toError(error).message}`));
    }
    // Registered before the write: a write that fails ends the connection, which rejects it.
    const answer = this.#requests.add(requestId, connection, operation, expects);
    this.#link.write(connection, frame);
    return answer;
  }

  /** Before the first connection: the inbound state and the sends a previous run left unacknowledged. */
  #restoreOutbox(outbox: ClientOutbox): Promise<void> {
    return outbox.restore((frame, name) => {
      const key = toHex(frame.messageId);
      if (this.#window.has(key)) return false;
      const messageId = copyBytes(frame.messageId);
      this.#enqueue({
        key,
        messageId,
        frame: { ...frame, payload: copyBytes(frame.payload) },
        outboxName: name,
        resolve: (result) => this.events.emit('outbox', { messageId, position: result.position! }),
        reject: (error) => this.events.emit('outbox', { messageId, error: toLibertariaError(error, 'outbox resend') }),
        session: undefined,
        sentAt: 0,
      });
      return true;
    });
  }

  #destination(to: string | Uint8Array): Uint8Array {
    if (typeof to === 'string') return hintFromDid(to);
    if (to instanceof Uint8Array && to.length === HINT_LENGTH) return copyBytes(to);
    throw new RelayError(ClientErrorCode.invalidArgument, `send: "to" must be a DID or a ${HINT_LENGTH}-byte hint`);
  }

  #emitError(event: RelayClientEvents['error']): void {
    if (!this.events.emit('error', event)) {
      this.#log.warn?.('relay client error', { code: event.error.code, error: event.error.message, url: event.url });
    }
  }

  #fail(error: LibertariaError): void {
    if (!this.#link.fail(error)) return;
    this.#emitError({ error });
    void this.#shutdown(error, error);
  }

  async #shutdown(reason: LibertariaError, inboxError: LibertariaError | undefined): Promise<void> {
    this.#link.stop(reason);
    this.#window.rejectAll(reason);
    this.#pings.rejectAll(reason);
    this.#presence.rejectAll(reason);
    this.#requests.rejectAll(reason);
    this.#inbound.end(inboxError);
    await this.#link.closeConnection();
  }
}
