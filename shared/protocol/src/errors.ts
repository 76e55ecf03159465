/**
 * Every error the cluster raises or sends carries one of these stable string
 * codes. The table is the single source of truth: `docs/errors.md` mirrors it
 * (a test checks they agree) and the wire number is what ERROR and NACK frames
 * carry, so codes must never be renumbered, only added.
 *
 * Wire numbers are grouped by the high byte:
 *   0x01xx codec, 0x02xx authentication, 0x03xx routing and queues,
 *   0x04xx identity, 0x05xx configuration, 0x06xx client SDK and CLI,
 *   0x07xx prekeys, 0x08xx session crypto, 0x09xx membrane, 0x0axx bridges,
 *   0x0fxx generic.
 */
export const ERROR_CODES = {
  // Codec: the bytes could not be decoded.
  TRUNCATED: { wire: 0x0101, summary: 'the input ends before the frame does' },
  FRAME_TOO_LARGE: { wire: 0x0102, summary: 'a frame body is longer than the configured limit' },
  UNKNOWN_FRAME_TYPE: { wire: 0x0103, summary: 'the frame type byte names no known frame' },
  UNSUPPORTED_VERSION: { wire: 0x0104, summary: 'the protocol version is not one this side speaks' },
  BAD_LENGTH: { wire: 0x0105, summary: 'a length field disagrees with the frame layout' },
  TRAILING_BYTES: { wire: 0x0106, summary: 'bytes are left over after the last field of a frame' },
  BAD_FIELD: { wire: 0x0107, summary: 'a field holds a value its type does not allow' },

  // Authentication.
  AUTH_FAILED: { wire: 0x0201, summary: 'the signature, key or DID in AUTH did not verify' },
  AUTH_TIMEOUT: { wire: 0x0202, summary: 'the handshake did not finish within the allowed time' },
  AUTH_RATE_LIMITED: { wire: 0x0203, summary: 'too many failed handshakes from this address' },
  NOT_AUTHENTICATED: { wire: 0x0204, summary: 'a frame other than HELLO/AUTH arrived before WELCOME' },
  UNEXPECTED_FRAME: { wire: 0x0205, summary: 'the frame is not valid in this direction or state' },
  ANON_DISABLED: { wire: 0x0206, summary: 'this relay does not accept anonymous connections (RELAY_ANON_ENABLED)' },
  ANON_BAD_STAMP: {
    wire: 0x0207,
    summary: "an anonymous connection's proof-of-work stamp does not meet the announced difficulty",
  },
  ANON_TOO_COSTLY: {
    wire: 0x0208,
    summary: 'the relay asks for more proof of work than this client agreed to spend (maxPowBits)',
  },
  RELAY_IDENTITY_MISMATCH: {
    wire: 0x0209,
    summary:
      'the relay could not prove the key the client expects (a DID in the relay URL, expectRelayDid, or a pin from first use), or its CHALLENGE signature did not verify',
  },
  HANDSHAKE_TOO_LARGE: {
    wire: 0x020a,
    summary: 'a peer sent more bytes before WELCOME than any honest handshake needs',
  },
  // 0x022x: per-address connection budgets (issue 12; numbered apart from 0x0209.. to leave room).
  ADDRESS_CONNECTION_LIMIT: {
    wire: 0x0220,
    summary: 'the source address holds its maximum of connections to this node (RELAY_CONNECTIONS_PER_ADDRESS)',
  },

  // Routing and queues.
  SOURCE_MISMATCH: { wire: 0x0301, summary: "a SEND's source hint is not the sender's own" },
  QUEUE_FULL: { wire: 0x0302, summary: "the recipient's durable queue holds its maximum count of frames" },
  QUEUE_BYTES_FULL: { wire: 0x0303, summary: "the recipient's durable queue holds its maximum bytes" },
  RATE_LIMITED: { wire: 0x0304, summary: 'the sender exceeded its frame rate' },
  SEND_QUEUE_OVERFLOW: { wire: 0x0305, summary: "a connection's outbound queue overflowed" },
  STORE_UNAVAILABLE: { wire: 0x0306, summary: 'Redis did not confirm the write; the frame is not stored' },
  DRAINING: { wire: 0x0307, summary: 'the node is shutting down and takes no new work' },
  UNSUPPORTED_FRAME: { wire: 0x0308, summary: 'the frame type is known but this node does not handle it yet' },
  TTL_TOO_LONG: { wire: 0x0309, summary: "a durable frame's TTL exceeds the relay's maximum" },
  ANON_NOT_PERMITTED: {
    wire: 0x030a,
    summary: 'anonymous connections may only fetch prekeys and send fast frames; this request needs a DID',
  },
  ANON_LIMIT_REACHED: {
    wire: 0x030b,
    summary: 'this anonymous connection has used its sends; open a new one (with a new stamp)',
  },
  QUEUE_RESET: {
    wire: 0x030d,
    summary:
      "the durable queue restarted (expired entirely, or Redis lost it): RESUME's position belongs to the old one",
  },
  ONCE_RETENTION_TOO_LONG: { wire: 0x030c, summary: "a single-use id's retention exceeds the relay's maximum" },
  // 0x032x: storage budgets of durable frames (issue 12, docs/relay.md#durable-budgets).
  DURABLE_BUDGET_EXCEEDED: {
    wire: 0x0320,
    summary:
      'the sender DID or its source address stored its durable budget for the last hour (RELAY_DURABLE_*_PER_HOUR); nothing was stored, retry later',
  },
  RECIPIENT_UNKNOWN: {
    wire: 0x0321,
    summary:
      'the relay stores durable frames only for recipients that published prekeys (RELAY_DURABLE_REQUIRE_PREKEYS), and this one has none',
  },
  STORE_FULL: {
    wire: 0x0322,
    summary:
      'Redis is at the memory reserved for durable frames or at maxmemory: nothing was stored; fast frames, deliveries and handshakes still work',
  },
  QUEUE_SENDER_FULL: {
    wire: 0x030e,
    summary:
      "the sender holds its share of the recipient's durable queue (RELAY_QUEUE_MAX_FRAMES_PER_SENDER or _BYTES_PER_SENDER); other senders still get in",
  },

  // Identity (local; never expected on the wire but numbered for completeness).
  INVALID_DID: { wire: 0x0401, summary: 'the string is not a well-formed DID' },
  UNSUPPORTED_DID_METHOD: { wire: 0x0402, summary: 'the DID method is neither did:libertaria nor did:key' },
  INVALID_KEY: { wire: 0x0403, summary: 'the key bytes are not a valid Ed25519 key' },
  INVALID_KEY_FILE: { wire: 0x0404, summary: 'the key file is unreadable, malformed or inconsistent' },
  BAD_SIGNATURE: { wire: 0x0405, summary: 'a signature did not verify' },
  INVALID_HINT: { wire: 0x0406, summary: 'a routing hint is not 24 bytes (48 hex digits)' },
  INVALID_AUTH_PARAMS: {
    wire: 0x0407,
    summary: 'the auth transcript inputs are malformed (a bug on the calling side)',
  },

  // Configuration.
  CONFIG_INVALID: { wire: 0x0501, summary: 'an environment variable holds a value that is not accepted' },

  // Client SDK and CLI (raised locally, never sent by a relay).
  CONNECTION_FAILED: { wire: 0x0601, summary: 'no relay could be reached, or the connection was lost' },
  TIMEOUT: { wire: 0x0602, summary: 'an answer (PONG, presence, messages) did not arrive in time' },
  CLIENT_CLOSED: { wire: 0x0603, summary: 'the client was closed while the operation was pending' },
  INVALID_RELAY_URL: {
    wire: 0x0604,
    summary: 'a relay URL is not ws://, wss://, tcp:// or tls:// with a host and port',
  },
  INBOUND_OVERFLOW: {
    wire: 0x0605,
    summary: 'fast messages were dropped because the application did not consume them',
  },
  PEER_GONE: { wire: 0x0606, summary: 'the recipient of a fast send is connected nowhere' },
  USAGE: { wire: 0x0607, summary: 'the command line is not valid (lrelay exits 2)' },

  // Session crypto (0x08xx): raised on the peers by the end-to-end session layer (shared/crypto).
  PREKEY_BUNDLE_INVALID: {
    wire: 0x0801,
    summary: 'a prekey bundle or handshake has a key, signature or DID binding that does not verify',
  },
  PREKEY_UNAVAILABLE: {
    wire: 0x0802,
    summary: 'a handshake names a prekey the responder does not hold; a one-time prekey is gone once used',
  },
  DECRYPT_FAILED: { wire: 0x0803, summary: 'a session message did not authenticate: tampered, or for another session' },
  DUPLICATE_MESSAGE: {
    wire: 0x0804,
    summary: 'the message key is spent or no longer held: a duplicate, a replay or an evicted skipped key',
  },
  TOO_MANY_SKIPPED: { wire: 0x0805, summary: 'a message would skip more message keys than the ratchet bound allows' },
  INVALID_PUBLIC_KEY: {
    wire: 0x0806,
    summary: 'a DH or KEM public key is malformed, or a DH with it gives the all-zero secret',
  },
  SESSION_STATE_INVALID: {
    wire: 0x0807,
    summary: 'a serialized session state is malformed, inconsistent or of an unknown version',
  },
  REPLAYED: {
    wire: 0x0808,
    summary: 'a single-use message (0-RTT ticket, anonymous request, last-resort handshake) was seen before',
  },
  ILLEGAL_TRANSITION: {
    wire: 0x0810,
    summary: 'a session lifecycle event that the current state does not allow (a bug in the caller)',
  },
  HANDSHAKE_RATE_LIMITED: {
    wire: 0x080b,
    summary: 'a peer sent more new-session handshakes (initial messages) than the responder accepts per minute',
  },
  TICKET_UNKNOWN: { wire: 0x0809, summary: 'a 0-RTT ticket id names no ticket of this session' },
  SESSION_EXPIRED: {
    wire: 0x080a,
    summary: 'the session, ticket or ephemeral exchange is past its lifetime or counter limit',
  },

  // Prekeys (0x07xx): the relays' prekey service (PREKEY_* frames) and prekey signature checks.
  PREKEY_NOT_FOUND: { wire: 0x0701, summary: 'the peer has published no prekeys, or they expired' },
  PREKEY_BAD_SIGNATURE: { wire: 0x0702, summary: 'a prekey signature does not verify under the identity key' },
  PREKEY_IDENTITY_MISMATCH: {
    wire: 0x0703,
    summary: "the prekeys' identity key is not the publisher's (or the fetched peer's) key",
  },
  PREKEY_RATE_LIMITED: { wire: 0x0704, summary: 'too many prekey requests from this connection; retry later' },

  // Membrane (0x09xx): capability policies, grant tokens and access decisions (shared/membrane, docs/membrane.md).
  POLICY_INVALID: {
    wire: 0x0901,
    summary: 'a membrane policy is malformed or over a limit; the message names the field',
  },
  GRANT_MALFORMED: {
    wire: 0x0902,
    summary: 'a grant token does not decode, is not canonical, or has a field its schema does not allow',
  },
  GRANT_TOO_LARGE: { wire: 0x0903, summary: 'a grant token is longer than the configured limit' },
  GRANT_CHAIN_TOO_DEEP: { wire: 0x0904, summary: 'a grant token has more delegation links than allowed' },
  GRANT_BAD_SIGNATURE: {
    wire: 0x0905,
    summary: "a grant link's signature or issuer key does not verify (a forged or altered token)",
  },
  GRANT_CHAIN_BROKEN: {
    wire: 0x0906,
    summary: "a grant link's issuer is not the previous link's audience, or its proof is not the previous link",
  },
  GRANT_OVER_ATTENUATED: {
    wire: 0x0907,
    summary: 'a delegated link claims more than its delegator had (resource, action, amount or validity)',
  },
  GRANT_WRONG_ISSUER: { wire: 0x0908, summary: "a grant token's root is not signed by the resource owner" },
  GRANT_WRONG_AUDIENCE: { wire: 0x0909, summary: 'a grant token is not addressed to the peer presenting it' },
  GRANT_EXPIRED: { wire: 0x090a, summary: 'a grant token (or one of its links) is past its expiry' },
  GRANT_NOT_YET_VALID: { wire: 0x090b, summary: "a grant token (or one of its links) is before its 'not before' time" },
  GRANT_REVOKED: { wire: 0x090c, summary: 'a link of the grant token is on the revocation list' },
  GRANT_LIFETIME_TOO_LONG: {
    wire: 0x090d,
    summary: 'a grant token expires further ahead than the membrane allows (maxGrantLifetimeSeconds)',
  },
  ACCESS_NO_GRANT: { wire: 0x0910, summary: 'no policy capability or grant covers this resource and action' },
  ACCESS_CONDITION_FAILED: {
    wire: 0x0911,
    summary: 'a capability covers the request but one of its conditions (membership, amount) does not hold',
  },
  ACCESS_EXPIRED: { wire: 0x0912, summary: "the owner's policy, or an expiry constraint, is past its time" },
  ACCESS_TRUST_TOO_LOW: { wire: 0x0913, summary: "the peer's trust score is below the constraint's minimum" },
  ACCESS_RATE_LIMITED: { wire: 0x0914, summary: 'a rate constraint allows no more requests in this window' },
  ACCESS_QUOTA_EXHAUSTED: { wire: 0x0915, summary: 'a quota constraint has fewer units left than the request spends' },
  ACCESS_OUTSIDE_TIME_WINDOW: {
    wire: 0x0916,
    summary: 'a time-window constraint does not allow access at this time of day or week',
  },
  ACCESS_NOT_YET_VALID: { wire: 0x0917, summary: "a 'not before' constraint is still in the future" },
  MEMBRANE_DISABLED: {
    wire: 0x0920,
    summary: 'this relay runs without the membrane (RELAY_MEMBRANE_ENABLED=false): no policies, grants or audit',
  },
  MEMBRANE_TOO_MANY_GRANTS: {
    wire: 0x0921,
    summary: 'the connection holds its maximum of grant tokens (RELAY_MEMBRANE_GRANTS_PER_CONNECTION)',
  },

  // Bridges (0x0axx): foreign identities and the bridges to other networks (shared/bridge-kit, services/bridge-*).
  FOREIGN_IDENTITY_INVALID: {
    wire: 0x0a01,
    summary: 'a foreign identity URI is malformed (nostr:npub1…, acct:user@host or xmtp:…)',
  },
  FOREIGN_PROTOCOL_UNSUPPORTED: { wire: 0x0a02, summary: 'the URI scheme names no network a bridge serves' },
  BRIDGE_PROTOCOL_MISMATCH: {
    wire: 0x0a03,
    summary: 'the foreign identity belongs to another bridge than the one asked',
  },
  BRIDGE_IDENTITY_UNKNOWN: { wire: 0x0a04, summary: 'the Libertaria peer has not been bridged to this network yet' },
  BRIDGE_MESSAGE_TOO_LARGE: { wire: 0x0a05, summary: 'the message is longer than the bridge accepts' },
  BRIDGE_UNAVAILABLE: {
    wire: 0x0a06,
    summary: 'no foreign relay or server accepted the message; retrying later may succeed',
  },
  BRIDGE_CLOSED: { wire: 0x0a07, summary: 'the bridge was closed while the operation was pending' },
  BRIDGE_KEY_STORE: {
    wire: 0x0a08,
    summary: "the bridge's key store is unreadable, or a key does not decrypt under the key-encryption key",
  },
  BRIDGE_NAME_INVALID: { wire: 0x0a09, summary: 'a bridged name is not 1-64 of a-z, 0-9, dot, dash or underscore' },
  BRIDGE_NAME_TAKEN: { wire: 0x0a0a, summary: 'the bridged name already belongs to another Libertaria peer' },
  BRIDGE_IDENTITY_LIMIT: { wire: 0x0a0b, summary: 'the bridge holds its configured maximum of bridged identities' },
  FEDERATED_ENVELOPE_INVALID: {
    wire: 0x0a0c,
    summary: 'a federated message (the payload between a peer and a bridge) is malformed or too large',
  },
  BRIDGE_NOT_REGISTERED: {
    wire: 0x0a0d,
    summary: 'no bridge is registered for the network, or the frame does not come from a registered bridge',
  },
  BRIDGE_KEY_STORE_FULL: {
    wire: 0x0a0e,
    summary: "the bridge's sealed store holds its configured maximum of records; nothing was created",
  },
  BRIDGE_IDENTITY_CONFLICT: {
    wire: 0x0a0f,
    summary: 'a unique key of a sealed record (e.g. a handle) already belongs to another identity; nothing was written',
  },
  BRIDGE_LEASE_LOST: {
    wire: 0x0a10,
    summary: 'a bridge process lost its lease on shared session state before writing it; the job is retried',
  },
  // 0x0a3x: the XMTP bridge (services/bridge-xmtp); numbered apart so other bridges' codes can follow 0x0a0f.
  BRIDGE_RECIPIENT_UNREACHABLE: {
    wire: 0x0a30,
    summary: 'the foreign recipient exists on no inbox of that network (e.g. an address never registered on XMTP)',
  },
  BRIDGE_STATE_MISSING: {
    wire: 0x0a31,
    summary:
      "a bridged identity's local state (the XMTP database) is missing although the network knows its installation",
  },

  // Generic.
  INTERNAL: { wire: 0x0f01, summary: 'an unexpected failure inside the node; it is logged there' },
  UNKNOWN_ERROR: { wire: 0x0fff, summary: 'the peer sent a wire code this version does not know' },
} as const satisfies Record<string, { wire: number; summary: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

const byWire = new Map<number, ErrorCode>();
for (const [code, info] of Object.entries(ERROR_CODES)) byWire.set(info.wire, code as ErrorCode);

/** The wire number of a code, for ERROR and NACK frames. */
export function errorCodeToWire(code: ErrorCode): number {
  return ERROR_CODES[code].wire;
}

/** The code for a wire number; numbers from a newer peer map to UNKNOWN_ERROR. */
export function errorCodeFromWire(wire: number): ErrorCode {
  return byWire.get(wire) ?? 'UNKNOWN_ERROR';
}

export function isErrorCode(value: string): value is ErrorCode {
  return Object.hasOwn(ERROR_CODES, value);
}

/** Base of every error the project throws on purpose: it always has a stable `code`. */
export class LibertariaError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Bytes that could not be decoded as frames. */
export class ProtocolError extends LibertariaError {}

/** A DID, key, key file or signature that is not acceptable. */
export class IdentityError extends LibertariaError {}

/** An environment variable that is not acceptable; names the variable. */
export class ConfigError extends LibertariaError {
  readonly variable: string;
  constructor(variable: string, message: string) {
    super('CONFIG_INVALID', message);
    this.variable = variable;
  }
}

/** An error reported by the relay (ERROR or NACK frame) or raised by the client SDK. */
export class RelayError extends LibertariaError {}
