/**
 * Foreign identities: the far end of a federated session, addressed by URI.
 *
 *   nostr:npub1…             NIP-21 URI of a NIP-19 public key (lowercase bech32, 32-byte x-only
 *                            secp256k1 key that lies on the curve)
 *   acct:user@host           RFC 7565 account, resolved by WebFinger (ActivityPub)
 *   https://host/path        an ActivityPub actor by its id (http:// too: the bridge
 *                            takes it only in its test mode), fetched directly
 *   xmtp:0x<40 hex>          XMTP account by Ethereum address
 *   xmtp:<64 hex>            XMTP inbox id
 *
 * Parsing is strict and canonical: `formatForeignIdentity(parse(uri))` gives
 * the canonical URI (hosts and hex lowercased), so two spellings of one
 * identity compare equal by `uri`. Every rejection is a ForeignIdentityError
 * with code FOREIGN_IDENTITY_INVALID (malformed) or
 * FOREIGN_PROTOCOL_UNSUPPORTED (a scheme no bridge serves).
 */

import { toHex } from '@libertaria/protocol';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { bech32 } from '@scure/base';
import { ForeignIdentityError } from './errors.js';

/** Longest URI accepted: bounds the work (bech32, regexes) a hostile string can cause. */
export const MAX_FOREIGN_URI_LENGTH = 320;
/** RFC 1035: a host name is at most 253 characters. */
const MAX_HOST_LENGTH = 253;
/** A generous bound for the local part of an account; Mastodon allows 30. */
const MAX_ACCT_USER_LENGTH = 64;

export type ForeignIdentity =
  | { readonly type: 'nostr'; readonly uri: string; readonly npub: string; readonly pubkeyHex: string }
  | {
      readonly type: 'activitypub';
      /** `acct`: an account found by WebFinger; `actor`: an actor document's URL (its id), fetched as is. */
      readonly kind: 'acct';
      readonly uri: string;
      readonly user: string;
      readonly host: string;
    }
  | { readonly type: 'activitypub'; readonly kind: 'actor'; readonly uri: string; readonly host: string }
  | { readonly type: 'xmtp'; readonly uri: string; readonly kind: 'address' | 'inbox'; readonly value: string }
  | { readonly type: 'custom'; readonly uri: string; readonly scheme: string; readonly opaque: string };

export type ForeignIdentityType = ForeignIdentity['type'];

export interface ParseForeignIdentityOptions {
  /**
   * Extra URI schemes (lowercase, without the colon) accepted as `custom`
   * identities: the scheme of a Custom bridge. Their part after the colon is
   * only checked to be 1 to 256 printable ASCII characters without spaces.
   */
  readonly customSchemes?: readonly string[];
}

function invalid(uri: string, why: string): ForeignIdentityError {
  // JSON quoting: a hostile URI must not forge log lines through the message.
  return new ForeignIdentityError('FOREIGN_IDENTITY_INVALID', `${JSON.stringify(uri)}: ${why}`);
}

const NPUB = /^npub1[02-9ac-hj-np-z]{58}$/;
const ACCT_USER = /^[A-Za-z0-9._~-]+$/;
const HOST_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const PORT = /^[1-9][0-9]{0,4}$/;
const ETH_ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const INBOX_ID = /^[0-9a-fA-F]{64}$/;
const CUSTOM_SCHEME = /^[a-z][a-z0-9+.-]{0,31}$/;
const CUSTOM_OPAQUE = /^[\x21-\x7E]{1,256}$/;

/** The 32-byte x-only key of an npub, checked to be a point on secp256k1 (BIP-340 lift_x). */
export function decodeNpub(npub: string): Uint8Array {
  if (!NPUB.test(npub)) throw invalid(npub, 'expected npub1 followed by 58 lowercase bech32 characters');
  let decoded: { prefix: string; words: number[] };
  try {
    decoded = bech32.decode(npub as `${string}1${string}`, 90);
  } catch (err) {
    throw invalid(npub, `bad bech32 (${(err as Error).message})`);
  }
  const key = bech32.fromWords(decoded.words);
  if (decoded.prefix !== 'npub' || key.length !== 32) throw invalid(npub, 'an npub holds exactly 32 bytes');
  try {
    // A key off the curve would make every message to it undeliverable: refuse it here, not at send time.
    secp256k1.Point.fromHex(`02${toHex(key)}`);
  } catch {
    throw invalid(npub, 'the key is not a point on secp256k1');
  }
  return key;
}

/** The npub of a 32-byte x-only public key (hex or bytes). */
export function encodeNpub(pubkey: Uint8Array | string): string {
  const bytes = typeof pubkey === 'string' ? hexToBytes32(pubkey) : pubkey;
  if (bytes.length !== 32) throw invalid(String(pubkey), 'a Nostr public key is 32 bytes');
  return bech32.encode('npub', bech32.toWords(bytes), 90);
}

function hexToBytes32(hex: string): Uint8Array {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw invalid(hex, 'a Nostr public key is 64 hex digits');
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}

/** The foreign identity of a Nostr public key given as 64 hex digits or bytes. */
export function nostrIdentity(pubkey: Uint8Array | string): ForeignIdentity & { type: 'nostr' } {
  const npub = encodeNpub(pubkey);
  const key = decodeNpub(npub);
  return { type: 'nostr', uri: `nostr:${npub}`, npub, pubkeyHex: toHex(key) };
}

function parseHost(uri: string, hostPort: string): string {
  const colon = hostPort.lastIndexOf(':');
  const host = (colon >= 0 ? hostPort.slice(0, colon) : hostPort).toLowerCase();
  const port = colon >= 0 ? hostPort.slice(colon + 1) : undefined;
  if (port !== undefined && (!PORT.test(port) || Number(port) > 65535)) throw invalid(uri, 'bad port');
  if (host.length === 0 || host.length > MAX_HOST_LENGTH) throw invalid(uri, 'the host is empty or too long');
  if (!host.split('.').every((label) => HOST_LABEL.test(label))) throw invalid(uri, 'the host is not a DNS name');
  return port === undefined ? host : `${host}:${port}`;
}

/**
 * An ActivityPub actor named by its id: an http(s) URL with a DNS host (or
 * IPv4 address), a path, and no user info or fragment. Canonical as the WHATWG
 * URL parser writes it (scheme and host lowercased, default port dropped).
 */
function parseActorUrl(uri: string): ForeignIdentity {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw invalid(uri, 'not a URL');
  }
  if (url.username !== '' || url.password !== '') throw invalid(uri, 'an actor URL carries no user or password');
  if (url.hash !== '') throw invalid(uri, 'an actor URL has no fragment');
  if (url.pathname === '/' || url.pathname === '') throw invalid(uri, 'an actor URL has a path');
  const host = parseHost(uri, url.host);
  const canonical = url.href;
  if (canonical.length > MAX_FOREIGN_URI_LENGTH) throw invalid(uri.slice(0, 40), 'the canonical URL is too long');
  return { type: 'activitypub', kind: 'actor', uri: canonical, host };
}

/** Parses and canonicalizes a foreign identity URI. */
export function parseForeignIdentity(uri: string, options: ParseForeignIdentityOptions = {}): ForeignIdentity {
  if (typeof uri !== 'string') throw invalid(String(uri), 'a foreign identity is a string');
  if (uri.length > MAX_FOREIGN_URI_LENGTH) {
    throw invalid(uri.slice(0, 40), `longer than ${MAX_FOREIGN_URI_LENGTH} characters`);
  }
  const colon = uri.indexOf(':');
  if (colon <= 0) throw invalid(uri, 'expected <scheme>:<identifier>');
  const scheme = uri.slice(0, colon).toLowerCase();
  const rest = uri.slice(colon + 1);
  switch (scheme) {
    case 'nostr': {
      if (rest.startsWith('nprofile1') || rest.startsWith('nevent1') || rest.startsWith('naddr1')) {
        throw invalid(uri, 'only nostr:npub1… names a person a message can be sent to');
      }
      const key = decodeNpub(rest);
      return { type: 'nostr', uri: `nostr:${rest}`, npub: rest, pubkeyHex: toHex(key) };
    }
    case 'acct': {
      const at = rest.lastIndexOf('@');
      if (at <= 0) throw invalid(uri, 'expected acct:user@host');
      const user = rest.slice(0, at);
      if (user.length > MAX_ACCT_USER_LENGTH || !ACCT_USER.test(user)) {
        throw invalid(uri, `the user is 1 to ${MAX_ACCT_USER_LENGTH} of A-Z a-z 0-9 . _ ~ -`);
      }
      const host = parseHost(uri, rest.slice(at + 1));
      return { type: 'activitypub', kind: 'acct', uri: `acct:${user}@${host}`, user, host };
    }
    case 'https':
    case 'http':
      return parseActorUrl(uri);
    case 'xmtp': {
      if (ETH_ADDRESS.test(rest)) {
        const value = rest.toLowerCase();
        return { type: 'xmtp', uri: `xmtp:${value}`, kind: 'address', value };
      }
      if (INBOX_ID.test(rest)) {
        const value = rest.toLowerCase();
        return { type: 'xmtp', uri: `xmtp:${value}`, kind: 'inbox', value };
      }
      throw invalid(uri, 'expected xmtp:0x<40 hex digits> (address) or xmtp:<64 hex digits> (inbox id)');
    }
    default: {
      if (options.customSchemes?.includes(scheme) && CUSTOM_SCHEME.test(scheme)) {
        if (!CUSTOM_OPAQUE.test(rest)) throw invalid(uri, 'the identifier is 1 to 256 printable characters');
        return { type: 'custom', uri: `${scheme}:${rest}`, scheme, opaque: rest };
      }
      throw new ForeignIdentityError(
        'FOREIGN_PROTOCOL_UNSUPPORTED',
        `${JSON.stringify(uri.slice(0, 40))}: no bridge serves the scheme ${JSON.stringify(scheme.slice(0, 32))}`,
      );
    }
  }
}

/** The canonical URI of an identity. */
export function formatForeignIdentity(identity: ForeignIdentity): string {
  return identity.uri;
}

/** True when the string parses as a foreign identity (never throws). */
export function isForeignIdentity(uri: string, options?: ParseForeignIdentityOptions): boolean {
  try {
    parseForeignIdentity(uri, options);
    return true;
  } catch {
    return false;
  }
}
