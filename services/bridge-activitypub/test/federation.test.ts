/**
 * Federation end to end with real parts: a private redis-server, a real relay
 * node process, BullMQ queues and workers, the ActivityPub bridge on Fedify
 * with its HTTP listener, the owners' membrane policies read by the real
 * ForeignSenderPolicy, and an independent ActivityPub server written with
 * node:http and node:crypto only (test/support/ap-server.ts), all on
 * loopback over plain HTTP (the bridge's insecure test mode).
 *
 *   peer ──sealed SEND──► relay ──BullMQ outbound-activitypub──► bridge ──signed POST──► remote inbox
 *   peer ◄──DELIVER────── relay ◄──BullMQ inbound───────────────── bridge ◄──signed POST── remote
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { federatedMessageOf, openFederatedSession } from '@libertaria/bridge-kit';
import { BridgeFederation, ForeignSenderPolicy } from '@libertaria/bridge-kit/worker';
import { InMemorySessionStore } from '@libertaria/client';
import { Ed25519Identity } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { toHex } from '@libertaria/protocol';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { peer, federationReport as report } from '../../../test-support/federation-peer.js';
import { LRELAY_ENTRY, REPO_ROOT } from '../../../test-support/paths.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { silentLogger } from '../src/log.js';
import { BridgeActivityPubMetrics } from '../src/metrics.js';
import { ApServer, noteText, type Received } from './support/ap-server.js';
import { makeBridge, type TestBridge } from './support/bridge.js';

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The outbound job once it is in `state`, read again after: a Job read before
 * it finished is a snapshot (its attemptsMade may still be 0).
 */
async function jobIn(federation: BridgeFederation, messageId: Uint8Array, state: 'completed' | 'failed') {
  const id = toHex(messageId);
  await until(`the job to be ${state}`, async () => {
    const j = await federation.outboundQueue.getJob(id);
    return j && (await j.getState()) === state ? true : undefined;
  });
  const job = await federation.outboundQueue.getJob(id);
  assert.ok(job, `job ${id}`);
  return job;
}

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

describe('federation: Libertaria peer <-> relay <-> BullMQ <-> bridge-activitypub <-> independent ActivityPub server', () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let t: TestBridge;
  let policyRedis: RedisClient;
  let policy: ForeignSenderPolicy;
  let federation: BridgeFederation;
  let remote: ApServer;
  const bridgeIdentity = Ed25519Identity.generate();
  const figures: Record<string, unknown> = {};

  const federationReport = (): Promise<string> => report(federation);
  function received(pred: (r: Received) => boolean, what: string): Promise<Received> {
    return remote.waitFor(pred, 30_000, what).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}; federation: ${await federationReport()}`);
    });
  }
  const dmText = (r: Received): string | undefined =>
    r.activity.type === 'Create'
      ? noteText(String((r.activity.object as { content?: unknown }).content ?? ''))
      : undefined;

  before(async () => {
    redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] });
    relay = await startRelay({ redisUrl: redis.url, env: { RELAY_FEDERATION_REFRESH_MS: '500' } });
    remote = new ApServer(['bob', 'carol']);
    await remote.start();
    policyRedis = createRedisClient({ url: redis.url }, { connectionName: 'test-policy' });
    // The relay's default prefix: the bridged peers' policies are the ones they set through the relay.
    policy = new ForeignSenderPolicy({
      redis: policyRedis,
      relayPrefix: 'lr',
      network: 'activitypub',
      whenNoPolicy: 'allow',
    });
    await policy.start();
    t = await makeBridge({ redisUrl: redis.url, policy });
    await t.bridge.start();
    federation = new BridgeFederation({
      bridge: t.bridge,
      identity: bridgeIdentity,
      sessionStore: new InMemorySessionStore(),
      relays: [relay.wsUrl],
      redisUrl: redis.url,
      concurrency: 4,
      ratePerSecond: 100,
      rateLimitPauseMs: 600,
      attempts: 6,
      backoffMs: 300,
      jitter: 0.2,
      inboundAttempts: 5,
      inboundBackoffMs: 100,
      keepCompleted: 1000,
      keepFailed: 1000,
      inboundTtlSeconds: 0,
      registerEveryMs: 500,
      log: silentLogger,
      registry: t.metrics.registry,
    });
    await federation.start();
    t.httpOptions.federation = federation;
    await until('the relay to know the bridge', async () => {
      const text = await (await fetch(`${relay.adminUrl}/metrics`)).text();
      return /^relay_federation_bridges\{[^}]*\} 1$/m.test(text) ? true : undefined;
    });
  });

  after(async () => {
    console.log(`federation figures: ${JSON.stringify(figures)}`);
    await federation?.close();
    await t?.close();
    await policy?.close();
    await policyRedis?.quit().catch(() => undefined);
    await relay?.stop();
    await remote?.stop();
    await redis?.stop();
  });

  it('a peer and a fediverse account exchange direct messages both ways (SDK federated session)', async () => {
    const alice = await peer(relay.wsUrl);
    try {
      const session = openFederatedSession(alice.client, { remote: remote.acct('bob'), bridge: bridgeIdentity.did });
      assert.equal(session.session.bridge.type, 'activitypub');
      const t0 = performance.now();
      const ack = await session.send('hello from Libertaria');
      figures.outboundAckMs = Math.round(performance.now() - t0);
      const got = await received((r) => dmText(r) === 'hello from Libertaria', 'the DM at bob');
      figures.outboundEndToEndMs = Math.round(performance.now() - t0);
      const aliceAcct = await t.bridge.foreignIdentityOf(alice.identity.did);
      assert.ok(aliceAcct, 'bridged on first send');
      const aliceActor = `${t.origin}/users/${aliceAcct.uri.slice(5).split('@')[0]}`;
      assert.equal(got.signer, aliceActor, "signed by alice's actor, verified by the remote");
      assert.equal((got.activity.object as { id: string }).id, `${t.origin}/notes/${toHex(ack.messageId)}`);

      // Bob answers the way Mastodon does; alice gets it sealed from the bridge, from acct:bob@host.
      const { id, inbox } = await remote.resolve(aliceAcct.uri);
      const t1 = performance.now();
      assert.equal(
        await remote.deliver(
          'bob',
          inbox,
          remote.note('bob', { id, acct: aliceAcct.uri }, 'hello back from the fediverse'),
        ),
        202,
      );
      const message = await alice.next(30_000).catch(async (err: Error) => {
        throw new Error(`${err.message}; federation: ${await federationReport()}`);
      });
      figures.inboundEndToEndMs = Math.round(performance.now() - t1);
      const reply = federatedMessageOf(message, [bridgeIdentity.did]);
      assert.ok(reply, 'a federated message from the bridge');
      assert.equal(reply.kind, 'dm');
      assert.equal(reply.from.uri, remote.acct('bob'));
      assert.equal(reply.text, 'hello back from the fediverse');
      assert.ok(session.matches(reply));
    } finally {
      await alice.client.close();
    }
  });

  it('lrelay send --to acct:… reaches the remote account, with --bridge and by discovery', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'apub-cli-'));
    try {
      const keyFile = join(dir, 'key');
      const dave = Ed25519Identity.generate();
      await writeKeyFile(keyFile, dave);
      const base = ['send', '--relay', relay.wsUrl, '--key', keyFile, '--to', remote.acct('carol')];
      const sent = await runCli([...base, '--bridge', bridgeIdentity.did, '--text', 'from the CLI']);
      assert.equal(sent.code, 0, sent.stderr);
      const got = await received((r) => dmText(r) === 'from the CLI' && r.inbox === '/users/carol/inbox', 'the CLI DM');
      const daveAcct = await t.bridge.foreignIdentityOf(dave.did);
      assert.equal(got.signer, `${t.origin}/users/${daveAcct?.uri.slice(5).split('@')[0]}`);
      const discovered = await runCli([...base, '--text', 'found the bridge myself']);
      assert.equal(discovered.code, 0, discovered.stderr);
      await received((r) => dmText(r) === 'found the bridge myself', 'the discovered-bridge DM');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('lrelay send --to <actor URL> reaches the actor without WebFinger', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'apub-cli-'));
    try {
      const keyFile = join(dir, 'key');
      await writeKeyFile(keyFile, Ed25519Identity.generate());
      const sent = await runCli([
        'send',
        '--relay',
        relay.wsUrl,
        '--key',
        keyFile,
        '--to',
        remote.actorId('carol'),
        '--text',
        'to the actor URL',
      ]);
      assert.equal(sent.code, 0, sent.stderr);
      const got = await received(
        (r) => dmText(r) === 'to the actor URL' && r.inbox === '/users/carol/inbox',
        'the DM sent to an actor URL',
      );
      // Addressed only to that actor, with a Mention naming it as it names itself.
      const note = got.activity.object as { to: unknown; tag: unknown };
      assert.deepEqual([note.to].flat(), [remote.actorId('carol')]);
      assert.deepEqual(
        [note.tag].flat().map((m) => [(m as { type: string }).type, (m as { name: string }).name]),
        [['Mention', `@carol@${remote.host}`]],
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("follows and messages are decided by the bridged peer's membrane policy (federated://activitypub/…)", async () => {
    const erin = await peer(relay.wsUrl);
    try {
      const erinAcct = await t.bridge.bridgeIdentity(erin.identity.did);
      const host = remote.host;
      await erin.client.setPolicy({
        version: 1,
        capabilities: [
          { resource: erin.identity.did, action: '*' },
          // Anyone on that server may message erin; only bob may follow her.
          { resource: `federated://activitypub/${host}/*`, action: 'send' },
          { resource: `federated://activitypub/${host}/bob`, action: 'read' },
        ],
      });
      const { id, inbox } = await remote.resolve(erinAcct.uri);
      const follow = (who: string) => ({
        '@context': 'https://www.w3.org/ns/activitystreams',
        id: `${remote.actorId(who)}#follow-${Date.now()}`,
        type: 'Follow',
        actor: remote.actorId(who),
        object: id,
      });
      const byBob = follow('bob');
      const byCarol = follow('carol');
      assert.equal(await remote.deliver('bob', inbox, byBob), 202);
      assert.equal(await remote.deliver('carol', inbox, byCarol), 202);
      const accept = await received(
        (r) => r.activity.type === 'Accept' && (r.activity.object as { id?: string }).id === byBob.id,
        "erin's Accept",
      );
      assert.equal(accept.inbox, '/users/bob/inbox');
      const reject = await received(
        (r) => r.activity.type === 'Reject' && (r.activity.object as { id?: string }).id === byCarol.id,
        "erin's Reject",
      );
      assert.equal(reject.inbox, '/users/carol/inbox');
      assert.equal(await t.bridge.state.followerCount(erinAcct.uri.slice(5).split('@')[0] as string), 1);

      // A message policy that names one server: carol may message, a server not named may not.
      assert.equal(
        await remote.deliver('carol', inbox, remote.note('carol', { id, acct: erinAcct.uri }, 'carol says hi')),
        202,
      );
      const message = await erin.next(30_000);
      assert.equal(federatedMessageOf(message, [bridgeIdentity.did])?.text, 'carol says hi');
      await erin.client.setPolicy({
        version: 1,
        capabilities: [
          { resource: erin.identity.did, action: '*' },
          { resource: `federated://activitypub/${host}/bob`, action: 'send' },
        ],
      });
      const denied = () => BridgeActivityPubMetrics.total(t.metrics.inbound, { type: 'Create', verdict: 'denied' });
      const before = await denied();
      assert.equal(
        await remote.deliver('carol', inbox, remote.note('carol', { id, acct: erinAcct.uri }, 'carol again')),
        202,
      );
      await until('the denial', async () => ((await denied()) > before ? true : undefined));
    } finally {
      await erin.client.setPolicy(null).catch(() => {});
      await erin.client.close();
    }
  });

  it('a remote that is down is retried with backoff, then delivered when it comes back', async () => {
    const frank = await peer(relay.wsUrl);
    try {
      const session = openFederatedSession(frank.client, { remote: remote.acct('bob'), bridge: bridgeIdentity.did });
      // Resolve bob once while the server is up (as after any earlier exchange), then take it down.
      await session.send('before the outage');
      await received((r) => dmText(r) === 'before the outage', 'the first DM');
      await remote.stop();
      const { messageId } = await session.send('sent while bob’s server was down');
      const job = await until('the job to fail once', async () => {
        const j = await federation.outboundQueue.getJob(toHex(messageId));
        return j && j.attemptsMade >= 1 ? j : undefined;
      });
      assert.ok(!['completed', 'failed'].includes(await job.getState()), 'waiting for its retry');
      await remote.start();
      await received((r) => dmText(r) === 'sent while bob’s server was down', 'the DM after the outage');
      const done = await jobIn(federation, messageId, 'completed');
      figures.attemptsAcrossOutage = done.attemptsMade;
      assert.ok(done.attemptsMade >= 2, `retried (${done.attemptsMade} attempts)`);
      assert.ok((await BridgeActivityPubMetrics.total(t.metrics.deliveryFailures, { reason: 'network' })) >= 1);
    } finally {
      await frank.client.close();
    }
  });

  it('a remote answering 410 Gone ends the job at once (failed, kept, not retried)', async () => {
    const gina = await peer(relay.wsUrl);
    try {
      const session = openFederatedSession(gina.client, { remote: remote.acct('bob'), bridge: bridgeIdentity.did });
      await session.send('warm up');
      await received((r) => dmText(r) === 'warm up', 'the warm-up DM');
      remote.forceInbox = { status: 410 };
      const hitsBefore = remote.inboxHits;
      const { messageId } = await session.send('to an account that is gone');
      const job = await jobIn(federation, messageId, 'failed');
      assert.equal(job.attemptsMade, 1, 'not retried');
      assert.match(job.failedReason ?? '', /^BRIDGE_UNAVAILABLE: .*HTTP 410/);
      const hits = remote.inboxHits - hitsBefore;
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(remote.inboxHits - hitsBefore, hits, 'no further request after the 410');
    } finally {
      remote.forceInbox = undefined;
      await gina.client.close();
    }
  });

  it('a remote answering 429 with Retry-After: the outbound queue waits that long, then delivers, without spending an attempt', async () => {
    const ivan = await peer(relay.wsUrl);
    try {
      const session = openFederatedSession(ivan.client, { remote: remote.acct('bob'), bridge: bridgeIdentity.did });
      await session.send('warm up 429');
      await received((r) => dmText(r) === 'warm up 429', 'the warm-up DM');
      // A rate limiter: 429 with Retry-After: 2 for 2 seconds from the first request it refuses, then open again.
      const limiter = { status: 429, headers: { 'retry-after': '2' }, forMs: 2000 } as NonNullable<
        ApServer['forceInbox']
      >;
      remote.forceInbox = limiter;
      const { messageId } = await session.send('after the rate limit');
      await received((r) => dmText(r) === 'after the rate limit', 'the DM after the 429');
      const refusedAt = limiter.startedAt;
      assert.ok(refusedAt !== undefined, 'the first attempt was refused');
      const deliveredAt = remote.inboxTimes.at(-1) as number;
      figures.retryAfterWaitMs = deliveredAt - refusedAt;
      assert.ok(
        deliveredAt - refusedAt >= 2000,
        `delivered ${deliveredAt - refusedAt} ms after the 429, not before Retry-After: 2`,
      );
      // One attempt inside the window (Fedify knocks twice: draft-cavage, then RFC 9421 on any error), then the pause.
      const inWindow = remote.inboxTimes.filter((at) => at >= refusedAt && at < refusedAt + 2000).length;
      figures.requestsIn429Window = inWindow;
      assert.ok(inWindow >= 1 && inWindow <= 2, `${inWindow} requests while the remote asked to wait`);
      const job = await jobIn(federation, messageId, 'completed');
      figures.attemptsAcross429 = job.attemptsMade;
      assert.equal(job.attemptsMade, 1, 'the rate-limited run spent no attempt');
      assert.ok((await BridgeActivityPubMetrics.total(t.metrics.deliveryFailures, { reason: 'rate_limited' })) >= 1);
    } finally {
      remote.forceInbox = undefined;
      await ivan.client.close();
    }
  });

  it('refuses a forged signature and a tampered body; nothing reaches the peer', async () => {
    const hana = await peer(relay.wsUrl);
    try {
      const acct = await t.bridge.bridgeIdentity(hana.identity.did);
      const { id, inbox } = await remote.resolve(acct.uri);
      const forged = await remote.signedFetch(
        inbox,
        'POST',
        JSON.stringify(remote.note('bob', { id, acct: acct.uri }, 'forged')),
        'carol',
      );
      assert.equal(forged.status, 401);
      const body = JSON.stringify(remote.note('bob', { id, acct: acct.uri }, 'original'));
      const tampered = await fetch(inbox, {
        method: 'POST',
        headers: remote.signHeaders(inbox, 'POST', body, 'bob'),
        body: body.replace('original', 'tampered'),
      });
      assert.equal(tampered.status, 401);
      const real = remote.note('bob', { id, acct: acct.uri }, 'the real one');
      assert.equal(await remote.deliver('bob', inbox, real), 202);
      const message = federatedMessageOf(await hana.next(30_000), [bridgeIdentity.did]);
      assert.equal(message?.text, 'the real one', 'the first message hana gets is the genuine one');
    } finally {
      await hana.client.close();
    }
  });
});
