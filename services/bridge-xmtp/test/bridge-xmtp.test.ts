/**
 * The XMTP bridge on a real Redis (sealed keys, accounts, cursors, sent ids,
 * the BullMQ sync queue and its limiter) and the in-process XMTP network: keys
 * and sealing, installations across restarts, outbound idempotency and
 * errors, inbound resume without gaps or duplicates, consent, content types,
 * rate limits.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { BridgeError, type ForeignIdentity } from '@libertaria/bridge-kit';
import { RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { Ed25519Identity } from '@libertaria/identity';
import { LibertariaError } from '@libertaria/protocol';
import { counterTotal } from '../../../test-support/metrics.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { FAKE_MAX_INSTALLATIONS, FakeXmtpNetwork, FakeXmtpUser } from './support/fake-network.js';
import { makeBridge, type TestBridge, until } from './support/harness.js';

const hexId = () => randomBytes(16).toString('hex');
const did = () => Ed25519Identity.generate().did;

function code(expected: string, retryable?: boolean) {
  return (err: unknown) => {
    assert.ok(err instanceof LibertariaError, String(err));
    assert.equal(err.code, expected);
    if (retryable !== undefined) assert.equal((err as BridgeError).retryable, retryable);
    return true;
  };
}

describe('bridge-xmtp', () => {
  let redis: RedisHandle;
  const open: TestBridge[] = [];
  const track = (b: TestBridge) => {
    open.push(b);
    return b;
  };

  before(async () => {
    redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] });
  });
  after(async () => {
    for (const b of open) await b.close();
    await redis?.stop();
  });

  describe('identities', () => {
    it('keeps each key sealed in Redis: no secret in clear, and a wrong KEK does not open the store', async () => {
      const network = new FakeXmtpNetwork();
      const b = track(await makeBridge({ redisUrl: redis.url, network }));
      const alice = did();
      const identity = await b.bridge.bridgeIdentity(alice);
      assert.equal(identity.type, 'xmtp');
      const account = await b.identities.account(alice);
      const raw = await b.redis.hget(`${b.prefix}:sealed:xmtp:records`, alice);
      assert.ok(raw);
      for (const secret of [account.eoaSecret, account.dbEncryptionKey]) {
        assert.ok(!raw.includes(Buffer.from(secret).toString('hex')));
        assert.ok(!raw.includes(Buffer.from(secret).toString('base64')));
      }
      await assert.rejects(
        RedisSealedStore.open({
          redis: b.redis,
          kek: new Uint8Array(randomBytes(32)),
          namespace: 'xmtp',
          prefix: b.prefix,
        }),
        code('BRIDGE_KEY_STORE', false),
      );
      // A record moved to another DID no longer opens (its associated data names the DID).
      const mallory = did();
      await b.redis.hset(`${b.prefix}:sealed:xmtp:records`, mallory, raw);
      const store = await RedisSealedStore.open({
        redis: b.redis,
        kek: b.kek,
        namespace: 'xmtp',
        prefix: b.prefix,
      });
      await assert.rejects(store.get(mallory), code('BRIDGE_KEY_STORE'));
    });

    it('gives one DID one XMTP account even when two bridge processes bridge it at once', async () => {
      const network = new FakeXmtpNetwork();
      const a = track(await makeBridge({ redisUrl: redis.url, network }));
      const b = track(await makeBridge({ redisUrl: redis.url, network, kek: a.kek, prefix: a.prefix }));
      const peers = Array.from({ length: 5 }, did);
      const [fromA, fromB] = await Promise.all([
        Promise.all(peers.map((p) => a.identities.ensure(p))),
        Promise.all(peers.map((p) => b.identities.ensure(p))),
      ]);
      assert.deepEqual(
        fromA.map((i) => i.address),
        fromB.map((i) => i.address),
      );
      assert.equal(new Set(fromA.map((i) => i.address)).size, 5);
      assert.equal(await a.identities.count(), 5);
      assert.equal(await a.identities.didOfAddress(fromA[0]?.address ?? ''), peers[0]);
    });
    it('bridges at most BRIDGE_XMTP_MAX_IDENTITIES peers (BRIDGE_IDENTITY_LIMIT, final)', async () => {
      const network = new FakeXmtpNetwork();
      const b = track(await makeBridge({ redisUrl: redis.url, network, maxIdentities: 2 }));
      await b.bridge.bridgeIdentity(did());
      const second = did();
      await b.bridge.bridgeIdentity(second);
      await assert.rejects(b.bridge.bridgeIdentity(did()), code('BRIDGE_IDENTITY_LIMIT', false));
      // Those already bridged stay bridged.
      assert.ok(await b.bridge.bridgeIdentity(second));
      assert.equal(await b.identities.count(), 2);
    });
  });

  describe('installations', () => {
    it('reuses the installation of the local database after a restart, and never registers another', async () => {
      const network = new FakeXmtpNetwork();
      const first = await makeBridge({ redisUrl: redis.url, network });
      const alice = did();
      const identity = await first.bridge.bridgeIdentity(alice);
      const { inboxId, installationId } = (await first.identities.get(alice)) ?? {};
      assert.ok(inboxId && installationId);
      await first.close();
      for (let restart = 0; restart < FAKE_MAX_INSTALLATIONS + 2; restart++) {
        const again = await makeBridge({
          redisUrl: redis.url,
          network,
          kek: first.kek,
          dbDir: first.dbDir,
          prefix: first.prefix,
        });
        await again.bridge.start();
        assert.equal((await again.bridge.foreignIdentityOf(alice))?.uri, identity.uri);
        const client = await again.bridge.clientOf(alice);
        assert.equal(client.installationId, installationId);
        assert.equal(await counterTotal(again.metrics.installations, { result: 'reused' }), 1);
        await again.close();
      }
      // More restarts than XMTP allows installations: still the one.
      assert.equal(network.installationsOf(inboxId), 1);
    });

    it('refuses to open an inbox whose database is gone (BRIDGE_STATE_MISSING) unless the operator allows a new installation', async () => {
      const network = new FakeXmtpNetwork();
      const first = await makeBridge({ redisUrl: redis.url, network });
      const alice = did();
      await first.bridge.bridgeIdentity(alice);
      const info = await first.identities.get(alice);
      await first.close();
      const dbPath = first.identities.dbPath(info?.address ?? '');
      assert.ok(existsSync(dbPath));
      rmSync(dbPath);
      const lost = track(
        await makeBridge({ redisUrl: redis.url, network, kek: first.kek, dbDir: first.dbDir, prefix: first.prefix }),
      );
      await lost.bridge.start();
      await assert.rejects(lost.bridge.clientOf(alice), code('BRIDGE_STATE_MISSING', false));
      assert.equal(lost.bridge.health().status, 'degraded');
      assert.ok((await counterTotal(lost.metrics.installations, { result: 'missing' })) >= 1);
      assert.equal(network.installationsOf(info?.inboxId ?? ''), 1);
      const allowed = track(
        await makeBridge({
          redisUrl: redis.url,
          network,
          kek: first.kek,
          dbDir: first.dbDir,
          prefix: first.prefix,
          overrides: { allowNewInstallation: true },
        }),
      );
      const client = await allowed.bridge.clientOf(alice);
      assert.notEqual(client.installationId, info?.installationId);
      assert.equal(await counterTotal(allowed.metrics.installations, { result: 'changed' }), 1);
      assert.equal((await allowed.identities.get(alice))?.installationId, client.installationId);
      assert.equal(network.installationsOf(info?.inboxId ?? ''), 2);
    });

    it('starts at once while XMTP is down, and opens its inboxes when XMTP is back (retried sync jobs)', async () => {
      const network = new FakeXmtpNetwork();
      const first = await makeBridge({ redisUrl: redis.url, network });
      const peers = [did(), did(), did()];
      const identities = [];
      for (const p of peers) identities.push(await first.bridge.bridgeIdentity(p));
      await first.close();
      network.failNext('open', network.unavailable('open'), 6);
      const again = track(
        await makeBridge(
          {
            redisUrl: redis.url,
            network,
            kek: first.kek,
            dbDir: first.dbDir,
            prefix: first.prefix,
            whenNoPolicy: 'allow',
          },
          true,
        ),
      );
      await again.bridge.start();
      await until('three inboxes open', async () =>
        (await again.metrics.clients.get()).values.find((v) => v.labels.state === 'open')?.value === 3
          ? true
          : undefined,
      );
      assert.ok((await counterTotal(again.metrics.syncs, { result: 'retry' })) >= 2);
      assert.equal(again.bridge.health().status, 'ok');
      const user = new FakeXmtpUser(network);
      user.send(identities[2] as ForeignIdentity, { type: 'text', text: 'after the outage' });
      await until('the message', () => (again.received.length === 1 ? true : undefined));
      assert.equal(again.received[0]?.to, peers[2]);
    });

    it('does not open a database under another key (BRIDGE_KEY_STORE, final)', async () => {
      const network = new FakeXmtpNetwork();
      const b = track(await makeBridge({ redisUrl: redis.url, network }));
      const alice = did();
      await b.bridge.bridgeIdentity(alice);
      const account = await b.identities.account(alice);
      account.dbEncryptionKey.fill(1);
      await assert.rejects(network.open(account, { mayCreateInstallation: false }), code('BRIDGE_KEY_STORE', false));
    });
  });

  describe('outbound', () => {
    let network: FakeXmtpNetwork;
    let b: TestBridge;
    let user: FakeXmtpUser;
    const alice = did();
    let aliceXmtp: ForeignIdentity;

    before(async () => {
      network = new FakeXmtpNetwork();
      b = track(await makeBridge({ redisUrl: redis.url, network }));
      user = new FakeXmtpUser(network);
      aliceXmtp = await b.bridge.bridgeIdentity(alice);
    });

    it('sends to an address and to an inbox id, in one DM', async () => {
      const byAddress = await b.bridge.send({
        type: 'private',
        id: hexId(),
        from: alice,
        to: { type: 'xmtp', uri: `xmtp:${user.address}`, kind: 'address', value: user.address },
        text: 'by address',
      });
      const byInbox = await b.bridge.send({
        type: 'private',
        id: hexId(),
        from: alice,
        to: user.identity,
        text: 'by inbox',
      });
      assert.deepEqual(byAddress.acceptedBy, ['xmtp:fake']);
      const got = user.received(aliceXmtp);
      assert.deepEqual(
        got.map((m) => m.id),
        [byAddress.foreignId, byInbox.foreignId],
      );
      assert.equal(new Set(got.map((m) => m.conversationId)).size, 1);
    });

    it('sends a frame once however often it is sent again, and finishes a publish a crash interrupted', async () => {
      const id = hexId();
      const first = await b.bridge.send({ type: 'private', id, from: alice, to: user.identity, text: 'once' });
      const again = await b.bridge.send({ type: 'private', id, from: alice, to: user.identity, text: 'once' });
      assert.equal(again.foreignId, first.foreignId);
      // Kept BRIDGE_XMTP_SENT_TTL_SECONDS (3600 in the harness), not for ever.
      const ttl = await b.redis.ttl(`${b.prefix}:xmtp:sent:${id}`);
      assert.ok(ttl > 3500 && ttl <= 3600, `ttl ${ttl}`);
      // Prepared, recorded, then the publish fails: the retry publishes that same message.
      const id2 = hexId();
      network.failNext('publish', network.unavailable('publish'));
      await assert.rejects(
        b.bridge.send({ type: 'private', id: id2, from: alice, to: user.identity, text: 'after a failed publish' }),
        code('BRIDGE_UNAVAILABLE', true),
      );
      assert.equal(
        user.received(aliceXmtp).filter((m) => m.content.type === 'text' && m.content.text === 'after a failed publish')
          .length,
        0,
      );
      const retried = await b.bridge.send({
        type: 'private',
        id: id2,
        from: alice,
        to: user.identity,
        text: 'after a failed publish',
      });
      const copies = user
        .received(aliceXmtp)
        .filter((m) => m.content.type === 'text' && m.content.text !== 'by address' && m.content.text !== 'by inbox');
      assert.deepEqual(
        copies.map((m) => (m.content.type === 'text' ? m.content.text : '')),
        ['once', 'after a failed publish'],
      );
      assert.equal(copies[1]?.id, retried.foreignId);
      assert.equal(await counterTotal(b.metrics.sends, { result: 'duplicate' }), 2);
    });

    it('ends with a final code what cannot succeed, and marks what may', async () => {
      const nobody = `0x${randomBytes(20).toString('hex')}`;
      await assert.rejects(
        b.bridge.send({
          type: 'private',
          id: hexId(),
          from: alice,
          to: { type: 'xmtp', uri: `xmtp:${nobody}`, kind: 'address', value: nobody },
          text: 'x',
        }),
        code('BRIDGE_RECIPIENT_UNREACHABLE', false),
      );
      const noInbox = randomBytes(32).toString('hex');
      await assert.rejects(
        b.bridge.send({
          type: 'private',
          id: hexId(),
          from: alice,
          to: { type: 'xmtp', uri: `xmtp:${noInbox}`, kind: 'inbox', value: noInbox },
          text: 'x',
        }),
        code('BRIDGE_RECIPIENT_UNREACHABLE', false),
      );
      await assert.rejects(
        b.bridge.send({ type: 'public', id: hexId(), from: alice, text: 'x' }),
        code('BRIDGE_PROTOCOL_MISMATCH', false),
      );
      network.failNext('prepareText', network.rateLimited(1234));
      await assert.rejects(
        b.bridge.send({ type: 'private', id: hexId(), from: alice, to: user.identity, text: 'x' }),
        (err: unknown) => err instanceof BridgeError && err.rateLimited && err.retryAfterMs === 1234,
      );
      assert.equal(await counterTotal(b.metrics.rateLimited, { direction: 'write' }), 1);
      assert.equal(await counterTotal(b.metrics.sends, { result: 'BRIDGE_RECIPIENT_UNREACHABLE' }), 2);
    });
  });

  describe('inbound', () => {
    async function started(
      network: FakeXmtpNetwork,
      options: { whenNoPolicy?: 'allow' | 'deny' } = {},
      from?: TestBridge,
    ) {
      const b = track(
        await makeBridge(
          {
            redisUrl: redis.url,
            network,
            ...(options.whenNoPolicy ? { whenNoPolicy: options.whenNoPolicy } : {}),
            ...(from ? { kek: from.kek, dbDir: from.dbDir, prefix: from.prefix } : {}),
          },
          true,
        ),
      );
      await b.bridge.start();
      return b;
    }

    it('resumes after a restart without a gap or a duplicate, across pages and equal timestamps', async () => {
      const network = new FakeXmtpNetwork();
      const first = await started(network, { whenNoPolicy: 'allow' });
      const alice = did();
      const aliceXmtp = await first.bridge.bridgeIdentity(alice);
      const user = new FakeXmtpUser(network);
      // Seven messages, three of them on one nanosecond: pages of three cut through the tie.
      const texts = ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7'];
      for (const [i, text] of texts.entries()) user.send(aliceXmtp, { type: 'text', text }, i === 3 || i === 4);
      await until('seven messages', () => (first.received.length >= 7 ? true : undefined));
      assert.deepEqual(
        first.received.map((m) => m.text),
        texts,
      );
      await first.close();
      // Written while the bridge is down.
      for (const text of ['d1', 'd2', 'd3', 'd4']) user.send(aliceXmtp, { type: 'text', text }, text === 'd2');
      const second = await started(network, {}, first);
      await until('the four written meanwhile', () => (second.received.length >= 4 ? true : undefined));
      assert.deepEqual(
        second.received.map((m) => m.text),
        ['d1', 'd2', 'd3', 'd4'],
      );
      const first7 = first.received.map((m) => m.id);
      assert.equal(new Set([...first7, ...second.received.map((m) => m.id)]).size, 11);
      assert.equal(second.received[0]?.from.uri, `xmtp:${user.inboxId}`);
      assert.equal(second.received[0]?.to, alice);
      // Nothing more arrives after a further network sync.
      await second.bridge.inbound.trigger(alice, true);
      await until('the sync to run', async () =>
        (await counterTotal(second.metrics.syncs, { kind: 'network', result: 'ok' })) >= 2 ? true : undefined,
      );
      assert.equal(second.received.length, 4);
    });

    it('keeps the cursor before a message the federation did not take, and hands it over on the retry', async () => {
      const network = new FakeXmtpNetwork();
      const b = await started(network, { whenNoPolicy: 'allow' });
      let refuse = 2;
      const taken: string[] = [];
      b.bridge.onInbound(async (m) => {
        if (m.text === 'second' && refuse-- > 0) throw new Error('inbound queue unavailable');
        taken.push(m.text);
      });
      const alice = did();
      const to = await b.bridge.bridgeIdentity(alice);
      const user = new FakeXmtpUser(network);
      for (const text of ['first', 'second', 'third']) user.send(to, { type: 'text', text });
      await until('all three', () => (taken.length >= 3 ? true : undefined));
      assert.deepEqual(taken, ['first', 'second', 'third']);
      assert.equal(await counterTotal(b.metrics.handlerFailures), 2);
    });

    it('skips a message the federation refuses as malformed instead of retrying it for ever', async () => {
      const network = new FakeXmtpNetwork();
      const b = await started(network, { whenNoPolicy: 'allow' });
      const taken: string[] = [];
      b.bridge.onInbound(async (m) => {
        if (m.text === 'poison') throw new LibertariaError('FEDERATED_ENVELOPE_INVALID', 'refused by the encoder');
        taken.push(m.text);
      });
      const to = await b.bridge.bridgeIdentity(did());
      const user = new FakeXmtpUser(network);
      for (const text of ['before', 'poison', 'after']) user.send(to, { type: 'text', text });
      await until('the message after', () => (taken.includes('after') ? true : undefined));
      assert.deepEqual(taken, ['before', 'after']);
      assert.equal(await counterTotal(b.metrics.skipped, { reason: 'malformed' }), 1);
    });

    it("lets an unknown sender through only by the owner's membrane policy, and never from a denied DM", async () => {
      const network = new FakeXmtpNetwork();
      const b = await started(network); // owners without a policy: deny
      const alice = did();
      const to = await b.bridge.bridgeIdentity(alice);
      const stranger = new FakeXmtpUser(network);
      const friend = new FakeXmtpUser(network);
      const known = new FakeXmtpUser(network);
      // Alice's own policy, as the relay stores it (POLICY_PUT): this one XMTP inbox may write to her.
      await b.policies.put(alice, {
        version: 1,
        capabilities: [{ resource: `federated://xmtp/${friend.inboxId}`, action: 'send' }],
      });
      stranger.send(to, { type: 'text', text: 'from a stranger' });
      friend.send(to, { type: 'text', text: 'from a friend' });
      friend.send(to, { type: 'text', text: 'friend again' });
      await until('the friend', () => (b.received.length >= 2 ? true : undefined));
      // A DM Alice started is allowed: its answers need no decision.
      await b.bridge.send({ type: 'private', id: hexId(), from: alice, to: known.identity, text: 'hi' });
      known.send(to, { type: 'text', text: 'answer' });
      await until('the answer', () => (b.received.length >= 3 ? true : undefined));
      assert.deepEqual(
        b.received.map((m) => m.text),
        ['from a friend', 'friend again', 'answer'],
      );
      // One decision for the friend's DM (then allowed), one for the stranger's message, none for the known DM.
      assert.equal(await counterTotal(b.metrics.consent, { result: 'allowed' }), 1);
      assert.equal(await counterTotal(b.metrics.consent, { result: 'refused' }), 1);
      assert.equal(await counterTotal(b.metrics.skipped, { reason: 'refused' }), 1);
      // A DM the owner denied: nothing from it, no question asked.
      const client = await b.bridge.clientOf(alice);
      await client.setConsent(network.dmId(client.inboxId, friend.inboxId), 'denied');
      friend.send(to, { type: 'text', text: 'after the block' });
      await until('the denied message to be skipped', async () =>
        (await counterTotal(b.metrics.skipped, { reason: 'denied' })) === 1 ? true : undefined,
      );
      assert.equal(b.received.length, 3);
      assert.equal(await counterTotal(b.metrics.consent), 2);
    });

    it('loses no wake-up: a message stored while a read ends is read by the next job, not the periodic sync', async () => {
      const network = new FakeXmtpNetwork();
      const b = await started(network, { whenNoPolicy: 'allow' }); // periodic sync: 60 s, longer than the wait
      const alice = did();
      const to = await b.bridge.bridgeIdentity(alice);
      const user = new FakeXmtpUser(network);
      // The moment the job reads its last page (the one holding 'first'), 'second' arrives by stream:
      // its wake-up comes while that job runs, after its read.
      network.onPage = (page) => {
        if (page.messages.some((m) => m.content.type === 'text' && m.content.text === 'first')) {
          network.onPage = undefined;
          user.send(to, { type: 'text', text: 'second' });
        }
      };
      user.send(to, { type: 'text', text: 'first' });
      await until('both', () => (b.received.length >= 2 ? true : undefined), 10_000);
      assert.deepEqual(
        b.received.map((m) => m.text),
        ['first', 'second'],
      );
    });

    it('hands over text, replies and reactions as text, and skips what has none or is too large', async () => {
      const network = new FakeXmtpNetwork();
      const b = await started(network, { whenNoPolicy: 'allow' });
      const alice = did();
      const to = await b.bridge.bridgeIdentity(alice);
      const user = new FakeXmtpUser(network);
      const first = user.send(to, { type: 'text', text: 'hello' });
      user.send(to, { type: 'reply', text: 'replying', reference: first.id });
      user.send(to, { type: 'reaction', emoji: '👍', reference: first.id, action: 'added' });
      user.send(to, { type: 'reaction', emoji: '👍', reference: first.id, action: 'removed' });
      user.send(to, { type: 'other', contentType: 'xmtp.org/readReceipt:1.0', fallback: undefined });
      user.send(to, { type: 'other', contentType: 'xmtp.org/attachment:1.0', fallback: 'an attachment (photo.png)' });
      user.send(to, { type: 'text', text: 'x'.repeat(2001) });
      // A message id that is not hex, from the user.
      network.sendAs(
        user.inboxId,
        network.inboxIdOf(to.type === 'xmtp' ? to.value : ''),
        { type: 'text', text: 'bad id' },
        false,
        'not hex\n',
      );
      // A network that names a sender with something that is no inbox id.
      network.sendAs('not-an-inbox-id', network.inboxIdOf(to.type === 'xmtp' ? to.value : ''), {
        type: 'text',
        text: 'forged',
      });
      user.send(to, { type: 'text', text: 'last' });
      await until('the last', () => (b.received.some((m) => m.text === 'last') ? true : undefined));
      assert.deepEqual(
        b.received.map((m) => m.text),
        ['hello', 'replying', 'reacted 👍', 'an attachment (photo.png)', 'last'],
      );
      const expected: Record<string, number> = { reaction_removed: 1, unsupported: 1, too_large: 1, malformed: 2 };
      for (const [reason, count] of Object.entries(expected)) {
        // The forged sender's DM may be read after the user's: wait for each count.
        await until(`${count} ${reason}`, async () =>
          (await counterTotal(b.metrics.skipped, { reason })) === count ? true : undefined,
        );
      }
      assert.equal(b.received.length, 5);
    });

    it('pauses reading when XMTP rate-limits a read, then goes on', async () => {
      const network = new FakeXmtpNetwork();
      const b = await started(network, { whenNoPolicy: 'allow' });
      const alice = did();
      const to = await b.bridge.bridgeIdentity(alice);
      await until('the first sync', async () =>
        (await counterTotal(b.metrics.syncs, { result: 'ok' })) >= 1 ? true : undefined,
      );
      const user = new FakeXmtpUser(network);
      network.failNext('messagesAfter', network.rateLimited(300));
      const t0 = Date.now();
      user.send(to, { type: 'text', text: 'slowly' });
      await until('the message', () => (b.received.length >= 1 ? true : undefined));
      assert.ok(Date.now() - t0 >= 300, 'waited out the pause');
      assert.equal(await counterTotal(b.metrics.rateLimited, { direction: 'read' }), 1);
    });

    it('reads no faster than BRIDGE_XMTP_READ_RATE (the sync queue limiter)', async () => {
      const network = new FakeXmtpNetwork();
      const b = track(await makeBridge({ redisUrl: redis.url, network, overrides: { readRatePerSecond: 2 } }, true));
      const peers = Array.from({ length: 6 }, did);
      for (const p of peers) await b.bridge.bridgeIdentity(p);
      const syncsBefore = network.calls.sync;
      const t0 = Date.now();
      await b.bridge.start(); // one network sync per inbox: 6 jobs at 2 per second
      await until('six syncs', () => (network.calls.sync - syncsBefore >= 6 ? true : undefined), 30_000);
      // Six jobs at two per second: the last one starts in the third window at the earliest.
      assert.ok(Date.now() - t0 >= 2000, `six syncs took ${Date.now() - t0} ms`);
    });
  });
});
