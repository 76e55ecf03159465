/**
 * The shared bridge contract, run against the ActivityPub bridge with the
 * independent ActivityPub server (node:http and node:crypto only) as the far
 * end: it reads the bridge's direct messages from its inbox (verifying their
 * signatures as Mastodon does) and sends its own, signed, the way Mastodon
 * delivers a direct message. Policies: the real ForeignSenderPolicy, owners
 * without a policy allowed (the relays' open default).
 */
import { after } from 'node:test';
import { type ForeignIdentity, parseForeignIdentity } from '@libertaria/bridge-kit';
import { testBridge } from '@libertaria/bridge-kit/contract';
import { ForeignSenderPolicy } from '@libertaria/bridge-kit/worker';
import { createRedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { ApServer, noteText } from './support/ap-server.js';
import { makeBridge, TEST_MAX_TEXT_BYTES } from './support/bridge.js';

const otherNetwork: ForeignIdentity = parseForeignIdentity(
  'nostr:npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6',
);

let redis: RedisHandle | undefined;
after(async () => {
  await redis?.stop();
});

testBridge(
  'activitypub',
  async () => {
    redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] });
    const server = new ApServer(['bob']);
    await server.start();
    const policyRedis = createRedisClient({ url: redis.url }, { connectionName: 'contract-policy' });
    const policy = new ForeignSenderPolicy({
      redis: policyRedis,
      relayPrefix: 'lr',
      network: 'activitypub',
      whenNoPolicy: 'allow',
    });
    await policy.start();
    const t = await makeBridge({ redisUrl: redis.url, policy });
    const seen = new Set<string>();
    const remote = {
      identity: parseForeignIdentity(server.acct('bob')),
      async nextPrivateMessage(from: ForeignIdentity, timeoutMs: number): Promise<string> {
        const { id } = await server.resolve(from.uri);
        const got = await server.waitFor(
          (r) => r.activity.type === 'Create' && r.signer === id && !seen.has(String(r.activity.id)),
          timeoutMs,
          `a direct message from ${from.uri}`,
        );
        seen.add(String(got.activity.id));
        return noteText(String((got.activity.object as { content?: unknown }).content ?? ''));
      },
      async sendPrivate(to: ForeignIdentity, text: string): Promise<void> {
        const { id, inbox } = await server.resolve(to.uri);
        const status = await server.deliver('bob', inbox, server.note('bob', { id, acct: to.uri }, text));
        if (status !== 202) throw new Error(`the bridge answered ${status}`);
      },
    };
    return {
      bridge: t.bridge,
      remote,
      async close() {
        await t.close();
        await policy.close();
        await policyRedis.quit().catch(() => undefined);
        await server.stop();
      },
    };
  },
  { maxTextLength: TEST_MAX_TEXT_BYTES, foreignIdentityOfAnotherNetwork: otherNetwork, deliveryTimeoutMs: 20_000 },
);
