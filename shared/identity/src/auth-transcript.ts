/**
 * The relay handshake's two signatures (protocol version 2, docs/identity.md#relay-authentication-transcript):
 *
 *   relay, in CHALLENGE:  "libertaria-relay-challenge/2" || 0x00
 *       || client nonce (32) || relay nonce (32) || relay public key (32)
 *       || u8 len || transport binding || u8 len || channel binding (0 or 32 bytes)
 *   peer, in AUTH:        "libertaria-relay-auth/2" || 0x00
 *       || relay nonce (32) || client nonce (32) || relay public key (32)
 *       || u8 len || transport binding || u8 len || channel binding
 *
 * The domain strings keep the two apart (a relay's signature is never a
 * peer's, nor valid for any other purpose). The relay's signature over the
 * client's fresh nonce proves that the holder of the relay key answers now;
 * the peer's signature names that key, so it is good only at the relay
 * holding it: a relay that passes another relay's CHALLENGE through cannot
 * forge that relay's signature over the client's nonce under its own key,
 * and a client that signs for the key it was shown gives the forwarder
 * nothing it can use anywhere else. The relay nonce stops replay; the
 * transport binding cross-transport replay; the channel binding (the TLS
 * exporter of RFC 9266, 32 bytes, when the relay terminates TLS itself)
 * binds both signatures to the one TLS connection, so even a pass-through
 * between two TLS connections fails.
 *
 * This module is free of Node imports: browsers build the transcripts too.
 */
import { IdentityError } from '@libertaria/protocol';

export const AUTH_DOMAIN = 'libertaria-relay-auth/2';
export const CHALLENGE_DOMAIN = 'libertaria-relay-challenge/2';
export const AUTH_NONCE_LENGTH = 32;
/** The binding is length-prefixed with one byte. */
export const AUTH_MAX_FIELD_BYTES = 255;
export const RELAY_KEY_LENGTH = 32;
/** RFC 9266 tls-exporter: 32 bytes of the label below, no context. */
export const TLS_EXPORTER_LABEL = 'EXPORTER-Channel-Binding';
export const CHANNEL_BINDING_LENGTH = 32;

export interface AuthParams {
  /** The relay's fresh random challenge (CHALLENGE.nonce); exactly 32 bytes. */
  relayNonce: Uint8Array;
  /** The client's fresh random nonce (HELLO.clientNonce); exactly 32 bytes. */
  clientNonce: Uint8Array;
  /** The relay's raw Ed25519 public key (CHALLENGE.relayKey): the relay the peer means to talk to. */
  relayKey: Uint8Array;
  /** The transport the handshake runs over: "ws", "tcp" or "tls". */
  binding: string;
  /** The TLS exporter (32 bytes) when the relay terminates TLS itself (tls://); absent or empty otherwise. */
  channelBinding?: Uint8Array | undefined;
}

const utf8 = new TextEncoder();
// ignoreBOM: a leading U+FEFF is content here, and must survive the round trip below.
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const DOMAIN_BYTES = utf8.encode(AUTH_DOMAIN);
const CHALLENGE_DOMAIN_BYTES = utf8.encode(CHALLENGE_DOMAIN);

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

function exactly(bytes: unknown, n: number, name: string): Uint8Array {
  if (!(bytes instanceof Uint8Array) || bytes.length !== n) {
    throw new IdentityError('INVALID_AUTH_PARAMS', `auth ${name} must be exactly ${n} bytes`);
  }
  return bytes;
}

function transcript(domain: Uint8Array, first: Uint8Array, second: Uint8Array, params: AuthParams): Uint8Array {
  const key = exactly(params.relayKey, RELAY_KEY_LENGTH, 'relayKey');
  const transport = encodeField('binding', params.binding);
  const channel = params.channelBinding ?? new Uint8Array(0);
  if (!(channel instanceof Uint8Array) || (channel.length !== 0 && channel.length !== CHANNEL_BINDING_LENGTH)) {
    throw new IdentityError(
      'INVALID_AUTH_PARAMS',
      `auth channelBinding must be empty or ${CHANNEL_BINDING_LENGTH} bytes`,
    );
  }
  const out = new Uint8Array(domain.length + 1 + 32 + 32 + 32 + 1 + transport.length + 1 + channel.length);
  let at = 0;
  out.set(domain, at);
  at += domain.length;
  out[at++] = 0x00;
  out.set(first, at);
  at += 32;
  out.set(second, at);
  at += 32;
  out.set(key, at);
  at += 32;
  out[at++] = transport.length;
  out.set(transport, at);
  at += transport.length;
  out[at++] = channel.length;
  out.set(channel, at);
  return out;
}

/**
 * The bytes a peer signs in AUTH. Throws IdentityError INVALID_AUTH_PARAMS when
 * the params cannot form a transcript (no signature over them could be valid);
 * the relay builds them from its own side, so that is a programmer error there.
 */
export function authTranscript(params: AuthParams): Uint8Array {
  const relayNonce = exactly(params.relayNonce, AUTH_NONCE_LENGTH, 'relayNonce');
  const clientNonce = exactly(params.clientNonce, AUTH_NONCE_LENGTH, 'clientNonce');
  return transcript(DOMAIN_BYTES, relayNonce, clientNonce, params);
}

/** The bytes a relay signs in CHALLENGE (same inputs, its own domain, the client's nonce first). */
export function relayChallengeTranscript(params: AuthParams): Uint8Array {
  const relayNonce = exactly(params.relayNonce, AUTH_NONCE_LENGTH, 'relayNonce');
  const clientNonce = exactly(params.clientNonce, AUTH_NONCE_LENGTH, 'clientNonce');
  return transcript(CHALLENGE_DOMAIN_BYTES, clientNonce, relayNonce, params);
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
