/**
 * The public types of RelayClient (options, events, results, stats) and its
 * default limits in one constant, CLIENT_DEFAULTS. client.ts re-exports the
 * types, so imports from './client.js' keep working.
 *
 * Type-only imports besides the constant: browser-safe like client.ts.
 */

import type { CryptoProvider, LifecycleState, LifecycleTransition, TicketStore } from '@libertaria/crypto';
import type { PeerSigner } from '@libertaria/identity';
import type { LibertariaError, PrekeyVerifier } from '@libertaria/protocol';
import type { ReconnectOptions } from './backoff.js';
import type { SignatureVerifier } from './handshake.js';
import type { RelayPinStore } from './relay-pins.js';
import type { SessionStore } from './session-store.js';
import type { SessionManager } from './sessions.js';
import type { TlsClientOptions } from './transport.js';

/**
 * Default limits: the RelayClientOptions defaults their doc comments name,
 * then the client's internal bounds.
 */
export const CLIENT_DEFAULTS = {
  /** RelayClientOptions.handshakeTimeoutMs. */
  handshakeTimeoutMs: 15_000,
  /** RelayClientOptions.ackTimeoutMs. */
  ackTimeoutMs: 15_000,
  /** RelayClientOptions.maxTimeoutMs. */
  maxTimeoutMs: 10 * 60_000,
  /** RelayClientOptions.maxInFlight. */
  maxInFlight: 256,
  /** RelayClientOptions.maxUnackedInbound. */
  maxUnackedInbound: 4096,
  /** RelayClientOptions.maxBufferedBytes. */
  maxBufferedBytes: 8 * 1024 * 1024,
  /** RelayClientOptions.dedupeSize. */
  dedupeSize: 100_000,
  /** RelayClientOptions.inboundBufferSize. */
  inboundBufferSize: 1024,
  /** AuditQueryOptions.limit. */
  auditPageSize: 100,
  /** Grants re-presented on every new connection (the relay keeps them per connection). */
  maxGrants: 64,
  /** DIDs remembered as recent peers (they get our path updates). */
  maxRecentPeers: 256,
  /** How long a peer counts as recent. */
  recentPeerMs: 10 * 60_000,
  /** Keepalive PINGs tracked per connection for RTT; older ones are forgotten (their PONGs still count as traffic). */
  maxTrackedKeepalives: 64,
  /** Senders of unsealed messages a sealed client warns about (once each), at most. */
  maxUnsealedWarnings: 64,
  /** Anonymous request ids the local in-memory replay guard remembers. */
  anonymousReplayEntries: 100_000,
  /** close() waits at most this long for the transport to flush (ACKs written just before close). */
  closeFlushMs: 2000,
} as const;

export interface ClientLogger {
  debug?(message: string, fields?: Record<string, unknown>): void;
  info?(message: string, fields?: Record<string, unknown>): void;
  warn?(message: string, fields?: Record<string, unknown>): void;
  error?(message: string, fields?: Record<string, unknown>): void;
}

export interface RelayClientOptions {
  /** ws://, wss://, tcp:// or tls:// URLs, tried in order (failover). */
  relays: readonly string[];
  identity: PeerSigner;
  /**
   * The relay DID (did:libertaria or did:key) every relay without a DID in
   * its URL must prove in CHALLENGE (a cluster sharing one operator key);
   * another key is refused before we sign, with RELAY_IDENTITY_MISMATCH. A
   * URL's own fragment (`ws://host:8080#did:…`) takes precedence.
   */
  expectRelayDid?: string;
  /**
   * Trust on first use (docs/client.md#relay-identity): a relay URL with no
   * expected DID is pinned here to the key its relay proved first, and any
   * other key later is refused (RELAY_IDENTITY_MISMATCH, naming the pin).
   * Without it such a relay is accepted with whatever key it proves.
   */
  relayPins?: RelayPinStore;
  /** Verifies relay CHALLENGE signatures (default: the browser-safe noble verifier; in Node verifyEd25519 is faster). */
  verifyRelaySignature?: SignatureVerifier;
  reconnect?: Partial<ReconnectOptions>;
  /**
   * Handshake budget per step (default 15 s): CHALLENGE within this of our
   * HELLO, WELCOME within this of our AUTH; opening the transport (TCP, TLS,
   * WebSocket upgrade) gets twice it. One step is one round trip, so the
   * default lets links with several seconds of one-way delay in at once.
   */
  handshakeTimeoutMs?: number;
  /**
   * A durable SEND without ACK for this long means the connection is stuck:
   * it is replaced and the send written again (default 15 s). Also the PING
   * timeout.
   */
  ackTimeoutMs?: number;
  /**
   * Stretch the ACK, PING, presence, prekey and handshake timeouts with the
   * measured round trip (PING/PONG and handshake durations), so a link with
   * tens of seconds of one-way delay stays up (default true). The configured
   * ackTimeoutMs and handshakeTimeoutMs remain the floors.
   */
  adaptiveTimeouts?: boolean;
  /** Cap on any adapted timeout (default 10 minutes). */
  maxTimeoutMs?: number;
  logger?: ClientLogger;
  /** Messages waiting for messages() before fast ones are dropped and durable ones left with the relay (default 1024). */
  inboundBufferSize?: number;
  /** Durable messages yielded and not yet ack()ed before further ones are left with the relay (default 4096). */
  maxUnackedInbound?: number;
  /** Durable sends on the wire awaiting ACK (default 256); more wait in order. */
  maxInFlight?: number;
  /** Message ids remembered for duplicate suppression (default 100,000). */
  dedupeSize?: number;
  /** Fast sends are refused (SEND_QUEUE_OVERFLOW) while the transport buffers more than this (default 8 MiB). */
  maxBufferedBytes?: number;
  /** TLS settings for wss:// and tls:// (Node only). */
  tls?: TlsClientOptions;
  /**
   * End-to-end sessions (docs/client.md#sealed-sessions): payloads are sealed
   * and opened by them, and our prekeys are published on every connect and
   * refilled on 'prekeys-low'. Sealing is the default: without this option
   * the client makes its own SessionManager over `sessionStore` and `crypto`.
   */
  sessions?: SessionManager;
  /**
   * Where the client's own SessionManager keeps its keys and sessions (when
   * `sessions` is not given). Default: memory only, which the client warns
   * about once: sealed mail that arrived for an earlier run's prekeys cannot
   * be opened after a restart. In Node a FileSessionStore keeps them.
   */
  sessionStore?: SessionStore;
  /** The primitives of the client's own SessionManager (default nobleCrypto, browser-safe; nodeCrypto is faster in Node). */
  crypto?: CryptoProvider;
  /**
   * false: payloads travel unsealed, readable by every relay and by Redis on
   * the path, and a relay can forge them. Only for applications that seal
   * by other means or test the relay itself; the client warns once (default true).
   */
  sealing?: boolean;
  /**
   * Offline-first (docs/client.md#offline-first-outbox): durable sends are
   * written here before they go out and removed when the relay ACKs them,
   * and the inbound acknowledgement state (the RESUME version) before each
   * ACK, so an application restart loses no unacknowledged send and is shown
   * no message it acknowledged. connect() resends what the last run left
   * (same message ids: the relay stores each once) and reports each with an
   * 'outbox' event. A FileSessionStore makes it survive restarts.
   */
  outbox?: SessionStore;
  /**
   * Answers anonymous requests (client/anonymous.ts, docs/client.md#anonymous-requests):
   * called with the opened request, returns the response, which is sealed to
   * the requester's ephemeral keys and sent back fast. Needs `sessions` (the
   * request is sealed to our prekeys). Without it anonymous requests are
   * dropped and reported as ANON_NOT_PERMITTED errors.
   */
  onAnonymousRequest?: (request: AnonymousRequest) => Uint8Array | Promise<Uint8Array>;
  /**
   * Refuses replayed anonymous requests. Default: the relay cluster
   * (RelayTicketStore over this client, ONCE_CHECK), so every device of this
   * DID shares it. A local in-memory guard is always asked first, so a relay
   * that lies "fresh" cannot replay a request this process answered.
   */
  anonymousReplayGuard?: TicketStore;
}

/** An anonymous request as onAnonymousRequest sees it: no sender DID exists. */
export interface AnonymousRequest {
  readonly payload: Uint8Array;
  /** The exchange's id (random to us; links nothing). */
  readonly sessionId: Uint8Array;
}

export interface SendOptions {
  /** Stored by the relay and acknowledged (default true); false = fast, forwarded from memory only. */
  durable?: boolean;
  /** 16 bytes; random by default. Reuse it to retry a send idempotently. */
  messageId?: Uint8Array;
  /** 16 bytes, the end-to-end session (opaque to the relay); zero by default. */
  sessionId?: Uint8Array;
  /** Durable retention; 0 or unset = the relay's default. */
  ttlSeconds?: number;
}

export interface SendResult {
  messageId: Uint8Array;
  /** Queue position the relay stored a durable message at; absent for fast sends. */
  position?: number;
}

export interface InboundMessage {
  readonly messageId: Uint8Array;
  /** Sender DID, verified against the source hint the relay authenticated. */
  readonly from: string;
  readonly fromHint: Uint8Array;
  /** Our own DID. */
  readonly to: string;
  readonly payload: Uint8Array;
  readonly durable: boolean;
  /** Position in our durable queue; 0 for fast messages. */
  readonly position: number;
  readonly sessionId: Uint8Array;
  /**
   * True when the payload was opened from an end-to-end session (PQXDH, then
   * the Double Ratchet): only the holder of `from`'s keys could have written
   * it. False when it came in the clear inside the sender envelope (a sender
   * with `sealing: false`, `lrelay send --unsealed`): any relay or Redis on
   * the path could read it, and a relay could have forged it. A sealed client
   * still hands such messages over, marked, rather than acknowledging and
   * dropping them; check this before trusting `from` or the payload.
   */
  readonly sealed: boolean;
  /**
   * Tells the relay the message is processed, so it is deleted from the
   * queue. Until then it is redelivered after a reconnect (and hidden as a
   * duplicate while this client still holds it). A no-op for fast messages.
   */
  ack(): Promise<void>;
}

/** What the relay stores of our prekeys (PREKEY_STATUS). */
export interface PrekeyStatus {
  /** Signed prekeys are stored: peers can fetch a bundle. */
  published: boolean;
  /** One-time X25519 prekeys left. */
  oneTimeX25519: number;
  /** One-time ML-KEM prekeys left. */
  oneTimeKem: number;
  /** Most one-time prekeys of each kind the relay keeps. */
  cap: number;
  /** Below this many of a kind the relay sends 'prekeys-low'. */
  lowWater: number;
  /** Highest one-time X25519 id ever stored: new ones must be above it. Absent: none yet. */
  lastOneTimeX25519Id?: number;
  /** Highest one-time KEM id ever stored: new ones must be above it. Absent: none yet. */
  lastOneTimeKemId?: number;
}

export interface PublishPrekeysOptions {
  /** Discard every one-time prekey the relay holds for us before appending these (e.g. after losing local state). */
  replaceOneTime?: boolean;
}

export interface FetchPrekeysOptions {
  /**
   * Ed25519 verifier (verifyEd25519 in Node): when given, every signature of
   * the bundle is checked (PREKEY_BAD_SIGNATURE). Without it the session
   * layer must check them (verifyBundle) before using the keys.
   */
  verify?: PrekeyVerifier;
}

export interface RelayClientEvents {
  /** relayDid: the did:libertaria of the key the relay proved in CHALLENGE. */
  connected: { url: string; nodeId: string; connectionId: string; maxPayload: number; relayDid: string };
  disconnected: { url: string; error?: Error };
  goaway: { url: string; reconnectAfterMs: number; reconnectHint: string[]; reason: string };
  'peer-gone': { hint: Uint8Array; messageId: Uint8Array };
  /** The relay says fetches left fewer one-time prekeys than its low-water mark: publish more. */
  'prekeys-low': PrekeyStatus;
  /**
   * Something went wrong that no pending call reports: a relay ERROR, a
   * NACK for a fast send, a dropped inbound frame (`dropped` counts fast
   * frames dropped so far), a relay refused for good.
   */
  error: { error: LibertariaError; url?: string; messageId?: Uint8Array; dropped?: number };
  /** A durable send restored from the outbox (a previous run's) was acknowledged (position) or refused (error). */
  outbox: { messageId: Uint8Array; position?: number; error?: LibertariaError };
  /** A peer we talked with moved to another relay node (its path update after a migration). */
  'peer-moved': { did: string; nodeId: string; at: number };
  /** The connection's lifecycle moved (session/lifecycle.ts): handshaking, active, degraded, migrating, suspended, closing, closed. */
  state: LifecycleTransition;
}

export interface RelayClientStats {
  /** Durable sends not yet ACKed or NACKed. */
  pendingSends: number;
  /** Durable inbound messages yielded but not yet ack()ed. */
  unackedInbound: number;
  /** Inbound messages waiting for messages(). */
  bufferedInbound: number;
  /** The RESUME watermark. */
  lastAcked: number;
  /** Inbound fast frames dropped because the buffer was full. */
  droppedFast: number;
  /** Redelivered or repeated inbound frames hidden from the application. */
  duplicates: number;
  /** Successful handshakes so far. */
  connections: number;
  /** Smoothed round trip to the relay in ms (undefined before the first measurement). */
  rttMs: number | undefined;
  /** The ACK/PING timeout in force now (ackTimeoutMs, stretched by the measured round trip). */
  ackTimeoutMs: number;
  /** Lifecycle state of the connection to the cluster. */
  state: LifecycleState;
}

/** A grant the relay accepted (GRANT_ACCEPTED). */
export interface AcceptedGrant {
  /** The token's id (its leaf cid), hex. */
  tokenId: string;
  /** ms since the epoch; 0 when the token never expires. */
  expiresAt: number;
}

/** One page of the membrane's audit trail for this DID's resources (AUDIT_QUERY). */
export interface AuditPageResult {
  /** Decisions as the relay keeps them (docs/membrane.md#redis), each with its stream `id`. */
  records: Record<string, unknown>[];
  /** Pass as `after` for the next page; undefined when there is nothing more. */
  next: string | undefined;
}

export interface AuditQueryOptions {
  sinceMs?: number;
  untilMs?: number;
  /** 1..1000, default 100. */
  limit?: number;
  after?: string;
}
