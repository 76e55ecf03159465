/**
 * Anonymous requests and cluster-wide replay refusal through real relay
 * processes on a private Redis: anonymousRequest() against a RelayClient
 * that answers them (on another node), the proof-of-work bound, a responder
 * connected nowhere, stale and replayed requests (refused across two
 * instances of one DID on two nodes), 0-RTT first flights accepted by
 * exactly one of two such instances through RelayTicketStore, and a replay
 * after Redis lost its data set, refused by the single-use id epoch.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  ANONYMOUS_REQUEST_KIND,
  anonymousRequest,
  encodeAnonymousPlaintext,
  InMemorySessionStore,
  RelayClient,
  type RelayClientEvents,
  RelayTicketStore,
  SessionManager,
  type SessionStore,
} from '@libertaria/client';
import { EphemeralSession, open0Rtt, seal0Rtt } from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, hintFromDid, verifyEd25519 } from '@libertaria/identity';
import { HelloFeatures, RelayError, solvePowStamp } from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { sealedPeer, str, text } from '../../../test-support/client-harness.js';
import { metric } from '../../../test-support/metrics.js';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { establishSession } from '../../../test-support/session-fixtures.js';

const POW_BITS = 10;

/** An established persistent session (its two ends) from the fixtures' keys: 0-RTT tickets come from it. */
async function establishedSession() {
  const { a: aliceSession, b: bobSession } = await establishSession(nodeCrypto);
  return { aliceSession, bobSession };
}

describe('anonymous requests through the relay cluster', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  let a: RelayHandle;
  let b: RelayHandle;
  const clients: RelayClient[] = [];
  const raws: RawPeer[] = [];

  /** A responder: RelayClient with sessions and a handler that echoes in upper case. */
  async function responder(
    identity: Ed25519Identity,
    url: string,
    store: SessionStore = new InMemorySessionStore(),
  ): Promise<{ client: RelayClient; handled: string[]; errors: RelayClientEvents['error'][] }> {
    const handled: string[] = [];
    const { client, errors } = await sealedPeer({
      url,
      identity,
      store,
      track: clients,
      sessions: { oneTimePrekeys: 3 },
      client: {
        onAnonymousRequest: (request) => {
          handled.push(str(request.payload));
          return text(str(request.payload).toUpperCase());
        },
      },
    });
    return { client, handled, errors };
  }

  before(async () => {
    redis = await startRedis();
    const env = { RELAY_ANON_POW_BITS: String(POW_BITS), RELAY_ANON_MAX_SENDS: '2' };
    [a, b] = await Promise.all([startRelay({ redisUrl: redis.url, env }), startRelay({ redisUrl: redis.url, env })]);
  });

  after(async () => {
    for (const r of raws) r.close();
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  it('asks without a DID and gets the sealed answer, across nodes', async () => {
    const bobId = Ed25519Identity.generate();
    const bob = await responder(bobId, b.tcpUrl);
    const response = await anonymousRequest({
      relays: [a.wsUrl],
      to: bobId.did,
      payload: text('what time is it?'),
      provider: nodeCrypto,
    });
    assert.equal(str(response.payload), 'WHAT TIME IS IT?');
    assert.equal(response.nodeId, a.nodeId);
    assert.equal(response.powBits, POW_BITS);
    assert.deepEqual(bob.handled, ['what time is it?']);
    // Several in a row, each on its own connection with its own stamp and keys.
    for (const q of ['one', 'two']) {
      const r = await anonymousRequest({ relays: [b.tcpUrl], to: bobId.did, payload: text(q), provider: nodeCrypto });
      assert.equal(str(r.payload), q.toUpperCase());
    }
    assert.deepEqual(bob.errors, []);
  });

  it('refuses a relay that asks for more work than maxPowBits, and reports a responder connected nowhere', async () => {
    const bobId = Ed25519Identity.generate();
    await assert.rejects(
      anonymousRequest({ relays: [a.wsUrl], to: bobId.did, payload: text('x'), provider: nodeCrypto, maxPowBits: 8 }),
      (e: unknown) => e instanceof RelayError && e.code === 'ANON_TOO_COSTLY',
    );
    // Bob published prekeys once, then left: anonymous requests are never stored.
    const bob = await responder(bobId, a.wsUrl);
    await bob.client.close();
    await assert.rejects(
      anonymousRequest({ relays: [b.wsUrl], to: bobId.did, payload: text('x'), provider: nodeCrypto }),
      (e: unknown) => e instanceof RelayError && e.code === 'PEER_GONE',
    );
    // And a DID that never published anything.
    await assert.rejects(
      anonymousRequest({
        relays: [b.wsUrl],
        to: Ed25519Identity.generate().did,
        payload: text('x'),
        provider: nodeCrypto,
      }),
      (e: unknown) => e instanceof RelayError && e.code === 'PREKEY_NOT_FOUND',
    );
  });

  it('refuses a replayed request on every instance of the DID, on any node, and a stale one', async () => {
    const bobId = Ed25519Identity.generate();
    // Two processes of Bob sharing one key store (same prekeys), on two nodes.
    const store = new InMemorySessionStore();
    const bob1 = await responder(bobId, a.wsUrl, store);
    const bob2 = await responder(bobId, b.wsUrl, store);
    const bundle = await bob1.client.fetchPrekeys(bobId.did);

    // A captured request, sent again by an attacker on fresh anonymous connections.
    const { request } = EphemeralSession.request({
      provider: nodeCrypto,
      peerDid: bobId.did,
      bundle,
      payload: encodeAnonymousPlaintext(Date.now(), text('pay 10 units')),
    });
    const payload = new Uint8Array(1 + request.length);
    payload[0] = ANONYMOUS_REQUEST_KIND;
    payload.set(request, 1);
    const send = async (url: string) => {
      const raw = await RawPeer.connect(url);
      raws.push(raw);
      raw.hello(HelloFeatures.ANONYMOUS);
      const challenge = await raw.next('ANON_CHALLENGE');
      raw.send({ type: 'ANON_AUTH', stamp: solvePowStamp(challenge.nonce, challenge.powBits) });
      const welcome = await raw.next('WELCOME');
      raw.send({
        type: 'SEND',
        dest: hintFromDid(bobId.did),
        source: welcome.hint,
        sessionId: randomBytes(16),
        messageId: randomBytes(16),
        flags: 0,
        ttl: 0,
        position: 0,
        payload,
      });
      return raw;
    };
    const first = await send(a.tcpUrl);
    await first.next('DELIVER');
    // Fast frames go to the recipient's connections on the sender's node when it has any: Bob 1 answered.
    assert.deepEqual([bob1.handled.length, bob2.handled.length], [1, 0]);
    // The replays reach Bob 2 (through node B) and Bob 1 again (node A): both refuse, through Redis.
    await send(b.tcpUrl);
    await send(a.wsUrl);
    // The refusals go through Redis: a deadline for a loaded CI machine (the assertion shows what came).
    const deadline = Date.now() + 20_000;
    while (bob1.errors.length + bob2.errors.length < 2 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(
      [bob1.errors.map((e) => e.error.code), bob2.errors.map((e) => e.error.code)],
      [['REPLAYED'], ['REPLAYED']],
    );
    assert.deepEqual([bob1.handled.length, bob2.handled.length], [1, 0], 'the replays were not handled');

    // A request stamped ten minutes ago is refused as stale even though its id is new.
    const stale = anonymousRequest({
      relays: [a.wsUrl],
      to: bobId.did,
      payload: text('old'),
      provider: nodeCrypto,
      clock: () => Date.now() - 10 * 60 * 1000,
      timeoutMs: 1500,
    });
    await assert.rejects(stale, (e: unknown) => e instanceof RelayError && e.code === 'TIMEOUT');
    assert.ok([...bob1.errors, ...bob2.errors].some((e) => e.error.code === 'SESSION_EXPIRED'));
    assert.equal(bob1.handled.length + bob2.handled.length, 1);
  });

  it('an anonymous request to a client without a handler is reported, not delivered', async () => {
    const id = Ed25519Identity.generate();
    const sessions = new SessionManager({
      identity: id,
      store: new InMemorySessionStore(),
      provider: nodeCrypto,
      verify: verifyEd25519,
      oneTimePrekeys: 2,
    });
    const client = new RelayClient({ relays: [a.wsUrl], identity: id, sessions });
    clients.push(client);
    const errors: RelayClientEvents['error'][] = [];
    client.events.on('error', (e) => errors.push(e));
    await client.connect();
    await sessions.ensurePublished(client);
    await assert.rejects(
      anonymousRequest({ relays: [b.wsUrl], to: id.did, payload: text('hi'), provider: nodeCrypto, timeoutMs: 1500 }),
      (e: unknown) => e instanceof RelayError && e.code === 'TIMEOUT',
    );
    assert.deepEqual(
      errors.map((e) => e.error.code),
      ['ANON_NOT_PERMITTED'],
    );
  });

  it('0-RTT: two instances of one DID on two nodes, one first flight, exactly one accepts (RelayTicketStore)', async () => {
    const bobId = Ed25519Identity.generate();
    const c1 = new RelayClient({ relays: [a.wsUrl], identity: bobId, sealing: false });
    const c2 = new RelayClient({ relays: [b.tcpUrl], identity: bobId, sealing: false });
    clients.push(c1, c2);
    await Promise.all([c1.connect(), c2.connect()]);
    const guard1 = new RelayTicketStore(c1, { retentionMs: 6 * 60 * 1000, label: '0rtt' });
    const guard2 = new RelayTicketStore(c2, { retentionMs: 6 * 60 * 1000, label: '0rtt' });

    // An established session (its two ends), as the session layer makes it. Its keys are the fixtures';
    // what matters here is that both of Bob's instances guard with the cluster, namespaced by bobId.
    const { aliceSession, bobSession } = await establishedSession();
    for (let round = 0; round < 10; round++) {
      const ticket = aliceSession.issueResumptionTicket();
      const message = seal0Rtt(nodeCrypto, ticket, text(`resume ${round}`));
      const results = await Promise.allSettled(
        [guard1, guard2, guard1, guard2].map((store) =>
          open0Rtt({ provider: nodeCrypto, message, resolve: (id) => bobSession.resumptionTicketFor(id), store }),
        ),
      );
      const opened = results.filter((r) => r.status === 'fulfilled');
      const refused = results.filter(
        (r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'REPLAYED',
      );
      assert.equal(opened.length, 1, `round ${round}`);
      assert.equal(refused.length, 3, `round ${round}`);
      assert.equal(
        str((opened[0] as PromiseFulfilledResult<{ payload: Uint8Array }>).value.payload),
        `resume ${round}`,
      );
    }
    // The relay refuses retention beyond its bound, and the SDK says so.
    await assert.rejects(
      c1.consumeOnce(randomBytes(16), 8 * 24 * 3600 * 1000),
      (e: unknown) => e instanceof RelayError && e.code === 'ONCE_RETENTION_TOO_LONG',
    );
  });
});

describe('single-use ids after Redis loses its data set (the epoch)', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  const clients: RelayClient[] = [];

  before(async () => {
    // No persistence at all (test-support/redis.ts): a restart loses every key, as an unpersisted Redis does.
    redis = await startRedis();
    relay = await startRelay({ redisUrl: redis.url });
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await relay?.stop();
    await redis?.stop();
  });

  /** Bob's client over `store` (his keys and what he remembers), connected, and his 0-RTT guard. */
  async function bobOver(identity: Ed25519Identity, store: SessionStore) {
    const warnings: string[] = [];
    const client = new RelayClient({
      relays: [relay.tcpUrl],
      identity,
      sessionStore: store,
      crypto: nodeCrypto,
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
      logger: { warn: (message) => warnings.push(message) },
    });
    clients.push(client);
    await client.connect();
    return { client, warnings, guard: new RelayTicketStore(client, { retentionMs: 6 * 60 * 1000, label: '0rtt' }) };
  }

  it('a 0-RTT first flight accepted before the loss is refused after it, though the relay says "fresh"', async () => {
    const bobId = Ed25519Identity.generate();
    const bobStore = new InMemorySessionStore();
    const before = await bobOver(bobId, bobStore);

    const { aliceSession, bobSession } = await establishedSession();
    const message = seal0Rtt(nodeCrypto, aliceSession.issueResumptionTicket(), text('transfer 10 units'));
    const open = (store: RelayTicketStore) =>
      open0Rtt({ provider: nodeCrypto, message, resolve: (id) => bobSession.resumptionTicketFor(id), store });

    assert.equal(str((await open(before.guard)).payload), 'transfer 10 units');
    await assert.rejects(open(before.guard), (e: unknown) => (e as { code?: string }).code === 'REPLAYED');
    await before.client.close();

    // Redis restarts without its data; the relay reconnects to it.
    await redis.restart();
    const verify = new Redis(redis.url);
    try {
      assert.equal(await verify.dbsize(), 0, 'the data set is gone');
    } finally {
      verify.disconnect();
    }

    // Bob restarts too (same key store). The attacker replays the captured first flight:
    // the relay, whose memory is gone, answers "fresh" (the counter shows it); Bob refuses.
    const after = await bobOver(bobId, bobStore);
    const freshBefore = await metric(relay, 'relay_once_checks_total', { result: 'fresh' });
    await assert.rejects(open(after.guard), (e: unknown) => (e as { code?: string }).code === 'REPLAYED');
    assert.equal(await metric(relay, 'relay_once_checks_total', { result: 'fresh' }), freshBefore + 1);
    assert.equal(after.warnings.filter((w) => /memory of single-use ids was lost/.test(w)).length, 1);
    // Fail closed for the retention: even an id never seen before is refused for now, and the relay said fresh.
    assert.equal(await after.client.consumeOnce(randomBytes(16), 60_000), false);
    assert.equal(await metric(relay, 'relay_once_checks_total', { result: 'fresh' }), freshBefore + 2);

    // Without what Bob's store remembers (the old epoch) a new id is accepted at once:
    // a new DID, or a new device, is not held back.
    const amnesiac = await bobOver(bobId, new InMemorySessionStore());
    assert.equal(await amnesiac.client.consumeOnce(randomBytes(16), 60_000), true);
    assert.equal(amnesiac.warnings.length, 0);
  });
});
