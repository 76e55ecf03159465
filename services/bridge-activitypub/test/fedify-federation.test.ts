/**
 * The pinned Fedify (@fedify/fedify 2.3.6, which declares Node ≥ 22) running
 * on our Node 20 with our two adapters plugged in: server A is a Fedify
 * federation on RedisKvStore and BullMqMessageQueue (a private
 * redis-server); server B is a second, independent Fedify instance (its own
 * in-memory store, no queue). Both are served over real HTTP on loopback.
 *
 * What it proves: WebFinger and the actor (with its RSA and Ed25519 keys)
 * answer through `federation.fetch` with a Request; an activity A sends goes
 * through the BullMQ queue and arrives at B signed (B verifies it, fetching
 * A's key from A over HTTP); an activity B sends to A is queued as an inbox
 * job and reaches A's listener; A's KvStore holds what Fedify caches
 * (public keys, signature spec, idempotence); Fedify leaves retries to
 * BullMQ (a 500 is retried, then kept as a failed job) and ends a job on 410
 * Gone without retrying.
 *
 * Not Fedify on both sides for the bridge's own interoperability (issue 15
 * asks for an independent ActivityPub server for that): here B only stands
 * for "a remote server" so the adapters can be seen in a real exchange.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createFederation, type Federation, MemoryKvStore } from '@fedify/fedify';
import { Create, Endpoints, Note, Person } from '@fedify/fedify/vocab';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { BullMqMessageQueue } from '../src/bullmq-message-queue.js';
import '../src/fedify-runtime.js';
import { RedisKvStore } from '../src/redis-kv-store.js';
import { importedKeyPair } from './support/keys.js';
import { type Served, serve } from './support/serve.js';

let redis: RedisHandle;
let client: RedisClient;
let kv: RedisKvStore;
let queue: BullMqMessageQueue;
let fedA: Federation<void>;
let fedB: Federation<void>;
let a: Served;
let b: Served;
let queueRunning: Promise<void>;
const stopQueue = new AbortController();

/** What each side's inbox listener received. */
const atA: { actor: string; content: string }[] = [];
const atB: { actor: string; content: string }[] = [];
const hits = { gone: 0, down: 0 };

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** One Fedify server with one actor, `name`, with an RSA and an Ed25519 key; its inbox listener records Create(Note). */
async function server(name: string, options: Parameters<typeof createFederation<void>>[0], received: typeof atA) {
  // Imported, not generated: support/keys.ts says why.
  const keys = [await importedKeyPair('rsa'), await importedKeyPair('ed25519')];
  const federation = createFederation<void>(options);
  federation
    .setActorDispatcher('/users/{identifier}', async (ctx, identifier) => {
      if (identifier !== name) return null;
      const pairs = await ctx.getActorKeyPairs(identifier);
      return new Person({
        id: ctx.getActorUri(identifier),
        preferredUsername: identifier,
        name: `${name} of ${ctx.host}`,
        inbox: ctx.getInboxUri(identifier),
        endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
        publicKey: pairs[0]?.cryptographicKey ?? null,
        assertionMethods: pairs.map((p) => p.multikey),
      });
    })
    .setKeyPairsDispatcher(async (_ctx, identifier) => (identifier === name ? keys : []));
  federation.setInboxListeners('/users/{identifier}/inbox', '/inbox').on(Create, async (_ctx, create) => {
    const note = await create.getObject();
    received.push({ actor: create.actorId?.href ?? '', content: String(note instanceof Note ? note.content : '') });
  });
  return federation;
}

function note(from: Federation<void>, origin: string, sender: string, to: URL, content: string): Create {
  const ctx = from.createContext(new URL(origin), undefined);
  const id = `${origin}/notes/${randomBytes(8).toString('hex')}`;
  return new Create({
    id: new URL(`${id}#create`),
    actor: ctx.getActorUri(sender),
    to,
    object: new Note({ id: new URL(id), attribution: ctx.getActorUri(sender), to, content }),
  });
}

before(async () => {
  redis = await startRedis();
  client = createRedisClient({ url: redis.url }, {});
  kv = new RedisKvStore(client, { prefix: 'fed-a:' });
  queue = new BullMqMessageQueue({
    redis: { url: redis.url },
    name: 'activitypub-fedify',
    messageKey: randomBytes(32),
    attempts: 2,
    backoffMs: 100,
    jitter: 0.5,
  });
  fedA = await server('alice', { kv, queue, manuallyStartQueue: true, allowPrivateAddress: true }, atA);
  fedB = await server('bob', { kv: new MemoryKvStore(), allowPrivateAddress: true }, atB);
  a = await serve((request) => fedA.fetch(request, { contextData: undefined }));
  b = await serve(async (request) => {
    const path = new URL(request.url).pathname;
    if (path === '/gone/inbox') {
      hits.gone++;
      return new Response('gone', { status: 410 });
    }
    if (path === '/down/inbox') {
      hits.down++;
      return new Response('down', { status: 500 });
    }
    return fedB.fetch(request, { contextData: undefined });
  });
  queueRunning = fedA.startQueue(undefined, { signal: stopQueue.signal });
});

after(async () => {
  stopQueue.abort();
  await queueRunning;
  await queue.close();
  await Promise.all([a?.close(), b?.close()]);
  await client.quit();
  await redis.stop();
});

describe('Fedify 2.3.6 on Node 20 with RedisKvStore and BullMqMessageQueue', () => {
  it('answers WebFinger and the actor through federation.fetch', async () => {
    const host = new URL(a.origin).host;
    const finger = await fedA.fetch(
      new Request(`${a.origin}/.well-known/webfinger?resource=acct:alice@${host}`, {
        headers: { accept: 'application/jrd+json' },
      }),
      { contextData: undefined },
    );
    assert.equal(finger.status, 200);
    const jrd = (await finger.json()) as { subject: string; links: { rel: string; href: string }[] };
    assert.equal(jrd.subject, `acct:alice@${host}`);
    assert.ok(jrd.links.some((l) => l.rel === 'self' && l.href === `${a.origin}/users/alice`));
    const actor = await fedA.fetch(
      new Request(`${a.origin}/users/alice`, { headers: { accept: 'application/activity+json' } }),
      { contextData: undefined },
    );
    assert.equal(actor.status, 200);
    const doc = (await actor.json()) as Record<string, unknown>;
    assert.equal(doc.id, `${a.origin}/users/alice`);
    assert.equal(doc.inbox, `${a.origin}/users/alice/inbox`);
    assert.match(JSON.stringify(doc.publicKey), /BEGIN PUBLIC KEY/, 'the RSA key');
    assert.match(JSON.stringify(doc.assertionMethod), /"publicKeyMultibase":"z6Mk/, 'the Ed25519 key (multikey)');
    const missing = await fedA.fetch(
      new Request(`${a.origin}/users/nobody`, { headers: { accept: 'application/activity+json' } }),
      {
        contextData: undefined,
        onNotFound: () => new Response('not found', { status: 404 }),
      },
    );
    assert.equal(missing.status, 404);
  });

  it('sends an activity through the BullMQ queue to the other server, signed', async () => {
    const bob = new URL(`${b.origin}/users/bob`);
    const ctx = fedA.createContext(new URL(a.origin), undefined);
    await ctx.sendActivity(
      { identifier: 'alice' },
      { id: bob, inboxId: new URL(`${b.origin}/users/bob/inbox`) },
      note(fedA, a.origin, 'alice', bob, 'hello bob, from a queue'),
    );
    await until('the note at B', () => atB.length === 1);
    assert.deepEqual(atB[0], { actor: `${a.origin}/users/alice`, content: 'hello bob, from a queue' });
    // The job completes once the handler has returned, a moment after B answered.
    const done = await until('the delivery job to complete', async () => {
      const jobs = await queue.queue.getCompleted();
      return jobs.some((j) => j.name === 'outbox') ? jobs : undefined;
    });
    assert.ok(
      done.every((j) => /^m-[0-9a-f-]{36}(\+\d+)?$/.test(j.id as string)),
      'ids from Fedify message ids',
    );
  });

  it('takes an activity from the other server into an inbox job, then to its listener; the KvStore holds what Fedify caches', async () => {
    const alice = new URL(`${a.origin}/users/alice`);
    const ctx = fedB.createContext(new URL(b.origin), undefined);
    await ctx.sendActivity(
      { identifier: 'bob' },
      { id: alice, inboxId: new URL(`${a.origin}/users/alice/inbox`) },
      note(fedB, b.origin, 'bob', alice, 'hello alice, to your queue'),
    );
    await until('the note at A', () => atA.length === 1);
    assert.deepEqual(atA[0], { actor: `${b.origin}/users/bob`, content: 'hello alice, to your queue' });
    await until('the inbox job to complete', async () =>
      (await queue.queue.getCompleted()).some((j) => j.name === 'inbox'),
    );
    const cached: string[] = [];
    for await (const entry of kv.list(['_fedify'])) cached.push(entry.key[1] as string);
    assert.ok(cached.includes('publicKey'), `B's key cached in Redis (${[...new Set(cached)].join(', ')})`);
    assert.ok(cached.includes('activityIdempotence'), 'the activity remembered for idempotence');
    assert.ok(cached.includes('httpMessageSignaturesSpec'), 'the signature spec per origin');
    assert.ok((await client.keys('fed-a:*')).length >= 3);
  });

  it('leaves retries to BullMQ: a 500 is retried then kept failed; 410 Gone ends the job at once', async () => {
    const ctx = fedA.createContext(new URL(a.origin), undefined);
    const failedBefore = (await queue.queue.getJobCounts('failed')).failed ?? 0;
    const down = new URL(`${b.origin}/down`);
    await ctx.sendActivity(
      { identifier: 'alice' },
      { id: down, inboxId: new URL(`${b.origin}/down/inbox`) },
      note(fedA, a.origin, 'alice', down, 'lost'),
    );
    await until('the failed job', async () => (await queue.queue.getJobCounts('failed')).failed === failedBefore + 1);
    // Fedify's double-knocking may post twice per attempt (RFC 9421, then draft-cavage): at least one per attempt.
    assert.ok(hits.down >= 2, `two attempts reached the server (${hits.down} requests)`);
    const [failed] = await queue.queue.getFailed(0, 0);
    assert.equal(failed?.attemptsMade, 2);
    assert.match(failed?.failedReason ?? '', /500/);

    const completedBefore = (await queue.queue.getJobCounts('completed')).completed ?? 0;
    const gone = new URL(`${b.origin}/gone`);
    await ctx.sendActivity(
      { identifier: 'alice' },
      { id: gone, inboxId: new URL(`${b.origin}/gone/inbox`) },
      note(fedA, a.origin, 'alice', gone, 'nobody'),
    );
    await until(
      'the 410 job to end',
      async () => (await queue.queue.getJobCounts('completed')).completed === completedBefore + 1,
    );
    const requests = hits.gone;
    await sleep(500);
    assert.equal(hits.gone, requests, 'no retry after 410');
    assert.equal((await queue.queue.getJobCounts('failed')).failed, failedBefore + 1, 'and no failed job');
  });
});
