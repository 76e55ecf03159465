/**
 * Federation end to end with real parts: a private redis-server, a real relay
 * node process (services/relay/dist), the lrelay CLI, BullMQ queues and
 * workers, and the XMTP bridge service as `main.ts` starts it
 * (`startXmtpBridgeService`: config, sealed store, federation, HTTP), on the
 * in-process XMTP network (the one fake; the public network is unreachable
 * here) with native XMTP users.
 *
 *   Libertaria peer ──sealed SEND──► relay ──BullMQ outbound-xmtp──► bridge ──DM──► XMTP user
 *   Libertaria peer ◄──DELIVER────── relay ◄──BullMQ inbound────────── bridge ◄──DM── XMTP user
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  dashboardQueuesKey,
  type ForeignIdentity,
  federatedMessageOf,
  openFederatedSession,
} from '@libertaria/bridge-kit';
import { randomBytes } from '@libertaria/client';
import { Ed25519Identity } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { toHex } from '@libertaria/protocol';
import { peer, federationReport as report } from '../../../test-support/federation-peer.js';
import { LRELAY_ENTRY, REPO_ROOT } from '../../../test-support/paths.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { silentLogger } from '../src/log.js';
import { startXmtpBridgeService, type XmtpBridgeService } from '../src/service.js';
import { FakeXmtpNetwork, FakeXmtpUser } from './support/fake-network.js';
import { until } from './support/harness.js';

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LRELAY_ENTRY, ...args], { cwd: REPO_ROOT, stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end();
  });
}

describe('federation: Libertaria peer <-> relay <-> BullMQ <-> bridge-xmtp <-> XMTP user', () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let service: XmtpBridgeService;
  let dir: string;
  const network = new FakeXmtpNetwork();
  const bridgeIdentity = Ed25519Identity.generate();
  const figures: Record<string, unknown> = {};

  const federationReport = (): Promise<string> => report(service.federation!);

  /** The texts `user` got from `from`, once there are `count`; on a timeout the error says what the queues hold. */
  async function receivedOrReport(user: FakeXmtpUser, from: ForeignIdentity, count: number): Promise<string[]> {
    const texts = () => user.received(from).map((m) => (m.content.type === 'text' ? m.content.text : m.content.type));
    try {
      await until(`${count} messages on XMTP`, () => (texts().length >= count ? true : undefined), 30_000);
    } catch (error) {
      throw new Error(`${(error as Error).message}; federation: ${await federationReport()}`);
    }
    return texts();
  }

  async function metrics(): Promise<string> {
    return (await fetch(`http://127.0.0.1:${service.http.port}/metrics`)).text();
  }

  before(async () => {
    redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] });
    relay = await startRelay({ redisUrl: redis.url, env: { RELAY_FEDERATION_REFRESH_MS: '500' } });
    dir = await mkdtemp(join(tmpdir(), 'bridge-xmtp-fed-'));
    await writeKeyFile(join(dir, 'bridge.json'), bridgeIdentity);
    service = await startXmtpBridgeService(
      {
        BRIDGE_XMTP_ENV: 'dev',
        BRIDGE_XMTP_REDIS_URL: redis.url,
        BRIDGE_XMTP_KEK: toHex(new Uint8Array(randomBytes(32))),
        BRIDGE_XMTP_DB_DIR: join(dir, 'db'),
        BRIDGE_XMTP_HTTP_PORT: '0',
        BRIDGE_XMTP_LIBERTARIA_RELAYS: relay.wsUrl,
        BRIDGE_XMTP_IDENTITY_FILE: join(dir, 'bridge.json'),
        BRIDGE_XMTP_STATE_DIR: join(dir, 'state'),
        BRIDGE_XMTP_OUTBOUND_ATTEMPTS: '4',
        BRIDGE_XMTP_OUTBOUND_BACKOFF_MS: '100',
        BRIDGE_XMTP_RATE_LIMIT_PAUSE_MS: '500',
        BRIDGE_XMTP_SYNC_BACKOFF_MS: '100',
        BRIDGE_XMTP_INBOUND_BACKOFF_MS: '100',
        BRIDGE_XMTP_REGISTER_EVERY_MS: '500',
        BRIDGE_XMTP_WRITE_RATE: '5',
      },
      { log: silentLogger, network },
    );
    await until('the relay to know the bridge', async () => {
      const text = await (await fetch(`${relay.adminUrl}/metrics`)).text();
      return /^relay_federation_bridges\{[^}]*\} 1$/m.test(text) ? true : undefined;
    });
  });

  after(async () => {
    console.log(`federation figures: ${JSON.stringify(figures)}`);
    await service?.close();
    await relay?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves /health and /metrics, with the federation in health', async () => {
    const res = await fetch(`http://127.0.0.1:${service.http.port}/health`);
    assert.equal(res.status, 200);
    const health = (await res.json()) as { status: string; protocol: { type: string }; federation: { relay: string } };
    assert.equal(health.protocol.type, 'xmtp');
    assert.equal(health.status, 'ok');
    assert.equal(health.federation.relay, 'connected');
    const text = await metrics();
    assert.match(text, /^bridge_xmtp_identities 0$/m);
    assert.match(text, /^# TYPE bridge_federation_jobs_total counter$/m);
    // The sync queue is listed for the relay's dashboard.
    assert.ok((await service.redis.smembers(dashboardQueuesKey('{lr-bridge}'))).includes('xmtp-sync'));
  });

  it('a peer and an XMTP user exchange messages both ways; the DM is consented by writing first', async () => {
    const alice = await peer(relay.wsUrl);
    try {
      const user = new FakeXmtpUser(network);
      const session = openFederatedSession(alice.client, { remote: user.identity.uri, bridge: bridgeIdentity.did });
      assert.equal(session.session.bridge.type, 'xmtp');
      // Alice's XMTP inbox is made on her first send; the user waits for whoever writes from it.
      const t0 = performance.now();
      const ack = await session.send('hello from Libertaria');
      figures.outboundAckMs = Math.round(performance.now() - t0);
      const aliceXmtp = await until('alice to be bridged', () => service.bridge.foreignIdentityOf(alice.identity.did));
      assert.deepEqual(await receivedOrReport(user, aliceXmtp, 1), ['hello from Libertaria']);
      figures.outboundEndToEndMs = Math.round(performance.now() - t0);
      const sent = user.received(aliceXmtp)[0];
      assert.deepEqual(sent?.content, { type: 'text', text: 'hello from Libertaria' });
      const job = await service.federation!.outboundQueue.getJob(toHex(ack.messageId));
      await until('the outbound job to complete', async () =>
        (await job?.getState()) === 'completed' ? true : undefined,
      );

      const t1 = performance.now();
      user.send(aliceXmtp, { type: 'text', text: 'hello back from XMTP' });
      const message = await alice.next(30_000);
      figures.inboundEndToEndMs = Math.round(performance.now() - t1);
      const federated = federatedMessageOf(message, [bridgeIdentity.did]);
      assert.ok(federated, 'a federated message from the bridge');
      assert.equal(federated.text, 'hello back from XMTP');
      assert.equal(federated.from.uri, `xmtp:${user.inboxId}`);
      assert.equal(federated.kind, 'dm');
      assert.ok(message.durable);
      await message.ack();
    } finally {
      await alice.client.close();
    }
  });

  it("a stranger reaches a peer only once the peer's own membrane policy allows federated://xmtp/…", async () => {
    const bob = await peer(relay.wsUrl);
    try {
      await service.bridge.bridgeIdentity(bob.identity.did);
      const bobXmtp = (await service.bridge.foreignIdentityOf(bob.identity.did))!;
      const stranger = new FakeXmtpUser(network);
      // Bob has no policy: the bridge's default (BRIDGE_XMTP_WHEN_NO_POLICY=deny) refuses.
      stranger.send(bobXmtp, { type: 'text', text: 'buy my coin' });
      await until('the refusal', async () =>
        /^bridge_xmtp_inbound_skipped_total\{reason="refused"\} 1$/m.test(await metrics()) ? true : undefined,
      );
      // Bob writes his policy through the relay (POLICY_PUT): any XMTP inbox may write to him, and
      // peers (the bridge among them) may still open sessions and send to him on the relay.
      await bob.client.setPolicy({
        version: 1,
        capabilities: [
          { resource: 'federated://xmtp/*', action: 'send' },
          { resource: bob.identity.did, action: '*' },
        ],
      });
      // The bridge caches policies and drops them on the relay's invalidation notice, which may come a
      // moment after setPolicy resolves: a message written in between is still refused. One message
      // at a time, each waited for until it is decided.
      const decisions = async () => {
        const text = await metrics();
        const count = (result: string) =>
          Number(
            new RegExp(`^bridge_xmtp_consent_decisions_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(text)?.[1] ??
              0,
          );
        return { allowed: count('allowed'), refused: count('refused') };
      };
      for (let attempt = 0; ; attempt++) {
        const before = await decisions();
        stranger.send(bobXmtp, { type: 'text', text: 'hello, allowed now' });
        const after = await until('a decision', async () => {
          const now = await decisions();
          return now.allowed + now.refused > before.allowed + before.refused ? now : undefined;
        });
        if (after.allowed > before.allowed) break;
        assert.ok(attempt < 20, 'the policy never applied');
        await new Promise((r) => setTimeout(r, 100));
      }
      // The first message Bob gets is the allowed one: the refused one, written before, never came.
      const message = await bob.next(30_000);
      assert.equal(federatedMessageOf(message, [bridgeIdentity.did])?.text, 'hello, allowed now');
      assert.equal(federatedMessageOf(message)?.from.uri, `xmtp:${stranger.inboxId}`);
      await message.ack();
      const text = await metrics();
      assert.match(
        text,
        /^bridge_foreign_sender_decisions_total\{network="xmtp",action="message",verdict="allow",code="OK"\} 1$/m,
      );
    } finally {
      await bob.client.close();
    }
  });

  it('lrelay send --to xmtp:<address> and xmtp:<inbox id> reach the XMTP user (the cluster names the bridge); lrelay listen shows the answer', async () => {
    const keyFile = join(dir, 'carol.json');
    const carol = Ed25519Identity.generate();
    await writeKeyFile(keyFile, carol);
    const user = new FakeXmtpUser(network);
    const send = (to: string, text: string) =>
      runCli(['send', '--relay', relay.wsUrl, '--key', keyFile, '--to', to, '--text', text]);
    const byAddress = await send(`xmtp:${user.address}`, 'from the CLI by address');
    assert.equal(byAddress.code, 0, byAddress.stderr);
    const carolXmtp = await until('carol to be bridged', () => service.bridge.foreignIdentityOf(carol.did));
    await receivedOrReport(user, carolXmtp, 1);
    const byInbox = await send(`xmtp:${user.inboxId.toUpperCase()}`, 'from the CLI by inbox id');
    assert.equal(byInbox.code, 0, byInbox.stderr);
    assert.deepEqual(await receivedOrReport(user, carolXmtp, 2), [
      'from the CLI by address',
      'from the CLI by inbox id',
    ]);
    user.send(carolXmtp, { type: 'text', text: 'answer to the CLI' });
    const listened = await runCli([
      'listen',
      '--relay',
      relay.wsUrl,
      '--key',
      keyFile,
      '--count',
      '1',
      '--timeout',
      '30',
    ]);
    assert.equal(listened.code, 0, listened.stderr);
    const line = JSON.parse(listened.stdout.trim());
    assert.equal(line.from, `xmtp:${user.inboxId}`);
    assert.equal(line.via, bridgeIdentity.did);
    assert.equal(line.text, 'answer to the CLI');
  });

  it('an address not on XMTP ends the job at once with BRIDGE_RECIPIENT_UNREACHABLE', async () => {
    const dave = await peer(relay.wsUrl);
    try {
      const nobody = `xmtp:0x${Buffer.from(randomBytes(20)).toString('hex')}`;
      const session = openFederatedSession(dave.client, { remote: nobody, bridge: bridgeIdentity.did });
      const { messageId } = await session.send('to nobody');
      const id = toHex(messageId);
      await until('the job to fail', async () =>
        (await service.federation!.outboundQueue.getJobState(id)) === 'failed' ? true : undefined,
      );
      const failed = await service.federation!.outboundQueue.getJob(id);
      assert.equal(failed?.attemptsMade, 1, 'not retried');
      assert.match(failed?.failedReason ?? '', /^BRIDGE_RECIPIENT_UNREACHABLE: /);
    } finally {
      await dave.client.close();
    }
  });

  it('XMTP unavailable is retried with backoff; rate limited pauses the queue without spending an attempt; one message each', async () => {
    const erin = await peer(relay.wsUrl);
    try {
      const user = new FakeXmtpUser(network);
      const session = openFederatedSession(erin.client, { remote: user.identity.uri, bridge: bridgeIdentity.did });
      await service.bridge.bridgeIdentity(erin.identity.did);
      const erinXmtp = (await service.bridge.foreignIdentityOf(erin.identity.did))!;

      network.failNext('publish', network.unavailable('publish'), 2);
      const first = toHex((await session.send('after two failures')).messageId);
      await until(
        'the first job to complete',
        async () => ((await service.federation!.outboundQueue.getJobState(first)) === 'completed' ? true : undefined),
        30_000,
      );
      assert.equal((await service.federation!.outboundQueue.getJob(first))?.attemptsMade, 3);

      network.failNext('publish', network.rateLimited(600));
      const t0 = performance.now();
      const second = toHex((await session.send('after a pause')).messageId);
      await until(
        'the second job to complete',
        async () => ((await service.federation!.outboundQueue.getJobState(second)) === 'completed' ? true : undefined),
        30_000,
      );
      const elapsed = performance.now() - t0;
      figures.rateLimitedDeliveryMs = Math.round(elapsed);
      assert.ok(elapsed >= 600, `waited the pause XMTP asked for (${Math.round(elapsed)} ms)`);
      assert.equal((await service.federation!.outboundQueue.getJob(second))?.attemptsMade, 1);
      assert.deepEqual(await receivedOrReport(user, erinXmtp, 2), ['after two failures', 'after a pause']);
      const text = await metrics();
      assert.match(text, /^bridge_federation_jobs_total\{queue="outbound",result="rate_limited"\} 1$/m);
      assert.match(text, /^bridge_xmtp_rate_limited_total\{direction="write"\} 1$/m);
    } finally {
      await erin.client.close();
    }
  });

  it('publishes no faster than BRIDGE_XMTP_WRITE_RATE (the outbound queue limiter)', async () => {
    const frank = await peer(relay.wsUrl);
    try {
      const user = new FakeXmtpUser(network);
      await service.bridge.bridgeIdentity(frank.identity.did);
      const frankXmtp = (await service.bridge.foreignIdentityOf(frank.identity.did))!;
      const session = openFederatedSession(frank.client, { remote: user.identity.uri, bridge: bridgeIdentity.did });
      const texts = Array.from({ length: 16 }, (_, i) => `burst ${i}`);
      const t0 = performance.now();
      for (const text of texts) await session.send(text);
      const got = await receivedOrReport(user, frankXmtp, 16);
      const elapsed = performance.now() - t0;
      figures.sixteenAtFivePerSecondMs = Math.round(elapsed);
      assert.deepEqual([...got].sort(), [...texts].sort());
      // 16 jobs at 5 per second: after a first window (perhaps partly spent) two more full ones pass.
      assert.ok(elapsed >= 2000, `16 messages at 5/s took ${Math.round(elapsed)} ms`);
    } finally {
      await frank.client.close();
    }
  });
});
