/**
 * NIP-05: `name@domain` names for bridged keys, served as
 * `GET /.well-known/nostr.json?name=<name>` →
 *   { "names": { "<name>": "<hex pubkey>" }, "relays": { "<hex pubkey>": ["wss://…"] } }
 * NIP-05 asks for CORS `*` (web clients fetch it cross-origin) and no redirects.
 */
import { BridgeError } from '@libertaria/bridge-kit';

/** NIP-05 local parts are a-z0-9-_. ; we bound them to 64 characters. */
const NAME = /^[a-z0-9._-]{1,64}$/;

export function validateNip05Name(name: string): void {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new BridgeError(
      'BRIDGE_NAME_INVALID',
      `${JSON.stringify(String(name).slice(0, 80))} is not 1-64 of a-z, 0-9, dot, dash or underscore`,
    );
  }
}

export interface Nip05Entry {
  readonly name: string;
  readonly pubkey: string;
}

export interface Nip05Document {
  names: Record<string, string>;
  relays: Record<string, string[]>;
}

/**
 * The document for one query. An unknown or invalid name gives empty maps
 * (clients treat that as "not verified"); listing every name at once is not
 * offered, so the bridge does not publish its whole directory.
 */
export function nip05Document(entry: Nip05Entry | undefined, relays: readonly string[]): Nip05Document {
  if (!entry) return { names: {}, relays: {} };
  return { names: { [entry.name]: entry.pubkey }, relays: { [entry.pubkey]: [...relays] } };
}
