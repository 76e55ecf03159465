/**
 * The XMTP bridge against a real XMTP network: skipped unless XMTP_ENV is set
 * (`dev` is the network for tests; `production` works too). One command, on a
 * machine that reaches the network and has redis-server:
 *
 *   XMTP_ENV=dev TEST_BUILD_DIR=.test-build-live node scripts/run-tests.mjs bridge-xmtp/test/live
 *
 * It runs the bridge contract with a native XMTP user (an SDK client of its
 * own, not the bridge's adapter), then restarts the bridge on the same
 * database and checks that the inbox keeps its installation.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ForeignIdentity, parseForeignIdentity } from '@libertaria/bridge-kit';
import { type ForeignParty, testBridge } from '@libertaria/bridge-kit/contract';
import { Ed25519Identity } from '@libertaria/identity';
import { Client, type IdentifierKind, type XmtpEnv } from '@xmtp/node-sdk';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { eoaAddress, generateEoaSecret, signPersonalMessage } from '../src/eoa.js';
import { SdkXmtpNetwork } from '../src/sdk-network.js';
import { makeBridge, TEST_MAX_TEXT_BYTES, until } from './support/harness.js';

const ENV = process.env.XMTP_ENV as XmtpEnv | undefined;
const ETHEREUM = 0 as IdentifierKind;
const TIMEOUT_MS = 120_000;

/** A person on XMTP with the SDK's own client: the far end of the live contract. */
class LiveXmtpUser implements ForeignParty {
  identity!: ForeignIdentity;
  client!: Client;
  static async create(env: XmtpEnv): Promise<LiveXmtpUser> {
    const user = new LiveXmtpUser();
    const secret = generateEoaSecret();
    const address = eoaAddress(secret);
    user.client = await Client.create(
      {
        type: 'EOA',
        getIdentifier: () => ({ identifier: address, identifierKind: ETHEREUM }),
        signMessage: (m: string) => signPersonalMessage(secret, m),
      },
      {
        env,
        dbPath: join(mkdtempSync(join(tmpdir(), 'xmtp-live-user-')), 'user.db3'),
        dbEncryptionKey: crypto.getRandomValues(new Uint8Array(32)),
        disableDeviceSync: true,
      },
    );
    user.identity = parseForeignIdentity(`xmtp:${user.client.inboxId}`);
    return user;
  }

  private async inboxOf(identity: ForeignIdentity): Promise<string> {
    if (identity.type !== 'xmtp') throw new Error(`${identity.uri} is not XMTP`);
    if (identity.kind === 'inbox') return identity.value;
    const id = await this.client.fetchInboxIdByIdentifier({ identifier: identity.value, identifierKind: ETHEREUM });
    if (!id) throw new Error(`${identity.value} has no XMTP inbox`);
    return id;
  }

  private async texts(peer: string): Promise<string[]> {
    await this.client.conversations.syncAll();
    const dm = this.client.conversations.getDmByInboxId(peer);
    if (!dm) return [];
    const messages = await dm.messages();
    return messages
      .filter((m) => m.senderInboxId === peer && typeof m.content === 'string')
      .map((m) => m.content as string);
  }

  async nextPrivateMessage(from: ForeignIdentity, timeoutMs: number): Promise<string> {
    const peer = await this.inboxOf(from);
    const seen = (await this.texts(peer)).length;
    return until(`a message from ${from.uri}`, async () => (await this.texts(peer))[seen], timeoutMs);
  }

  async sendPrivate(to: ForeignIdentity, text: string): Promise<void> {
    const peer = await this.inboxOf(to);
    const dm = this.client.conversations.getDmByInboxId(peer) ?? (await this.client.conversations.createDm(peer));
    await dm.sendText(text);
  }
}

if (ENV === undefined) {
  describe('bridge-xmtp live (XMTP_ENV unset: skipped)', () => {
    it.skip('set XMTP_ENV=dev to run the bridge against the XMTP network', () => {});
  });
} else {
  const env = ENV;
  let redis: RedisHandle | undefined;
  const redisUrl = async () => {
    redis ??= await startRedis({ args: ['--maxmemory-policy', 'noeviction'] });
    return redis.url;
  };
  after(async () => redis?.stop());

  testBridge(
    `xmtp live (${env})`,
    async () => {
      // The user first: if the network is unreachable nothing is left open.
      const remote = await LiveXmtpUser.create(env);
      const made = await makeBridge({
        redisUrl: await redisUrl(),
        network: new SdkXmtpNetwork({ env, appVersion: 'libertaria-bridge-xmtp-live-test/0.1.0' }),
        whenNoPolicy: 'allow',
        overrides: { syncIntervalMs: 2000 },
      });
      return { bridge: made.bridge, remote, close: () => made.close() };
    },
    {
      maxTextLength: TEST_MAX_TEXT_BYTES,
      foreignIdentityOfAnotherNetwork: parseForeignIdentity('acct:alice@social.example'),
      deliveryTimeoutMs: TIMEOUT_MS,
    },
  );

  describe(`bridge-xmtp live (${env}): restarts`, () => {
    let url: string;
    before(async () => {
      url = await redisUrl();
    });

    it('keeps the installation of an inbox across a restart on the same database', {
      timeout: TIMEOUT_MS * 2,
    }, async () => {
      const network = new SdkXmtpNetwork({ env, appVersion: 'libertaria-bridge-xmtp-live-test/0.1.0' });
      const alice = Ed25519Identity.generate().did;
      const first = await makeBridge({ redisUrl: url, network });
      let installation: string | undefined;
      try {
        await first.bridge.bridgeIdentity(alice);
        installation = (await first.identities.get(alice))?.installationId;
        assert.ok(installation);
      } finally {
        await first.close();
      }
      const again = await makeBridge({
        redisUrl: url,
        network,
        kek: first.kek,
        dbDir: first.dbDir,
        prefix: first.prefix,
      });
      try {
        const client = await again.bridge.clientOf(alice);
        assert.equal(client.installationId, installation);
      } finally {
        await again.close();
      }
    });
  });
}
