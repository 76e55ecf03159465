/**
 * The adversarial suite's own minimal client (issue 12): the relay protocol
 * written by hand from docs/protocol.md and docs/identity.md, so that a codec
 * bug in `@libertaria/shared` cannot hide itself by being on both ends.
 *
 * It imports nothing from `@libertaria/shared` or the SDK. What it uses:
 * `node:crypto` (Ed25519, SHA-256, random bytes), `node:net` (raw TCP), the
 * `ws` package (WebSocket) and `@noble/hashes` for BLAKE3 (routing hints and
 * `did:libertaria`). Frame type numbers and error wire codes are copied from
 * the tables of docs/protocol.md and docs/errors.md.
 *
 * It can speak the protocol correctly (the honest pair uses it) and
 * incorrectly on purpose: every encoder takes raw fields, `envelope` takes a
 * version and a body length that may lie, and `WireConn.write` sends any bytes.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign as signEd25519,
} from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { blake3 } from '@noble/hashes/blake3.js';
import WebSocket from 'ws';

// ---------------------------------------------------------------------------
// Numbers from the docs

/** docs/protocol.md#frame-types */
export const T = {
  HELLO: 0x01,
  CHALLENGE: 0x02,
  AUTH: 0x03,
  WELCOME: 0x04,
  ANON_CHALLENGE: 0x05,
  ANON_AUTH: 0x06,
  SEND: 0x10,
  DELIVER: 0x11,
  ACK: 0x12,
  NACK: 0x13,
  RESUME: 0x14,
  MIGRATE: 0x15,
  PING: 0x20,
  PONG: 0x21,
  PEER_PRESENT: 0x30,
  PEER_GONE: 0x31,
  PRESENCE_QUERY: 0x32,
  GOAWAY: 0x3e,
  ERROR: 0x3f,
  PREKEY_PUBLISH: 0x40,
  PREKEY_FETCH: 0x41,
  PREKEY_BUNDLE: 0x42,
  PREKEY_STATUS: 0x43,
  PREKEY_STATUS_QUERY: 0x44,
  ONCE_CHECK: 0x50,
  ONCE_RESULT: 0x51,
  GRANT_PRESENT: 0x60,
  GRANT_ACCEPTED: 0x61,
  POLICY_PUT: 0x62,
  POLICY_GET: 0x63,
  POLICY: 0x64,
  AUDIT_QUERY: 0x65,
  AUDIT_RESULT: 0x66,
  GRANT_REVOKE: 0x67,
  GRANT_REVOKED: 0x68,
  BRIDGE_QUERY: 0x70,
  BRIDGE_INFO: 0x71,
} as const;
export type FrameName = keyof typeof T;
const NAMES = new Map<number, FrameName>(Object.entries(T).map(([name, n]) => [n, name as FrameName]));
export function frameName(type: number): string {
  return NAMES.get(type) ?? `0x${type.toString(16).padStart(2, '0')}`;
}

/** docs/errors.md: the wire numbers the suite expects to see. */
export const E = {
  TRUNCATED: 0x0101,
  FRAME_TOO_LARGE: 0x0102,
  UNKNOWN_FRAME_TYPE: 0x0103,
  UNSUPPORTED_VERSION: 0x0104,
  BAD_LENGTH: 0x0105,
  TRAILING_BYTES: 0x0106,
  BAD_FIELD: 0x0107,
  AUTH_FAILED: 0x0201,
  AUTH_TIMEOUT: 0x0202,
  RELAY_IDENTITY_MISMATCH: 0x0209,
  HANDSHAKE_TOO_LARGE: 0x020a,
  AUTH_RATE_LIMITED: 0x0203,
  NOT_AUTHENTICATED: 0x0204,
  UNEXPECTED_FRAME: 0x0205,
  ANON_DISABLED: 0x0206,
  ANON_BAD_STAMP: 0x0207,
  ADDRESS_CONNECTION_LIMIT: 0x0220,
  SOURCE_MISMATCH: 0x0301,
  QUEUE_FULL: 0x0302,
  QUEUE_BYTES_FULL: 0x0303,
  RATE_LIMITED: 0x0304,
  STORE_UNAVAILABLE: 0x0306,
  DRAINING: 0x0307,
  TTL_TOO_LONG: 0x0309,
  ANON_NOT_PERMITTED: 0x030a,
  ANON_LIMIT_REACHED: 0x030b,
  ONCE_RETENTION_TOO_LONG: 0x030c,
  QUEUE_RESET: 0x030d,
  QUEUE_SENDER_FULL: 0x030e,
  DURABLE_BUDGET_EXCEEDED: 0x0320,
  RECIPIENT_UNKNOWN: 0x0321,
  STORE_FULL: 0x0322,
  PREKEY_NOT_FOUND: 0x0701,
  PREKEY_BAD_SIGNATURE: 0x0702,
  PREKEY_IDENTITY_MISMATCH: 0x0703,
  PREKEY_RATE_LIMITED: 0x0704,
  POLICY_INVALID: 0x0901,
  GRANT_MALFORMED: 0x0902,
  GRANT_WRONG_ISSUER: 0x0908,
  GRANT_EXPIRED: 0x090a,
  GRANT_REVOKED: 0x090c,
  GRANT_LIFETIME_TOO_LONG: 0x090d,
  MEMBRANE_DISABLED: 0x0920,
  BRIDGE_NOT_REGISTERED: 0x0a0d,
  INTERNAL: 0x0f01,
} as const;
export type ErrorName = keyof typeof E;
export function errorName(code: number): string {
  for (const [name, n] of Object.entries(E)) if (n === code) return name;
  return `0x${code.toString(16).padStart(4, '0')}`;
}

export const HEADER_SIZE = 6;
export const HINT_SIZE = 24;
export const ROUTED_HEADER_SIZE = 93;
export const FLAG_DURABLE = 0x01;
export const FLAG_FATAL = 0x01;
export const FEATURE_ANONYMOUS = 0x00000001;
export const KEY_TYPE_ED25519 = 1;
/** The most a text field (ERROR/NACK message, GOAWAY texts) may hold, in UTF-8 bytes. */
export const MAX_TEXT_BYTES = 1024;

// ---------------------------------------------------------------------------
// Encoding

const u8 = (n: number): Buffer => Buffer.from([n & 0xff]);
const u16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n >>> 0);
  return b;
};
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
/** u64 big-endian from a bigint (so tests can write values at and above 2^53). */
const u64 = (n: number | bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
};
const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');

/**
 * The 6-byte envelope and a body. `bodyLength` defaults to the body's real
 * length; pass another number to lie about it.
 */
export function envelope(type: number, body: Uint8Array, opts: { version?: number; bodyLength?: number } = {}): Buffer {
  const head = Buffer.alloc(HEADER_SIZE);
  // Protocol version 2: HELLO, CHALLENGE and ERROR keep version-1 framing (any relay reads them), every other frame is 2.
  head[0] = opts.version ?? (type === T.HELLO || type === T.CHALLENGE || type === T.ERROR ? 1 : 2);
  head[1] = type;
  head.writeUInt32BE(opts.bodyLength ?? body.length, 2);
  return Buffer.concat([head, body]);
}

export interface RoutedFields {
  dest: Uint8Array;
  source: Uint8Array;
  sessionId?: Uint8Array;
  messageId: Uint8Array;
  flags: number;
  ttl?: number;
  position?: number | bigint;
  payload: Uint8Array;
}

/** Bodies, field by field as docs/protocol.md lays them out. */
export const body = {
  hello: (minVersion = 2, maxVersion = 2, features = 0, clientNonce: Uint8Array = CLIENT_NONCE): Buffer =>
    Buffer.concat([u8(minVersion), u8(maxVersion), u32(features), clientNonce]),
  auth: (
    publicKey: Uint8Array,
    signature: Uint8Array,
    did: string | Uint8Array,
    keyType = KEY_TYPE_ED25519,
  ): Buffer => {
    const d = typeof did === 'string' ? utf8(did) : Buffer.from(did);
    return Buffer.concat([u8(keyType), publicKey, signature, u8(d.length), d]);
  },
  anonAuth: (stamp: Uint8Array): Buffer => Buffer.from(stamp),
  routed: (f: RoutedFields): Buffer =>
    Buffer.concat([
      f.dest,
      f.source,
      f.sessionId ?? Buffer.alloc(16),
      f.messageId,
      u8(f.flags),
      u32(f.ttl ?? 0),
      u64(f.position ?? 0),
      f.payload,
    ]),
  ack: (messageId: Uint8Array, position: number | bigint): Buffer => Buffer.concat([messageId, u64(position)]),
  resume: (lastAcked: number | bigint): Buffer => u64(lastAcked),
  migrate: (previousConnectionId: Uint8Array, proof: Uint8Array): Buffer =>
    Buffer.concat([previousConnectionId, u8(proof.length), proof]),
  ping: (data: Uint8Array = Buffer.alloc(8)): Buffer => Buffer.from(data),
  presenceQuery: (hint: Uint8Array): Buffer => Buffer.from(hint),
  error: (code: number, flags: number, message: string | Uint8Array): Buffer => {
    const m = typeof message === 'string' ? utf8(message) : Buffer.from(message);
    return Buffer.concat([u16(code), u8(flags), u16(m.length), m]);
  },
  prekeyFetch: (requestId: Uint8Array, hint: Uint8Array): Buffer => Buffer.concat([requestId, hint]),
  prekeyStatusQuery: (requestId: Uint8Array): Buffer => Buffer.from(requestId),
  prekeyPublish: (requestId: Uint8Array, flags: number, publication: Uint8Array): Buffer =>
    Buffer.concat([requestId, u8(flags), publication]),
  onceCheck: (requestId: Uint8Array, retentionSeconds: number, id: Uint8Array): Buffer =>
    Buffer.concat([requestId, u32(retentionSeconds), u8(id.length), id]),
  bridgeQuery: (requestId: Uint8Array, network: string): Buffer => {
    const n = utf8(network);
    return Buffer.concat([requestId, u8(n.length), n]);
  },
  grantPresent: (requestId: Uint8Array, token: Uint8Array): Buffer => Buffer.concat([requestId, token]),
  grantRevoke: (requestId: Uint8Array, token: Uint8Array): Buffer => Buffer.concat([requestId, token]),
  policyPut: (requestId: Uint8Array, policy: string | Uint8Array): Buffer =>
    Buffer.concat([requestId, typeof policy === 'string' ? utf8(policy) : policy]),
  policyGet: (requestId: Uint8Array): Buffer => Buffer.from(requestId),
  auditQuery: (requestId: Uint8Array, sinceMs: number, untilMs: number, limit: number, after: string): Buffer => {
    const a = utf8(after);
    return Buffer.concat([requestId, u64(sinceMs), u64(untilMs), u16(limit), u8(a.length), a]);
  },
};

/** Whole frames (protocol version 2, honest lengths). */
export const frame = {
  hello: (minVersion = 2, maxVersion = 2, features = 0, clientNonce: Uint8Array = CLIENT_NONCE) =>
    envelope(T.HELLO, body.hello(minVersion, maxVersion, features, clientNonce)),
  auth: (publicKey: Uint8Array, signature: Uint8Array, did: string | Uint8Array, keyType = KEY_TYPE_ED25519) =>
    envelope(T.AUTH, body.auth(publicKey, signature, did, keyType)),
  anonAuth: (stamp: Uint8Array) => envelope(T.ANON_AUTH, body.anonAuth(stamp)),
  send: (f: RoutedFields) => envelope(T.SEND, body.routed(f)),
  ack: (messageId: Uint8Array, position: number | bigint) => envelope(T.ACK, body.ack(messageId, position)),
  resume: (lastAcked: number | bigint) => envelope(T.RESUME, body.resume(lastAcked)),
  migrate: (previousConnectionId: Uint8Array, proof: Uint8Array) =>
    envelope(T.MIGRATE, body.migrate(previousConnectionId, proof)),
  ping: (data?: Uint8Array) => envelope(T.PING, body.ping(data)),
  presenceQuery: (hint: Uint8Array) => envelope(T.PRESENCE_QUERY, body.presenceQuery(hint)),
  error: (code: number, flags: number, message: string | Uint8Array) =>
    envelope(T.ERROR, body.error(code, flags, message)),
  prekeyFetch: (requestId: Uint8Array, hint: Uint8Array) => envelope(T.PREKEY_FETCH, body.prekeyFetch(requestId, hint)),
  prekeyStatusQuery: (requestId: Uint8Array) => envelope(T.PREKEY_STATUS_QUERY, body.prekeyStatusQuery(requestId)),
  prekeyPublish: (requestId: Uint8Array, flags: number, publication: Uint8Array) =>
    envelope(T.PREKEY_PUBLISH, body.prekeyPublish(requestId, flags, publication)),
  onceCheck: (requestId: Uint8Array, retentionSeconds: number, id: Uint8Array) =>
    envelope(T.ONCE_CHECK, body.onceCheck(requestId, retentionSeconds, id)),
  bridgeQuery: (requestId: Uint8Array, network: string) =>
    envelope(T.BRIDGE_QUERY, body.bridgeQuery(requestId, network)),
  grantPresent: (requestId: Uint8Array, token: Uint8Array) =>
    envelope(T.GRANT_PRESENT, body.grantPresent(requestId, token)),
  grantRevoke: (requestId: Uint8Array, token: Uint8Array) =>
    envelope(T.GRANT_REVOKE, body.grantRevoke(requestId, token)),
  policyPut: (requestId: Uint8Array, policy: string | Uint8Array) =>
    envelope(T.POLICY_PUT, body.policyPut(requestId, policy)),
  policyGet: (requestId: Uint8Array) => envelope(T.POLICY_GET, body.policyGet(requestId)),
  auditQuery: (requestId: Uint8Array, sinceMs: number, untilMs: number, limit: number, after: string) =>
    envelope(T.AUDIT_QUERY, body.auditQuery(requestId, sinceMs, untilMs, limit, after)),
};

// ---------------------------------------------------------------------------
// Decoding what the relay sends (only as strict as the suite needs)

export interface RxFrame {
  version: number;
  type: number;
  name: string;
  body: Buffer;
  /** performance.now() when it arrived. */
  at: number;
}

/** Splits a byte stream into frames. The relay's answers are trusted to be well formed; a bad one throws. */
export class FrameSplitter {
  private pending: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): RxFrame[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: RxFrame[] = [];
    const now = performance.now();
    while (this.pending.length >= HEADER_SIZE) {
      const length = this.pending.readUInt32BE(2);
      if (length > 16 * 1024 * 1024) throw new Error(`relay sent a frame body of ${length} bytes`);
      if (this.pending.length < HEADER_SIZE + length) break;
      const type = this.pending[1]!;
      out.push({
        version: this.pending[0]!,
        type,
        name: frameName(type),
        body: this.pending.subarray(HEADER_SIZE, HEADER_SIZE + length),
        at: now,
      });
      this.pending = this.pending.subarray(HEADER_SIZE + length);
    }
    return out;
  }
  get buffered(): number {
    return this.pending.length;
  }
}

export interface Challenge {
  version: number;
  nonce: Buffer;
  relayIdentity: string;
}
/** CHALLENGE, version 2: u8 version ‖ 32 nonce ‖ u8 len + relay DID ‖ 32 relay key ‖ 64 relay signature. */
export interface RelayChallenge extends Challenge {
  relayKey: Buffer;
  signature: Buffer;
}
export function parseChallenge(b: Buffer): RelayChallenge {
  const n = b[33]!;
  return {
    version: b[0]!,
    nonce: b.subarray(1, 33),
    relayIdentity: b.subarray(34, 34 + n).toString('utf8'),
    relayKey: b.subarray(34 + n, 66 + n),
    signature: b.subarray(66 + n, 130 + n),
  };
}

export interface AnonChallenge extends Challenge {
  powBits: number;
  maxSends: number;
  lifetimeMs: number;
}
export function parseAnonChallenge(b: Buffer): AnonChallenge {
  const n = b[40]!;
  return {
    version: b[0]!,
    nonce: b.subarray(1, 33),
    powBits: b[33]!,
    maxSends: b.readUInt16BE(34),
    lifetimeMs: b.readUInt32BE(36),
    relayIdentity: b.subarray(41, 41 + n).toString('utf8'),
  };
}

export interface Welcome {
  hint: Buffer;
  connectionId: Buffer;
  maxPayload: number;
  heartbeatMs: number;
  nodeId: string;
}
export function parseWelcome(b: Buffer): Welcome {
  const n = b[48]!;
  return {
    hint: Buffer.from(b.subarray(0, 24)),
    connectionId: Buffer.from(b.subarray(24, 40)),
    maxPayload: b.readUInt32BE(40),
    heartbeatMs: b.readUInt32BE(44),
    nodeId: b.subarray(49, 49 + n).toString('utf8'),
  };
}

export interface Routed {
  dest: Buffer;
  source: Buffer;
  sessionId: Buffer;
  messageId: Buffer;
  flags: number;
  ttl: number;
  position: number;
  payload: Buffer;
}
export function parseRouted(b: Buffer): Routed {
  return {
    dest: b.subarray(0, 24),
    source: b.subarray(24, 48),
    sessionId: b.subarray(48, 64),
    messageId: b.subarray(64, 80),
    flags: b[80]!,
    ttl: b.readUInt32BE(81),
    position: Number(b.readBigUInt64BE(85)),
    payload: b.subarray(93),
  };
}

export function parseAck(b: Buffer): { messageId: Buffer; position: number } {
  return { messageId: b.subarray(0, 16), position: Number(b.readBigUInt64BE(16)) };
}

export interface Refusal {
  code: number;
  name: string;
  flags: number;
  message: string;
  /** NACK only: the refused SEND's messageId or the request's requestId. */
  id?: Buffer;
}
export function parseNack(b: Buffer): Refusal {
  const code = b.readUInt16BE(16);
  const n = b.readUInt16BE(18);
  return { id: b.subarray(0, 16), code, name: errorName(code), flags: 0, message: b.subarray(20, 20 + n).toString() };
}
export function parseError(b: Buffer): Refusal {
  const code = b.readUInt16BE(0);
  const n = b.readUInt16BE(3);
  return { code, name: errorName(code), flags: b[2]!, message: b.subarray(5, 5 + n).toString() };
}
export function parseGoaway(b: Buffer): { reconnectAfterMs: number; reconnectHint: string; reason: string } {
  const h = b.readUInt16BE(4);
  const r = b.readUInt16BE(6 + h);
  return {
    reconnectAfterMs: b.readUInt32BE(0),
    reconnectHint: b.subarray(6, 6 + h).toString(),
    reason: b.subarray(8 + h, 8 + h + r).toString(),
  };
}

/** One line per frame, for failure messages. */
export function describeFrame(f: RxFrame): string {
  if (f.type === T.ERROR) {
    const e = parseError(f.body);
    return `ERROR ${e.name}${e.flags & FLAG_FATAL ? ' FATAL' : ''} "${e.message.slice(0, 80)}"`;
  }
  if (f.type === T.NACK) {
    const e = parseNack(f.body);
    return `NACK ${e.name} "${e.message.slice(0, 80)}"`;
  }
  return `${f.name}(${f.body.length})`;
}

// ---------------------------------------------------------------------------
// Identity (docs/identity.md)

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
export function base58btc(bytes: Uint8Array): string {
  let n = 0n;
  for (const b of bytes) n = n * 256n + BigInt(b);
  let out = '';
  while (n > 0n) {
    out = B58[Number(n % 58n)]! + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    out = `1${out}`;
  }
  return out;
}

export function didKeyOf(publicKey: Uint8Array): string {
  return `did:key:z${base58btc(Buffer.concat([Buffer.from([0xed, 0x01]), publicKey]))}`;
}
export function didLibertariaOf(publicKey: Uint8Array): string {
  return `did:libertaria:z${base58btc(blake3(publicKey))}`;
}
export function hintOf(publicKey: Uint8Array): Buffer {
  return Buffer.from(blake3(publicKey).subarray(0, HINT_SIZE));
}

/** RFC 8410 PKCS#8 prefix of a raw Ed25519 seed. */
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');

export class Identity {
  private constructor(
    private readonly privateKey: KeyObject,
    readonly publicKey: Buffer,
  ) {}
  static generate(): Identity {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    return new Identity(privateKey, rawPublicKey(publicKey));
  }
  static fromSeed(seed: Uint8Array): Identity {
    const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' });
    return new Identity(privateKey, rawPublicKey(createPublicKey(privateKey)));
  }
  sign(message: Uint8Array): Buffer {
    return signEd25519(null, message, this.privateKey);
  }
  get did(): string {
    return didLibertariaOf(this.publicKey);
  }
  get didKey(): string {
    return didKeyOf(this.publicKey);
  }
  get hint(): Buffer {
    return hintOf(this.publicKey);
  }
}

/**
 * A one-link grant token written by hand (docs/membrane.md#encoding):
 * "LMG" ‖ 1 ‖ count ‖ (u16 payload length ‖ canonical JSON payload ‖ issuer
 * key ‖ Ed25519 signature over "libertaria-membrane-grant-v1\0" ‖ payload).
 * `exp: null` leaves the required `exp` out (the token is malformed).
 */
export function grantToken(
  issuer: Identity,
  audienceDid: string,
  opts: { exp?: number | null; resource?: string; action?: string } = {},
): Buffer {
  const o: Record<string, unknown> = {
    v: 1,
    iss: issuer.did,
    aud: audienceDid,
    att: [{ resource: opts.resource ?? issuer.did, action: opts.action ?? 'send', conditions: [] }],
    cst: [],
  };
  const exp = opts.exp === undefined ? Math.floor(Date.now() / 1000) + 3600 : opts.exp;
  if (exp !== null) o.exp = exp;
  o.nnc = randomBytes(16).toString('hex');
  const payload = utf8(JSON.stringify(o));
  const signature = issuer.sign(Buffer.concat([utf8('libertaria-membrane-grant-v1'), u8(0), payload]));
  return Buffer.concat([utf8('LMG'), u8(1), u8(1), u16(payload.length), payload, issuer.publicKey, signature]);
}

/** RFC 8410 SPKI prefix of a raw Ed25519 public key. */
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

/**
 * The raw key, from its SPKI DER. Not a JWK export: on Node 20 that can
 * deadlock for a generated key (shared/crypto/src/crypto-node.ts, publicKeyOf).
 */
function rawPublicKey(key: KeyObject): Buffer {
  const spki = key.export({ format: 'der', type: 'spki' });
  if (!spki.subarray(0, SPKI_ED25519.length).equals(SPKI_ED25519)) throw new Error('not an Ed25519 public key');
  return spki.subarray(SPKI_ED25519.length);
}

/**
 * The client nonce every HELLO of this suite carries unless a case passes its
 * own. Fixed on purpose: the suite tests the relay, and the client nonce
 * protects the client (it makes the relay's CHALLENGE signature fresh), not
 * the relay, whose own nonce stops replays.
 */
export const CLIENT_NONCE: Buffer = Buffer.alloc(32, 0x5c);

/**
 * docs/identity.md#relay-authentication-transcript, version 2: what AUTH signs.
 * "libertaria-relay-auth/2" ‖ 0x00 ‖ relay nonce ‖ client nonce ‖ relay key ‖ u8 len + transport ‖ u8 len + channel binding
 */
export function authTranscript(
  relayNonce: Uint8Array,
  relayKey: Uint8Array,
  binding: string,
  clientNonce: Uint8Array = CLIENT_NONCE,
  channelBinding: Uint8Array = Buffer.alloc(0),
): Buffer {
  const b = utf8(binding);
  return Buffer.concat([
    utf8('libertaria-relay-auth/2'),
    u8(0),
    relayNonce,
    clientNonce,
    relayKey,
    u8(b.length),
    b,
    u8(channelBinding.length),
    channelBinding,
  ]);
}

/** docs/protocol.md, MIGRATE: "libertaria-migrate/1" ‖ 0x00 ‖ this connectionId ‖ previousConnectionId */
export function migrationTranscript(connectionId: Uint8Array, previousConnectionId: Uint8Array): Buffer {
  return Buffer.concat([utf8('libertaria-migrate/1'), u8(0), connectionId, previousConnectionId]);
}

/** docs/protocol.md#anonymous-connections: an 8-byte stamp with powBits leading zero bits. */
export function solvePow(nonce: Uint8Array, powBits: number): Buffer {
  const stamp = Buffer.alloc(8);
  for (let i = 0n; ; i++) {
    stamp.writeBigUInt64BE(i);
    const h = createHash('sha256').update('libertaria-anon-pow/1').update(nonce).update(stamp).digest();
    if (leadingZeroBits(h) >= powBits) return stamp;
  }
}
/** solvePow in slices of 2,048 tries, yielding between them: the honest pair shares this process's event loop. */
export async function solvePowAsync(nonce: Uint8Array, powBits: number): Promise<Buffer> {
  const stamp = Buffer.alloc(8);
  for (let i = 0n; ; ) {
    for (const end = i + 2048n; i < end; i++) {
      stamp.writeBigUInt64BE(i);
      const h = createHash('sha256').update('libertaria-anon-pow/1').update(nonce).update(stamp).digest();
      if (leadingZeroBits(h) >= powBits) return stamp;
    }
    await new Promise((r) => setImmediate(r));
  }
}
export function leadingZeroBits(h: Uint8Array): number {
  let bits = 0;
  for (const byte of h) {
    if (byte === 0) {
      bits += 8;
      continue;
    }
    return bits + Math.clz32(byte) - 24;
  }
  return bits;
}

// ---------------------------------------------------------------------------
// Connections

export interface ConnectOptions {
  /** Source address (any 127.x.y.z on Linux loopback): one per case keeps per-address limits apart. */
  localAddress?: string;
  /** WebSocket subprotocols offered; default `libertaria-relay.v1`, `null` offers none. */
  protocol?: string | string[] | null;
  /** ws client's own maximum message size (default: unlimited enough for the suite). */
  wsMaxPayload?: number;
  /** Ask for permessage-deflate (the relay's uWS build has none). */
  perMessageDeflate?: boolean;
}

export interface CloseInfo {
  /** WebSocket close code (1006: closed without a close frame); undefined on TCP. */
  code?: number;
  reason?: string;
  at: number;
}

export const WS_SUBPROTOCOL = 'libertaria-relay.v1';
/** Waits: sized for a loaded 2-core machine. */
export const WAIT_MS = 20_000;

export class WireConn {
  /** Frames received and not taken by next(). */
  readonly inbox: RxFrame[] = [];
  /** Every frame ever received, counted by name. */
  readonly counts = new Map<string, number>();
  received = 0;
  /** When set, frames go here instead of the inbox (the honest pair, floods). */
  onFrame: ((f: RxFrame) => void) | undefined;
  closeInfo: CloseInfo | undefined;
  readonly closed: Promise<CloseInfo>;
  private markClosed!: (c: CloseInfo) => void;
  private waiters = new Set<() => void>();
  private readonly splitter = new FrameSplitter();
  /** Set once the handshake is done. */
  welcome: Welcome | undefined;
  identity: Identity | undefined;
  socket: Socket | undefined;
  ws: WebSocket | undefined;
  /** Garbage the relay sent that the splitter refused. */
  parseError: string | undefined;

  private constructor(readonly transport: 'ws' | 'tcp') {
    this.closed = new Promise((resolve) => {
      this.markClosed = resolve;
    });
  }

  static async tcp(host: string, port: number, opts: ConnectOptions = {}): Promise<WireConn> {
    const c = new WireConn('tcp');
    const sock = netConnect({ host, port, localAddress: opts.localAddress });
    c.socket = sock;
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => c.receive(d));
    sock.on('close', () => c.onClose({ at: performance.now() }));
    sock.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', () => resolve());
      sock.once('error', reject);
    });
    return c;
  }

  static async ws(url: string, opts: ConnectOptions = {}): Promise<WireConn> {
    const c = new WireConn('ws');
    const protocol = opts.protocol === undefined ? WS_SUBPROTOCOL : opts.protocol;
    const ws = new WebSocket(url, protocol ?? [], {
      localAddress: opts.localAddress,
      maxPayload: opts.wsMaxPayload ?? 64 * 1024 * 1024,
      perMessageDeflate: opts.perMessageDeflate ?? false,
    });
    ws.binaryType = 'nodebuffer';
    c.ws = ws;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) c.parseError = `relay sent a text message: ${data.toString().slice(0, 80)}`;
      c.receive(data);
    });
    ws.on('close', (code: number, reason: Buffer) =>
      c.onClose({ code, reason: reason.toString(), at: performance.now() }),
    );
    ws.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) =>
        reject(Object.assign(new Error(`upgrade refused: HTTP ${res.statusCode}`), { status: res.statusCode })),
      );
      ws.once('error', reject);
    });
    return c;
  }

  private receive(chunk: Buffer): void {
    let frames: RxFrame[];
    try {
      frames = this.splitter.push(chunk);
    } catch (err) {
      this.parseError = String(err);
      return;
    }
    for (const f of frames) {
      this.received++;
      this.counts.set(f.name, (this.counts.get(f.name) ?? 0) + 1);
      if (this.onFrame !== undefined) this.onFrame(f);
      else this.inbox.push(f);
    }
    if (frames.length > 0) this.wake();
  }

  private onClose(info: CloseInfo): void {
    if (this.closeInfo !== undefined) return;
    this.closeInfo = info;
    this.markClosed(info);
    this.wake();
  }

  private wake(): void {
    const w = [...this.waiters];
    this.waiters.clear();
    for (const f of w) f();
  }

  get isClosed(): boolean {
    return this.closeInfo !== undefined;
  }

  /** Sends bytes as they are: one WebSocket message, or onto the TCP stream. */
  write(bytes: Uint8Array): void {
    if (this.isClosed) return;
    if (this.socket) this.socket.write(bytes);
    else this.ws!.send(bytes, { binary: true });
  }

  /** Writes and resolves when the transport has room again (for floods: backpressure from the relay). */
  async writeFlood(bytes: Uint8Array): Promise<void> {
    if (this.isClosed) return;
    if (this.socket) {
      if (this.socket.write(bytes)) return new Promise((r) => setImmediate(r));
      const sock = this.socket;
      return new Promise((resolve) => {
        const done = (): void => {
          sock.off('drain', done);
          sock.off('close', done);
          resolve();
        };
        sock.once('drain', done);
        sock.once('close', done);
      });
    }
    const ws = this.ws!;
    ws.send(bytes, { binary: true });
    while (ws.bufferedAmount > 4 * 1024 * 1024 && !this.isClosed) await new Promise((r) => setTimeout(r, 5));
    return new Promise((r) => setImmediate(r));
  }

  /** Stops reading (TCP: the socket; WebSocket: the underlying stream). */
  pause(): void {
    if (this.socket) this.socket.pause();
    else this.ws!.pause();
  }
  resume(): void {
    if (this.socket) this.socket.resume();
    else this.ws!.resume();
  }

  close(): void {
    if (this.socket) this.socket.destroy();
    else this.ws?.terminate();
  }

  /** Waits for a change (a frame or the close), at most `ms`. */
  private changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  /** Takes the first frame matching `pred` (a name or a predicate), waiting for it. */
  async next(pred: FrameName | ((f: RxFrame) => boolean), timeoutMs = WAIT_MS): Promise<RxFrame> {
    const match = typeof pred === 'string' ? (f: RxFrame) => f.type === T[pred] : pred;
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex(match);
      if (i >= 0) return this.inbox.splice(i, 1)[0]!;
      const left = deadline - performance.now();
      if (left <= 0 || this.isClosed) {
        // One last look: frames and the close can arrive in the same turn.
        const j = this.inbox.findIndex(match);
        if (j >= 0) return this.inbox.splice(j, 1)[0]!;
        throw new Error(
          `${typeof pred === 'string' ? pred : 'the expected frame'} did not arrive within ${timeoutMs} ms` +
            `${this.isClosed ? ' (connection closed)' : ''}; got: ${this.seen()}`,
        );
      }
      await this.changed(left);
    }
  }

  /** The ERROR with `code` (FATAL or not as asked), from the inbox or arriving. */
  async expectError(code: ErrorName, opts: { fatal?: boolean; timeoutMs?: number } = {}): Promise<Refusal> {
    const f = await this.next((x) => x.type === T.ERROR, opts.timeoutMs);
    const e = parseError(f.body);
    if (e.code !== E[code]) throw new Error(`expected ERROR ${code}, got ${describeFrame(f)}; then: ${this.seen()}`);
    if (opts.fatal !== undefined && ((e.flags & FLAG_FATAL) !== 0) !== opts.fatal) {
      throw new Error(`expected ERROR ${code} ${opts.fatal ? 'with' : 'without'} FATAL, got flags ${e.flags}`);
    }
    return e;
  }

  /** A fatal ERROR with `code`, then the close. */
  async expectFatal(code: ErrorName, timeoutMs = WAIT_MS): Promise<Refusal> {
    const e = await this.expectError(code, { fatal: true, timeoutMs });
    await this.waitClosed(timeoutMs);
    return e;
  }

  /** The NACK with `code` (and, when given, this message or request id). */
  async expectNack(code: ErrorName, id?: Uint8Array, timeoutMs = WAIT_MS): Promise<Refusal> {
    const f = await this.next(
      (x) => x.type === T.NACK && (id === undefined || Buffer.from(id).equals(x.body.subarray(0, 16))),
      timeoutMs,
    );
    const n = parseNack(f.body);
    if (n.code !== E[code]) throw new Error(`expected NACK ${code}, got ${describeFrame(f)}`);
    return n;
  }

  async waitClosed(timeoutMs = WAIT_MS): Promise<CloseInfo> {
    const t = performance.now();
    while (!this.isClosed && performance.now() - t < timeoutMs) await this.changed(timeoutMs);
    if (!this.isClosed) throw new Error(`the relay did not close the connection within ${timeoutMs} ms`);
    return this.closeInfo!;
  }

  /** Round trip: PING with fresh data, the matching PONG. */
  async ping(timeoutMs = WAIT_MS): Promise<number> {
    const data = randomBytes(8);
    const t = performance.now();
    this.write(frame.ping(data));
    await this.next((f) => f.type === T.PONG && f.body.equals(data), timeoutMs);
    return performance.now() - t;
  }

  /** Asserts nothing arrives (and the connection stays open) for `ms`. */
  async expectSilence(ms: number): Promise<void> {
    const before = this.received;
    await new Promise((r) => setTimeout(r, ms));
    if (this.received !== before) throw new Error(`expected silence, got: ${this.seen()}`);
    if (this.isClosed) throw new Error('expected silence, the connection was closed');
  }

  /** The frames in the inbox, for failure messages. */
  seen(): string {
    const shown = this.inbox.slice(0, 8).map(describeFrame);
    if (this.inbox.length > 8) shown.push(`… ${this.inbox.length - 8} more`);
    return `[${shown.join(', ')}]${this.parseError ? ` (${this.parseError})` : ''}`;
  }

  /** The binding the auth transcript names for this connection. */
  get binding(): string {
    return this.transport;
  }

  /** HELLO → CHALLENGE (returned). */
  async hello(minVersion = 2, maxVersion = 2, features = 0): Promise<RelayChallenge> {
    this.write(frame.hello(minVersion, maxVersion, features));
    return parseChallenge((await this.next('CHALLENGE')).body);
  }

  /** The whole honest handshake: HELLO, CHALLENGE, AUTH signed over the transcript, WELCOME. */
  async handshake(identity: Identity, opts: { didKey?: boolean } = {}): Promise<Welcome> {
    const ch = await this.hello();
    const sig = identity.sign(authTranscript(ch.nonce, ch.relayKey, this.binding));
    this.write(frame.auth(identity.publicKey, sig, opts.didKey ? identity.didKey : identity.did));
    const f = await this.next((x) => x.type === T.WELCOME || x.type === T.ERROR);
    if (f.type !== T.WELCOME) throw new Error(`handshake refused: ${describeFrame(f)}`);
    const welcome = parseWelcome(f.body);
    if (!welcome.hint.equals(identity.hint)) throw new Error('WELCOME names another hint than BLAKE3(key)[0..24]');
    this.welcome = welcome;
    this.identity = identity;
    return welcome;
  }

  /** An anonymous handshake: HELLO ANONYMOUS, ANON_CHALLENGE, a solved stamp, WELCOME. */
  async anonymousHandshake(): Promise<Welcome> {
    this.write(frame.hello(2, 2, FEATURE_ANONYMOUS));
    const ch = parseAnonChallenge((await this.next('ANON_CHALLENGE')).body);
    this.write(frame.anonAuth(await solvePowAsync(ch.nonce, ch.powBits)));
    const f = await this.next((x) => x.type === T.WELCOME || x.type === T.ERROR);
    if (f.type !== T.WELCOME) throw new Error(`anonymous handshake refused: ${describeFrame(f)}`);
    this.welcome = parseWelcome(f.body);
    return this.welcome;
  }

  /** A SEND from this (authenticated) connection. */
  send(dest: Uint8Array, opts: Partial<RoutedFields> = {}): Buffer {
    const messageId = opts.messageId ? Buffer.from(opts.messageId) : randomBytes(16);
    this.write(
      frame.send({
        dest,
        source: opts.source ?? this.welcome!.hint,
        sessionId: opts.sessionId,
        messageId,
        flags: opts.flags ?? 0,
        ttl: opts.ttl ?? 0,
        position: opts.position ?? 0,
        payload: opts.payload ?? Buffer.from('attack'),
      }),
    );
    return messageId;
  }
}

/** The HTTP status a WebSocket upgrade got (101 when it opened). */
export async function wsUpgradeStatus(url: string, opts: ConnectOptions = {}): Promise<number> {
  try {
    const c = await WireConn.ws(url, opts);
    c.close();
    return 101;
  } catch (err) {
    const status = (err as { status?: number }).status;
    if (status === undefined) throw err;
    return status;
  }
}
