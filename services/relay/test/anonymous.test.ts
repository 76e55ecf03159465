/**
 * Anonymous connections and single-use ids against real relay processes on a
 * private Redis, spoken to with the raw protocol peer: the proof-of-work
 * handshake and its refusals, what an anonymous connection may and may not
 * do, replies routed to its random hint across nodes, prekey fetches that
 * consume nothing, the lifetime and connection limits, and ONCE_CHECK's
 * exactly-once answer across two nodes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity, hintFromDid } from '@libertaria/identity';
import {
  errorCodeFromWire,
  type Frame,
  HelloFeatures,
  solvePowStamp,
  verifyPowStamp,
  type WelcomeFrame,
} from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { metric } from '../../../test-support/metrics.js';
import { makePublication } from '../../../test-support/prekeys.js';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const POW_BITS = 12;
const ANON_ENV = {
  RELAY_ANON_POW_BITS: String(POW_BITS),
  RELAY_ANON_MAX_SENDS: '2',
  RELAY_ANON_LIFETIME_MS: '4000',
};

const codeOf = (f: { code: number }) => errorCodeFromWire(f.code);

function sendFrame(dest: Uint8Array, source: Uint8Array, body: string, flags = 0): Frame {
  return {
    type: 'SEND',
    dest,
    source,
    sessionId: randomBytes(16),
    messageId: randomBytes(16),
    flags,
    ttl: 0,
    position: 0,
    payload: new TextEncoder().encode(body),
  };
}

/** HELLO(ANONYMOUS) → ANON_CHALLENGE → ANON_AUTH → WELCOME. */
async function anonymous(url: string): Promise<{ peer: RawPeer; welcome: WelcomeFrame }> {
  const peer = await RawPeer.connect(url);
  peer.hello(HelloFeatures.ANONYMOUS);
  const challenge = await peer.next('ANON_CHALLENGE');
  peer.send({ type: 'ANON_AUTH', stamp: solvePowStamp(challenge.nonce, challenge.powBits) });
  return { peer, welcome: await peer.next('WELCOME') };
}

describe('anonymous connections and single-use ids', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  let a: RelayHandle;
  let b: RelayHandle;
  const peers: RawPeer[] = [];
  const track = <T extends { peer: RawPeer }>(x: T): T => {
    peers.push(x.peer);
    return x;
  };

  before(async () => {
    redis = await startRedis();
    [a, b] = await Promise.all([
      startRelay({ redisUrl: redis.url, env: ANON_ENV }),
      startRelay({ redisUrl: redis.url, env: ANON_ENV }),
    ]);
  });

  after(async () => {
    for (const p of peers) p.close();
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  it('announces its difficulty and refuses a stamp short of it', async () => {
    const peer = await RawPeer.connect(a.tcpUrl);
    peers.push(peer);
    peer.hello(HelloFeatures.ANONYMOUS);
    const challenge = await peer.next('ANON_CHALLENGE');
    assert.deepEqual(
      [challenge.powBits, challenge.maxSends, challenge.lifetimeMs, challenge.relayIdentity],
      [POW_BITS, 2, 4000, a.did],
    );
    // A stamp that misses the difficulty for this nonce (found by trying: most do).
    let bad = randomBytes(8);
    while (verifyPowStamp(challenge.nonce, bad, POW_BITS)) bad = randomBytes(8);
    peer.send({ type: 'ANON_AUTH', stamp: bad });
    const error = await peer.next('ERROR');
    assert.equal(codeOf(error), 'ANON_BAD_STAMP');
    await peer.closedPromise;
    assert.equal(await metric(a, 'relay_anon_connections_total', { result: 'bad_stamp' }), 1);
  });

  it('a stamp from another connection is worthless: it is bound to the nonce', async () => {
    const first = await RawPeer.connect(a.wsUrl);
    const second = await RawPeer.connect(a.wsUrl);
    peers.push(first, second);
    first.hello(HelloFeatures.ANONYMOUS);
    second.hello(HelloFeatures.ANONYMOUS);
    const c1 = await first.next('ANON_CHALLENGE');
    const c2 = await second.next('ANON_CHALLENGE');
    const stamp = solvePowStamp(c1.nonce, POW_BITS);
    // With probability 2^-12 the stamp also fits the other nonce; the test would then prove nothing.
    assert.ok(!verifyPowStamp(c2.nonce, stamp, POW_BITS), 'unlucky draw: rerun');
    second.send({ type: 'ANON_AUTH', stamp });
    assert.equal(codeOf(await second.next('ERROR')), 'ANON_BAD_STAMP');
    first.send({ type: 'ANON_AUTH', stamp });
    assert.equal((await first.next('WELCOME')).nodeId, a.nodeId);
  });

  it('forwards fast requests without a DID, routes replies to its random hint across nodes, and refuses the rest', async () => {
    const bobId = Ed25519Identity.generate();
    const bob = await RawPeer.connect(b.wsUrl);
    peers.push(bob);
    await bob.authenticate(bobId);
    const authBefore = await metric(a, 'relay_frames_total', { type: 'AUTH', direction: 'in' });

    const { peer: anon, welcome } = track(await anonymous(a.tcpUrl));
    const { welcome: other } = track(await anonymous(a.tcpUrl));
    assert.notDeepEqual(Buffer.from(welcome.hint), Buffer.from(other.hint), 'reply hints are random per connection');
    assert.notDeepEqual(Buffer.from(welcome.hint), Buffer.from(hintFromDid(bobId.did)));

    anon.send(sendFrame(hintFromDid(bobId.did), welcome.hint, 'request 1'));
    const delivered = await bob.next('DELIVER');
    assert.equal(new TextDecoder().decode(delivered.payload), 'request 1');
    assert.deepEqual(Buffer.from(delivered.source), Buffer.from(welcome.hint));
    // Bob (node B) answers the random hint; the anonymous peer (node A) gets it.
    bob.send(sendFrame(delivered.source, hintFromDid(bobId.did), 'response 1'));
    assert.equal(new TextDecoder().decode((await anon.next('DELIVER')).payload), 'response 1');

    // Durable sends need a DID; the second fast send is the last one allowed.
    const durable = sendFrame(hintFromDid(bobId.did), welcome.hint, 'keep this', 0x01);
    anon.send(durable);
    assert.equal(codeOf(await anon.next('NACK')), 'ANON_NOT_PERMITTED');
    anon.send(sendFrame(hintFromDid(bobId.did), welcome.hint, 'request 2'));
    assert.equal(new TextDecoder().decode((await bob.next('DELIVER')).payload), 'request 2');
    anon.send(sendFrame(hintFromDid(bobId.did), welcome.hint, 'request 3'));
    assert.equal(codeOf(await anon.next('NACK')), 'ANON_LIMIT_REACHED');

    // Everything that needs an identity is refused, and the connection stays.
    anon.send({ type: 'ONCE_CHECK', requestId: randomBytes(16), retentionSeconds: 60, id: randomBytes(16) });
    assert.equal(codeOf(await anon.next('NACK')), 'ANON_NOT_PERMITTED');
    anon.send({ type: 'PREKEY_STATUS_QUERY', requestId: randomBytes(16) });
    assert.equal(codeOf(await anon.next('NACK')), 'ANON_NOT_PERMITTED');
    anon.send({ type: 'RESUME', lastAcked: 0 });
    const refused = await anon.next('ERROR');
    assert.equal(codeOf(refused), 'ANON_NOT_PERMITTED');
    assert.equal(refused.flags, 0, 'not fatal');
    anon.send({ type: 'PING', data: new Uint8Array(8).fill(7) });
    await anon.next('PONG');
    assert.ok(!anon.closed);

    assert.equal(
      await metric(a, 'relay_frames_total', { type: 'AUTH', direction: 'in' }),
      authBefore,
      'no AUTH was sent',
    );
    assert.ok(!a.logs.some((l) => l.includes(bobId.did) && l.includes('anonymous')));
    assert.equal(await metric(a, 'relay_anon_sends_total', { result: 'forwarded' }), 2);
    assert.equal(await metric(a, 'relay_anon_sends_total', { result: 'ANON_LIMIT_REACHED' }), 1);
  });

  it('hands an anonymous requester a bundle without consuming one-time prekeys', async () => {
    const carolId = Ed25519Identity.generate();
    const carol = await RawPeer.connect(a.wsUrl);
    peers.push(carol);
    await carol.authenticate(carolId);
    carol.send({
      type: 'PREKEY_PUBLISH',
      requestId: randomBytes(16),
      flags: 0,
      publication: makePublication(carolId, { oneTimeX25519: 5, oneTimeKem: 2 }),
    });
    const status = await carol.next('PREKEY_STATUS');
    assert.deepEqual([status.oneTimeX25519, status.oneTimeKem], [5, 2]);
    const { peer: anon } = track(await anonymous(b.wsUrl));
    for (let i = 0; i < 3; i++) {
      anon.send({ type: 'PREKEY_FETCH', requestId: randomBytes(16), hint: hintFromDid(carolId.did) });
      const { bundle } = await anon.next('PREKEY_BUNDLE');
      assert.equal(bundle.oneTimePrekey, undefined);
      assert.equal(bundle.oneTimeKemPrekey, undefined);
      assert.deepEqual(Buffer.from(bundle.identityKey), Buffer.from(carolId.publicKey));
    }
    carol.send({ type: 'PREKEY_STATUS_QUERY', requestId: randomBytes(16) });
    const after = await carol.next('PREKEY_STATUS');
    assert.deepEqual([after.oneTimeX25519, after.oneTimeKem], [status.oneTimeX25519, status.oneTimeKem]);
    // An authenticated fetch still consumes one of each.
    const dave = await RawPeer.connect(b.wsUrl);
    peers.push(dave);
    await dave.authenticate(Ed25519Identity.generate());
    dave.send({ type: 'PREKEY_FETCH', requestId: randomBytes(16), hint: hintFromDid(carolId.did) });
    const { bundle } = await dave.next('PREKEY_BUNDLE');
    assert.ok(bundle.oneTimePrekey !== undefined && bundle.oneTimeKemPrekey !== undefined);
  });

  it('closes an anonymous connection after its lifetime, with GOAWAY', async () => {
    const { peer } = track(await anonymous(b.tcpUrl));
    const started = Date.now();
    const goaway = await peer.next('GOAWAY', 10_000);
    assert.match(goaway.reason, /lifetime/);
    await peer.closedPromise;
    const elapsed = Date.now() - started;
    assert.ok(elapsed > 3000 && elapsed < 8000, `closed after ${elapsed} ms`);
  });

  it('answers ONCE_CHECK exactly once across two nodes and many connections of one DID', async () => {
    const id = Ed25519Identity.generate();
    const conns: RawPeer[] = [];
    for (let i = 0; i < 6; i++) {
      const peer = await RawPeer.connect(i % 2 === 0 ? a.wsUrl : b.tcpUrl);
      await peer.authenticate(id);
      conns.push(peer);
      peers.push(peer);
    }
    const ownerEpochs = new Set<string>();
    for (let round = 0; round < 20; round++) {
      const ticket = randomBytes(16);
      const requests = conns.map((peer) => {
        const requestId = randomBytes(16);
        peer.send({ type: 'ONCE_CHECK', requestId, retentionSeconds: 60, id: ticket });
        return peer.next((f) => f.type === 'ONCE_RESULT' && Buffer.from(f.requestId).equals(requestId));
      });
      const answers = await Promise.all(requests);
      const fresh = answers.filter((f) => f.type === 'ONCE_RESULT' && f.fresh).length;
      assert.equal(fresh, 1, `round ${round}: ${fresh} connections were told the id was fresh`);
      // One epoch for the owner's ids, whichever node and connection answers.
      const epochs = new Set(
        answers.map((f) => (f.type === 'ONCE_RESULT' ? Buffer.from(f.epoch).toString('hex') : '')),
      );
      assert.equal(epochs.size, 1);
      ownerEpochs.add([...epochs][0]!);
    }
    assert.equal(ownerEpochs.size, 1, 'the epoch stays while the data set does');
    // Namespaced by DID: another peer's identical id is its own.
    const other = await RawPeer.connect(a.wsUrl);
    peers.push(other);
    await other.authenticate(Ed25519Identity.generate());
    const shared = randomBytes(16);
    conns[0]!.send({ type: 'ONCE_CHECK', requestId: randomBytes(16), retentionSeconds: 60, id: shared });
    assert.equal((await conns[0]!.next('ONCE_RESULT')).fresh, true);
    other.send({ type: 'ONCE_CHECK', requestId: randomBytes(16), retentionSeconds: 60, id: shared });
    const others = await other.next('ONCE_RESULT');
    assert.equal(others.fresh, true);
    assert.ok(!ownerEpochs.has(Buffer.from(others.epoch).toString('hex')), 'each owner has an epoch of its own');
    // Retention is bounded, and an id is fresh again once it has passed.
    other.send({ type: 'ONCE_CHECK', requestId: randomBytes(16), retentionSeconds: 604801, id: shared });
    assert.equal(codeOf(await other.next('NACK')), 'ONCE_RETENTION_TOO_LONG');
    const short = randomBytes(16);
    other.send({ type: 'ONCE_CHECK', requestId: randomBytes(16), retentionSeconds: 1, id: short });
    assert.equal((await other.next('ONCE_RESULT')).fresh, true);
    other.send({ type: 'ONCE_CHECK', requestId: randomBytes(16), retentionSeconds: 1, id: short });
    assert.equal((await other.next('ONCE_RESULT')).fresh, false);
    await new Promise((r) => setTimeout(r, 1100));
    other.send({ type: 'ONCE_CHECK', requestId: randomBytes(16), retentionSeconds: 1, id: short });
    assert.equal((await other.next('ONCE_RESULT')).fresh, true);
    // The keys carry the owner's hint as their hash tag.
    const r = new Redis(redis.url);
    try {
      const keys = await r.keys('lr:once:*');
      assert.ok(keys.length >= 21);
      assert.ok(
        keys.every((k) => /^lr:once:\{[0-9a-f]{48}\}:[0-9a-f]+$/.test(k)),
        keys[0],
      );
      // The epoch key shares the owner's hash tag (one slot with its ids) and never expires.
      const hint = Buffer.from(id.hint).toString('hex');
      const epochKey = `lr:once-epoch:{${hint}}`;
      assert.equal((await r.getBuffer(epochKey))?.toString('hex'), [...ownerEpochs][0]);
      assert.equal(await r.ttl(epochKey), -1);
    } finally {
      r.disconnect();
    }
  });
});

describe('anonymous connection limits', { timeout: 60_000 }, () => {
  let redis: RedisHandle;
  let closed: RelayHandle;
  let small: RelayHandle;
  const peers: RawPeer[] = [];

  before(async () => {
    redis = await startRedis();
    [closed, small] = await Promise.all([
      startRelay({ redisUrl: redis.url, env: { RELAY_ANON_ENABLED: 'false' } }),
      startRelay({ redisUrl: redis.url, env: { RELAY_ANON_POW_BITS: '4', RELAY_ANON_MAX_CONNECTIONS: '1' } }),
    ]);
  });

  after(async () => {
    for (const p of peers) p.close();
    await Promise.all([closed?.stop(), small?.stop()]);
    await redis?.stop();
  });

  it('a relay with anonymous connections off says so', async () => {
    const peer = await RawPeer.connect(closed.wsUrl);
    peers.push(peer);
    peer.hello(HelloFeatures.ANONYMOUS);
    const error = await peer.next('ERROR');
    assert.equal(codeOf(error), 'ANON_DISABLED');
    await peer.closedPromise;
    // Authenticated peers are unaffected.
    const authed = await RawPeer.connect(closed.wsUrl);
    peers.push(authed);
    await authed.authenticate(Ed25519Identity.generate());
  });

  it('holds at most RELAY_ANON_MAX_CONNECTIONS, and frees the slot on close', async () => {
    const first = await anonymous(small.wsUrl);
    peers.push(first.peer);
    const second = await RawPeer.connect(small.wsUrl);
    peers.push(second);
    second.hello(HelloFeatures.ANONYMOUS);
    assert.equal(codeOf(await second.next('ERROR')), 'ANON_LIMIT_REACHED');
    first.peer.close();
    await first.peer.closedPromise;
    // The relay notices the close asynchronously: retry until it has (a
    // deadline for a loaded CI machine; each answer is printed if it never does).
    const deadline = Date.now() + 20_000;
    for (;;) {
      const third = await RawPeer.connect(small.wsUrl);
      peers.push(third);
      third.hello(HelloFeatures.ANONYMOUS);
      const answer = await third.next((f) => f.type === 'ANON_CHALLENGE' || f.type === 'ERROR');
      if (answer.type === 'ANON_CHALLENGE') break;
      assert.ok(
        Date.now() < deadline,
        `the slot was never freed; last answer: ${answer.type === 'ERROR' ? codeOf(answer) : answer.type}`,
      );
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});
