/**
 * The shared bridge contract, run against the Nostr bridge with two real
 * Nostr relays on loopback and an independent Nostr user (nostr-tools' client
 * and NIP-17 code) as the far end. The user publishes each answer on both
 * relays; the contract checks the bridge hands it over once.
 */
import { type ForeignIdentity, parseForeignIdentity } from '@libertaria/bridge-kit';
import { testBridge } from '@libertaria/bridge-kit/contract';
import { makeBridge, TEST_MAX_TEXT_BYTES } from './support/bridge.js';
import { NostrUser } from './support/nostr-client.js';
import { startNostrRelay } from './support/nostr-relay.js';

const otherNetwork: ForeignIdentity = parseForeignIdentity('acct:alice@social.example');

testBridge(
  'nostr',
  async () => {
    const relayA = await startNostrRelay();
    const relayB = await startNostrRelay();
    const { bridge } = await makeBridge([relayA.url, relayB.url]);
    const remote = new NostrUser([relayA.url, relayB.url]);
    return {
      bridge,
      remote,
      async close() {
        await bridge.close();
        await relayA.stop();
        await relayB.stop();
      },
    };
  },
  { maxTextLength: TEST_MAX_TEXT_BYTES, foreignIdentityOfAnotherNetwork: otherNetwork, deliveryTimeoutMs: 20_000 },
);
