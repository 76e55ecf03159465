// Size: about 1,610 lines on purpose: the whole wire protocol in one file, the codec
// beside the block comment that documents every frame (like Tailscale's derp.go).
/**
 * Libertaria relay wire protocol, version 2.
 *
 * The relay carries sealed session frames between peers identified by DIDs.
 * It routes by 24-byte routing hints (BLAKE3-256 of the peer's Ed25519 key,
 * truncated) and never needs to read a payload. docs/protocol.md describes the
 * same protocol with one table per frame; a test checks that every frame in
 * that document round-trips through this codec.
 *
 * Framing. Every frame is
 *
 *     0  u8   version      protocol version of this frame (2; 1 for HELLO, CHALLENGE, ERROR)
 *     1  u8   type         one of FrameType
 *     2  u32  bodyLength   big-endian; the body follows
 *     6  ...  body         bodyLength bytes, layout per type
 *
 * Frames are self-delimiting, so a WebSocket message or a TCP stream is just
 * frames back to back: a WebSocket message holds one or more whole frames
 * (batching amortizes the per-message cost), a TCP stream is read with
 * FrameStreamDecoder, which reassembles frames across reads. All integers are
 * big-endian. Strings are UTF-8 with an explicit length prefix.
 *
 * Protocol flow (version 2; docs/protocol.md#the-handshake-version-2):
 *
 *     client -> HELLO {minVersion, maxVersion, features, clientNonce}
 *     relay  -> CHALLENGE {version, nonce, relayIdentity (its DID), relayKey,
 *               signature}   the relay's Ed25519 signature over
 *               relayChallengeTranscript: clientNonce ‖ nonce ‖ relayKey ‖
 *               transport binding ‖ TLS exporter (tls:// only); the client
 *               verifies it (and a pinned DID) before it signs anything
 *     client -> AUTH {publicKey, signature, did}   signature over
 *               authTranscript: nonce ‖ clientNonce ‖ relayKey ‖ binding ‖
 *               TLS exporter, so it is good only at the relay holding relayKey
 *     relay  -> WELCOME {hint, connectionId, limits, nodeId}
 *     then SEND/DELIVER/ACK/NACK/RESUME/PING/PONG/... in any order;
 *     client -> PREKEY_PUBLISH / PREKEY_FETCH / PREKEY_STATUS_QUERY {requestId}
 *     relay  -> PREKEY_STATUS / PREKEY_BUNDLE / NACK {requestId}, and
 *               PREKEY_STATUS with a zero requestId as a low-water notice;
 *     client -> ONCE_CHECK {requestId, retention, id}: a single-use id seen
 *               before? (0-RTT tickets, anonymous requests; Redis-backed)
 *     relay  -> ONCE_RESULT {requestId, fresh, epoch} or NACK {requestId}; the
 *               epoch names the Redis data set that remembers the owner's
 *               ids and changes when it is lost (docs/relay.md#single-use-ids);
 *     client -> GRANT_PRESENT / POLICY_PUT / POLICY_GET / AUDIT_QUERY / GRANT_REVOKE {requestId}
 *     relay  -> GRANT_ACCEPTED / POLICY / POLICY / AUDIT_RESULT / GRANT_REVOKED or NACK {requestId}
 *               (the membrane, docs/membrane.md#the-relay-protocol);
 *     relay  -> GOAWAY before it closes on purpose (drain, restart);
 *     either -> ERROR {code} (FATAL flag: the sender closes afterwards).
 *
 * Anonymous connections (ephemeral sessions): HELLO with the ANONYMOUS
 * feature bit is answered by ANON_CHALLENGE {version, nonce, powBits, terms,
 * relayIdentity} instead of CHALLENGE; the client answers ANON_AUTH {stamp}
 * (proof of work over the nonce, pow.ts) and gets WELCOME with a random reply
 * hint. No DID and no key is ever sent on such a connection.
 *
 * Version negotiation: the envelope layout, HELLO's first six bytes,
 * CHALLENGE's first byte and ERROR are frozen for all versions (envelope
 * version byte 1, FROZEN_FRAME_VERSION), so any relay can read any client's
 * opening. The client offers [minVersion, maxVersion]; the relay picks the
 * highest version both speak and names it in CHALLENGE, or answers ERROR
 * UNSUPPORTED_VERSION (FATAL). Every later frame carries the chosen version;
 * a decoder rejects versions it does not speak. Version 1 (a relay identity
 * that was only a configured name) is refused by both sides now.
 *
 * Decoding is strict: a truncated frame, a body longer than the limit, an
 * unknown type or version, a length that disagrees with the layout, a field
 * value the type forbids or bytes left over all raise ProtocolError with a
 * stable code. Lengths are checked against the limit before anything is
 * read, and the decoder never allocates a buffer sized by a length field:
 * decoded byte fields are views (subarrays) into the input, so a caller that
 * keeps a frame beyond the life of the input buffer must copy what it keeps.
 *
 * Prekey frames (0x4_) carry the prekey model of session/prekey-types.ts in
 * the encodings of session/prekey-bundle.ts, decoded just as strictly.
 *
 * This module is deliberately free of Node-only imports: the WebSocket client
 * path runs in browsers too.
 */
import { ByteWriter } from './byte-writer.js';
import { concatBytes, readU32, writeU32 } from './bytes.js';
import { ProtocolError } from './errors.js';
import {
  decodePrekeyBundle,
  decodePrekeyPublication,
  encodePrekeyBundle,
  encodePrekeyPublication,
} from './prekey-bundle.js';
import type { PrekeyBundle, PrekeyPublication } from './prekey-types.js';

/**
 * The version this code negotiates and encodes every frame after the opening
 * with. Version 2 (issue 13) made the relay's identity a key: HELLO carries a
 * client nonce and CHALLENGE the relay's key and its signature
 * (relayChallengeTranscript); AUTH signs a transcript that names that key.
 * Version 1 is no longer negotiated: a relay answers a version-1 HELLO with
 * ERROR UNSUPPORTED_VERSION.
 */
export const PROTOCOL_VERSION = 2;
/** Oldest version a relay or client negotiates. */
export const MIN_PROTOCOL_VERSION = 2;
export const MAX_PROTOCOL_VERSION = 2;
/**
 * The envelope version byte of the frozen frames (HELLO, CHALLENGE, ERROR),
 * which any version reads; the decoder accepts envelopes from this version up
 * to MAX_PROTOCOL_VERSION.
 */
export const FROZEN_FRAME_VERSION = 1;

export const FRAME_HEADER_SIZE = 6;
/** HELLO body: u8 minVersion, u8 maxVersion, u32 features, 32-byte client nonce (6 bytes without it: version 1). */
export const HELLO_BODY_SIZE = 38;
export const HELLO_V1_BODY_SIZE = 6;
export const HINT_SIZE = 24;
export const ID_SIZE = 16;
export const NONCE_SIZE = 32;
export const PUBLIC_KEY_SIZE = 32;
export const SIGNATURE_SIZE = 64;

/** Default largest SEND/DELIVER payload; configurable per relay (RELAY_MAX_PAYLOAD_BYTES). */
export const DEFAULT_MAX_PAYLOAD = 64 * 1024;
/** Hard ceiling on any payload whatever the configuration: no body is ever larger than this plus the routed header. */
export const MAX_PAYLOAD_LIMIT = 1024 * 1024;
/**
 * Every side accepts frame bodies of at least this many bytes whatever its
 * payload limit, so a PREKEY_BUNDLE (at most 2,790 bytes) and a
 * PREKEY_PUBLISH with the signed keys and two one-time KEM prekeys always fit.
 * SEND/DELIVER payloads are still held to the payload limit.
 */
export const MIN_BODY_LIMIT = 4096;
/** Longest UTF-8 message in ERROR, NACK and GOAWAY. */
export const MAX_TEXT_BYTES = 1024;
/** Longest DID accepted in AUTH. */
export const MAX_DID_BYTES = 128;
/** Longest relay identity, node id and migration proof. */
export const MAX_SHORT_TEXT_BYTES = 255;
/** Positions are u64 on the wire but kept below 2^53 so they are exact JavaScript numbers. */
export const MAX_POSITION = Number.MAX_SAFE_INTEGER;

/**
 * Frame type byte values. 0x0_ handshake, 0x1_ data, 0x2_ liveness, 0x3_ presence and control, 0x4_ prekeys,
 * 0x5_ single-use ids, 0x6_ the membrane (grants, policies, audit).
 */
export const FrameType = {
  HELLO: 0x01, // client -> relay: u8 minVersion, u8 maxVersion, u32 features, 32B client nonce
  CHALLENGE: 0x02, // relay -> client: u8 version, 32B nonce, u8 len + relay DID, 32B relay key, 64B signature
  AUTH: 0x03, // client -> relay: u8 keyType, 32B public key, 64B signature, u8 len + DID
  WELCOME: 0x04, // relay -> client: 24B hint, 16B connection id, u32 maxPayload, u32 heartbeatMs, u8 len + node id
  ANON_CHALLENGE: 0x05, // relay -> client: u8 version, 32B nonce, u8 powBits, u16 maxSends, u32 lifetimeMs, u8 len + relay identity
  ANON_AUTH: 0x06, // client -> relay: u64 proof-of-work stamp
  SEND: 0x10, // client -> relay: routed header (93B) + payload
  DELIVER: 0x11, // relay -> client: routed header (93B) + payload; same layout as SEND
  ACK: 0x12, // both: 16B message id, u64 position
  NACK: 0x13, // relay -> client: 16B message id (or prekey request id), u16 error code, u16 len + message
  RESUME: 0x14, // client -> relay: u64 last acknowledged position
  MIGRATE: 0x15, // client -> relay: 16B previous connection id, u8 len + proof (signature)
  PING: 0x20, // both: 8B opaque data
  PONG: 0x21, // both: 8B data echoed from PING
  PEER_PRESENT: 0x30, // relay -> client: 24B hint
  PEER_GONE: 0x31, // relay -> client: 24B hint, 16B message id (zero when not about a SEND)
  PRESENCE_QUERY: 0x32, // client -> relay: 24B hint
  GOAWAY: 0x3e, // relay -> client: u32 reconnectAfterMs, u16 len + reconnect hint, u16 len + reason
  ERROR: 0x3f, // both: u16 error code, u8 flags, u16 len + message
  PREKEY_PUBLISH: 0x40, // client -> relay: 16B request id, u8 flags, prekey publication
  PREKEY_FETCH: 0x41, // client -> relay: 16B request id, 24B hint of the peer whose prekeys are wanted
  PREKEY_BUNDLE: 0x42, // relay -> client: 16B request id, prekey bundle
  PREKEY_STATUS: 0x43, // relay -> client: 24B hint, 16B request id, u8 flags, 4 x u16 counts, 2 x u32 ids
  PREKEY_STATUS_QUERY: 0x44, // client -> relay: 16B request id
  ONCE_CHECK: 0x50, // client -> relay: 16B request id, u32 retentionSeconds, u8 len + id
  ONCE_RESULT: 0x51, // relay -> client: 16B request id, u8 fresh (1 first time, 0 seen before), 16B epoch
  GRANT_PRESENT: 0x60, // client -> relay: 16B request id, grant token (the rest, at least 1 byte)
  GRANT_ACCEPTED: 0x61, // relay -> client: 16B request id, 32B token id (leaf cid), u64 expiresAt (ms, 0 never)
  POLICY_PUT: 0x62, // client -> relay: 16B request id, policy JSON (the rest; empty removes the policy)
  POLICY_GET: 0x63, // client -> relay: 16B request id
  POLICY: 0x64, // relay -> client: 16B request id, normalized policy JSON (the rest; empty: no policy)
  AUDIT_QUERY: 0x65, // client -> relay: 16B request id, u64 sinceMs, u64 untilMs (0: no bound), u16 limit, u8 len + cursor
  BRIDGE_QUERY: 0x70, // client -> relay: 16B request id, u8 len + network name (nostr, activitypub, xmtp, custom-…)
  BRIDGE_INFO: 0x71, // relay -> client: 16B request id, u8 len + the DID of the bridge serving that network
  AUDIT_RESULT: 0x66, // relay -> client: 16B request id, u8 len + next cursor, JSON array of records (the rest)
  GRANT_REVOKE: 0x67, // client -> relay: 16B request id, grant token (the rest): revoke the links this DID issued
  GRANT_REVOKED: 0x68, // relay -> client: 16B request id, u8 count, count x 32B cids revoked
} as const;

export type FrameTypeName = keyof typeof FrameType;
export type FrameTypeValue = (typeof FrameType)[FrameTypeName];

const typeNames: (FrameTypeName | undefined)[] = new Array(256);
for (const [name, value] of Object.entries(FrameType)) typeNames[value] = name as FrameTypeName;

/** The name of a frame type byte, or undefined if it names no frame. */
export function frameTypeName(value: number): FrameTypeName | undefined {
  return typeNames[value];
}

/** SEND/DELIVER flags. Undefined bits must be zero. */
export const SendFlags = {
  /** Store in the recipient's durable queue; acknowledge the sender once Redis confirmed. */
  DURABLE: 0x01,
} as const;
const KNOWN_SEND_FLAGS = SendFlags.DURABLE;

/** ERROR flags. Undefined bits must be zero. */
export const ErrorFlags = {
  /** The sender of this ERROR closes the connection after it. */
  FATAL: 0x01,
} as const;
const KNOWN_ERROR_FLAGS = ErrorFlags.FATAL;

export const KeyType = { ED25519: 1 } as const;

/** HELLO feature bits. Unknown bits are ignored by the relay (so an older relay answers CHALLENGE). */
export const HelloFeatures = {
  /** Open an anonymous connection (ephemeral sessions): no DID, a proof-of-work stamp instead. */
  ANONYMOUS: 0x00000001,
} as const;
/** Largest proof-of-work difficulty a relay may announce (leading zero bits of SHA-256). */
export const MAX_POW_BITS = 32;
/** Single-use ids (ONCE_CHECK) are 1..64 bytes. */
export const MAX_ONCE_ID_BYTES = 64;
/** The replay-memory epoch in ONCE_RESULT: random, made when the owner's once-keys are found without one. */
export const ONCE_EPOCH_SIZE = 16;
/** Grant token ids (GRANT_ACCEPTED) are a BLAKE3-256 cid. */
export const GRANT_ID_SIZE = 32;
/** Most audit records one AUDIT_QUERY asks for. */
export const MAX_AUDIT_QUERY_LIMIT = 1000;
/** Longest audit cursor (a Redis stream id, `ms-seq`). */
export const MAX_AUDIT_CURSOR_BYTES = 64;
/** Network names in BRIDGE_QUERY: what federationNetworkName produces. */
export const MAX_NETWORK_NAME_BYTES = 64;
const NETWORK_NAME = /^[a-z0-9][a-z0-9-]{0,63}$/;
/** Bytes of an ANON_AUTH proof-of-work stamp. */
export const POW_STAMP_SIZE = 8;

/** PREKEY_PUBLISH flags. Undefined bits must be zero. */
export const PrekeyPublishFlags = {
  /** Discard every stored one-time prekey (both kinds) before appending this publication's. */
  REPLACE_ONE_TIME: 0x01,
} as const;
const KNOWN_PREKEY_PUBLISH_FLAGS = PrekeyPublishFlags.REPLACE_ONE_TIME;

/** PREKEY_STATUS flags. Undefined bits must be zero. */
export const PrekeyStatusFlags = {
  /** Signed prekeys are stored: a fetch gets a bundle. */
  PUBLISHED: 0x01,
  /** lastOneTimeX25519Id holds the highest one-time X25519 prekey id ever stored (else it is 0). */
  X25519_ID: 0x02,
  /** lastOneTimeKemId holds the highest one-time KEM prekey id ever stored (else it is 0). */
  KEM_ID: 0x04,
} as const;
const KNOWN_PREKEY_STATUS_FLAGS = PrekeyStatusFlags.PUBLISHED | PrekeyStatusFlags.X25519_ID | PrekeyStatusFlags.KEM_ID;

/**
 * Byte offsets inside the body of SEND and DELIVER, in routing order, so a
 * relay can route without decoding the whole frame (add FRAME_HEADER_SIZE for
 * offsets inside the frame).
 */
export const Routed = {
  DEST: 0,
  SOURCE: 24,
  SESSION: 48,
  MESSAGE_ID: 64,
  FLAGS: 80,
  TTL: 81,
  POSITION: 85,
  PAYLOAD: 93,
} as const;
export const ROUTED_HEADER_SIZE = Routed.PAYLOAD;
/** PREKEY_STATUS body: hint, request id, flags, four u16 counts, two u32 ids. */
export const PREKEY_STATUS_BODY_SIZE = HINT_SIZE + ID_SIZE + 1 + 4 * 2 + 2 * 4;
/** PREKEY_PUBLISH body bytes before the publication: request id and flags. */
export const PREKEY_PUBLISH_HEADER_SIZE = ID_SIZE + 1;

// ---------------------------------------------------------------------------
// Frame objects

export interface HelloFrame {
  type: 'HELLO';
  minVersion: number;
  maxVersion: number;
  /** Feature bits (HelloFeatures); unknown bits are ignored. */
  features: number;
  /**
   * 32 fresh random bytes the relay signs in CHALLENGE (version 2). Absent
   * only in a version-1 HELLO, which the decoder still reads so a relay can
   * refuse it with UNSUPPORTED_VERSION instead of a codec error.
   */
  clientNonce?: Uint8Array;
}
export interface AnonChallengeFrame {
  type: 'ANON_CHALLENGE';
  version: number;
  nonce: Uint8Array;
  /** Leading zero bits the stamp's hash must have (0..MAX_POW_BITS). */
  powBits: number;
  /** Fast SENDs this connection may make. */
  maxSends: number;
  /** The relay closes the connection this long after WELCOME. */
  lifetimeMs: number;
  relayIdentity: string;
}
export interface AnonAuthFrame {
  type: 'ANON_AUTH';
  /** 8 bytes found by the client: SHA-256(pow domain ‖ nonce ‖ stamp) meets powBits (pow.ts). */
  stamp: Uint8Array;
}
export interface ChallengeFrame {
  type: 'CHALLENGE';
  version: number;
  /** The relay's fresh random nonce, signed by the client in AUTH. */
  nonce: Uint8Array;
  /** The relay's DID (did:libertaria or did:key of relayKey). */
  relayIdentity: string;
  /** The relay's raw Ed25519 public key. */
  relayKey: Uint8Array;
  /** Ed25519 by relayKey over relayChallengeTranscript (client nonce, nonce, key, transport). */
  signature: Uint8Array;
}
export interface AuthFrame {
  type: 'AUTH';
  keyType: number;
  publicKey: Uint8Array;
  signature: Uint8Array;
  did: string;
}
export interface WelcomeFrame {
  type: 'WELCOME';
  hint: Uint8Array;
  connectionId: Uint8Array;
  maxPayload: number;
  heartbeatMs: number;
  nodeId: string;
}
interface RoutedFields {
  dest: Uint8Array;
  source: Uint8Array;
  sessionId: Uint8Array;
  messageId: Uint8Array;
  flags: number;
  /** Durable retention in seconds; 0 means the relay's default. */
  ttl: number;
  /** Queue position of a durable DELIVER; 0 in SEND and in fast DELIVER. */
  position: number;
  payload: Uint8Array;
}
export interface SendFrame extends RoutedFields {
  type: 'SEND';
}
export interface DeliverFrame extends RoutedFields {
  type: 'DELIVER';
}
export interface AckFrame {
  type: 'ACK';
  messageId: Uint8Array;
  position: number;
}
export interface NackFrame {
  type: 'NACK';
  messageId: Uint8Array;
  /** Wire error code; see errors.ts (errorCodeFromWire). */
  code: number;
  message: string;
}
export interface ResumeFrame {
  type: 'RESUME';
  lastAcked: number;
}
export interface MigrateFrame {
  type: 'MIGRATE';
  /** The connectionId (from WELCOME) of the path this connection replaces. */
  previousConnectionId: Uint8Array;
  /** Ed25519 signature by the DID's key over migrationTranscript(this connection's id, previousConnectionId). */
  proof: Uint8Array;
}
export interface PingFrame {
  type: 'PING';
  data: Uint8Array;
}
export interface PongFrame {
  type: 'PONG';
  data: Uint8Array;
}
export interface PeerPresentFrame {
  type: 'PEER_PRESENT';
  hint: Uint8Array;
}
export interface PeerGoneFrame {
  type: 'PEER_GONE';
  hint: Uint8Array;
  messageId: Uint8Array;
}
export interface PresenceQueryFrame {
  type: 'PRESENCE_QUERY';
  hint: Uint8Array;
}
export interface GoawayFrame {
  type: 'GOAWAY';
  reconnectAfterMs: number;
  /** Comma-separated relay URLs the client may use instead; empty for "any". */
  reconnectHint: string;
  reason: string;
}
export interface ErrorFrame {
  type: 'ERROR';
  code: number;
  flags: number;
  message: string;
}
export interface PrekeyPublishFrame {
  type: 'PREKEY_PUBLISH';
  /** Chosen by the client; the answer (PREKEY_STATUS or NACK) carries it. */
  requestId: Uint8Array;
  /** PrekeyPublishFlags. */
  flags: number;
  publication: PrekeyPublication;
}
export interface PrekeyFetchFrame {
  type: 'PREKEY_FETCH';
  requestId: Uint8Array;
  /** Routing hint of the peer whose prekeys are wanted. */
  hint: Uint8Array;
}
export interface PrekeyBundleFrame {
  type: 'PREKEY_BUNDLE';
  requestId: Uint8Array;
  bundle: PrekeyBundle;
}
export interface PrekeyStatusFrame {
  type: 'PREKEY_STATUS';
  /** The owner of the prekeys: the receiving peer's own hint. */
  hint: Uint8Array;
  /** The PREKEY_PUBLISH or PREKEY_STATUS_QUERY answered; zero in an unsolicited low-water notice. */
  requestId: Uint8Array;
  /** PrekeyStatusFlags. */
  flags: number;
  /** One-time X25519 prekeys left. */
  oneTimeX25519: number;
  /** One-time ML-KEM prekeys left. */
  oneTimeKem: number;
  /** Most one-time prekeys of each kind the relay stores (RELAY_PREKEY_MAX_ONE_TIME). */
  cap: number;
  /** Below this many of a kind the relay sends unsolicited notices (RELAY_PREKEY_LOW_WATER). */
  lowWater: number;
  /** Highest one-time X25519 id ever stored (valid with the X25519_ID flag, else 0). */
  lastOneTimeX25519Id: number;
  /** Highest one-time KEM id ever stored (valid with the KEM_ID flag, else 0). */
  lastOneTimeKemId: number;
}
export interface PrekeyStatusQueryFrame {
  type: 'PREKEY_STATUS_QUERY';
  requestId: Uint8Array;
}
export interface BridgeQueryFrame {
  type: 'BRIDGE_QUERY';
  requestId: Uint8Array;
  /** 1..64 of a-z, 0-9, '-' (federationNetworkName). */
  network: string;
}
export interface BridgeInfoFrame {
  type: 'BRIDGE_INFO';
  requestId: Uint8Array;
  did: string;
}
export interface OnceCheckFrame {
  type: 'ONCE_CHECK';
  requestId: Uint8Array;
  /** How long the relay remembers the id, in seconds (1..the relay's RELAY_ONCE_MAX_RETENTION_SECONDS). */
  retentionSeconds: number;
  /** The single-use id, 1..MAX_ONCE_ID_BYTES bytes; namespaced by the relay under the sender's hint. */
  id: Uint8Array;
}
export interface OnceResultFrame {
  type: 'ONCE_RESULT';
  requestId: Uint8Array;
  /** True the first time the id was checked (within its retention), false every later time. */
  fresh: boolean;
  /**
   * The epoch of the Redis data set that answered (ONCE_EPOCH_SIZE bytes),
   * the same for every check of one owner until that data set is lost; a
   * client that sees it change knows ids it had checked are forgotten.
   */
  epoch: Uint8Array;
}

export interface GrantPresentFrame {
  type: 'GRANT_PRESENT';
  requestId: Uint8Array;
  /** A grant token (docs/membrane.md#grant-tokens) whose last audience is this connection's DID. */
  token: Uint8Array;
}
export interface GrantAcceptedFrame {
  type: 'GRANT_ACCEPTED';
  requestId: Uint8Array;
  /** The token's id: its leaf link's cid (32 bytes). */
  tokenId: Uint8Array;
  /** When the token expires (ms since the epoch); 0 when no link expires. */
  expiresAt: number;
}
export interface GrantRevokeFrame {
  type: 'GRANT_REVOKE';
  requestId: Uint8Array;
  /** A grant token; the relay revokes each of its links whose issuer is this connection's DID. */
  token: Uint8Array;
}
export interface GrantRevokedFrame {
  type: 'GRANT_REVOKED';
  requestId: Uint8Array;
  /** The cids (32 bytes each) now on the revocation list, root first. */
  cids: Uint8Array[];
}
export interface PolicyPutFrame {
  type: 'POLICY_PUT';
  requestId: Uint8Array;
  /** The connection's own policy as UTF-8 JSON; empty removes it. */
  policy: Uint8Array;
}
export interface PolicyGetFrame {
  type: 'POLICY_GET';
  requestId: Uint8Array;
}
export interface PolicyFrame {
  type: 'POLICY';
  requestId: Uint8Array;
  /** The stored, normalized policy as UTF-8 JSON; empty when there is none. */
  policy: Uint8Array;
}
export interface AuditQueryFrame {
  type: 'AUDIT_QUERY';
  requestId: Uint8Array;
  /** Records from this instant on (ms since the epoch; 0: from the oldest kept). */
  sinceMs: number;
  /** Records before this instant (ms; 0: no upper bound). */
  untilMs: number;
  /** Most records wanted, 1..MAX_AUDIT_QUERY_LIMIT. */
  limit: number;
  /** The `next` of a previous AUDIT_RESULT, or '' for the first page. */
  after: string;
}
export interface AuditResultFrame {
  type: 'AUDIT_RESULT';
  requestId: Uint8Array;
  /** Pass as `after` for the next page; '' when the range is exhausted. */
  next: string;
  /** A UTF-8 JSON array of audit records. */
  records: Uint8Array;
}

export type Frame =
  | HelloFrame
  | ChallengeFrame
  | AuthFrame
  | WelcomeFrame
  | SendFrame
  | DeliverFrame
  | AckFrame
  | NackFrame
  | ResumeFrame
  | MigrateFrame
  | PingFrame
  | PongFrame
  | PeerPresentFrame
  | PeerGoneFrame
  | PresenceQueryFrame
  | GoawayFrame
  | ErrorFrame
  | PrekeyPublishFrame
  | PrekeyFetchFrame
  | PrekeyBundleFrame
  | PrekeyStatusFrame
  | PrekeyStatusQueryFrame
  | AnonChallengeFrame
  | AnonAuthFrame
  | OnceCheckFrame
  | BridgeQueryFrame
  | BridgeInfoFrame
  | OnceResultFrame
  | GrantPresentFrame
  | GrantAcceptedFrame
  | GrantRevokeFrame
  | GrantRevokedFrame
  | PolicyPutFrame
  | PolicyGetFrame
  | PolicyFrame
  | AuditQueryFrame
  | AuditResultFrame;

export interface CodecOptions {
  /** Largest SEND/DELIVER payload accepted (default DEFAULT_MAX_PAYLOAD, never above MAX_PAYLOAD_LIMIT). */
  maxPayload?: number;
}

/** The largest body any frame may have under the given payload limit: 93 + maxPayload, but at least MIN_BODY_LIMIT. */
export function maxBodySize(maxPayload: number = DEFAULT_MAX_PAYLOAD): number {
  return Math.max(MIN_BODY_LIMIT, ROUTED_HEADER_SIZE + Math.min(Math.max(0, maxPayload), MAX_PAYLOAD_LIMIT));
}

// ---------------------------------------------------------------------------
// Decoding

// ignoreBOM keeps a leading U+FEFF as text, so decode then encode gives back the same bytes.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

function fail(code: 'TRUNCATED' | 'BAD_LENGTH' | 'BAD_FIELD' | 'TRAILING_BYTES', message: string): never {
  throw new ProtocolError(code, message);
}

function u16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}
/** `frame` and `field` name the value in an error; the label is built only then (this runs per frame forwarded). */
function u64(b: Uint8Array, o: number, frame: string, field: string): number {
  const hi = readU32(b, o);
  // Anything at or above 2^53 cannot be represented exactly; such positions are never issued.
  if (hi > 0x1fffff) fail('BAD_FIELD', `${frame}.${field} exceeds 2^53-1`);
  return hi * 0x100000000 + readU32(b, o + 4);
}

/**
 * A bounds-checked cursor over one frame body. Every read checks the body
 * end first, so a lying length can only produce TRUNCATED/BAD_LENGTH, never a
 * read past the frame.
 */
class BodyReader {
  private pos: number;
  constructor(
    private readonly buf: Uint8Array,
    start: number,
    private readonly end: number,
    private readonly frame: FrameTypeName,
  ) {
    this.pos = start;
  }
  private need(n: number, field: string): number {
    const at = this.pos;
    if (at + n > this.end) fail('BAD_LENGTH', `${this.frame}: body too short for ${field}`);
    this.pos = at + n;
    return at;
  }
  u8(field: string): number {
    return this.buf[this.need(1, field)]!;
  }
  u16(field: string): number {
    return u16(this.buf, this.need(2, field));
  }
  u32(field: string): number {
    return readU32(this.buf, this.need(4, field));
  }
  u64(field: string): number {
    return u64(this.buf, this.need(8, field), this.frame, field);
  }
  bytes(n: number, field: string): Uint8Array {
    const at = this.need(n, field);
    return this.buf.subarray(at, at + n);
  }
  rest(): Uint8Array {
    const at = this.pos;
    this.pos = this.end;
    return this.buf.subarray(at, this.end);
  }
  text(lenBytes: 1 | 2, max: number, field: string, min = 0): string {
    const n = lenBytes === 1 ? this.u8(`${field} length`) : this.u16(`${field} length`);
    if (n < min || n > max) fail('BAD_FIELD', `${this.frame}.${field}: length ${n} outside ${min}..${max}`);
    const bytes = this.bytes(n, field);
    try {
      return utf8.decode(bytes);
    } catch {
      return fail('BAD_FIELD', `${this.frame}.${field}: not valid UTF-8`);
    }
  }
  done(): void {
    if (this.pos !== this.end)
      fail('TRAILING_BYTES', `${this.frame}: ${this.end - this.pos} bytes after the last field`);
  }
}

function decodeRouted(r: BodyReader, type: 'SEND' | 'DELIVER', maxPayload: number): SendFrame | DeliverFrame {
  const dest = r.bytes(HINT_SIZE, 'dest');
  const source = r.bytes(HINT_SIZE, 'source');
  const sessionId = r.bytes(ID_SIZE, 'sessionId');
  const messageId = r.bytes(ID_SIZE, 'messageId');
  const flags = r.u8('flags');
  if ((flags & ~KNOWN_SEND_FLAGS) !== 0)
    fail('BAD_FIELD', `${type}.flags: undefined bits set (0x${flags.toString(16)})`);
  const ttl = r.u32('ttl');
  const position = r.u64('position');
  if (type === 'SEND' && position !== 0) fail('BAD_FIELD', 'SEND.position must be 0');
  const payload = r.rest();
  if (payload.length > maxPayload) {
    throw new ProtocolError('FRAME_TOO_LARGE', `${type}: payload of ${payload.length} bytes exceeds ${maxPayload}`);
  }
  return { type, dest, source, sessionId, messageId, flags, ttl, position, payload };
}

function decodeBody(typeName: FrameTypeName, buf: Uint8Array, start: number, end: number, maxPayload: number): Frame {
  const r = new BodyReader(buf, start, end, typeName);
  let frame: Frame;
  switch (typeName) {
    case 'HELLO': {
      const minVersion = r.u8('minVersion');
      const maxVersion = r.u8('maxVersion');
      if (minVersion < 1 || maxVersion < minVersion) {
        fail('BAD_FIELD', `HELLO: version range ${minVersion}..${maxVersion} is empty or starts below 1`);
      }
      const features = r.u32('features');
      // A version-1 HELLO ends here; version 2 adds the client nonce.
      frame =
        end - start === HELLO_V1_BODY_SIZE
          ? { type: typeName, minVersion, maxVersion, features }
          : { type: typeName, minVersion, maxVersion, features, clientNonce: r.bytes(NONCE_SIZE, 'clientNonce') };
      break;
    }
    case 'CHALLENGE': {
      const version = r.u8('version');
      const nonce = r.bytes(NONCE_SIZE, 'nonce');
      const relayIdentity = r.text(1, MAX_SHORT_TEXT_BYTES, 'relayIdentity', 1);
      const relayKey = r.bytes(PUBLIC_KEY_SIZE, 'relayKey');
      const signature = r.bytes(SIGNATURE_SIZE, 'signature');
      frame = { type: typeName, version, nonce, relayIdentity, relayKey, signature };
      break;
    }
    case 'AUTH': {
      const keyType = r.u8('keyType');
      if (keyType !== KeyType.ED25519) fail('BAD_FIELD', `AUTH.keyType ${keyType} is not Ed25519 (1)`);
      const publicKey = r.bytes(PUBLIC_KEY_SIZE, 'publicKey');
      const signature = r.bytes(SIGNATURE_SIZE, 'signature');
      const did = r.text(1, MAX_DID_BYTES, 'did', 1);
      frame = { type: typeName, keyType, publicKey, signature, did };
      break;
    }
    case 'WELCOME': {
      const hint = r.bytes(HINT_SIZE, 'hint');
      const connectionId = r.bytes(ID_SIZE, 'connectionId');
      const maxPayloadField = r.u32('maxPayload');
      const heartbeatMs = r.u32('heartbeatMs');
      const nodeId = r.text(1, MAX_SHORT_TEXT_BYTES, 'nodeId', 1);
      frame = { type: typeName, hint, connectionId, maxPayload: maxPayloadField, heartbeatMs, nodeId };
      break;
    }
    case 'SEND':
    case 'DELIVER':
      frame = decodeRouted(r, typeName, maxPayload);
      break;
    case 'ACK':
      frame = { type: typeName, messageId: r.bytes(ID_SIZE, 'messageId'), position: r.u64('position') };
      break;
    case 'NACK': {
      const messageId = r.bytes(ID_SIZE, 'messageId');
      const code = r.u16('code');
      frame = { type: typeName, messageId, code, message: r.text(2, MAX_TEXT_BYTES, 'message') };
      break;
    }
    case 'RESUME':
      frame = { type: typeName, lastAcked: r.u64('lastAcked') };
      break;
    case 'MIGRATE': {
      const previousConnectionId = r.bytes(ID_SIZE, 'previousConnectionId');
      const n = r.u8('proof length');
      if (n === 0) fail('BAD_FIELD', 'MIGRATE.proof must not be empty');
      frame = { type: typeName, previousConnectionId, proof: r.bytes(n, 'proof') };
      break;
    }
    case 'PING':
    case 'PONG':
      frame = { type: typeName, data: r.bytes(8, 'data') };
      break;
    case 'PEER_PRESENT':
    case 'PRESENCE_QUERY':
      frame = { type: typeName, hint: r.bytes(HINT_SIZE, 'hint') };
      break;
    case 'PEER_GONE':
      frame = { type: typeName, hint: r.bytes(HINT_SIZE, 'hint'), messageId: r.bytes(ID_SIZE, 'messageId') };
      break;
    case 'GOAWAY': {
      const reconnectAfterMs = r.u32('reconnectAfterMs');
      const reconnectHint = r.text(2, MAX_TEXT_BYTES, 'reconnectHint');
      frame = { type: typeName, reconnectAfterMs, reconnectHint, reason: r.text(2, MAX_TEXT_BYTES, 'reason') };
      break;
    }
    case 'ERROR': {
      const code = r.u16('code');
      const flags = r.u8('flags');
      if ((flags & ~KNOWN_ERROR_FLAGS) !== 0)
        fail('BAD_FIELD', `ERROR.flags: undefined bits set (0x${flags.toString(16)})`);
      frame = { type: typeName, code, flags, message: r.text(2, MAX_TEXT_BYTES, 'message') };
      break;
    }
    case 'PREKEY_PUBLISH': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const flags = r.u8('flags');
      if ((flags & ~KNOWN_PREKEY_PUBLISH_FLAGS) !== 0)
        fail('BAD_FIELD', `PREKEY_PUBLISH.flags: undefined bits set (0x${flags.toString(16)})`);
      frame = { type: typeName, requestId, flags, publication: decodePrekeyPublication(r.rest()) };
      break;
    }
    case 'PREKEY_FETCH':
      frame = { type: typeName, requestId: r.bytes(ID_SIZE, 'requestId'), hint: r.bytes(HINT_SIZE, 'hint') };
      break;
    case 'PREKEY_BUNDLE': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      frame = { type: typeName, requestId, bundle: decodePrekeyBundle(r.rest()) };
      break;
    }
    case 'PREKEY_STATUS': {
      const hint = r.bytes(HINT_SIZE, 'hint');
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const flags = r.u8('flags');
      if ((flags & ~KNOWN_PREKEY_STATUS_FLAGS) !== 0)
        fail('BAD_FIELD', `PREKEY_STATUS.flags: undefined bits set (0x${flags.toString(16)})`);
      const oneTimeX25519 = r.u16('oneTimeX25519');
      const oneTimeKem = r.u16('oneTimeKem');
      const cap = r.u16('cap');
      const lowWater = r.u16('lowWater');
      const lastOneTimeX25519Id = r.u32('lastOneTimeX25519Id');
      const lastOneTimeKemId = r.u32('lastOneTimeKemId');
      if (
        (!(flags & PrekeyStatusFlags.X25519_ID) && lastOneTimeX25519Id !== 0) ||
        (!(flags & PrekeyStatusFlags.KEM_ID) && lastOneTimeKemId !== 0)
      ) {
        fail('BAD_FIELD', 'PREKEY_STATUS: a last one-time id without its flag must be 0');
      }
      frame = {
        type: typeName,
        hint,
        requestId,
        flags,
        oneTimeX25519,
        oneTimeKem,
        cap,
        lowWater,
        lastOneTimeX25519Id,
        lastOneTimeKemId,
      };
      break;
    }
    case 'PREKEY_STATUS_QUERY':
      frame = { type: typeName, requestId: r.bytes(ID_SIZE, 'requestId') };
      break;
    case 'ANON_CHALLENGE': {
      const version = r.u8('version');
      const nonce = r.bytes(NONCE_SIZE, 'nonce');
      const powBits = r.u8('powBits');
      if (powBits > MAX_POW_BITS) fail('BAD_FIELD', `ANON_CHALLENGE.powBits ${powBits} above ${MAX_POW_BITS}`);
      const maxSends = r.u16('maxSends');
      const lifetimeMs = r.u32('lifetimeMs');
      const relayIdentity = r.text(1, MAX_SHORT_TEXT_BYTES, 'relayIdentity', 1);
      frame = { type: typeName, version, nonce, powBits, maxSends, lifetimeMs, relayIdentity };
      break;
    }
    case 'ANON_AUTH':
      frame = { type: typeName, stamp: r.bytes(POW_STAMP_SIZE, 'stamp') };
      break;
    case 'ONCE_CHECK': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const retentionSeconds = r.u32('retentionSeconds');
      if (retentionSeconds === 0) fail('BAD_FIELD', 'ONCE_CHECK.retentionSeconds must be at least 1');
      const n = r.u8('id length');
      if (n < 1 || n > MAX_ONCE_ID_BYTES)
        fail('BAD_FIELD', `ONCE_CHECK.id: length ${n} outside 1..${MAX_ONCE_ID_BYTES}`);
      frame = { type: typeName, requestId, retentionSeconds, id: r.bytes(n, 'id') };
      break;
    }
    case 'BRIDGE_QUERY': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const network = r.text(1, MAX_NETWORK_NAME_BYTES, 'network', 1);
      if (!NETWORK_NAME.test(network)) fail('BAD_FIELD', 'BRIDGE_QUERY.network: not a network name');
      frame = { type: typeName, requestId, network };
      break;
    }
    case 'BRIDGE_INFO':
      frame = { type: typeName, requestId: r.bytes(ID_SIZE, 'requestId'), did: r.text(1, MAX_DID_BYTES, 'did', 1) };
      break;
    case 'ONCE_RESULT': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const fresh = r.u8('fresh');
      if (fresh > 1) fail('BAD_FIELD', `ONCE_RESULT.fresh ${fresh} is neither 0 nor 1`);
      frame = { type: typeName, requestId, fresh: fresh === 1, epoch: r.bytes(ONCE_EPOCH_SIZE, 'epoch') };
      break;
    }
    case 'GRANT_PRESENT': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const token = r.rest();
      if (token.length === 0) fail('BAD_FIELD', 'GRANT_PRESENT.token is empty');
      frame = { type: typeName, requestId, token };
      break;
    }
    case 'GRANT_REVOKE': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const token = r.rest();
      if (token.length === 0) fail('BAD_FIELD', 'GRANT_REVOKE.token is empty');
      frame = { type: typeName, requestId, token };
      break;
    }
    case 'GRANT_REVOKED': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const count = r.u8('count');
      const cids: Uint8Array[] = [];
      for (let i = 0; i < count; i++) cids.push(r.bytes(GRANT_ID_SIZE, 'cid'));
      frame = { type: typeName, requestId, cids };
      break;
    }
    case 'GRANT_ACCEPTED': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const tokenId = r.bytes(GRANT_ID_SIZE, 'tokenId');
      frame = { type: typeName, requestId, tokenId, expiresAt: r.u64('expiresAt') };
      break;
    }
    case 'POLICY_PUT':
    case 'POLICY':
      frame = { type: typeName, requestId: r.bytes(ID_SIZE, 'requestId'), policy: r.rest() };
      break;
    case 'POLICY_GET':
      frame = { type: typeName, requestId: r.bytes(ID_SIZE, 'requestId') };
      break;
    case 'AUDIT_QUERY': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const sinceMs = r.u64('sinceMs');
      const untilMs = r.u64('untilMs');
      const limit = r.u16('limit');
      if (limit < 1 || limit > MAX_AUDIT_QUERY_LIMIT) {
        fail('BAD_FIELD', `AUDIT_QUERY.limit ${limit} outside 1..${MAX_AUDIT_QUERY_LIMIT}`);
      }
      const after = r.text(1, MAX_AUDIT_CURSOR_BYTES, 'after');
      frame = { type: typeName, requestId, sinceMs, untilMs, limit, after };
      break;
    }
    case 'AUDIT_RESULT': {
      const requestId = r.bytes(ID_SIZE, 'requestId');
      const next = r.text(1, MAX_AUDIT_CURSOR_BYTES, 'next');
      frame = { type: typeName, requestId, next, records: r.rest() };
      break;
    }
    default: {
      const unreachable: never = typeName;
      throw new ProtocolError('UNKNOWN_FRAME_TYPE', `unhandled frame type ${String(unreachable)}`);
    }
  }
  r.done();
  return frame;
}

function effectiveMaxPayload(options?: CodecOptions): number {
  const m = options?.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  return Math.min(Math.max(0, m), MAX_PAYLOAD_LIMIT);
}

/**
 * Checks the 6-byte envelope at `offset` and returns the body length. Throws
 * TRUNCATED if fewer than 6 bytes remain, and UNSUPPORTED_VERSION,
 * UNKNOWN_FRAME_TYPE or FRAME_TOO_LARGE from the header alone, so a stream
 * reader can refuse a frame before buffering its body.
 */
export function readFrameHeader(buf: Uint8Array, offset: number, maxBody: number): number {
  if (buf.length - offset < FRAME_HEADER_SIZE) {
    fail('TRUNCATED', `frame header needs ${FRAME_HEADER_SIZE} bytes, ${buf.length - offset} left`);
  }
  const version = buf[offset]!;
  if (version < FROZEN_FRAME_VERSION || version > MAX_PROTOCOL_VERSION) {
    throw new ProtocolError(
      'UNSUPPORTED_VERSION',
      `frame version ${version} is not supported (${FROZEN_FRAME_VERSION}..${MAX_PROTOCOL_VERSION})`,
    );
  }
  const type = buf[offset + 1]!;
  if (typeNames[type] === undefined) {
    throw new ProtocolError('UNKNOWN_FRAME_TYPE', `frame type 0x${type.toString(16).padStart(2, '0')} is unknown`);
  }
  // The frozen frames always carry version 1; every other frame the negotiated version (never 1 now).
  const frozen = type === FrameType.HELLO || type === FrameType.CHALLENGE || type === FrameType.ERROR;
  if (frozen ? version !== FROZEN_FRAME_VERSION : version < MIN_PROTOCOL_VERSION) {
    throw new ProtocolError(
      'UNSUPPORTED_VERSION',
      `${typeNames[type]} frame of version ${version}: ${frozen ? `always version ${FROZEN_FRAME_VERSION}` : `versions ${MIN_PROTOCOL_VERSION}..${MAX_PROTOCOL_VERSION}`}`,
    );
  }
  const bodyLength = readU32(buf, offset + 2);
  if (bodyLength > maxBody) {
    throw new ProtocolError('FRAME_TOO_LARGE', `frame body of ${bodyLength} bytes exceeds ${maxBody}`);
  }
  return bodyLength;
}

/**
 * Checks one whole SEND or DELIVER frame (header included, as a transport
 * hands it over) without decoding it into an object: the relay's hot path.
 * Throws exactly when decodeFrame would (the fuzz test holds them to that),
 * so forwarding the bytes as they are is as strict as decoding them.
 */
export function checkRoutedFrame(frame: Uint8Array, options?: CodecOptions): void {
  const maxPayload = effectiveMaxPayload(options);
  const bodyLength = readFrameHeader(frame, 0, maxBodySize(maxPayload));
  const type = frame[1];
  if (type !== FrameType.SEND && type !== FrameType.DELIVER) {
    fail('BAD_FIELD', `checkRoutedFrame: type 0x${type!.toString(16)} is not SEND or DELIVER`);
  }
  const name = type === FrameType.SEND ? 'SEND' : 'DELIVER';
  const end = FRAME_HEADER_SIZE + bodyLength;
  if (frame.length < end)
    fail('TRUNCATED', `frame body needs ${bodyLength} bytes, ${frame.length - FRAME_HEADER_SIZE} left`);
  if (bodyLength < ROUTED_HEADER_SIZE) fail('BAD_LENGTH', `${name}: body too short for the routed header`);
  const flags = frame[FRAME_HEADER_SIZE + Routed.FLAGS]!;
  if ((flags & ~KNOWN_SEND_FLAGS) !== 0)
    fail('BAD_FIELD', `${name}.flags: undefined bits set (0x${flags.toString(16)})`);
  const position = u64(frame, FRAME_HEADER_SIZE + Routed.POSITION, name, 'position');
  if (name === 'SEND' && position !== 0) fail('BAD_FIELD', 'SEND.position must be 0');
  if (bodyLength - ROUTED_HEADER_SIZE > maxPayload) {
    throw new ProtocolError(
      'FRAME_TOO_LARGE',
      `${name}: payload of ${bodyLength - ROUTED_HEADER_SIZE} bytes exceeds ${maxPayload}`,
    );
  }
  if (frame.length !== end) fail('TRAILING_BYTES', `${frame.length - end} bytes after the frame`);
}

/** Where an ACK frame carries its messageId (header included): ackPositionOf's callers copy it from here. */
export const ACK_MESSAGE_ID_OFFSET = FRAME_HEADER_SIZE;
const ACK_BODY_SIZE = ID_SIZE + 8;

/**
 * The position of one whole ACK frame (header included), read in place: no
 * frame object and no view of its messageId (ACK_MESSAGE_ID_OFFSET), for the
 * relay's ACK of every durable frame it delivers. Throws exactly when
 * decodeFrame would (the fuzz test holds them to that); a frame that is not
 * an exact ACK goes through decodeFrame itself, for its error.
 */
export function ackPositionOf(frame: Uint8Array, options?: CodecOptions): number {
  if (frame.length === FRAME_HEADER_SIZE + ACK_BODY_SIZE && frame[1] === FrameType.ACK) {
    const bodyLength = readFrameHeader(frame, 0, maxBodySize(effectiveMaxPayload(options)));
    if (bodyLength === ACK_BODY_SIZE) return u64(frame, FRAME_HEADER_SIZE + ID_SIZE, 'ACK', 'position');
  }
  const decoded = decodeFrame(frame, options);
  if (decoded.type !== 'ACK') fail('BAD_FIELD', `ackPositionOf: a ${decoded.type} frame is no ACK`);
  return decoded.position;
}

/** Decodes the frame starting at `offset`; returns it and the offset just past it. */
export function decodeFrameAt(buf: Uint8Array, offset: number, options?: CodecOptions): { frame: Frame; next: number } {
  const maxPayload = effectiveMaxPayload(options);
  const bodyLength = readFrameHeader(buf, offset, maxBodySize(maxPayload));
  const start = offset + FRAME_HEADER_SIZE;
  const end = start + bodyLength;
  if (end > buf.length) fail('TRUNCATED', `frame body needs ${bodyLength} bytes, ${buf.length - start} left`);
  const frame = decodeBody(typeNames[buf[offset + 1]!]!, buf, start, end, maxPayload);
  return { frame, next: end };
}

/** Decodes exactly one frame; bytes after it are an error (TRAILING_BYTES). */
export function decodeFrame(buf: Uint8Array, options?: CodecOptions): Frame {
  const { frame, next } = decodeFrameAt(buf, 0, options);
  if (next !== buf.length) fail('TRAILING_BYTES', `${buf.length - next} bytes after the frame`);
  return frame;
}

/** Decodes a transport message holding one or more whole frames (a WebSocket message). */
export function decodeFrames(buf: Uint8Array, options?: CodecOptions): Frame[] {
  if (buf.length === 0) fail('TRUNCATED', 'empty message holds no frame');
  const frames: Frame[] = [];
  let offset = 0;
  while (offset < buf.length) {
    const { frame, next } = decodeFrameAt(buf, offset, options);
    frames.push(frame);
    offset = next;
  }
  return frames;
}

/**
 * Reassembles frames from a byte stream (raw TCP). Chunks are kept by
 * reference until a whole frame is present; the only copy made is when a
 * frame straddles chunks. A frame header that announces a body above the
 * limit is refused as soon as its 6 bytes arrive, so a hostile length never
 * makes the decoder buffer or allocate that much. After an error the stream
 * is unusable (the connection must be closed): there is no resynchronizing a
 * length-prefixed stream.
 */
export class FrameStreamDecoder {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private failed: ProtocolError | undefined;
  private readonly maxPayload: number;
  private readonly maxBody: number;

  constructor(options?: CodecOptions) {
    this.maxPayload = effectiveMaxPayload(options);
    this.maxBody = maxBodySize(this.maxPayload);
  }

  /** Bytes held waiting for the rest of a frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /**
   * Adds a chunk and returns the raw bytes of each frame completed by it
   * (each a whole frame, header included, validated by decodeFrame-able
   * header checks). Use decodeFrame on each, or route the bytes directly.
   */
  push(chunk: Uint8Array): Uint8Array[] {
    if (this.failed) throw this.failed;
    if (chunk.length === 0) return [];
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Uint8Array[] = [];
    try {
      for (;;) {
        if (this.buffered < FRAME_HEADER_SIZE) break;
        const head = this.peek(FRAME_HEADER_SIZE);
        const total = FRAME_HEADER_SIZE + readFrameHeader(head, 0, this.maxBody);
        if (this.buffered < total) break;
        out.push(this.take(total));
      }
    } catch (err) {
      this.failed = err instanceof ProtocolError ? err : new ProtocolError('INTERNAL', String(err));
      this.chunks = [];
      this.buffered = 0;
      throw this.failed;
    }
    return out;
  }

  /** Decodes every frame completed by the chunk. */
  pushFrames(chunk: Uint8Array): Frame[] {
    const opts = { maxPayload: this.maxPayload };
    return this.push(chunk).map((bytes) => decodeFrame(bytes, opts));
  }

  private peek(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length >= n) return first;
    const out = new Uint8Array(n);
    let filled = 0;
    for (const c of this.chunks) {
      const k = Math.min(c.length, n - filled);
      out.set(c.subarray(0, k), filled);
      filled += k;
      if (filled === n) break;
    }
    return out;
  }

  private take(n: number): Uint8Array {
    const first = this.chunks[0]!;
    this.buffered -= n;
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - filled);
      out.set(c.subarray(0, k), filled);
      filled += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}

// ---------------------------------------------------------------------------
// Encoding

function checkLen(bytes: Uint8Array, size: number, field: string): void {
  if (bytes.length !== size) fail('BAD_FIELD', `${field} must be ${size} bytes, got ${bytes.length}`);
}
function checkUint(value: number, max: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) fail('BAD_FIELD', `${field} must be an integer 0..${max}`);
}

/** A frame's buffer with its header written; the body follows through the ByteWriter methods. */
class BodyWriter extends ByteWriter {
  constructor(type: FrameTypeValue, bodyLength: number, version: number) {
    super(FRAME_HEADER_SIZE + bodyLength, FRAME_HEADER_SIZE);
    this.buf[0] = version;
    this.buf[1] = type;
    writeU32(this.buf, 2, bodyLength);
  }
}

function textBytes(s: string, max: number, field: string, min = 0): Uint8Array {
  const b = utf8Encoder.encode(s);
  if (b.length < min || b.length > max) fail('BAD_FIELD', `${field}: ${b.length} UTF-8 bytes, allowed ${min}..${max}`);
  return b;
}

/**
 * An ACK for the messageId at `idOffset` of `bytes` (a SEND or DELIVER frame
 * names it at RoutedAt.MESSAGE_ID): encodeFrame's ACK without the frame
 * object and writer, for the relay's ACK of every durable SEND.
 */
export function encodeAckOf(
  bytes: Uint8Array,
  idOffset: number,
  position: number,
  version: number = PROTOCOL_VERSION,
): Uint8Array {
  if (!(idOffset >= 0 && idOffset + ID_SIZE <= bytes.length))
    fail('BAD_LENGTH', `ACK.messageId: no ${ID_SIZE} bytes at offset ${idOffset}`);
  checkUint(position, MAX_POSITION, 'ACK.position');
  const buf = new Uint8Array(FRAME_HEADER_SIZE + ID_SIZE + 8);
  buf[0] = version;
  buf[1] = FrameType.ACK;
  writeU32(buf, 2, ID_SIZE + 8);
  for (let i = 0; i < ID_SIZE; i++) buf[FRAME_HEADER_SIZE + i] = bytes[idOffset + i]!;
  writeU32(buf, FRAME_HEADER_SIZE + ID_SIZE, Math.floor(position / 0x100000000));
  writeU32(buf, FRAME_HEADER_SIZE + ID_SIZE + 4, position >>> 0);
  return buf;
}

/**
 * Encodes one frame into a fresh buffer of exactly its size. Fields are
 * validated with the same rules the decoder applies, so whatever this
 * produces decodes (given a payload limit at least as large).
 */
export function encodeFrame(frame: Frame, version: number = PROTOCOL_VERSION): Uint8Array {
  const t = FrameType[frame.type];
  switch (frame.type) {
    case 'HELLO': {
      checkUint(frame.minVersion, 255, 'HELLO.minVersion');
      checkUint(frame.maxVersion, 255, 'HELLO.maxVersion');
      checkUint(frame.features, 0xffffffff, 'HELLO.features');
      if (frame.clientNonce !== undefined) checkLen(frame.clientNonce, NONCE_SIZE, 'HELLO.clientNonce');
      // HELLO is frozen at version 1 framing so any relay can read it.
      const w = new BodyWriter(
        t,
        frame.clientNonce === undefined ? HELLO_V1_BODY_SIZE : HELLO_BODY_SIZE,
        FROZEN_FRAME_VERSION,
      );
      w.u8(frame.minVersion);
      w.u8(frame.maxVersion);
      w.u32(frame.features);
      if (frame.clientNonce !== undefined) w.bytes(frame.clientNonce);
      return w.buf;
    }
    case 'CHALLENGE': {
      checkUint(frame.version, 255, 'CHALLENGE.version');
      checkLen(frame.nonce, NONCE_SIZE, 'CHALLENGE.nonce');
      checkLen(frame.relayKey, PUBLIC_KEY_SIZE, 'CHALLENGE.relayKey');
      checkLen(frame.signature, SIGNATURE_SIZE, 'CHALLENGE.signature');
      const id = textBytes(frame.relayIdentity, MAX_SHORT_TEXT_BYTES, 'CHALLENGE.relayIdentity', 1);
      const w = new BodyWriter(
        t,
        1 + NONCE_SIZE + 1 + id.length + PUBLIC_KEY_SIZE + SIGNATURE_SIZE,
        FROZEN_FRAME_VERSION,
      );
      w.u8(frame.version);
      w.bytes(frame.nonce);
      w.u8(id.length);
      w.bytes(id);
      w.bytes(frame.relayKey);
      w.bytes(frame.signature);
      return w.buf;
    }
    case 'AUTH': {
      checkLen(frame.publicKey, PUBLIC_KEY_SIZE, 'AUTH.publicKey');
      checkLen(frame.signature, SIGNATURE_SIZE, 'AUTH.signature');
      if (frame.keyType !== KeyType.ED25519) fail('BAD_FIELD', 'AUTH.keyType must be 1 (Ed25519)');
      const did = textBytes(frame.did, MAX_DID_BYTES, 'AUTH.did', 1);
      const w = new BodyWriter(t, 1 + PUBLIC_KEY_SIZE + SIGNATURE_SIZE + 1 + did.length, version);
      w.u8(frame.keyType);
      w.bytes(frame.publicKey);
      w.bytes(frame.signature);
      w.u8(did.length);
      w.bytes(did);
      return w.buf;
    }
    case 'WELCOME': {
      checkLen(frame.hint, HINT_SIZE, 'WELCOME.hint');
      checkLen(frame.connectionId, ID_SIZE, 'WELCOME.connectionId');
      checkUint(frame.maxPayload, 0xffffffff, 'WELCOME.maxPayload');
      checkUint(frame.heartbeatMs, 0xffffffff, 'WELCOME.heartbeatMs');
      const node = textBytes(frame.nodeId, MAX_SHORT_TEXT_BYTES, 'WELCOME.nodeId', 1);
      const w = new BodyWriter(t, HINT_SIZE + ID_SIZE + 8 + 1 + node.length, version);
      w.bytes(frame.hint);
      w.bytes(frame.connectionId);
      w.u32(frame.maxPayload);
      w.u32(frame.heartbeatMs);
      w.u8(node.length);
      w.bytes(node);
      return w.buf;
    }
    case 'SEND':
    case 'DELIVER': {
      checkLen(frame.dest, HINT_SIZE, `${frame.type}.dest`);
      checkLen(frame.source, HINT_SIZE, `${frame.type}.source`);
      checkLen(frame.sessionId, ID_SIZE, `${frame.type}.sessionId`);
      checkLen(frame.messageId, ID_SIZE, `${frame.type}.messageId`);
      checkUint(frame.flags, KNOWN_SEND_FLAGS, `${frame.type}.flags`);
      checkUint(frame.ttl, 0xffffffff, `${frame.type}.ttl`);
      checkUint(frame.position, frame.type === 'SEND' ? 0 : MAX_POSITION, `${frame.type}.position`);
      if (frame.payload.length > MAX_PAYLOAD_LIMIT)
        fail('BAD_FIELD', `${frame.type}.payload exceeds ${MAX_PAYLOAD_LIMIT}`);
      const w = new BodyWriter(t, ROUTED_HEADER_SIZE + frame.payload.length, version);
      w.bytes(frame.dest);
      w.bytes(frame.source);
      w.bytes(frame.sessionId);
      w.bytes(frame.messageId);
      w.u8(frame.flags);
      w.u32(frame.ttl);
      w.u64(frame.position);
      w.bytes(frame.payload);
      return w.buf;
    }
    case 'ACK':
      checkLen(frame.messageId, ID_SIZE, 'ACK.messageId');
      return encodeAckOf(frame.messageId, 0, frame.position, version);
    case 'NACK': {
      checkLen(frame.messageId, ID_SIZE, 'NACK.messageId');
      checkUint(frame.code, 0xffff, 'NACK.code');
      const msg = textBytes(frame.message, MAX_TEXT_BYTES, 'NACK.message');
      const w = new BodyWriter(t, ID_SIZE + 2 + 2 + msg.length, version);
      w.bytes(frame.messageId);
      w.u16(frame.code);
      w.u16(msg.length);
      w.bytes(msg);
      return w.buf;
    }
    case 'RESUME': {
      checkUint(frame.lastAcked, MAX_POSITION, 'RESUME.lastAcked');
      const w = new BodyWriter(t, 8, version);
      w.u64(frame.lastAcked);
      return w.buf;
    }
    case 'MIGRATE': {
      checkLen(frame.previousConnectionId, ID_SIZE, 'MIGRATE.previousConnectionId');
      if (frame.proof.length < 1 || frame.proof.length > MAX_SHORT_TEXT_BYTES) {
        fail('BAD_FIELD', `MIGRATE.proof must be 1..${MAX_SHORT_TEXT_BYTES} bytes`);
      }
      const w = new BodyWriter(t, ID_SIZE + 1 + frame.proof.length, version);
      w.bytes(frame.previousConnectionId);
      w.u8(frame.proof.length);
      w.bytes(frame.proof);
      return w.buf;
    }
    case 'PING':
    case 'PONG': {
      checkLen(frame.data, 8, `${frame.type}.data`);
      const w = new BodyWriter(t, 8, version);
      w.bytes(frame.data);
      return w.buf;
    }
    case 'PEER_PRESENT':
    case 'PRESENCE_QUERY': {
      checkLen(frame.hint, HINT_SIZE, `${frame.type}.hint`);
      const w = new BodyWriter(t, HINT_SIZE, version);
      w.bytes(frame.hint);
      return w.buf;
    }
    case 'PEER_GONE': {
      checkLen(frame.hint, HINT_SIZE, 'PEER_GONE.hint');
      checkLen(frame.messageId, ID_SIZE, 'PEER_GONE.messageId');
      const w = new BodyWriter(t, HINT_SIZE + ID_SIZE, version);
      w.bytes(frame.hint);
      w.bytes(frame.messageId);
      return w.buf;
    }
    case 'GOAWAY': {
      checkUint(frame.reconnectAfterMs, 0xffffffff, 'GOAWAY.reconnectAfterMs');
      const hint = textBytes(frame.reconnectHint, MAX_TEXT_BYTES, 'GOAWAY.reconnectHint');
      const reason = textBytes(frame.reason, MAX_TEXT_BYTES, 'GOAWAY.reason');
      const w = new BodyWriter(t, 4 + 2 + hint.length + 2 + reason.length, version);
      w.u32(frame.reconnectAfterMs);
      w.u16(hint.length);
      w.bytes(hint);
      w.u16(reason.length);
      w.bytes(reason);
      return w.buf;
    }
    case 'ERROR': {
      checkUint(frame.code, 0xffff, 'ERROR.code');
      checkUint(frame.flags, KNOWN_ERROR_FLAGS, 'ERROR.flags');
      const msg = textBytes(frame.message, MAX_TEXT_BYTES, 'ERROR.message');
      // ERROR may answer a HELLO whose version we refused, so it uses the frozen framing too.
      const w = new BodyWriter(t, 2 + 1 + 2 + msg.length, FROZEN_FRAME_VERSION);
      w.u16(frame.code);
      w.u8(frame.flags);
      w.u16(msg.length);
      w.bytes(msg);
      return w.buf;
    }
    case 'PREKEY_PUBLISH': {
      checkLen(frame.requestId, ID_SIZE, 'PREKEY_PUBLISH.requestId');
      checkUint(frame.flags, KNOWN_PREKEY_PUBLISH_FLAGS, 'PREKEY_PUBLISH.flags');
      const publication = encodePrekeyPublication(frame.publication);
      const w = new BodyWriter(t, ID_SIZE + 1 + publication.length, version);
      w.bytes(frame.requestId);
      w.u8(frame.flags);
      w.bytes(publication);
      return w.buf;
    }
    case 'PREKEY_FETCH': {
      checkLen(frame.requestId, ID_SIZE, 'PREKEY_FETCH.requestId');
      checkLen(frame.hint, HINT_SIZE, 'PREKEY_FETCH.hint');
      const w = new BodyWriter(t, ID_SIZE + HINT_SIZE, version);
      w.bytes(frame.requestId);
      w.bytes(frame.hint);
      return w.buf;
    }
    case 'PREKEY_BUNDLE': {
      checkLen(frame.requestId, ID_SIZE, 'PREKEY_BUNDLE.requestId');
      const bundle = encodePrekeyBundle(frame.bundle);
      const w = new BodyWriter(t, ID_SIZE + bundle.length, version);
      w.bytes(frame.requestId);
      w.bytes(bundle);
      return w.buf;
    }
    case 'PREKEY_STATUS': {
      checkLen(frame.hint, HINT_SIZE, 'PREKEY_STATUS.hint');
      checkLen(frame.requestId, ID_SIZE, 'PREKEY_STATUS.requestId');
      checkUint(frame.flags, KNOWN_PREKEY_STATUS_FLAGS, 'PREKEY_STATUS.flags');
      for (const field of ['oneTimeX25519', 'oneTimeKem', 'cap', 'lowWater'] as const) {
        checkUint(frame[field], 0xffff, `PREKEY_STATUS.${field}`);
      }
      checkUint(
        frame.lastOneTimeX25519Id,
        frame.flags & PrekeyStatusFlags.X25519_ID ? 0xffffffff : 0,
        'PREKEY_STATUS.lastOneTimeX25519Id',
      );
      checkUint(
        frame.lastOneTimeKemId,
        frame.flags & PrekeyStatusFlags.KEM_ID ? 0xffffffff : 0,
        'PREKEY_STATUS.lastOneTimeKemId',
      );
      const w = new BodyWriter(t, PREKEY_STATUS_BODY_SIZE, version);
      w.bytes(frame.hint);
      w.bytes(frame.requestId);
      w.u8(frame.flags);
      w.u16(frame.oneTimeX25519);
      w.u16(frame.oneTimeKem);
      w.u16(frame.cap);
      w.u16(frame.lowWater);
      w.u32(frame.lastOneTimeX25519Id);
      w.u32(frame.lastOneTimeKemId);
      return w.buf;
    }
    case 'PREKEY_STATUS_QUERY': {
      checkLen(frame.requestId, ID_SIZE, 'PREKEY_STATUS_QUERY.requestId');
      const w = new BodyWriter(t, ID_SIZE, version);
      w.bytes(frame.requestId);
      return w.buf;
    }
    case 'ANON_CHALLENGE': {
      checkUint(frame.version, 255, 'ANON_CHALLENGE.version');
      checkLen(frame.nonce, NONCE_SIZE, 'ANON_CHALLENGE.nonce');
      checkUint(frame.powBits, MAX_POW_BITS, 'ANON_CHALLENGE.powBits');
      checkUint(frame.maxSends, 0xffff, 'ANON_CHALLENGE.maxSends');
      checkUint(frame.lifetimeMs, 0xffffffff, 'ANON_CHALLENGE.lifetimeMs');
      const id = textBytes(frame.relayIdentity, MAX_SHORT_TEXT_BYTES, 'ANON_CHALLENGE.relayIdentity', 1);
      const w = new BodyWriter(t, 1 + NONCE_SIZE + 1 + 2 + 4 + 1 + id.length, version);
      w.u8(frame.version);
      w.bytes(frame.nonce);
      w.u8(frame.powBits);
      w.u16(frame.maxSends);
      w.u32(frame.lifetimeMs);
      w.u8(id.length);
      w.bytes(id);
      return w.buf;
    }
    case 'ANON_AUTH': {
      checkLen(frame.stamp, POW_STAMP_SIZE, 'ANON_AUTH.stamp');
      const w = new BodyWriter(t, POW_STAMP_SIZE, version);
      w.bytes(frame.stamp);
      return w.buf;
    }
    case 'ONCE_CHECK': {
      checkLen(frame.requestId, ID_SIZE, 'ONCE_CHECK.requestId');
      checkUint(frame.retentionSeconds, 0xffffffff, 'ONCE_CHECK.retentionSeconds');
      if (frame.retentionSeconds === 0) fail('BAD_FIELD', 'ONCE_CHECK.retentionSeconds must be at least 1');
      if (!(frame.id instanceof Uint8Array) || frame.id.length < 1 || frame.id.length > MAX_ONCE_ID_BYTES) {
        fail('BAD_FIELD', `ONCE_CHECK.id must be 1..${MAX_ONCE_ID_BYTES} bytes`);
      }
      const w = new BodyWriter(t, ID_SIZE + 4 + 1 + frame.id.length, version);
      w.bytes(frame.requestId);
      w.u32(frame.retentionSeconds);
      w.u8(frame.id.length);
      w.bytes(frame.id);
      return w.buf;
    }
    case 'BRIDGE_QUERY': {
      checkLen(frame.requestId, ID_SIZE, 'BRIDGE_QUERY.requestId');
      if (!NETWORK_NAME.test(frame.network)) fail('BAD_FIELD', 'BRIDGE_QUERY.network: not a network name');
      const network = textBytes(frame.network, MAX_NETWORK_NAME_BYTES, 'BRIDGE_QUERY.network', 1);
      const w = new BodyWriter(t, ID_SIZE + 1 + network.length, version);
      w.bytes(frame.requestId);
      w.u8(network.length);
      w.bytes(network);
      return w.buf;
    }
    case 'BRIDGE_INFO': {
      checkLen(frame.requestId, ID_SIZE, 'BRIDGE_INFO.requestId');
      const did = textBytes(frame.did, MAX_DID_BYTES, 'BRIDGE_INFO.did', 1);
      const w = new BodyWriter(t, ID_SIZE + 1 + did.length, version);
      w.bytes(frame.requestId);
      w.u8(did.length);
      w.bytes(did);
      return w.buf;
    }
    case 'ONCE_RESULT': {
      checkLen(frame.requestId, ID_SIZE, 'ONCE_RESULT.requestId');
      checkLen(frame.epoch, ONCE_EPOCH_SIZE, 'ONCE_RESULT.epoch');
      const w = new BodyWriter(t, ID_SIZE + 1 + ONCE_EPOCH_SIZE, version);
      w.bytes(frame.requestId);
      w.u8(frame.fresh ? 1 : 0);
      w.bytes(frame.epoch);
      return w.buf;
    }
    case 'GRANT_PRESENT': {
      checkLen(frame.requestId, ID_SIZE, 'GRANT_PRESENT.requestId');
      if (!(frame.token instanceof Uint8Array) || frame.token.length === 0) {
        fail('BAD_FIELD', 'GRANT_PRESENT.token must be at least 1 byte');
      }
      const w = new BodyWriter(t, ID_SIZE + frame.token.length, version);
      w.bytes(frame.requestId);
      w.bytes(frame.token);
      return w.buf;
    }
    case 'GRANT_REVOKE': {
      checkLen(frame.requestId, ID_SIZE, 'GRANT_REVOKE.requestId');
      if (!(frame.token instanceof Uint8Array) || frame.token.length === 0) {
        fail('BAD_FIELD', 'GRANT_REVOKE.token must be at least 1 byte');
      }
      const w = new BodyWriter(t, ID_SIZE + frame.token.length, version);
      w.bytes(frame.requestId);
      w.bytes(frame.token);
      return w.buf;
    }
    case 'GRANT_REVOKED': {
      checkLen(frame.requestId, ID_SIZE, 'GRANT_REVOKED.requestId');
      if (!Array.isArray(frame.cids) || frame.cids.length > 255) fail('BAD_FIELD', 'GRANT_REVOKED.cids: at most 255');
      for (const cid of frame.cids) checkLen(cid, GRANT_ID_SIZE, 'GRANT_REVOKED.cid');
      const w = new BodyWriter(t, ID_SIZE + 1 + GRANT_ID_SIZE * frame.cids.length, version);
      w.bytes(frame.requestId);
      w.u8(frame.cids.length);
      for (const cid of frame.cids) w.bytes(cid);
      return w.buf;
    }
    case 'GRANT_ACCEPTED': {
      checkLen(frame.requestId, ID_SIZE, 'GRANT_ACCEPTED.requestId');
      checkLen(frame.tokenId, GRANT_ID_SIZE, 'GRANT_ACCEPTED.tokenId');
      checkUint(frame.expiresAt, MAX_POSITION, 'GRANT_ACCEPTED.expiresAt');
      const w = new BodyWriter(t, ID_SIZE + GRANT_ID_SIZE + 8, version);
      w.bytes(frame.requestId);
      w.bytes(frame.tokenId);
      w.u64(frame.expiresAt);
      return w.buf;
    }
    case 'POLICY_PUT':
    case 'POLICY': {
      checkLen(frame.requestId, ID_SIZE, `${frame.type}.requestId`);
      if (!(frame.policy instanceof Uint8Array)) fail('BAD_FIELD', `${frame.type}.policy must be bytes`);
      const w = new BodyWriter(t, ID_SIZE + frame.policy.length, version);
      w.bytes(frame.requestId);
      w.bytes(frame.policy);
      return w.buf;
    }
    case 'POLICY_GET': {
      checkLen(frame.requestId, ID_SIZE, 'POLICY_GET.requestId');
      const w = new BodyWriter(t, ID_SIZE, version);
      w.bytes(frame.requestId);
      return w.buf;
    }
    case 'AUDIT_QUERY': {
      checkLen(frame.requestId, ID_SIZE, 'AUDIT_QUERY.requestId');
      checkUint(frame.sinceMs, MAX_POSITION, 'AUDIT_QUERY.sinceMs');
      checkUint(frame.untilMs, MAX_POSITION, 'AUDIT_QUERY.untilMs');
      checkUint(frame.limit, MAX_AUDIT_QUERY_LIMIT, 'AUDIT_QUERY.limit');
      if (frame.limit < 1) fail('BAD_FIELD', 'AUDIT_QUERY.limit must be at least 1');
      const after = textBytes(frame.after, MAX_AUDIT_CURSOR_BYTES, 'AUDIT_QUERY.after');
      const w = new BodyWriter(t, ID_SIZE + 8 + 8 + 2 + 1 + after.length, version);
      w.bytes(frame.requestId);
      w.u64(frame.sinceMs);
      w.u64(frame.untilMs);
      w.u16(frame.limit);
      w.u8(after.length);
      w.bytes(after);
      return w.buf;
    }
    case 'AUDIT_RESULT': {
      checkLen(frame.requestId, ID_SIZE, 'AUDIT_RESULT.requestId');
      const next = textBytes(frame.next, MAX_AUDIT_CURSOR_BYTES, 'AUDIT_RESULT.next');
      if (!(frame.records instanceof Uint8Array)) fail('BAD_FIELD', 'AUDIT_RESULT.records must be bytes');
      const w = new BodyWriter(t, ID_SIZE + 1 + next.length + frame.records.length, version);
      w.bytes(frame.requestId);
      w.u8(next.length);
      w.bytes(next);
      w.bytes(frame.records);
      return w.buf;
    }
    default: {
      const unreachable: never = frame;
      return fail('BAD_FIELD', `cannot encode ${String((unreachable as { type: unknown }).type)}`);
    }
  }
}

/** Encodes frames back to back into one transport message (one WebSocket message, or a TCP write). */
export function encodeFrames(frames: readonly Frame[], version: number = PROTOCOL_VERSION): Uint8Array {
  const parts = frames.map((f) => encodeFrame(f, version));
  return concatBytes(parts);
}

/** Joins already-encoded frames (or any byte strings) into one buffer. */
export { concatBytes };
