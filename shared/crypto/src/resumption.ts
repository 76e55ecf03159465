/**
 * 0-RTT resumption: a peer that holds an established session can send a
 * first flight without a new handshake, sealed under a single-use PSK.
 *
 *   RS        = HKDF(salt = zero, ikm = SK, info = "Libertaria_Resumption_Secret"), 32 bytes,
 *               computed by both ends at PQXDH time and kept in the session state
 *   ticket i of direction d (0 = initiator sends, 1 = responder sends):
 *   ticketId  = HKDF(salt = zero, ikm = RS, info = "Libertaria_0RTT_TicketId" ‖ u8 d ‖ u32 i), 16 bytes
 *   PSK       = HKDF(salt = zero, ikm = RS, info = "Libertaria_0RTT_PSK" ‖ u8 d ‖ u32 i), 32 bytes
 *
 * The sender takes the next unused index (the counter is part of the
 * serialized session, so an index is never issued twice); the receiver
 * derives the same ids for the peer's direction and looks them up.
 *
 * 0-RTT message, version 1 (integers big-endian):
 *
 *   0   u8    version (1)
 *   1   16    ticket id
 *   17  u64   sent-at time, milliseconds since the Unix epoch
 *   25  16    random salt
 *   41  ...   ChaCha20-Poly1305 ciphertext ‖ tag, under
 *             key ‖ nonce = HKDF(salt = salt, ikm = PSK, info = "Libertaria_0RTT_Keys"), 32 + 12 bytes,
 *             AD = session AD ‖ bytes 0..40
 *
 * The PSK is meant for one message, so a fixed nonce would do; the random
 * salt is there so that even a ticket sealed twice by mistake (say a session
 * restored from an old backup) never reuses a key and nonce.
 *
 * Caveats (docs/crypto.md): 0-RTT data has no forward secrecy against a
 * compromise of RS (i.e. of the stored session state), unlike ratchet
 * messages; and replay is refused only by the TicketStore (each ticket id
 * accepted once) plus the freshness window, which must not exceed the
 * store's retention.
 */
import { ProtocolError } from '@libertaria/protocol';
import { ByteReader, ByteWriter, concatBytes, toHex, u32be, wipe } from './bytes.js';
import { AEAD_TAG_SIZE, type CryptoProvider } from './crypto-provider.js';
import { SessionError } from './errors.js';
import { aeadKeys, info, TICKET_ID_INFO, TICKET_PSK_INFO, ZERO_RTT_KEYS_INFO, ZERO_SALT } from './kdf.js';
import type { TicketStore } from './ticket-store.js';

export const ZERO_RTT_VERSION = 1;
export const TICKET_ID_SIZE = 16;
export const ZERO_RTT_SALT_SIZE = 16;
export const ZERO_RTT_HEADER_SIZE = 1 + TICKET_ID_SIZE + 8 + ZERO_RTT_SALT_SIZE;
/** Default freshness window of a 0-RTT message; the TicketStore must remember ids at least this long (plus skew). */
export const DEFAULT_ZERO_RTT_MAX_AGE_MS = 5 * 60 * 1000;
/** Default tolerated clock skew for a sent-at time in the future. */
export const DEFAULT_ZERO_RTT_SKEW_MS = 30 * 1000;

export type TicketDirection = 0 | 1;

/** What one side holds to send (or, on the receiving side, to open) one 0-RTT message. */
export interface ResumptionTicket {
  ticketId: Uint8Array;
  psk: Uint8Array;
  /** The session AD (both identities), bound into the 0-RTT message. */
  ad: Uint8Array;
  sessionId: Uint8Array;
  direction: TicketDirection;
  index: number;
  /** Milliseconds since the epoch after which the sender will not use it. */
  expiresAt: number;
}

function ticketInfo(label: string, direction: TicketDirection, index: number): Uint8Array {
  return concatBytes(info(label), Uint8Array.of(direction), u32be(index));
}

export function deriveTicketId(
  p: CryptoProvider,
  rs: Uint8Array,
  direction: TicketDirection,
  index: number,
): Uint8Array {
  return p.hkdf(rs, ZERO_SALT, ticketInfo(TICKET_ID_INFO, direction, index), TICKET_ID_SIZE);
}

export function deriveTicketPsk(
  p: CryptoProvider,
  rs: Uint8Array,
  direction: TicketDirection,
  index: number,
): Uint8Array {
  return p.hkdf(rs, ZERO_SALT, ticketInfo(TICKET_PSK_INFO, direction, index), 32);
}

export interface ZeroRttMessage {
  ticketId: Uint8Array;
  sentAt: number;
  salt: Uint8Array;
  headerBytes: Uint8Array;
  sealed: Uint8Array;
}

export function decodeZeroRttMessage(bytes: Uint8Array): ZeroRttMessage {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError('BAD_FIELD', '0-RTT message: not bytes');
  const r = new ByteReader(bytes, '0-RTT message');
  const version = r.u8('version');
  if (version !== ZERO_RTT_VERSION) {
    throw new ProtocolError('UNSUPPORTED_VERSION', `0-RTT message: version ${version} is not supported`);
  }
  const ticketId = r.bytesN(TICKET_ID_SIZE, 'ticket id');
  const sentAt = r.u64('sent-at time');
  const salt = r.bytesN(ZERO_RTT_SALT_SIZE, 'salt');
  if (r.remaining < AEAD_TAG_SIZE)
    throw new ProtocolError('TRUNCATED', '0-RTT message: ciphertext shorter than its tag');
  const sealed = r.rest();
  return { ticketId, sentAt, salt, headerBytes: bytes.slice(0, ZERO_RTT_HEADER_SIZE), sealed };
}

export interface Seal0RttOptions {
  now?: number;
}

const spent = new WeakSet<ResumptionTicket>();

/**
 * Seals `payload` as one 0-RTT message. A ticket object seals once: it is
 * marked spent and its PSK wiped, and a second call throws SESSION_EXPIRED.
 */
export function seal0Rtt(
  p: CryptoProvider,
  ticket: ResumptionTicket,
  payload: Uint8Array,
  options: Seal0RttOptions = {},
): Uint8Array {
  const now = options.now ?? Date.now();
  if (spent.has(ticket)) throw new SessionError('SESSION_EXPIRED', 'this 0-RTT ticket was already used');
  if (now > ticket.expiresAt) throw new SessionError('SESSION_EXPIRED', 'this 0-RTT ticket has expired');
  spent.add(ticket);
  const salt = p.randomBytes(ZERO_RTT_SALT_SIZE);
  const headerBytes = new ByteWriter(ZERO_RTT_HEADER_SIZE)
    .u8(ZERO_RTT_VERSION)
    .raw(ticket.ticketId)
    .u64(now)
    .raw(salt)
    .done();
  const { key, nonce } = aeadKeys(p, ticket.psk, ZERO_RTT_KEYS_INFO, salt);
  wipe(ticket.psk);
  try {
    const sealed = p.aeadSeal(key, nonce, payload, concatBytes(ticket.ad, headerBytes));
    return concatBytes(headerBytes, sealed);
  } finally {
    wipe(key, nonce);
  }
}

export interface Open0RttParams {
  provider: CryptoProvider;
  message: Uint8Array;
  /** Finds the ticket for an id, e.g. PersistentSession.resumptionTicketFor (or a lookup across sessions). */
  resolve: (ticketId: Uint8Array) => ResumptionTicket | undefined | Promise<ResumptionTicket | undefined>;
  /** Refuses a ticket id seen before (the relay cluster plugs Redis in here). */
  store: TicketStore;
  now?: number;
  /** Freshness window; must not exceed the store's retention. */
  maxAgeMs?: number;
  skewMs?: number;
}

export interface Opened0Rtt {
  payload: Uint8Array;
  ticket: ResumptionTicket;
  sentAt: number;
}

/**
 * Opens a 0-RTT message: TICKET_UNKNOWN if no ticket has its id,
 * SESSION_EXPIRED outside the freshness window, DECRYPT_FAILED if it does not
 * authenticate, REPLAYED if the store has seen the id. The store is asked
 * only after the message authenticates, so forgeries cannot burn tickets.
 */
export async function open0Rtt(params: Open0RttParams): Promise<Opened0Rtt> {
  const p = params.provider;
  const m = decodeZeroRttMessage(params.message);
  const ticket = await params.resolve(m.ticketId);
  if (ticket === undefined) {
    throw new SessionError('TICKET_UNKNOWN', `0-RTT ticket ${toHex(m.ticketId)} is not one of this session's`);
  }
  const now = params.now ?? Date.now();
  const maxAge = params.maxAgeMs ?? DEFAULT_ZERO_RTT_MAX_AGE_MS;
  const skew = params.skewMs ?? DEFAULT_ZERO_RTT_SKEW_MS;
  if (m.sentAt > now + skew || now - m.sentAt > maxAge) {
    throw new SessionError('SESSION_EXPIRED', '0-RTT message is outside the freshness window');
  }
  const { key, nonce } = aeadKeys(p, ticket.psk, ZERO_RTT_KEYS_INFO, m.salt);
  let payload: Uint8Array;
  try {
    payload = p.aeadOpen(key, nonce, m.sealed, concatBytes(ticket.ad, m.headerBytes));
  } finally {
    wipe(key, nonce);
  }
  if (!(await params.store.consumeOnce(m.ticketId))) {
    wipe(payload);
    throw new SessionError('REPLAYED', `0-RTT ticket ${toHex(m.ticketId)} was already used`);
  }
  return { payload, ticket, sentAt: m.sentAt };
}
