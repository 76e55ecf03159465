/**
 * Relay URLs. A relay listens on WebSocket (ws://, wss://) and raw TCP
 * (tcp://, tls://); the scheme picks the transport and the transport binding
 * that goes into the auth transcript (docs/identity.md): "ws" for ws and
 * wss, "tcp" for tcp, "tls" for tls. A fragment names the DID the relay must
 * prove in CHALLENGE (`ws://relay.example:8080#did:libertaria:z…`).
 */

import { parseDid } from '@libertaria/identity';
import { LibertariaError, RelayError } from '@libertaria/protocol';
import { ClientErrorCode } from './codes.js';

export type RelayScheme = 'ws' | 'wss' | 'tcp' | 'tls';
export type TransportBinding = 'ws' | 'tcp' | 'tls';

export interface RelayUrl {
  /** Normalized URL: what logs, events and failover lists use. */
  readonly href: string;
  readonly scheme: RelayScheme;
  /** Host name or IP address, without the brackets of an IPv6 literal. */
  readonly host: string;
  readonly port: number;
  /** WebSocket path and query ("/" when the URL has none); "" for tcp and tls. */
  readonly path: string;
  /** What the auth transcript binds the signature to. */
  readonly binding: TransportBinding;
  /** Whether the transport is encrypted (wss, tls). */
  readonly secure: boolean;
  /** The relay DID given as the URL's fragment: the key the relay must prove (RELAY_IDENTITY_MISMATCH otherwise). */
  readonly expectedDid?: string;
}

/** The URL as text again, with its expected DID as the fragment. */
export function relayUrlText(url: RelayUrl): string {
  return url.expectedDid === undefined ? url.href : `${url.href}#${url.expectedDid}`;
}

const BINDING: Record<RelayScheme, TransportBinding> = { ws: 'ws', wss: 'ws', tcp: 'tcp', tls: 'tls' };
const DEFAULT_PORT: Partial<Record<RelayScheme, number>> = { ws: 80, wss: 443 };

function invalid(text: string, problem: string): never {
  // JSON-quoted so a hostile value cannot forge log lines through the message.
  throw new RelayError(ClientErrorCode.invalidUrl, `relay URL ${JSON.stringify(text)}: ${problem}`);
}

function isScheme(value: string): value is RelayScheme {
  return Object.hasOwn(BINDING, value);
}

/**
 * Parses one relay URL. Throws RelayError (code INVALID_RELAY_URL, see codes.ts)
 * for anything that cannot be connected to: another scheme, credentials, a
 * missing host, a missing port on tcp:// or tls:// (raw TCP has no default
 * port), port 0, a fragment that is not a DID, or a path on tcp:// or tls://.
 */
export function parseRelayUrl(text: string): RelayUrl {
  if (typeof text !== 'string' || text.length === 0) invalid(String(text), 'is empty');
  if (text.length > 2048) invalid(text.slice(0, 64), 'is longer than 2048 characters');
  if (/\s/.test(text)) invalid(text, 'contains white space');
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    invalid(text, 'is not a valid URL');
  }
  const scheme = url.protocol.slice(0, -1).toLowerCase();
  if (!isScheme(scheme)) invalid(text, `scheme "${scheme}" is not one of ws, wss, tcp, tls`);
  if (url.username !== '' || url.password !== '') invalid(text, 'must not carry credentials');
  let expectedDid: string | undefined;
  if (url.hash !== '') {
    let did = '';
    try {
      did = decodeURIComponent(url.hash.slice(1));
      parseDid(did);
    } catch (error) {
      invalid(
        text,
        `fragment must be the relay's DID (${error instanceof LibertariaError ? error.message : String(error)})`,
      );
    }
    expectedDid = did;
  }
  const pin = expectedDid === undefined ? {} : { expectedDid };
  // Non-special schemes (tcp, tls) keep the host's case; DNS names are case-insensitive.
  const rawHost = url.hostname.toLowerCase();
  if (rawHost === '') invalid(text, 'has no host');
  const host = rawHost.startsWith('[') && rawHost.endsWith(']') ? rawHost.slice(1, -1) : rawHost;
  let port: number;
  if (url.port === '') {
    const fallback = DEFAULT_PORT[scheme];
    if (fallback === undefined) invalid(text, `${scheme}:// needs an explicit port`);
    port = fallback;
  } else {
    port = Number(url.port);
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) invalid(text, 'port must be 1..65535');
  const hostPart = host.includes(':') ? `[${host}]` : host;
  if (scheme === 'tcp' || scheme === 'tls') {
    if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '') {
      invalid(text, `${scheme}:// takes no path or query`);
    }
    return {
      href: `${scheme}://${hostPart}:${port}`,
      scheme,
      host,
      port,
      path: '',
      binding: BINDING[scheme],
      secure: scheme === 'tls',
      ...pin,
    };
  }
  // A WebSocket URL without a path connects to "/" (the URL parser already gives "/").
  const path = `${url.pathname || '/'}${url.search}`;
  return {
    href: `${scheme}://${hostPart}:${port}${path}`,
    scheme,
    host,
    port,
    path,
    binding: BINDING[scheme],
    secure: scheme === 'wss',
    ...pin,
  };
}

/**
 * Parses a failover list: an array of URLs, or one string of comma-separated
 * URLs (the CLI's --relay and GOAWAY's reconnect hint). Duplicates are
 * dropped, keeping the first; an empty list is an error.
 */
export function parseRelayUrls(list: string | readonly string[]): RelayUrl[] {
  const items = typeof list === 'string' ? list.split(',') : list;
  const out: RelayUrl[] = [];
  const seen = new Set<string>();
  for (const item of items) {
    const url = parseRelayUrl(typeof item === 'string' ? item.trim() : item);
    if (seen.has(url.href)) continue;
    seen.add(url.href);
    out.push(url);
  }
  if (out.length === 0) throw new RelayError(ClientErrorCode.invalidUrl, 'no relay URL given');
  return out;
}
