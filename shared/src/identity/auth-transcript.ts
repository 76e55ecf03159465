/**
 * What a peer signs to authenticate to a relay (see docs/identity.md):
 *
 *   "libertaria-relay-auth/1" || 0x00 || nonce (32 bytes)
 *   || u8 len || relay identity (UTF-8, 1..255 bytes)
 *   || u8 len || transport binding (UTF-8, 1..255 bytes)
 *
 * The domain string keeps these signatures from being valid for any other
 * purpose, the nonce stops replay, the relay identity stops a relay from
 * forwarding a peer's signature to another relay, and the binding stops a
 * signature made on one transport from being replayed on another.
 *
 * This module is free of Node imports: browsers build the transcript too.
 */
import { IdentityError } from '../errors.js';

export const AUTH_DOMAIN = 'libertaria-relay-auth/1';
export const AUTH_NONCE_LENGTH = 32;
/** Relay identity and binding are length-prefixed with one byte. */
export const AUTH_MAX_FIELD_BYTES = 255;

export interface AuthParams {
  /** The relay's fresh random challenge; exactly 32 bytes. */
  nonce: Uint8Array;
  /** The relay the peer means to talk to (its DID or configured name). */
  relayIdentity: string;
  /** The transport the handshake runs over, e.g. "ws", "tcp", "tls". */
  binding: string;
}

const utf8 = new TextEncoder();
// ignoreBOM: a leading U+FEFF is content here, and must survive the round trip below.
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const DOMAIN_BYTES = utf8.encode(AUTH_DOMAIN);

/**
 * UTF-8 of a length-prefixed field. Lone surrogates are rejected because
 * TextEncoder would turn them into U+FFFD, letting two different strings sign
 * the same bytes.
 */
function encodeField(name: string, value: string): Uint8Array {
  if (typeof value !== 'string') throw new IdentityError('INVALID_AUTH_PARAMS', `auth ${name} must be a string`);
  const bytes = utf8.encode(value);
  if (utf8Decoder.decode(bytes) !== value) {
    throw new IdentityError('INVALID_AUTH_PARAMS', `auth ${name} is not well-formed Unicode`);
  }
  if (bytes.length < 1 || bytes.length > AUTH_MAX_FIELD_BYTES) {
    throw new IdentityError(
      'INVALID_AUTH_PARAMS',
      `auth ${name} must be 1..${AUTH_MAX_FIELD_BYTES} UTF-8 bytes, got ${bytes.length}`,
    );
  }
  return bytes;
}

/**
 * The bytes a peer signs. Throws IdentityError INVALID_AUTH_PARAMS when the params
 * cannot form a transcript (no signature over them could be valid); these come
 * from the relay's own side, so that is a programmer error.
 */
export function authTranscript({ nonce, relayIdentity, binding }: AuthParams): Uint8Array {
  if (!(nonce instanceof Uint8Array) || nonce.length !== AUTH_NONCE_LENGTH) {
    throw new IdentityError('INVALID_AUTH_PARAMS', `auth nonce must be exactly ${AUTH_NONCE_LENGTH} bytes`);
  }
  const relay = encodeField('relayIdentity', relayIdentity);
  const transport = encodeField('binding', binding);
  const out = new Uint8Array(DOMAIN_BYTES.length + 1 + nonce.length + 1 + relay.length + 1 + transport.length);
  let at = 0;
  out.set(DOMAIN_BYTES, at);
  at += DOMAIN_BYTES.length;
  out[at++] = 0x00;
  out.set(nonce, at);
  at += nonce.length;
  out[at++] = relay.length;
  out.set(relay, at);
  at += relay.length;
  out[at++] = transport.length;
  out.set(transport, at);
  return out;
}

export const MIGRATE_DOMAIN = 'libertaria-migrate/1';
const MIGRATE_DOMAIN_BYTES = utf8.encode(MIGRATE_DOMAIN);

/**
 * What a peer signs in MIGRATE (docs/protocol.md#0x15-migrate):
 * "libertaria-migrate/1" ‖ 0x00 ‖ new connection id (16) ‖ previous connection id (16).
 * The new id is fresh per connection, so a proof is good on one connection only.
 */
export function migrationTranscript(newConnectionId: Uint8Array, previousConnectionId: Uint8Array): Uint8Array {
  if (newConnectionId.length !== 16 || previousConnectionId.length !== 16) {
    throw new IdentityError('INVALID_AUTH_PARAMS', 'connection ids are 16 bytes');
  }
  const out = new Uint8Array(MIGRATE_DOMAIN_BYTES.length + 1 + 32);
  out.set(MIGRATE_DOMAIN_BYTES, 0);
  out.set(newConnectionId, MIGRATE_DOMAIN_BYTES.length + 1);
  out.set(previousConnectionId, MIGRATE_DOMAIN_BYTES.length + 17);
  return out;
}
