/**
 * Which relay key RelayClient accepts for a relay URL (docs/client.md#relay-identity):
 * the DID in the URL's fragment, else the client's expectRelayDid, else the
 * key pinned for the URL on first use (relay-pins.ts); and the pinning itself
 * after a handshake.
 *
 * Browser-safe: no Node-only imports.
 */
import type { ClientLogger } from './client-types.js';
import { toError, toLibertariaError } from './codes.js';
import type { RelayExpectation } from './handshake.js';
import type { RelayPinStore } from './relay-pins.js';
import { type RelayUrl, relayUrlText } from './url.js';

/** The key `url`'s relay must prove: its fragment, then expectRelayDid, then a pin from first use. */
export async function relayExpectation(
  url: RelayUrl,
  expectRelayDid: string | undefined,
  pins: RelayPinStore | undefined,
): Promise<RelayExpectation | undefined> {
  if (url.expectedDid !== undefined) return { did: url.expectedDid, source: `the relay URL (${relayUrlText(url)})` };
  if (expectRelayDid !== undefined) return { did: expectRelayDid, source: 'expectRelayDid' };
  const pin = await pins?.get(url.href).catch((error: unknown) => {
    throw toLibertariaError(error, `relay pins (${pins.location})`, 'CONFIG_INVALID');
  });
  if (pins === undefined || pin === undefined) return undefined;
  return {
    did: pin.did,
    source: `the key pinned for it on first use (${pin.since}, in ${pins.location})`,
    advice:
      `The relay's key changed. If its operator replaced the key, remove the pin for ${url.href} from ${pins.location} ` +
      `or give the new DID in the URL (${url.href}#did:…); otherwise something else is answering at this address`,
  };
}

/** Trust on first use: remember the key a relay proved (`did`), unless its URL named one that differs. */
export async function pinOnFirstUse(
  url: RelayUrl,
  did: string | undefined,
  pins: RelayPinStore | undefined,
  log: ClientLogger,
): Promise<void> {
  if (pins === undefined || did === undefined) return;
  try {
    const pin = await pins.get(url.href);
    if (pin !== undefined && pin.did === did) return;
    // No pin yet, or the URL's own DID (which the relay just proved) replaces an old one.
    await pins.set(url.href, did);
    log.info?.(pin === undefined ? 'pinned relay key on first use' : 'relay pin replaced by the URL', {
      url: url.href,
      did,
      pins: pins.location,
    });
  } catch (error) {
    log.warn?.('could not store the relay pin', { url: url.href, error: toError(error).message });
  }
}
