/**
 * The ActivityPub bridge against an independent ActivityPub server
 * (test/support/ap-server.ts: node:http and node:crypto only, verifying
 * draft-cavage signatures as Mastodon does), both on loopback over plain
 * HTTP, with a real Redis under the bridge (sealed actors, Fedify's cache and
 * BullMQ queue). The relay cluster is in federation.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  BridgeError,
  type BridgeInboundMessage,
  type ForeignIdentity,
  parseForeignIdentity,
} from '@libertaria/bridge-kit';
import { ForeignSenderPolicy } from '@libertaria/bridge-kit/worker';
import { Ed25519Identity } from '@libertaria/identity';
import { DEFAULT_MEMBRANE_LIMITS } from '@libertaria/membrane';
import { RedisPolicyStore } from '@libertaria/membrane/redis';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { BridgeActivityPubMetrics } from '../src/metrics.js';
import { ApServer, noteText } from './support/ap-server.js';
import { makeBridge, TEST_MAX_ACTIVITY_BYTES, type TestBridge } from './support/bridge.js';

async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function hex(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex');
}

describe('ActivityPub bridge <-> an independent ActivityPub server (plain HTTP, loopback)', () => {
  let redis: RedisHandle;
  let t: TestBridge;
  let remote: ApServer;
  let policyRedis: RedisClient;
  let policyStore: RedisPolicyStore;
  let policy: ForeignSenderPolicy;
  const inbound: BridgeInboundMessage[] = [];
  const alice = Ed25519Identity.generate().did;
  let aliceAcct: ForeignIdentity;
  let aliceActor: string;
  let bob: ForeignIdentity;

  before(async () => {
    redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] });
    remote = new ApServer(['bob', 'carol', 'dana']);
    await remote.start();
    // The owners' policies as a relay node writes them (POLICY_PUT), read by the real ForeignSenderPolicy.
    policyRedis = createRedisClient({ url: redis.url }, {});
    policyStore = new RedisPolicyStore(policyRedis, createRedisClient({ url: redis.url }, { lazyConnect: true }), {
      prefix: 'lr',
      limits: DEFAULT_MEMBRANE_LIMITS,
    });
    policy = new ForeignSenderPolicy({
      redis: policyRedis,
      relayPrefix: 'lr',
      network: 'activitypub',
      whenNoPolicy: 'allow',
    });
    await policy.start();
    t = await makeBridge({ redisUrl: redis.url, policy });
    t.bridge.onInbound(async (m) => {
      inbound.push(m);
    });
    await t.bridge.start();
    aliceAcct = await t.bridge.bridgeIdentity(alice);
    aliceActor = `${t.origin}/users/${aliceAcct.uri.slice(5).split('@')[0]}`;
    bob = parseForeignIdentity(remote.acct('bob'));
  });

  after(async () => {
    await t?.close();
    await policy?.close();
    await policyRedis?.quit().catch(() => undefined);
    await remote?.stop();
    await redis?.stop();
  });

  it('serves WebFinger, the actor with RSA and Ed25519 keys, its collections and NodeInfo', async () => {
    const handle = aliceAcct.uri.slice(5).split('@')[0] as string;
    assert.match(handle, /^l[a-z2-7]{24}$/, 'the handle rule');
    const jrd = (await (await fetch(`${t.origin}/.well-known/webfinger?resource=${aliceAcct.uri}`)).json()) as {
      subject: string;
      links: { rel: string; href: string }[];
    };
    assert.equal(jrd.subject, aliceAcct.uri);
    assert.ok(jrd.links.some((l) => l.rel === 'self' && l.href === aliceActor));
    const doc = (await (
      await fetch(aliceActor, { headers: { accept: 'application/activity+json' } })
    ).json()) as Record<string, unknown>;
    assert.equal(doc.type, 'Person');
    assert.equal(doc.inbox, `${aliceActor}/inbox`);
    assert.equal((doc.endpoints as { sharedInbox: string }).sharedInbox, `${t.origin}/inbox`);
    assert.match(JSON.stringify(doc.publicKey), /BEGIN PUBLIC KEY/);
    assert.match(JSON.stringify(doc.assertionMethod), /z6Mk/, 'the Ed25519 key as a Multikey');
    const followers = await fetch(doc.followers as string, { headers: { accept: 'application/activity+json' } });
    assert.equal(followers.status, 200);
    const outbox = (await (
      await fetch(doc.outbox as string, { headers: { accept: 'application/activity+json' } })
    ).json()) as {
      totalItems: number;
    };
    assert.equal(outbox.totalItems, 0, 'the bridge keeps no copy of messages');
    const links = (await (await fetch(`${t.origin}/.well-known/nodeinfo`)).json()) as { links: { href: string }[] };
    const nodeinfo = (await (await fetch(links.links[0]?.href as string)).json()) as { protocols: string[] };
    assert.deepEqual(nodeinfo.protocols, ['activitypub']);
    // The same DID again: the same actor; the keys are in Redis, sealed (no PEM in clear).
    assert.equal((await t.bridge.bridgeIdentity(alice)).uri, aliceAcct.uri);
    const stored = JSON.stringify(await t.redis.hgetall('{lr-bridge}:sealed:activitypub-actors:records'));
    assert.doesNotMatch(stored, /PRIVATE KEY/);
    assert.ok(stored.includes(handle));
  });

  it('sends a direct message: Create(Note) to the actor only, with a Mention, verified by the remote', async () => {
    const text = `hello bob <3 & "you" ${hex()}`;
    const result = await t.bridge.send({ type: 'private', id: hex(), from: alice, to: bob, text });
    assert.deepEqual(result.acceptedBy, [`${remote.actorId('bob')}/inbox`]);
    const got = await remote.waitFor(
      (r) => r.activity.type === 'Create' && JSON.stringify(r.activity).includes(result.foreignId),
      10_000,
    );
    assert.equal(got.signer, aliceActor);
    const note = got.activity.object as Record<string, unknown>;
    assert.equal(note.type, 'Note');
    assert.equal(noteText(String(note.content)), text);
    assert.deepEqual([note.to].flat(), [remote.actorId('bob')], 'addressed to bob only: a direct message');
    assert.equal(note.cc ?? undefined, undefined);
    const tags = [note.tag].flat() as { type: string; href: string }[];
    assert.ok(tags.some((tag) => tag.type === 'Mention' && tag.href === remote.actorId('bob')));
  });

  it('hands a direct message from the remote to the peer, as text, from acct:user@host', async () => {
    const { id: actorId, inbox } = await remote.resolve(aliceAcct.uri);
    const activity = remote.note('bob', { id: actorId, acct: aliceAcct.uri }, 'hi <alice> & co\nline two');
    assert.equal(await remote.deliver('bob', inbox, activity), 202);
    const got = await until('the inbound message', () => inbound.find((m) => m.id === activity.object.id));
    assert.equal(got.type, 'private');
    assert.equal(got.to, alice);
    assert.equal(got.from.uri, bob.uri);
    assert.equal(got.text, 'hi <alice> & co\nline two', 'the leading mention dropped, entities decoded');
    // Delivered again (a retrying server): handed over once.
    assert.equal(await remote.deliver('bob', inbox, activity), 202);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(inbound.filter((m) => m.id === activity.object.id).length, 1);
  });

  it('hands a public note that mentions the peer over as a mention; refuses a sender WebFinger does not confirm', async () => {
    const { id: actorId, inbox } = await remote.resolve(aliceAcct.uri);
    const mention = remote.note('bob', { id: actorId, acct: aliceAcct.uri }, 'hello everyone and alice', {
      public: true,
    });
    assert.equal(await remote.deliver('bob', inbox, mention), 202);
    const got = await until('the mention', () => inbound.find((m) => m.id === mention.object.id));
    assert.equal(got.type, 'mention');
    assert.equal(got.text, 'hello everyone and alice');

    // carol's actor claims preferredUsername "carol", but WebFinger does not know acct:carol@host: not a verified account.
    remote.unlisted.add('carol');
    try {
      const invalid = () => BridgeActivityPubMetrics.total(t.metrics.inbound, { type: 'Create', verdict: 'invalid' });
      const before = await invalid();
      const spoof = remote.note('carol', { id: actorId, acct: aliceAcct.uri }, 'who am I');
      assert.equal(await remote.deliver('carol', inbox, spoof), 202);
      await until('the refusal', async () => ((await invalid()) > before ? true : undefined));
      assert.ok(!inbound.some((m) => m.id === spoof.object.id));
    } finally {
      remote.unlisted.delete('carol');
    }
  });

  it('replies keep the thread: the next message to bob answers his last note (inReplyTo)', async () => {
    const last = inbound.filter((m) => m.from.uri === bob.uri).at(-1);
    assert.ok(last);
    const result = await t.bridge.send({ type: 'private', id: hex(), from: alice, to: bob, text: 'a reply' });
    const got = await remote.waitFor((r) => JSON.stringify(r.activity).includes(result.foreignId), 10_000);
    assert.equal((got.activity.object as { inReplyTo?: string }).inReplyTo, last.id);
  });

  it('refuses forged signatures, tampered bodies, unsigned, malformed and oversized activities, counted by reason', async () => {
    const { id: actorId, inbox } = await remote.resolve(aliceAcct.uri);
    const refused = (reason: string) => BridgeActivityPubMetrics.total(t.metrics.refused, { reason });
    const activity = remote.note('bob', { id: actorId, acct: aliceAcct.uri }, 'forged');
    // Signed by carol's key, claiming to be bob.
    const forged = await remote.signedFetch(inbox, 'POST', JSON.stringify(activity), 'carol');
    assert.equal(forged.status, 401);
    const body = JSON.stringify(remote.note('bob', { id: actorId, acct: aliceAcct.uri }, 'original'));
    const signed = await remote.signedFetch(inbox, 'POST', body, 'bob');
    assert.equal(signed.status, 202);
    // The same signed headers, a body changed after signing: the digest no longer matches.
    const tampered = await fetch(inbox, {
      method: 'POST',
      headers: remote.signHeaders(inbox, 'POST', body, 'bob'),
      body: body.replace('original', 'tampered'),
    });
    assert.equal(tampered.status, 401);
    const headers = { date: new Date().toUTCString(), 'content-type': 'application/activity+json' };
    const unsigned = await fetch(inbox, { method: 'POST', headers, body });
    assert.equal(unsigned.status, 401);
    const notJson = await fetch(inbox, { method: 'POST', headers, body: '{nope' });
    assert.equal(notJson.status, 400);
    const shape = await fetch(inbox, { method: 'POST', headers, body: '{"type":"Create"}' });
    assert.equal(shape.status, 400);
    const big = await fetch(inbox, { method: 'POST', headers, body: 'x'.repeat(TEST_MAX_ACTIVITY_BYTES + 1) });
    assert.equal(big.status, 413);
    assert.equal(await refused('signature'), 2, 'forged and tampered');
    assert.equal(await refused('unsigned'), 1);
    assert.equal(await refused('json'), 1);
    assert.equal(await refused('shape'), 1);
    assert.equal(await refused('too_large'), 1);
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(!inbound.some((m) => m.text === 'forged' || m.text === 'tampered'), 'nothing refused reached the peer');
  });

  it('answers Follow with Accept or Reject by the owner’s policy, and Undo removes the follower', async () => {
    const { id: actorId, inbox } = await remote.resolve(aliceAcct.uri);
    // Alice lets the whole fediverse message her, and bob and dana (not carol) follow her.
    await policyStore.put(alice, {
      version: 1,
      capabilities: [
        { resource: 'federated://activitypub/*', action: 'send' },
        { resource: `federated://activitypub/${remote.host}/bob`, action: 'read' },
        { resource: `federated://activitypub/${remote.host}/dana`, action: 'read' },
      ],
    });
    const follow = (who: string) => ({
      '@context': 'https://www.w3.org/ns/activitystreams',
      id: `${remote.actorId(who)}#follows/${hex()}`,
      type: 'Follow',
      actor: remote.actorId(who),
      object: actorId,
    });
    const fromBob = follow('bob');
    const fromCarol = follow('carol');
    assert.equal(await remote.deliver('bob', inbox, fromBob), 202);
    assert.equal(await remote.deliver('carol', inbox, fromCarol), 202);
    const accept = await remote.waitFor((r) => r.activity.type === 'Accept', 15_000, 'an Accept');
    assert.equal((accept.activity.object as { id: string }).id, fromBob.id);
    assert.equal(accept.inbox, '/users/bob/inbox');
    const reject = await remote.waitFor((r) => r.activity.type === 'Reject', 15_000, 'a Reject');
    assert.equal((reject.activity.object as { id: string }).id, fromCarol.id);
    const handle = aliceAcct.uri.slice(5).split('@')[0] as string;
    assert.equal(await t.bridge.state.followerCount(handle), 1);
    const undo = {
      '@context': 'https://www.w3.org/ns/activitystreams',
      id: `${remote.actorId('bob')}#undo/${hex()}`,
      type: 'Undo',
      actor: remote.actorId('bob'),
      object: fromBob,
    };
    assert.equal(await remote.deliver('bob', inbox, undo), 202);
    await until('the follower to be removed', async () =>
      (await t.bridge.state.followerCount(handle)) === 0 ? true : undefined,
    );
    assert.equal(await BridgeActivityPubMetrics.total(t.metrics.inbound, { type: 'Follow', verdict: 'accepted' }), 1);
    assert.equal(await BridgeActivityPubMetrics.total(t.metrics.inbound, { type: 'Follow', verdict: 'rejected' }), 1);
  });

  it('works with a server in authorized-fetch mode: actor fetches both ways are signed', async () => {
    const dana = parseForeignIdentity(remote.acct('dana'));
    remote.secureMode = true;
    remote.keyCache.clear();
    try {
      const unsigned = await fetch(remote.actorId('dana'), { headers: { accept: 'application/activity+json' } });
      assert.equal(unsigned.status, 401, 'the server refuses unsigned actor fetches');
      remote.refused.length = 0;
      const result = await t.bridge.send({ type: 'private', id: hex(), from: alice, to: dana, text: 'secure hello' });
      const got = await remote.waitFor((r) => JSON.stringify(r.activity).includes(result.foreignId), 10_000);
      assert.equal(got.signer, aliceActor);
      const { id: actorId, inbox } = await remote.resolve(aliceAcct.uri);
      const note = remote.note('dana', { id: actorId, acct: aliceAcct.uri }, 'secure reply');
      assert.equal(await remote.deliver('dana', inbox, note), 202);
      const back = await until('the reply', () => inbound.find((m) => m.id === note.object.id));
      assert.equal(back.from.uri, dana.uri);
      assert.deepEqual(remote.refused, [], 'every fetch of the bridge was signed and verified');
    } finally {
      remote.secureMode = false;
    }
  });

  it('sends public notes to followers through the queue; Update and Delete of an actor are handled', async () => {
    const { id: actorId, inbox } = await remote.resolve(aliceAcct.uri);
    const follow = {
      '@context': 'https://www.w3.org/ns/activitystreams',
      id: `${remote.actorId('dana')}#follows/${hex()}`,
      type: 'Follow',
      actor: remote.actorId('dana'),
      object: actorId,
    };
    assert.equal(await remote.deliver('dana', inbox, follow), 202);
    await remote.waitFor(
      (r) => r.activity.type === 'Accept' && (r.activity.object as { id: string }).id === follow.id,
      15_000,
    );
    const result = await t.bridge.send({ type: 'public', id: hex(), from: alice, text: 'hello, followers' });
    const note = await remote.waitFor(
      (r) => JSON.stringify(r.activity).includes(result.foreignId),
      15_000,
      'the public note',
    );
    assert.equal(note.inbox, '/inbox', "delivered to the follower's shared inbox");
    assert.ok(
      JSON.stringify([(note.activity.object as { to: unknown }).to]).includes(
        'https://www.w3.org/ns/activitystreams#Public',
      ),
    );
    assert.equal(noteText(String((note.activity.object as { content: string }).content)), 'hello, followers');

    const handle = aliceAcct.uri.slice(5).split('@')[0] as string;
    const danaId = remote.actorId('dana');
    const update = {
      '@context': 'https://www.w3.org/ns/activitystreams',
      id: `${danaId}#update-${hex()}`,
      type: 'Update',
      actor: danaId,
      object: danaId,
    };
    assert.equal(await remote.deliver('dana', inbox, update), 202);
    await until('the Update', async () =>
      (await BridgeActivityPubMetrics.total(t.metrics.inbound, { type: 'Update', verdict: 'refreshed' })) === 1
        ? true
        : undefined,
    );
    const del = {
      '@context': 'https://www.w3.org/ns/activitystreams',
      id: `${danaId}#delete-${hex()}`,
      type: 'Delete',
      actor: danaId,
      object: danaId,
    };
    assert.equal(await t.bridge.state.followerCount(handle), 1);
    assert.equal(await remote.deliver('dana', inbox, del), 202);
    await until('the follower to be dropped', async () =>
      (await t.bridge.state.followerCount(handle)) === 0 ? true : undefined,
    );
  });

  it('maps remote answers to retry decisions: 410 and 404 final, 429 rate-limited with Retry-After, down retryable', async () => {
    const send = () => t.bridge.send({ type: 'private', id: hex(), from: alice, to: bob, text: 'x' });
    const fails = async (check: (err: BridgeError) => void) => {
      const err = await send().then(
        () => assert.fail('the send should fail'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof BridgeError, String(err));
      check(err);
    };
    try {
      remote.forceInbox = { status: 410 };
      await fails((err) => assert.equal(err.retryable, false));
      remote.forceInbox = { status: 404 };
      await fails((err) => assert.equal(err.retryable, false));
      remote.forceInbox = { status: 429, headers: { 'retry-after': '3' } };
      await fails((err) => {
        assert.equal(err.rateLimited, true);
        assert.equal(err.retryAfterMs, 3000);
      });
      remote.forceInbox = { status: 503 };
      await fails((err) => assert.equal(err.retryable, true));
    } finally {
      remote.forceInbox = undefined;
    }
    const failures = (reason: string) => BridgeActivityPubMetrics.total(t.metrics.deliveryFailures, { reason });
    assert.equal(await failures('gone'), 1);
    assert.equal(await failures('not_found'), 1);
    assert.equal(await failures('rate_limited'), 1);
    assert.equal(await failures('server_error'), 1);
  });

  it('refuses what the contract says: unknown sender, too large, another network', async () => {
    await assert.rejects(
      t.bridge.send({ type: 'private', id: hex(), from: Ed25519Identity.generate().did, to: bob, text: 'x' }),
      (err: BridgeError) => err.code === 'BRIDGE_IDENTITY_UNKNOWN' && !err.retryable,
    );
    await assert.rejects(
      t.bridge.send({ type: 'private', id: hex(), from: alice, to: bob, text: 'x'.repeat(2001) }),
      (err: BridgeError) => err.code === 'BRIDGE_MESSAGE_TOO_LARGE',
    );
    await assert.rejects(
      t.bridge.send({
        type: 'private',
        id: hex(),
        from: alice,
        to: parseForeignIdentity('nostr:npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6'),
        text: 'x',
      }),
      (err: BridgeError) => err.code === 'BRIDGE_PROTOCOL_MISMATCH',
    );
    const nobody = parseForeignIdentity(`acct:nobody@${remote.host}`);
    await assert.rejects(
      t.bridge.send({ type: 'private', id: hex(), from: alice, to: nobody, text: 'x' }),
      (err: BridgeError) => err.code === 'BRIDGE_UNAVAILABLE' && !err.retryable,
    );
  });
});
