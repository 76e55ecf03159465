/**
 * Two bridge instances behind one domain: two ActivityPubBridges (each with
 * its own Redis connections, Fedify federation, queue listener and HTTP
 * listener) on one Redis with one KEK, behind a round-robin HTTP front whose
 * address is their shared origin, against the independent ActivityPub server.
 * They serve the same actors with the same keys, share followers, deliver
 * each inbound activity once, and either can send for any actor.
 *
 * Both instances run in this one Node process: the relay side (the
 * federation worker's sealed sessions, a file per process today) is not
 * shared yet, so two OS processes of the full service are not run here
 * (docs/bridges.md#what-is-not-done).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { BridgeInboundMessage, ForeignIdentity } from '@libertaria/bridge-kit';
import { ForeignSenderPolicy } from '@libertaria/bridge-kit/worker';
import { Ed25519Identity } from '@libertaria/identity';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { ApServer, noteText } from './support/ap-server.js';
import { makeBridge, type TestBridge } from './support/bridge.js';

/** An HTTP front sending each request to the next backend in turn, counting per backend. */
async function roundRobin(): Promise<{ server: Server; origin: string; backends: number[]; hits: number[] }> {
  const state = { backends: [] as number[], hits: [] as number[], next: 0 };
  const server = createServer((req, res) => {
    const i = state.next++ % state.backends.length;
    state.hits[i] = (state.hits[i] ?? 0) + 1;
    const upstream = request(
      { host: '127.0.0.1', port: state.backends[i], method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, { server, origin: `http://127.0.0.1:${port}` });
}

describe('two bridge instances behind one domain', () => {
  let redis: RedisHandle;
  let front: Awaited<ReturnType<typeof roundRobin>>;
  let one: TestBridge;
  let two: TestBridge;
  let policyRedis: RedisClient;
  let policy: ForeignSenderPolicy;
  let remote: ApServer;
  const inbound: { by: number; message: BridgeInboundMessage }[] = [];

  before(async () => {
    redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] });
    remote = new ApServer(['bob']);
    await remote.start();
    front = await roundRobin();
    policyRedis = createRedisClient({ url: redis.url }, {});
    policy = new ForeignSenderPolicy({
      redis: policyRedis,
      relayPrefix: 'lr',
      network: 'activitypub',
      whenNoPolicy: 'allow',
    });
    const kek = new Uint8Array(randomBytes(32));
    one = await makeBridge({ redisUrl: redis.url, policy, kek, origin: front.origin });
    two = await makeBridge({ redisUrl: redis.url, policy, kek, origin: front.origin });
    front.backends.push(one.http.port, two.http.port);
    for (const [i, t] of [one, two].entries()) {
      t.bridge.onInbound(async (message) => {
        inbound.push({ by: i, message });
      });
      await t.bridge.start();
    }
  });

  after(async () => {
    await one?.close();
    await two?.close();
    await policy?.close();
    await policyRedis?.quit().catch(() => undefined);
    front?.server.closeAllConnections();
    await new Promise<void>((resolve) => (front ? front.server.close(() => resolve()) : resolve()));
    await remote?.stop();
    await redis?.stop();
  });

  it('serve the same actor with the same key, whichever answers', async () => {
    const did = Ed25519Identity.generate().did;
    const acct = await one.bridge.bridgeIdentity(did);
    assert.equal((await two.bridge.foreignIdentityOf(did))?.uri, acct.uri);
    const docs = [];
    for (let i = 0; i < 4; i++) {
      const { id } = await remote.resolve(acct.uri);
      docs.push(await (await fetch(id, { headers: { accept: 'application/activity+json' } })).json());
    }
    assert.ok(front.hits[0]! > 0 && front.hits[1]! > 0, `both answered (${front.hits})`);
    for (const doc of docs) assert.deepEqual(doc, docs[0]);
  });

  it('deliver each inbound message once, and either sends for any actor (signature checked against the shared key)', async () => {
    const did = Ed25519Identity.generate().did;
    const acct = await two.bridge.bridgeIdentity(did);
    const bob: ForeignIdentity = {
      type: 'activitypub',
      kind: 'acct',
      uri: remote.acct('bob'),
      user: 'bob',
      host: remote.host,
    };
    const { id, inbox } = await remote.resolve(acct.uri);
    const texts = Array.from({ length: 8 }, (_, i) => `message ${i}`);
    for (const text of texts)
      assert.equal(await remote.deliver('bob', inbox, remote.note('bob', { id, acct: acct.uri }, text)), 202);
    const deadline = Date.now() + 30_000;
    while (texts.some((text) => !inbound.some((m) => m.message.text === text)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const text of texts) {
      assert.equal(inbound.filter((m) => m.message.text === text && m.message.to === did).length, 1, text);
    }
    remote.keyCache.clear();
    for (const [i, t] of [one, two].entries()) {
      const text = `sent by instance ${i}`;
      await t.bridge.send({ type: 'private', id: randomBytes(16).toString('hex'), from: did, to: bob, text });
      const got = await remote.waitFor(
        (r) => noteText(String((r.activity.object as { content?: string })?.content ?? '')) === text,
        10_000,
      );
      assert.equal(got.signer, id);
    }
  });

  it('share followers: a Follow answered by one is a follower for the other', async () => {
    const did = Ed25519Identity.generate().did;
    const acct = await one.bridge.bridgeIdentity(did);
    const { id, inbox } = await remote.resolve(acct.uri);
    const follow = {
      '@context': 'https://www.w3.org/ns/activitystreams',
      id: `${remote.actorId('bob')}#f-${Date.now()}`,
      type: 'Follow',
      actor: remote.actorId('bob'),
      object: id,
    };
    assert.equal(await remote.deliver('bob', inbox, follow), 202);
    await remote.waitFor(
      (r) => r.activity.type === 'Accept' && (r.activity.object as { id?: string }).id === follow.id,
      15_000,
    );
    const handle = acct.uri.slice(5).split('@')[0] as string;
    assert.equal(await two.bridge.state.followerCount(handle), 1);
    assert.equal(await one.bridge.state.followerCount(handle), 1);
  });
});
