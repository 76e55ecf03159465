/**
 * Client SDK of the Libertaria relay: RelayClient (connect, send, messages,
 * ping, close), the payload envelope, relay URLs and the pieces the client
 * is built from (backoff schedule, duplicate tracker, transports), exported
 * for tests, tools and custom clients. See docs/client.md.
 */

export {
  ANON_REQUEST_MAX_AGE_MS,
  ANON_REQUEST_RETENTION_MS,
  ANON_REQUEST_SKEW_MS,
  ANONYMOUS_REQUEST_KIND,
  type AnonymousRequestOptions,
  type AnonymousResponse,
  anonymousRequest,
  decodeAnonymousPlaintext,
  encodeAnonymousPlaintext,
} from './anonymous.js';
export {
  backoffBounds,
  backoffDelay,
  DEFAULT_RECONNECT,
  fromReconnectionPolicy,
  type ReconnectionPolicy,
  type ReconnectOptions,
  resolveReconnectOptions,
} from './backoff.js';
export { bytesEqual, copyBytes, randomBytes, toHex } from './bytes.js';
export {
  type AnonymousRequest,
  type ClientLogger,
  type FetchPrekeysOptions,
  type InboundMessage,
  type PrekeyStatus,
  type PublishPrekeysOptions,
  RelayClient,
  type RelayClientEvents,
  type RelayClientOptions,
  type RelayClientStats,
  type SendOptions,
  type SendResult,
} from './client.js';
export { ClientErrorCode } from './codes.js';
export { type DedupeOptions, DedupeTracker, type DedupeVerdict, inboundKey } from './dedupe.js';
export { type Listener, TypedEmitter } from './emitter.js';
export {
  checkEnvelopeSender,
  decodeEnvelope,
  ENVELOPE_HEADER_SIZE,
  ENVELOPE_VERSION,
  type Envelope,
  encodeEnvelope,
  envelopeOverhead,
} from './envelope.js';
export {
  type AnonymousTerms,
  DEFAULT_MAX_POW_BITS,
  type Handshake,
  HandshakeError,
  type HandshakeOptions,
  isPermanentRefusal,
  performHandshake,
  type RelayExpectation,
  type SignatureVerifier,
  type Welcome,
} from './handshake.js';
export { Inbox } from './inbox.js';
export {
  decodeMultipathFrame,
  encodeMultipathFrame,
  MULTIPATH_HEADER_SIZE,
  MULTIPATH_STRATEGIES,
  MULTIPATH_STREAM_ID_SIZE,
  MULTIPATH_VERSION,
  type MultipathEvents,
  type MultipathFrame,
  MultipathInbound,
  type MultipathInboundOptions,
  type MultipathInboundStats,
  type MultipathMessage,
  type MultipathOptions,
  type MultipathPathSpec,
  type MultipathPathStats,
  type MultipathSendOptions,
  type MultipathSendResult,
  MultipathSession,
  type MultipathStats,
  type MultipathStrategy,
  PathScheduler,
  type PathView,
  ReorderBuffer,
  type ReorderOptions,
  type ReorderStats,
  type ReorderTimers,
} from './multipath-exports.js';
export { InMemoryRelayPinStore, type RelayPin, type RelayPinStore } from './relay-pins.js';
export { type OnceChecker, RelayTicketStore, type RelayTicketStoreOptions } from './relay-ticket-store.js';
export {
  InMemorySessionStore,
  packFields,
  readU32,
  type SessionStore,
  u32,
  unpackFields,
} from './session-store.js';
export {
  type PrekeyStatusLike,
  type RotationEvent,
  SealedType,
  SessionManager,
  type SessionManagerOptions,
  type SessionTransport,
} from './sessions.js';
export { openTransport, type TlsClientOptions, type Transport, type TransportOptions } from './transport.js';
export {
  parseRelayUrl,
  parseRelayUrls,
  type RelayScheme,
  type RelayUrl,
  relayUrlText,
  type TransportBinding,
} from './url.js';
export { WS_SUBPROTOCOL } from './ws-transport.js';
