/**
 * The prekey service as operators run it: real relay nodes on one real Redis,
 * peers speaking PREKEY_* frames byte for byte (RawPeer).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import {
  errorCodeFromWire,
  type Frame,
  maxBodySize,
  PREKEY_PUBLISH_HEADER_SIZE,
  type PrekeyBundleFrame,
  type PrekeyPublication,
  PrekeyPublishFlags,
  type PrekeyStatusFrame,
  splitPrekeyPublication,
  verifyBundle,
} from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { makePublication } from '../../../test-support/prekeys.js';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const isZero = (b: Uint8Array): boolean => b.every((x) => x === 0);

/**
 * The relay's answer to the request with this id: PREKEY_STATUS, PREKEY_BUNDLE
 * or NACK. Milliseconds on a quiet machine; the default deadline is sized for
 * a loaded 2-core CI machine (RawPeer.next reports the frames it saw instead).
 */
function answerTo(peer: RawPeer, requestId: Uint8Array, timeoutMs = 20_000): Promise<Frame> {
  const id = hex(requestId);
  return peer.next((f) => {
    if (f.type === 'NACK') return hex(f.messageId) === id;
    if (f.type === 'PREKEY_STATUS' || f.type === 'PREKEY_BUNDLE') return hex(f.requestId) === id;
    return false;
  }, timeoutMs) as Promise<Frame>;
}

function expectNack(frame: Frame, code: string): void {
  assert.equal(frame.type, 'NACK', `expected NACK ${code}, got ${frame.type}`);
  assert.equal(errorCodeFromWire(frame.code), code, frame.message);
}

function expectStatus(frame: Frame): PrekeyStatusFrame {
  assert.equal(frame.type, 'PREKEY_STATUS', frame.type === 'NACK' ? `NACK ${errorCodeFromWire(frame.code)}` : '');
  return frame;
}

function expectBundle(frame: Frame): PrekeyBundleFrame {
  assert.equal(frame.type, 'PREKEY_BUNDLE', frame.type === 'NACK' ? `NACK ${errorCodeFromWire(frame.code)}` : '');
  return frame;
}

async function publish(peer: RawPeer, publication: PrekeyPublication, flags = 0): Promise<Frame> {
  const requestId = randomBytes(16);
  peer.send({ type: 'PREKEY_PUBLISH', requestId, flags, publication });
  return answerTo(peer, requestId);
}

/** Publishes in as many frames as the default payload limit needs; returns the last status. */
async function publishAll(peer: RawPeer, publication: PrekeyPublication): Promise<PrekeyStatusFrame> {
  let last: PrekeyStatusFrame | undefined;
  for (const part of splitPrekeyPublication(publication, maxBodySize(65536) - PREKEY_PUBLISH_HEADER_SIZE)) {
    last = expectStatus(await publish(peer, part));
  }
  return last!;
}

function sendFetch(peer: RawPeer, target: Ed25519Identity): Uint8Array {
  const requestId = randomBytes(16);
  peer.send({ type: 'PREKEY_FETCH', requestId, hint: target.hint });
  return requestId;
}

async function fetchBundle(peer: RawPeer, target: Ed25519Identity): Promise<Frame> {
  return answerTo(peer, sendFetch(peer, target));
}

async function queryStatus(peer: RawPeer): Promise<Frame> {
  const requestId = randomBytes(16);
  peer.send({ type: 'PREKEY_STATUS_QUERY', requestId });
  return answerTo(peer, requestId);
}

describe('prekey service on relay nodes', { timeout: 60_000 }, () => {
  let redis: RedisHandle;
  let a: RelayHandle;
  let b: RelayHandle;
  let c: RelayHandle;
  const open: RawPeer[] = [];

  async function peer(url: string, id = Ed25519Identity.generate()): Promise<{ id: Ed25519Identity; p: RawPeer }> {
    const p = await RawPeer.connect(url);
    open.push(p);
    await p.authenticate(id);
    return { id, p };
  }

  before(async () => {
    redis = await startRedis();
    const roomy = {
      RELAY_PREKEY_FETCHES_PER_MINUTE: '1000',
      RELAY_PREKEY_TARGET_FETCHES_PER_MINUTE: '10000',
      RELAY_PREKEY_PUBLISHES_PER_MINUTE: '1000',
    };
    [a, b, c] = await Promise.all([
      startRelay({ redisUrl: redis.url, env: roomy }),
      startRelay({ redisUrl: redis.url, env: roomy }),
      startRelay({
        redisUrl: redis.url,
        env: {
          RELAY_PREKEY_MAX_ONE_TIME: '20',
          RELAY_PREKEY_LOW_WATER: '5',
          RELAY_PREKEY_FETCHES_PER_MINUTE: '3',
          RELAY_PREKEY_TARGET_FETCHES_PER_MINUTE: '4',
          RELAY_PREKEY_PUBLISHES_PER_MINUTE: '6',
        },
      }),
    ]);
  });
  after(async () => {
    for (const p of open) p.close();
    await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
    await redis?.stop();
  });

  it('publishes on one node and hands out verified bundles on another, one one-time key of each kind per fetch', async () => {
    const alice = await peer(a.wsUrl);
    const bob = await peer(b.tcpUrl);
    const pub = makePublication(alice.id, { oneTimeX25519: 3, oneTimeKem: 3 });
    const status = expectStatus(await publish(alice.p, pub));
    assert.deepEqual(
      { ...status, hint: hex(status.hint), requestId: undefined },
      {
        type: 'PREKEY_STATUS',
        hint: hex(alice.id.hint),
        requestId: undefined,
        flags: 7,
        oneTimeX25519: 3,
        oneTimeKem: 3,
        cap: 100,
        lowWater: 10,
        lastOneTimeX25519Id: 3,
        lastOneTimeKemId: 3,
      },
    );
    for (const expectedId of [1, 2]) {
      const { bundle } = expectBundle(await fetchBundle(bob.p, alice.id));
      verifyBundle(bundle, verifyEd25519, alice.id.publicKey);
      assert.equal(hex(bundle.identityKey), hex(alice.id.publicKey));
      assert.equal(hex(bundle.signedPrekey.publicKey), hex(pub.signedPrekey.publicKey));
      assert.equal(bundle.oneTimePrekey?.id, expectedId);
      assert.equal(hex(bundle.oneTimePrekey!.publicKey), hex(pub.oneTimePrekeys[expectedId - 1]!.publicKey));
      assert.equal(bundle.oneTimeKemPrekey?.id, expectedId);
      assert.equal(hex(bundle.oneTimeKemPrekey!.signature), hex(pub.oneTimeKemPrekeys[expectedId - 1]!.signature));
    }
    // PING is a barrier: the bundle owed for the fetch before it arrives first.
    const requestId = sendFetch(bob.p, alice.id);
    bob.p.send({ type: 'PING', data: new Uint8Array(8).fill(9) });
    await bob.p.next('PONG');
    assert.ok(
      bob.p.frames.some((f) => f.type === 'PREKEY_BUNDLE' && hex(f.requestId) === hex(requestId)),
      'PONG overtook the PREKEY_BUNDLE',
    );
    const mine = expectStatus(await queryStatus(alice.p));
    assert.equal(mine.oneTimeX25519, 0);
    assert.equal(mine.oneTimeKem, 0);
  });

  it('refuses forged, swapped and foreign publications without storing anything or closing the connection', async () => {
    const alice = await peer(a.tcpUrl);
    const mallory = Ed25519Identity.generate();
    const pub = makePublication(alice.id, { oneTimeX25519: 1, oneTimeKem: 2 });
    const forgedSig = Uint8Array.from(pub.signedPrekey.signature);
    forgedSig[0]! ^= 0x80;
    const cases: Array<[string, PrekeyPublication, string]> = [
      [
        'forged signature',
        { ...pub, signedPrekey: { ...pub.signedPrekey, signature: forgedSig } },
        'PREKEY_BAD_SIGNATURE',
      ],
      [
        'signatures swapped between one-time KEM keys',
        {
          ...pub,
          oneTimeKemPrekeys: [
            { ...pub.oneTimeKemPrekeys[0]!, signature: pub.oneTimeKemPrekeys[1]!.signature },
            { ...pub.oneTimeKemPrekeys[1]!, signature: pub.oneTimeKemPrekeys[0]!.signature },
          ],
        },
        'PREKEY_BAD_SIGNATURE',
      ],
      [
        'last-resort key passed off as one-time',
        { ...pub, oneTimeKemPrekeys: [pub.lastResortKemPrekey] },
        'PREKEY_BAD_SIGNATURE',
      ],
      ['another identity, genuinely signed', makePublication(mallory, { oneTimeKem: 1 }), 'PREKEY_IDENTITY_MISMATCH'],
      ['another identity signed with our key', { ...pub, identityKey: mallory.publicKey }, 'PREKEY_IDENTITY_MISMATCH'],
    ];
    for (const [what, publication, code] of cases) {
      const answer = await publish(alice.p, publication);
      assert.equal(answer.type, 'NACK', what);
      expectNack(answer, code);
    }
    const bob = await peer(b.wsUrl);
    expectNack(await fetchBundle(bob.p, alice.id), 'PREKEY_NOT_FOUND');
    expectNack(await fetchBundle(bob.p, mallory), 'PREKEY_NOT_FOUND');
    // Still open and served.
    alice.p.send({ type: 'PING', data: new Uint8Array(8) });
    await alice.p.next('PONG');
    assert.equal(expectStatus(await queryStatus(alice.p)).flags, 0);
  });

  it('hands out each of 100 one-time keys exactly once to 150 concurrent fetches through two nodes, then last-resort bundles', async () => {
    const alice = await peer(a.wsUrl);
    const pub = makePublication(alice.id, { oneTimeX25519: 100, oneTimeKem: 100 });
    const status = await publishAll(alice.p, pub);
    assert.equal(status.oneTimeX25519, 100);
    assert.equal(status.oneTimeKem, 100);
    const fetchers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => peer(i % 2 === 0 ? a.tcpUrl : b.wsUrl).then((x) => x.p)),
    );
    const started = Date.now();
    const pending = fetchers.flatMap((p) =>
      Array.from({ length: 15 }, () => sendFetch(p, alice.id)).map((id) => answerTo(p, id, 30_000)),
    );
    const bundles = (await Promise.all(pending)).map((f) => expectBundle(f).bundle);
    const took = Date.now() - started;
    assert.equal(bundles.length, 150);
    const x = bundles.flatMap((bd) => (bd.oneTimePrekey ? [bd.oneTimePrekey.id] : []));
    const k = bundles.flatMap((bd) => (bd.oneTimeKemPrekey ? [bd.oneTimeKemPrekey.id] : []));
    assert.equal(x.length, 100);
    assert.equal(new Set(x).size, 100, 'a one-time X25519 prekey was handed out twice');
    assert.equal(k.length, 100);
    assert.equal(new Set(k).size, 100, 'a one-time KEM prekey was handed out twice');
    assert.deepEqual(
      [...x].sort((p, q) => p - q),
      pub.oneTimePrekeys.map((key) => key.id),
    );
    const lastResortOnly = bundles.filter((bd) => !bd.oneTimePrekey && !bd.oneTimeKemPrekey);
    assert.equal(lastResortOnly.length, 50);
    for (const bd of lastResortOnly) {
      assert.equal(hex(bd.lastResortKemPrekey.publicKey), hex(pub.lastResortKemPrekey.publicKey));
      verifyBundle(bd, verifyEd25519, alice.id.publicKey);
    }
    // The fetches that left fewer than 10 told alice, on node a, from both nodes (pub/sub for b's).
    const notices: PrekeyStatusFrame[] = [];
    while (notices.length < 10) {
      notices.push((await alice.p.next((f) => f.type === 'PREKEY_STATUS' && isZero(f.requestId))) as PrekeyStatusFrame);
    }
    assert.deepEqual(
      notices.map((n) => n.oneTimeX25519).sort((p, q) => q - p),
      [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    );
    for (const n of notices) assert.equal(hex(n.hint), hex(alice.id.hint));
    console.log(`prekeys: 150 concurrent fetches through 2 nodes answered in ${took} ms`);
    const metrics = (await Promise.all([a, b].map(async (r) => (await fetch(`${r.adminUrl}/metrics`)).text()))).join(
      '\n',
    );
    const sum = (re: RegExp) => [...metrics.matchAll(re)].reduce((acc, m) => acc + Number(m[1]), 0);
    assert.ok(sum(/relay_prekey_fetches_total\{result="both"[^}]*\} (\d+)/g) >= 100);
    assert.ok(sum(/relay_prekey_fetches_total\{result="last_resort"[^}]*\} (\d+)/g) >= 50);
    assert.ok(sum(/relay_prekey_publishes_total\{result="stored"[^}]*\} (\d+)/g) >= 3);
    assert.ok(sum(/relay_prekey_low_notices_total\{route="(?:local|remote)"[^}]*\} (\d+)/g) >= 10);
  });

  it('stores one-time keys up to the cap, only above the last id, and replaces them on request', async () => {
    const alice = await peer(c.wsUrl);
    const bob = await peer(c.tcpUrl);
    const pub = makePublication(alice.id, { oneTimeX25519: 30, oneTimeKem: 25 });
    let status = expectStatus(await publish(alice.p, pub));
    assert.deepEqual(
      [status.oneTimeX25519, status.oneTimeKem, status.cap, status.lowWater],
      [20, 20, 20, 5],
      'capped at RELAY_PREKEY_MAX_ONE_TIME',
    );
    assert.deepEqual([status.lastOneTimeX25519Id, status.lastOneTimeKemId], [20, 20]);
    // The same publication again (a retry) changes nothing.
    status = expectStatus(await publish(alice.p, pub));
    assert.deepEqual([status.oneTimeX25519, status.oneTimeKem, status.lastOneTimeX25519Id], [20, 20, 20]);
    assert.equal(expectBundle(await fetchBundle(bob.p, alice.id)).bundle.oneTimePrekey?.id, 1);
    // One slot free: of ids 1..30 only 21 is above the last id.
    status = expectStatus(await publish(alice.p, pub));
    assert.deepEqual(
      [status.oneTimeX25519, status.oneTimeKem, status.lastOneTimeX25519Id, status.lastOneTimeKemId],
      [20, 20, 21, 21],
    );
    // REPLACE_ONE_TIME empties both lists first; ids still have to grow.
    const fresh = makePublication(alice.id, { oneTimeX25519: 4, oneTimeKem: 3, firstId: 100 });
    status = expectStatus(await publish(alice.p, fresh, PrekeyPublishFlags.REPLACE_ONE_TIME));
    assert.deepEqual(
      [status.oneTimeX25519, status.oneTimeKem, status.lastOneTimeX25519Id, status.lastOneTimeKemId],
      [4, 3, 103, 102],
    );
    const { bundle } = expectBundle(await fetchBundle(bob.p, alice.id));
    assert.equal(bundle.oneTimePrekey?.id, 100);
    assert.equal(hex(bundle.signedPrekey.publicKey), hex(fresh.signedPrekey.publicKey), 'signed keys replaced');
    // Three left of each, below lowWater 5 on c: alice (on c) was told.
    const notice = (await alice.p.next((f) => f.type === 'PREKEY_STATUS' && isZero(f.requestId))) as PrekeyStatusFrame;
    assert.deepEqual([notice.oneTimeX25519, notice.oneTimeKem], [3, 2]);
    status = expectStatus(await queryStatus(alice.p));
    assert.deepEqual([status.flags, status.oneTimeX25519, status.oneTimeKem], [7, 3, 2]);
  });

  it("keeps a peer's prekeys under its hash tag, expiring RELAY_PREKEY_TTL_SECONDS after the last publication", async () => {
    const alice = await peer(b.wsUrl);
    expectStatus(await publish(alice.p, makePublication(alice.id, { oneTimeX25519: 2, oneTimeKem: 1 })));
    const base = `lr:pk:{${hex(alice.id.hint)}}:`;
    const client = new Redis(redis.url);
    try {
      assert.equal(await client.type(`${base}m`), 'hash');
      assert.deepEqual((await client.hkeys(`${base}m`)).sort(), ['k', 's', 'x']);
      assert.equal(await client.hstrlen(`${base}m`, 's'), 1486);
      assert.deepEqual(
        (await client.lrangeBuffer(`${base}x`, 0, -1)).map((e) => e.length),
        [36, 36],
      );
      assert.deepEqual(
        (await client.lrangeBuffer(`${base}k`, 0, -1)).map((e) => e.length),
        [1252],
      );
      for (const key of ['m', 'x', 'k']) {
        const ttl = await client.pttl(`${base}${key}`);
        assert.ok(ttl > 89 * 86_400_000 && ttl <= 90 * 86_400_000, `${key}: PTTL ${ttl}`);
      }
    } finally {
      client.disconnect();
    }
  });

  it('reports an empty status for a peer that published nothing', async () => {
    const nobody = await peer(b.tcpUrl);
    const status = expectStatus(await queryStatus(nobody.p));
    assert.deepEqual(
      [status.flags, status.oneTimeX25519, status.oneTimeKem, status.lastOneTimeX25519Id, status.lastOneTimeKemId],
      [0, 0, 0, 0, 0],
    );
    assert.equal(hex(status.hint), hex(nobody.id.hint));
  });

  it('rate-limits fetches per connection, and beyond the per-target rate serves bundles without consuming one-time keys', async () => {
    const target = await peer(c.wsUrl);
    expectStatus(await publish(target.p, makePublication(target.id, { oneTimeX25519: 10, oneTimeKem: 10 })));
    const one = await peer(c.tcpUrl);
    const served: PrekeyBundleFrame[] = [];
    for (let i = 0; i < 3; i++) served.push(expectBundle(await fetchBundle(one.p, target.id)));
    // A fourth from the same connection within the minute: refused (RELAY_PREKEY_FETCHES_PER_MINUTE=3).
    expectNack(await fetchBundle(one.p, target.id), 'PREKEY_RATE_LIMITED');
    // Another connection: its own budget, but the target's (4 per minute) is spent after one more.
    const two = await peer(c.wsUrl);
    for (let i = 0; i < 3; i++) served.push(expectBundle(await fetchBundle(two.p, target.id)));
    assert.deepEqual(
      served.map((f) => f.bundle.oneTimePrekey?.id),
      [1, 2, 3, 4, undefined, undefined],
    );
    for (const f of served.slice(4)) verifyBundle(f.bundle, verifyEd25519, target.id.publicKey);
    assert.equal(expectStatus(await queryStatus(target.p)).oneTimeX25519, 6, 'throttled fetches consumed nothing');
    // Publishes and status queries share a budget (RELAY_PREKEY_PUBLISHES_PER_MINUTE=6; two used).
    const answers: Frame[] = [];
    for (let i = 0; i < 5; i++) answers.push(await queryStatus(target.p));
    for (const f of answers.slice(0, 4)) expectStatus(f);
    expectNack(answers[4]!, 'PREKEY_RATE_LIMITED');
    const metrics = await (await fetch(`${c.adminUrl}/metrics`)).text();
    assert.match(metrics, /relay_prekey_fetches_total\{result="throttled"[^}]*\} 2/);
    assert.match(metrics, /relay_prekey_fetches_total\{result="PREKEY_RATE_LIMITED"[^}]*\} 1/);
  });

  it('closes a connection that sends a malformed publication, like any undecodable frame', async () => {
    const alice = await peer(a.tcpUrl);
    const requestId = randomBytes(16);
    // A publication whose one-time count promises more keys than the frame holds.
    const frame = Buffer.from([2, 0x40, 0, 0, 0, 17 + 3, ...requestId, 0, 1, 0, 0]);
    alice.p.send(frame);
    const err = await alice.p.next('ERROR');
    assert.equal(errorCodeFromWire(err.code), 'BAD_LENGTH');
    await alice.p.closedPromise;
  });
});
