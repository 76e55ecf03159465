/**
 * The shared bridge contract, run against the XMTP bridge on a real Redis
 * (sealed keys, cursors, the BullMQ sync queue) and the in-process XMTP
 * network, with a native XMTP user (FakeXmtpUser, which writes the network's
 * side directly) as the far end. The user's identity is its inbox id, the form
 * the bridge reports senders in.
 */
import { type ForeignIdentity, parseForeignIdentity } from '@libertaria/bridge-kit';
import { testBridge } from '@libertaria/bridge-kit/contract';
import { startRedis } from '../../../test-support/redis.js';
import { FakeXmtpNetwork, FakeXmtpUser } from './support/fake-network.js';
import { makeBridge, TEST_MAX_TEXT_BYTES } from './support/harness.js';

const otherNetwork: ForeignIdentity = parseForeignIdentity('acct:alice@social.example');

testBridge(
  'xmtp',
  async () => {
    const redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] });
    const network = new FakeXmtpNetwork();
    // The contract's user writes first to a bridged peer: a stranger, whom ForeignSenderPolicy lets through for owners without a policy (whenNoPolicy allow).
    const made = await makeBridge({ redisUrl: redis.url, network, whenNoPolicy: 'allow' });
    const remote = new FakeXmtpUser(network);
    return {
      bridge: made.bridge,
      remote,
      async close() {
        await made.close();
        await redis.stop();
      },
    };
  },
  { maxTextLength: TEST_MAX_TEXT_BYTES, foreignIdentityOfAnotherNetwork: otherNetwork, deliveryTimeoutMs: 20_000 },
);
