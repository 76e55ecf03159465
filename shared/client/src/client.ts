// Size: about 1,100 lines, one class. Breaking RelayClient up is issue 14's work item; moved
// out so far: types and defaults (client-types.ts), the request table (request-table.ts) and the
// requests (relay-requests.ts), the send window (send-window.ts), the outbox (client-outbox.ts),
// pings and presence queries (probes.ts), path updates and their announcement (path-updates.ts),
// the relay list (relay-list.ts), relay keys (relay-trust.ts), the run status (run-status.ts),
// the per-connection record (connection.ts), sealing and its warnings (sealing.ts) and the link:
// the connection loop, its states and liveness (connection-loop.ts, link-timing.ts). Still here:
// the inbound side, the anonymous responder, the frame dispatch.
/**
 * RelayClient: one authenticated connection at a time to the first relay of
 * a failover list that works, with reconnection, durable-send retries,
 * RESUME and duplicate suppression. See docs/client.md for the guarantees.
 *
 * Outbound durable sends live in the send window (send-window.ts,
 * insertion order = send order) until the relay ACKs or NACKs them. At most
 * `maxInFlight` of them are on the wire at once; after a reconnect every one
 * of them is written again with the same messageId (the relay is idempotent
 * on it), so a durable send is never lost and never reported as done
 * without an ACK.
 *
 * Inbound messages go through DedupeTracker (dedupe.ts, keyed on sender
 * hint and messageId) and a bounded
 * Inbox; a durable message is acknowledged to the relay only when the
 * application calls ack(). RESUME carries the tracker's watermark.
 *
 * Prekeys: publishPrekeys, fetchPrekeys and prekeyStatus (like the once,
 * membrane and bridge requests) are requests correlated by a random 16-byte
 * request id in the request table (request-table.ts: answered by
 * PREKEY_STATUS, PREKEY_BUNDLE, … or a NACK carrying the id); unsolicited
 * low-water notices are the 'prekeys-low' event. They are not retried
 * across reconnects.
 *
 * No Node-only imports here: with the WebSocket transport this runs in
 * browsers (the identity module still needs a browser port, see the docs).
 */

import { AllTicketStores, InMemoryTicketStore, type SessionLifecycle, type TicketStore } from '@libertaria/crypto';
import { HINT_LENGTH, hintFromDid, type PeerSigner, parseDid } from '@libertaria/identity';
import {
  type AckFrame,
  type DeliverFrame,
  ErrorFlags,
  encodeFrame,
  errorCodeFromWire,
  type Frame,
  ID_SIZE,
  type LibertariaError,
  MAX_PAYLOAD_LIMIT,
  type NackFrame,
  type PrekeyBundle,
  type PrekeyPublication,
  RelayError,
  SendFlags,
  type SendFrame,
} from '@libertaria/protocol';
import { ANON_REQUEST_RETENTION_MS, ANONYMOUS_REQUEST_KIND, decodeAnonymousPlaintext } from './anonymous.js';
import { resolveReconnectOptions } from './backoff.js';
import { bytesEqual, copyBytes, randomBytes, toHex } from './bytes.js';
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
import type { Connection, ConnectionEnd } from './connection.js';
import { ConnectionLoop } from './connection-loop.js';
import { DedupeTracker, inboundKey } from './dedupe.js';
import { TypedEmitter } from './emitter.js';
import { CONTROL_ENVELOPE_VERSION, checkEnvelopeSender, decodeEnvelope, encodeEnvelope } from './envelope.js';
import { isPermanentRefusal } from './handshake.js';
import { Inbox } from './inbox.js';
import { LinkTiming, PING_APP } from './link-timing.js';
import { OnceEpochTracker } from './once-epoch.js';
import { PathUpdates, type PeerLocation } from './path-updates.js';
import { PingTable, PresenceTable } from './probes.js';
import { RelayList } from './relay-list.js';
import { prekeyStatusOf, RelayRequests } from './relay-requests.js';
import { RelayTicketStore } from './relay-ticket-store.js';
import { type RequestAnswer, type RequestAnswerType, RequestTable } from './request-table.js';
import { isZero, sealingSessions, UNSEALED_WARNING, UnsealedSenders, warnOnce, ZERO_SESSION } from './sealing.js';
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
  readonly #maxUnacked: number;
  readonly #maxBufferedBytes: number;
  readonly #log: ClientLogger;
  readonly #sessions: SessionManager | undefined;
  readonly #unsealedSenders: UnsealedSenders;
  /** The link: connections, their liveness, the run status and the lifecycle (connection-loop.ts). */
  readonly #link: ConnectionLoop;
  /** The offline-first outbox (client-outbox.ts), when options.outbox is given. */
  readonly #outbox: ClientOutbox | undefined;
  /** Our recent peers (they get our path updates) and where peers said they are (path-updates.ts). */
  readonly #paths: PathUpdates;
  readonly #onAnonymous: RelayClientOptions['onAnonymousRequest'];
  readonly #anonymousReplayGuard: TicketStore;
  /** Inbound sealed frames are opened one at a time, in arrival order. */
  #opening: Promise<void> = Promise.resolve();
  #pendingOpens = 0;

  /** Durable sends until ACKed or NACKed, and the in-flight window (send-window.ts). */
  readonly #window: SendWindow<Connection>;
  /** Application PINGs awaiting their PONG (probes.ts). */
  readonly #pings = new PingTable<Connection>();
  /** PRESENCE_QUERY answers carry only the hint: queries per hint are answered in order (probes.ts). */
  readonly #presence = new PresenceTable<Connection>();
  /** Requests answered by one frame (prekeys, once-checks, grants, policy, audit, bridge queries), by request id. */
  readonly #requests = new RequestTable<Connection>();
  /** What each request to the relay sends and how its answer is read; the grants presented (relay-requests.ts). */
  readonly #relayRequests: RelayRequests;

  readonly #tracker: DedupeTracker;
  readonly #inbox: Inbox<InboundMessage>;
  #droppedFast = 0;
  #duplicates = 0;

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
    this.#maxUnacked = positiveInt(options.maxUnackedInbound, CLIENT_DEFAULTS.maxUnackedInbound, 'maxUnackedInbound');
    this.#maxBufferedBytes = positiveInt(
      options.maxBufferedBytes,
      CLIENT_DEFAULTS.maxBufferedBytes,
      'maxBufferedBytes',
    );
    this.#log = options.logger ?? {};
    this.#tracker = new DedupeTracker({
      maxIds: positiveInt(options.dedupeSize, CLIENT_DEFAULTS.dedupeSize, 'dedupeSize'),
    });
    this.#inbox = new Inbox(
      positiveInt(options.inboundBufferSize, CLIENT_DEFAULTS.inboundBufferSize, 'inboundBufferSize'),
      () => this.#maybeResync(),
    );
    this.events = new TypedEmitter((error, event) =>
      this.#log.error?.('event listener threw', { event: String(event), error: toError(error).message }),
    );
    this.#link = new ConnectionLoop({
      name: `relay link ${this.did}`,
      identity,
      relays,
      expectRelayDid: options.expectRelayDid,
      relayPins: options.relayPins,
      verifyRelay: options.verifyRelaySignature,
      reconnect,
      tls: options.tls,
      log: this.#log,
      timing,
      parts: {
        window: this.#window,
        tracker: this.#tracker,
        pings: this.#pings,
        presence: this.#presence,
        requests: this.#requests,
        events: this.events,
        grants: () => this.#relayRequests.grants(),
        onFrames: (connection, frames) => this.#onFrames(connection, frames),
        onMigrated: (connection) => void this.#paths.announce(connection),
        emitError: (event) => this.#emitError(event),
        fail: (error) => this.#fail(error),
      },
    });
    this.lifecycle = this.#link.lifecycle;
    this.#sessions = sealingSessions(options, this.#log);
    this.#unsealedSenders = new UnsealedSenders(this.#log);
    const sessions = this.#sessions;
    this.#paths = new PathUpdates({
      did: this.did,
      hint: this.#hint,
      seal: sessions === undefined ? undefined : (did, record) => sessions.seal(this, did, record),
      write: (connection, frame) => this.#link.write(connection, frame),
      log: this.#log,
    });
    // Kept with our keys (or the outbox) so a restart still knows the epoch it saw.
    const onceEpoch = new OnceEpochTracker(
      this.#sessions?.store ?? options.outbox ?? new InMemorySessionStore(),
      this.#log,
    );
    this.#relayRequests = new RelayRequests(
      (operation, expects, build) => this.#request(operation, expects, build),
      onceEpoch,
    );
    this.#onAnonymous = options.onAnonymousRequest;
    this.#outbox =
      options.outbox === undefined ? undefined : new ClientOutbox(options.outbox, this.#log, this.#tracker);
    // A local memory first: the relay's ONCE_CHECK alone could lie "fresh" and replay a request at us.
    this.#anonymousReplayGuard = new AllTicketStores(
      new InMemoryTicketStore({
        retentionMs: ANON_REQUEST_RETENTION_MS,
        maxEntries: CLIENT_DEFAULTS.anonymousReplayEntries,
      }),
      options.anonymousReplayGuard ??
        new RelayTicketStore(this, { retentionMs: ANON_REQUEST_RETENTION_MS, label: 'anon-request' }),
    );
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
      bufferedInbound: this.#inbox.length,
      lastAcked: this.#tracker.lastAcked,
      droppedFast: this.#droppedFast,
      duplicates: this.#duplicates,
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
    return { [Symbol.asyncIterator]: () => this.#inbox.iterator() };
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

  #onRequestAnswer(frame: RequestAnswer): void {
    if (this.#requests.answer(frame)) return;
    if (frame.type === 'PREKEY_STATUS' && frame.requestId.every((b) => b === 0) && bytesEqual(frame.hint, this.#hint)) {
      this.events.emit('prekeys-low', prekeyStatusOf(frame));
    }
    // Otherwise a late answer to a request that timed out: nothing waits for it.
  }

  // ---------------------------------------------------------------------------
  // Inbound frames

  #onFrames(session: Connection, frames: Frame[]): void {
    for (const frame of frames) {
      if (session.over) return;
      this.#link.heard(session);
      try {
        this.#onFrame(session, frame);
      } catch (error) {
        this.#emitError({ error: toLibertariaError(error, 'handling a frame'), url: session.url.href });
      }
    }
  }

  #onFrame(session: Connection, frame: Frame): void {
    switch (frame.type) {
      case 'DELIVER':
        this.#onDeliver(session, frame);
        return;
      case 'ACK':
        this.#onAck(session, frame);
        return;
      case 'NACK':
        this.#onNack(session, frame);
        return;
      case 'PING':
        this.#link.write(session, { type: 'PONG', data: frame.data });
        return;
      case 'PONG': {
        const key = toHex(frame.data);
        const rtt = this.#pings.answer(key);
        if (rtt !== undefined) this.#link.timing.sample(rtt);
        this.#link.pong(session, key);
        return;
      }
      case 'PEER_GONE':
        // A zero messageId answers PRESENCE_QUERY; otherwise a fast SEND found nobody.
        if (frame.messageId.every((b) => b === 0) && this.#presence.answer(frame.hint, false)) return;
        this.events.emit('peer-gone', { hint: copyBytes(frame.hint), messageId: copyBytes(frame.messageId) });
        return;
      case 'PEER_PRESENT':
        this.#presence.answer(frame.hint, true);
        return;
      case 'PREKEY_BUNDLE':
      case 'PREKEY_STATUS':
      case 'ONCE_RESULT':
      case 'GRANT_ACCEPTED':
      case 'GRANT_REVOKED':
      case 'POLICY':
      case 'AUDIT_RESULT':
      case 'BRIDGE_INFO':
        this.#onRequestAnswer(frame);
        return;
      case 'GOAWAY': {
        const hint = frame.reconnectHint
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '');
        this.#log.info?.('relay sent GOAWAY', { url: session.url.href, reason: frame.reason });
        this.events.emit('goaway', {
          url: session.url.href,
          reconnectAfterMs: frame.reconnectAfterMs,
          reconnectHint: hint,
          reason: frame.reason,
        });
        this.#link.end(session, {
          goaway: { ...frame },
          error: new RelayError('DRAINING', `${session.url.href}: GOAWAY: ${frame.reason || 'no reason given'}`),
        });
        return;
      }
      case 'ERROR': {
        const error = new RelayError(errorCodeFromWire(frame.code), `${session.url.href}: ${frame.message}`);
        if (error.code === 'QUEUE_RESET') {
          // Sent before the relay pumps the queue again, so every frame after it is numbered anew.
          this.#log.warn?.('relay queue restarted; forgetting old positions', { url: session.url.href });
          this.#tracker.resetPositions();
          if (this.#outbox !== undefined) void this.#outbox.persistInbound().catch(() => {});
          return;
        }
        if ((frame.flags & ErrorFlags.FATAL) === 0) {
          this.#emitError({ error, url: session.url.href });
          return;
        }
        const end: ConnectionEnd = { error };
        if (isPermanentRefusal(error)) end.refused = error;
        this.#link.end(session, end);
        return;
      }
      default:
        this.#emitError({
          error: new RelayError(
            ClientErrorCode.unexpectedFrame,
            `${session.url.href}: unexpected ${frame.type} from relay`,
          ),
          url: session.url.href,
        });
    }
  }

  #onAck(session: Connection, frame: AckFrame): void {
    const entry = this.#window.take(frame.messageId, session);
    // An ACK for nothing pending is a late duplicate (we sent the message again); harmless.
    if (entry === undefined) return;
    this.#forgetOutbox(entry);
    entry.resolve({ messageId: entry.messageId, position: frame.position });
  }

  #onNack(session: Connection, frame: NackFrame): void {
    const code = errorCodeFromWire(frame.code);
    const key = toHex(frame.messageId);
    // A NACK carrying a request id refuses that request.
    if (this.#requests.refuse(frame.messageId, code, frame.message)) return;
    const error = new RelayError(code, `relay refused message ${key}: ${frame.message || code}`);
    const entry = this.#window.take(frame.messageId, session);
    if (entry !== undefined) {
      this.#forgetOutbox(entry);
      entry.reject(error);
    } else this.#emitError({ error, url: session.url.href, messageId: copyBytes(frame.messageId) });
  }

  #onDeliver(session: Connection, frame: DeliverFrame): void {
    const durable = (frame.flags & SendFlags.DURABLE) !== 0;
    const position = durable ? frame.position : 0;
    const url = session.url.href;
    if (durable && position === 0) {
      this.#emitError({
        error: new RelayError(ClientErrorCode.unexpectedFrame, `${url}: durable DELIVER without a queue position`),
        url,
      });
      return;
    }
    // Per sender: another sender's frame with the same messageId is another message.
    const key = inboundKey(frame.source, frame.messageId);
    const verdict = this.#tracker.check(key, position);
    if (verdict !== 'new') this.#duplicates++;
    if (verdict === 'ack-again') {
      this.#tracker.ack(key, position);
      this.#link.write(session, { type: 'ACK', messageId: frame.messageId, position });
      return;
    }
    if (verdict === 'drop') return;
    if (frame.payload[0] === ANONYMOUS_REQUEST_KIND) {
      this.#onAnonymousRequest(session, frame, key, durable, position);
      return;
    }

    let from: string;
    let body: Uint8Array;
    let control = false;
    try {
      if (!bytesEqual(frame.dest, this.#hint)) {
        throw new RelayError(ClientErrorCode.unexpectedFrame, `DELIVER addressed to ${toHex(frame.dest)}, not to us`);
      }
      const envelope = decodeEnvelope(frame.payload);
      checkEnvelopeSender(envelope, frame.source);
      from = envelope.senderDid;
      body = envelope.body;
      control = envelope.version === CONTROL_ENVELOPE_VERSION;
    } catch (error) {
      // A frame we will never accept: acknowledge it so it cannot block the queue, and say so.
      if (durable) {
        void this.#ackInbound(key, copyBytes(frame.messageId), position);
      } else {
        this.#tracker.accept(key, 0);
      }
      this.#emitError({
        error: toLibertariaError(error, 'inbound message'),
        url,
        messageId: copyBytes(frame.messageId),
      });
      return;
    }

    if (control) {
      this.#onControl(session, frame, key, durable, position, from, body);
      return;
    }
    this.#paths.notePeer(from);

    const full = this.#inbox.full || this.#inbox.length + this.#pendingOpens >= this.#inbox.capacity;
    if (durable) {
      if (session.leavingUnread || full || this.#tracker.unacked + this.#pendingOpens >= this.#maxUnacked) {
        // Not acknowledged, so the relay keeps it; it comes back once the connection is replaced.
        if (!session.leavingUnread) {
          this.#log.warn?.('inbound buffer full; leaving durable messages with the relay', { url, position });
        }
        session.leavingUnread = true;
        this.#tracker.leaveUnread(position);
        return;
      }
    } else if (full) {
      this.#droppedFast++;
      this.#emitError({
        error: new RelayError(
          ClientErrorCode.inboundOverflow,
          `inbound buffer full (${this.#inbox.capacity}); fast message dropped (${this.#droppedFast} so far)`,
        ),
        url,
        messageId: copyBytes(frame.messageId),
        dropped: this.#droppedFast,
      });
      return;
    }

    const messageId = copyBytes(frame.messageId);
    const fromHint = copyBytes(frame.source);
    // Copies: the frame is a view into the transport's buffer.
    const sessionId = copyBytes(frame.sessionId);
    const sessions = this.#sessions;
    // The SDK seals under a session id of its own (never all zero); all zero is
    // the id of an unsealed send, whose payload is the plaintext.
    const unsealed = sessions === undefined || isZero(sessionId);
    if (sessions !== undefined && unsealed) this.#unsealedSenders.warn(from, url);
    if (sessions === undefined && isZero(sessionId)) warnOnce('unsealed', this.#log, UNSEALED_WARNING);
    if (!unsealed) {
      // Held (duplicates hidden) while it is opened; never yielded unless it opens.
      this.#tracker.accept(key, position);
      const sealed = copyBytes(body);
      this.#pendingOpens++;
      this.#opening = this.#opening.then(async () => {
        let plaintext: Uint8Array;
        try {
          // Durable: the plaintext is kept until ack(), so a redelivery after a crash still opens.
          plaintext = await sessions.open(from, sessionId, sealed, durable ? messageId : undefined);
        } catch (error) {
          this.#pendingOpens--;
          // A poison frame must not block the queue: acknowledged, reported, never delivered.
          if (durable) void this.#ackInbound(key, messageId, position);
          this.#emitError({ error: toLibertariaError(error, 'opening a sealed message'), url, messageId });
          return;
        }
        this.#pendingOpens--;
        this.#inbox.push(
          this.#inboundMessage(key, messageId, from, fromHint, plaintext, durable, position, sessionId, true),
        );
      });
      return;
    }
    this.#tracker.accept(key, position);
    // Behind any message still being opened, so the application sees them in order.
    const message = this.#inboundMessage(
      key,
      messageId,
      from,
      fromHint,
      copyBytes(body),
      durable,
      position,
      sessionId,
      false,
    );
    if (sessions === undefined) {
      this.#inbox.push(message);
      return;
    }
    this.#pendingOpens++;
    this.#opening = this.#opening.then(() => {
      this.#pendingOpens--;
      this.#inbox.push(message);
    });
  }

  /**
   * A control envelope from a peer's SDK (never shown to the application):
   * today the path update a peer sends after a migration. Fast only.
   */
  #onControl(
    session: Connection,
    frame: DeliverFrame,
    key: string,
    durable: boolean,
    position: number,
    from: string,
    body: Uint8Array,
  ): void {
    const messageId = copyBytes(frame.messageId);
    if (durable) void this.#ackInbound(key, messageId, position);
    else this.#tracker.accept(key, 0);
    const sessions = this.#sessions;
    const sessionId = copyBytes(frame.sessionId);
    const sealed = copyBytes(body);
    const handle = (record: Uint8Array): void => {
      const notice = this.#paths.onRecord(from, record);
      if (notice === undefined) {
        this.#emitError({
          error: new RelayError('BAD_FIELD', `unreadable control notice from ${from}`),
          url: session.url.href,
          messageId,
        });
        return;
      }
      this.events.emit('peer-moved', { did: from, nodeId: notice.nodeId, at: notice.at });
    };
    if (sessions === undefined) {
      handle(sealed);
      return;
    }
    this.#opening = this.#opening.then(async () => {
      try {
        handle(await sessions.open(from, sessionId, sealed));
      } catch (error) {
        this.#emitError({
          error: toLibertariaError(error, 'opening a control notice'),
          url: session.url.href,
          messageId,
        });
      }
    });
  }

  /**
   * An anonymous request: opened with our prekeys, answered by the
   * application's handler, the response sent back fast to the requester's
   * reply hint. Never yielded by messages(): it has no sender DID.
   */
  #onAnonymousRequest(session: Connection, frame: DeliverFrame, key: string, durable: boolean, position: number): void {
    const url = session.url.href;
    const messageId = copyBytes(frame.messageId);
    // Anonymous connections cannot send durably; acknowledge anything odd so it cannot block the queue.
    if (durable) void this.#ackInbound(key, messageId, position);
    else this.#tracker.accept(key, 0);
    const sessions = this.#sessions;
    const handler = this.#onAnonymous;
    if (sessions === undefined || handler === undefined || durable) {
      this.#emitError({
        error: new RelayError(
          'ANON_NOT_PERMITTED',
          durable
            ? 'a durable anonymous request was refused (anonymous requests are fast only)'
            : 'an anonymous request arrived but this client has no onAnonymousRequest handler (or no sessions)',
        ),
        url,
        messageId,
      });
      return;
    }
    const replyTo = copyBytes(frame.source);
    const sessionId = copyBytes(frame.sessionId);
    const request = frame.payload.slice(1);
    const guard = this.#anonymousReplayGuard;
    void (async () => {
      try {
        const responder = await sessions.acceptAnonymousRequest(request, guard);
        const payload = decodeAnonymousPlaintext(responder.payload, Date.now());
        const answer = await handler({ payload, sessionId: responder.sessionId });
        const body = encodeEnvelope(this.did, responder.sealResponse(answer));
        const current = this.#link.live;
        if (current === undefined) {
          throw new RelayError(ClientErrorCode.unreachable, 'the connection ended before the response could be sent');
        }
        this.#link.write(current, {
          type: 'SEND',
          dest: replyTo,
          source: this.#hint,
          sessionId,
          messageId: randomBytes(ID_SIZE),
          flags: 0,
          ttl: 0,
          position: 0,
          payload: body,
        });
      } catch (error) {
        this.#emitError({ error: toLibertariaError(error, 'answering an anonymous request'), url, messageId });
      }
    })();
  }

  #inboundMessage(
    key: string,
    messageId: Uint8Array,
    from: string,
    fromHint: Uint8Array,
    payload: Uint8Array,
    durable: boolean,
    position: number,
    sessionId: Uint8Array,
    sealed: boolean,
  ): InboundMessage {
    let acked = !durable;
    return {
      messageId,
      from,
      fromHint,
      to: this.did,
      payload,
      durable,
      position,
      sessionId,
      sealed,
      ack: async () => {
        if (acked) return;
        acked = true;
        // The kept plaintext is forgotten before the relay hears the ACK (sessions.ts acknowledge()).
        if (durable && sealed && this.#sessions !== undefined) {
          await this.#sessions.acknowledge(from, messageId).catch((error: unknown) => {
            acked = false;
            throw error;
          });
        }
        await this.#ackInbound(key, messageId, position);
      },
    };
  }

  async #ackInbound(key: string, messageId: Uint8Array, position: number): Promise<void> {
    this.#tracker.ack(key, position);
    // Persisted before the relay hears it: a restart must not show an acknowledged message again.
    if (this.#outbox !== undefined) await this.#outbox.persistInbound();
    const connection = this.#link.live;
    // Without a connection the next RESUME (or a redelivery acked again) tells the relay.
    if (connection !== undefined) this.#link.write(connection, { type: 'ACK', messageId, position });
    this.#maybeResync();
  }

  // ---------------------------------------------------------------------------
  // Outbox (offline-first)

  #forgetOutbox(entry: OutboundEntry<Connection>): void {
    this.#outbox?.forget(entry);
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

  /** Once the application has drained enough, replace a connection that left frames unread. */
  #maybeResync(): void {
    const session = this.#link.live;
    if (session === undefined || !session.leavingUnread) return;
    if (this.#inbox.length > this.#inbox.capacity / 2 || this.#tracker.unacked > this.#maxUnacked / 2) return;
    this.#log.info?.('inbound buffer drained; reconnecting to receive what was left with the relay', {
      url: session.url.href,
    });
    this.#link.end(session, { resync: true });
  }

  // ---------------------------------------------------------------------------
  // Helpers

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
    // Queued messages were never acknowledged: the relay keeps them for the next client.
    this.#inbox.clear();
    this.#inbox.end(inboxError);
    await this.#link.closeConnection();
  }
}
