/**
 * The relay as operators run it: real node processes on one real Redis,
 * peers over WebSocket and TCP speaking the wire protocol byte for byte.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import { encodeFrame, errorCodeFromWire, FrameType, SendFlags } from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { RawPeer, sendFrameOf as sendFrame } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const text = (s: string) => new TextEncoder().encode(s);

async function peer(url: string, id = Ed25519Identity.generate()): Promise<{ id: Ed25519Identity; p: RawPeer }> {
  const p = await RawPeer.connect(url);
  await p.authenticate(id);
  return { id, p };
}

/** Polls Redis until `check` holds (the relay removes acknowledged frames asynchronously). */
async function eventually(redisUrl: string, check: (r: Redis) => Promise<boolean>, what: string): Promise<void> {
  const r = new Redis(redisUrl);
  try {
    const deadline = Date.now() + 20_000;
    while (!(await check(r))) {
      if (Date.now() > deadline) assert.fail(`not within 20 s: ${what}`);
      await new Promise((done) => setTimeout(done, 50));
    }
  } finally {
    r.disconnect();
  }
}

/** The durable queue's keys of a recipient (services/relay/src/durable-store.ts, default prefix). */
const queueKey = (id: Ed25519Identity, key: 'z' | 'd' | 'm' | 's') =>
  `lr:q:{${Buffer.from(id.hint).toString('hex')}}:${key}`;

/** Script calls Redis ran so far (INFO commandstats: EVAL and EVALSHA). */
async function scriptCalls(r: Redis): Promise<number> {
  const info = await r.info('commandstats');
  let calls = 0;
  for (const m of info.matchAll(/cmdstat_eval(?:sha)?:calls=(\d+)/g)) calls += Number(m[1]);
  return calls;
}

async function resumed(url: string, id: Ed25519Identity, lastAcked = 0): Promise<RawPeer> {
  const p = await RawPeer.connect(url);
  await p.authenticate(id);
  p.send({ type: 'RESUME', lastAcked });
  return p;
}

describe('relay nodes on one Redis', () => {
  let redis: RedisHandle;
  let a: RelayHandle;
  let b: RelayHandle;
  let c: RelayHandle;
  const open: RawPeer[] = [];
  const track = (p: RawPeer) => {
    open.push(p);
    return p;
  };

  before(async () => {
    redis = await startRedis();
    [a, b, c] = await Promise.all([
      startRelay({ redisUrl: redis.url }),
      startRelay({ redisUrl: redis.url }),
      startRelay({
        redisUrl: redis.url,
        env: {
          RELAY_QUEUE_MAX_FRAMES: '5',
          RELAY_QUEUE_MAX_FRAMES_PER_SENDER: '3',
          RELAY_AUTH_FAILURES_PER_MINUTE: '3',
        },
      }),
    ]);
  });
  after(async () => {
    for (const p of open) p.close();
    await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
    await redis?.stop();
  });

  it('serves /healthz, /readyz and /metrics on the admin port', async () => {
    assert.equal((await fetch(`${a.adminUrl}/healthz`)).status, 200);
    const ready = await fetch(`${a.adminUrl}/readyz`);
    assert.equal(ready.status, 200, await ready.text());
    const metrics = await (await fetch(`${a.adminUrl}/metrics`)).text();
    for (const name of ['relay_connections', 'relay_frames_total', 'relay_drops_total', 'relay_auth_failures_total']) {
      assert.match(metrics, new RegExp(name));
    }
  });

  it('forwards fast frames between peers on one node and across nodes, over ws and tcp', async () => {
    const alice = await peer(a.wsUrl);
    const bob = await peer(b.tcpUrl);
    const carol = await peer(a.tcpUrl);
    for (const x of [alice, bob, carol]) track(x.p);
    alice.p.send(sendFrame(alice.id, carol.id, text('local'), false));
    const local = await carol.p.next('DELIVER');
    assert.equal(Buffer.from(local.payload).toString(), 'local');
    assert.deepEqual(Buffer.from(local.source), Buffer.from(alice.id.hint));
    assert.equal(local.position, 0);
    alice.p.send(sendFrame(alice.id, bob.id, text('remote'), false));
    const remote = await bob.p.next('DELIVER');
    assert.equal(Buffer.from(remote.payload).toString(), 'remote');
    bob.p.send(sendFrame(bob.id, alice.id, text('back'), false));
    assert.equal(Buffer.from((await alice.p.next('DELIVER')).payload).toString(), 'back');
  });

  it('answers PEER_GONE for a fast frame to a peer connected nowhere', async () => {
    const alice = await peer(b.wsUrl);
    track(alice.p);
    const nobody = Ed25519Identity.generate();
    const msg = sendFrame(alice.id, nobody, text('x'), false);
    alice.p.send(msg);
    const gone = await alice.p.next('PEER_GONE');
    assert.deepEqual(Buffer.from(gone.hint), Buffer.from(nobody.hint));
    assert.deepEqual(Buffer.from(gone.messageId), Buffer.from((msg as { messageId: Uint8Array }).messageId));
    alice.p.send({ type: 'PRESENCE_QUERY', hint: nobody.hint });
    await alice.p.next('PEER_GONE');
    alice.p.send({ type: 'PRESENCE_QUERY', hint: alice.id.hint });
    await alice.p.next('PEER_PRESENT');
  });

  it('stores durable frames for an offline peer and delivers them in order on connect, on another node', async () => {
    const alice = await peer(a.wsUrl);
    track(alice.p);
    const bobId = Ed25519Identity.generate();
    const positions: number[] = [];
    for (let i = 0; i < 5; i++) {
      alice.p.send(sendFrame(alice.id, bobId, text(`m${i}`), true));
      positions.push((await alice.p.next('ACK')).position);
    }
    assert.deepEqual(positions, [1, 2, 3, 4, 5]);
    const bob = track(await resumed(b.tcpUrl, bobId));
    for (let i = 0; i < 5; i++) {
      const d = await bob.next('DELIVER');
      assert.equal(Buffer.from(d.payload).toString(), `m${i}`);
      assert.equal(d.position, i + 1);
      assert.equal(d.flags & SendFlags.DURABLE, SendFlags.DURABLE);
      if (i < 3) bob.send({ type: 'ACK', messageId: d.messageId, position: d.position });
    }
    bob.close();
    // Reconnect: the two unacknowledged frames come back, the acknowledged ones do not.
    const bob2 = track(await resumed(a.wsUrl, bobId, 3));
    assert.equal(Buffer.from((await bob2.next('DELIVER')).payload).toString(), 'm3');
    assert.equal(Buffer.from((await bob2.next('DELIVER')).payload).toString(), 'm4');
    // Live delivery to a connected, resumed peer on another node.
    alice.p.send(sendFrame(alice.id, bobId, text('live'), true));
    const ack = await alice.p.next('ACK');
    const live = await bob2.next('DELIVER');
    assert.equal(Buffer.from(live.payload).toString(), 'live');
    assert.equal(live.position, ack.position);
  });

  it('stores a repeated message id once and acknowledges both sends with the same position', async () => {
    const alice = await peer(a.tcpUrl);
    track(alice.p);
    const bobId = Ed25519Identity.generate();
    const id = randomBytes(16);
    alice.p.send(sendFrame(alice.id, bobId, text('once'), true, id));
    alice.p.send(sendFrame(alice.id, bobId, text('once'), true, id));
    const [first, second] = [await alice.p.next('ACK'), await alice.p.next('ACK')];
    assert.equal(first.position, second.position);
    const bob = track(await resumed(b.wsUrl, bobId));
    await bob.next('DELIVER');
    await assert.rejects(bob.next('DELIVER', 500), /timed out/);
  });

  it('skips frames that vanished from Redis (an evicting Redis) instead of reading them again forever, and delivers what follows', async () => {
    const alice = await peer(a.tcpUrl);
    track(alice.p);
    const bobId = Ed25519Identity.generate();
    // More lost frames than one read names (256), then one that is still there.
    const lost = 300;
    for (let i = 0; i < lost; i++) alice.p.send(sendFrame(alice.id, bobId, text(`lost${i}`), true));
    for (let i = 0; i < lost; i++) await alice.p.next('ACK');
    const r = new Redis(redis.url);
    try {
      // What a Redis whose maxmemory-policy evicts keys may do: the frames and the queue's counter go, the index stays.
      assert.equal(await r.del(queueKey(bobId, 'd'), queueKey(bobId, 'm')), 2);
      alice.p.send(sendFrame(alice.id, bobId, text('kept'), true));
      assert.equal((await alice.p.next('ACK')).position, lost + 1);
      const fetchesBefore = await scriptCalls(r);
      const bob = track(await resumed(b.wsUrl, bobId));
      const d = await bob.next('DELIVER', 10_000);
      assert.equal(Buffer.from(d.payload).toString(), 'kept');
      assert.equal(d.position, lost + 1);
      // And the pump stopped reading: a handful of script calls, not a loop.
      await new Promise((done) => setTimeout(done, 500));
      const calls = (await scriptCalls(r)) - fetchesBefore;
      assert.ok(calls < 20, `${calls} script calls to read ${lost + 1} frames`);
      const metrics = await (await fetch(`${b.adminUrl}/metrics`)).text();
      assert.match(metrics, new RegExp(`relay_durable_vanished_frames_total\\{[^}]*\\} ${lost}\n`));
    } finally {
      r.disconnect();
    }
  });

  it('delivers two senders’ durable frames that share a message id, each at its own position', async () => {
    // Regression (issue 12 item 9): the second sender got an ACK with the first
    // sender's position and its frame was discarded as a duplicate.
    const alice = await peer(a.wsUrl);
    const mallory = await peer(b.tcpUrl);
    track(alice.p);
    track(mallory.p);
    const bobId = Ed25519Identity.generate();
    const id = randomBytes(16);
    mallory.p.send(sendFrame(mallory.id, bobId, text('from mallory'), true, id));
    const first = await mallory.p.next('ACK');
    alice.p.send(sendFrame(alice.id, bobId, text('from alice'), true, id));
    const second = await alice.p.next('ACK');
    assert.notEqual(second.position, first.position);
    // Alice's retry is still a duplicate of her own frame.
    alice.p.send(sendFrame(alice.id, bobId, text('from alice'), true, id));
    assert.equal((await alice.p.next('ACK')).position, second.position);
    const bob = track(await resumed(a.tcpUrl, bobId));
    const got = [await bob.next('DELIVER'), await bob.next('DELIVER')];
    assert.deepEqual(
      got.map((d) => [d.position, Buffer.from(d.payload).toString(), Buffer.from(d.messageId).equals(id)]),
      [
        [first.position, 'from mallory', true],
        [second.position, 'from alice', true],
      ],
    );
    await assert.rejects(bob.next('DELIVER', 500), /timed out/);
    for (const d of got) bob.send({ type: 'ACK', messageId: d.messageId, position: d.position });
    await eventually(redis.url, async (r) => (await r.exists(queueKey(bobId, 'z'))) === 0, 'both frames acknowledged');
  });

  it('refuses a sender beyond its share with QUEUE_SENDER_FULL, stores an honest sender’s frames until QUEUE_FULL, evicts nothing', async () => {
    // Relay c: 5 frames per recipient, 3 of them per sender (issue 12 item 5).
    const hostile = await peer(c.wsUrl);
    const honest = await peer(c.tcpUrl);
    track(hostile.p);
    track(honest.p);
    const bobId = Ed25519Identity.generate();
    for (let i = 0; i < 3; i++) {
      hostile.p.send(sendFrame(hostile.id, bobId, text(`h${i}`), true));
      await hostile.p.next('ACK');
    }
    hostile.p.send(sendFrame(hostile.id, bobId, text('h3'), true));
    assert.equal(errorCodeFromWire((await hostile.p.next('NACK')).code), 'QUEUE_SENDER_FULL');
    for (let i = 0; i < 2; i++) {
      honest.p.send(sendFrame(honest.id, bobId, text(`q${i}`), true));
      await honest.p.next('ACK');
    }
    honest.p.send(sendFrame(honest.id, bobId, text('q2'), true));
    const nack = await honest.p.next('NACK');
    assert.equal(errorCodeFromWire(nack.code), 'QUEUE_FULL');
    const bob = track(await resumed(c.tcpUrl, bobId));
    const expected = ['h0', 'h1', 'h2', 'q0', 'q1'];
    for (const payload of expected) {
      const d = await bob.next('DELIVER');
      assert.equal(Buffer.from(d.payload).toString(), payload);
      bob.send({ type: 'ACK', messageId: d.messageId, position: d.position });
    }
    // Every frame acknowledged: the queue and its per-sender counts are gone.
    await eventually(
      redis.url,
      async (r) => (await r.exists(queueKey(bobId, 'z'), queueKey(bobId, 's'))) === 0,
      'the queue and its sender counts emptied by the ACKs',
    );
    const metrics = await (await fetch(`${c.adminUrl}/metrics`)).text();
    assert.match(metrics, /relay_durable_sends_total\{result="QUEUE_SENDER_FULL"[^}]*\} 1\n/);
    assert.match(metrics, /relay_durable_sends_total\{result="QUEUE_FULL"[^}]*\} 1\n/);
    assert.match(metrics, /relay_durable_sends_total\{result="stored"[^}]*\} 5\n/);
    assert.match(metrics, /relay_durable_queue_depth_count\{[^}]*\} 5\n/);
    assert.match(metrics, /relay_durable_queue_depth_bucket\{le="10"[^}]*\} 5\n/);
    // Each of the five waited in the queue from its store to Bob's arrival: seconds here, not days.
    assert.match(metrics, /relay_durable_delivery_age_seconds_count\{[^}]*\} 5\n/);
    assert.match(metrics, /relay_durable_delivery_age_seconds_bucket\{le="600"[^}]*\} 5\n/);
    const sum = Number(/relay_durable_delivery_age_seconds_sum\{[^}]*\} ([0-9.e-]+)\n/.exec(metrics)?.[1]);
    assert.ok(sum > 0, `the frames waited ${sum} s in all`);
  });

  it('lets a peer hold several connections at once; a new one does not close the old', async () => {
    const id = Ed25519Identity.generate();
    const first = track(await resumed(a.wsUrl, id));
    const second = track(await resumed(a.tcpUrl, id));
    const alice = await peer(b.wsUrl);
    track(alice.p);
    alice.p.send(sendFrame(alice.id, id, text('both'), true));
    await alice.p.next('ACK');
    assert.equal(Buffer.from((await first.next('DELIVER')).payload).toString(), 'both');
    assert.equal(Buffer.from((await second.next('DELIVER')).payload).toString(), 'both');
    assert.equal(first.closed, false);
  });

  it('refuses forged and replayed authentication', async () => {
    const id = Ed25519Identity.generate();
    const other = Ed25519Identity.generate();
    const cases: Array<Parameters<RawPeer['authenticate']>[1]> = [
      { relayKey: other.publicKey }, // signed for another relay's key (a CHALLENGE passed through)
      { binding: 'tcp' }, // signed for another transport than the one used (ws)
      { did: other.did }, // a DID that is not this key's
      { publicKey: other.publicKey }, // signature by another key
    ];
    for (const tamper of cases) {
      const p = await RawPeer.connect(a.wsUrl);
      await assert.rejects(p.authenticate(id, tamper), /closed/);
      const err = p.frames.find((f) => f.type === 'ERROR');
      assert.ok(err && err.type === 'ERROR' && errorCodeFromWire(err.code) === 'AUTH_FAILED', JSON.stringify(tamper));
    }
    // Replay: an AUTH signed for one connection's nonce, sent on another connection.
    const p1 = await RawPeer.connect(a.wsUrl);
    track(p1);
    p1.hello(0);
    const ch = await p1.next('CHALLENGE');
    const { authTranscript } = await import('@libertaria/identity');
    const sig = id.sign(
      authTranscript({ relayNonce: ch.nonce, clientNonce: p1.clientNonce, relayKey: ch.relayKey, binding: 'ws' }),
    );
    const p2 = await RawPeer.connect(a.wsUrl);
    p2.hello(0);
    await p2.next('CHALLENGE');
    p2.send({ type: 'AUTH', keyType: 1, publicKey: id.publicKey, signature: sig, did: id.did });
    const err = await p2.next('ERROR');
    assert.equal(errorCodeFromWire(err.code), 'AUTH_FAILED');
    await p2.closedPromise;
  });

  it('rate-limits failed handshakes per DID and address, without locking out other peers behind the address', async () => {
    // Every peer here connects from 127.0.0.1, as peers behind one NAT do.
    const attacker = Ed25519Identity.generate();
    for (let i = 0; i < 3; i++) {
      const p = track(await RawPeer.connect(c.tcpUrl));
      await assert.rejects(p.authenticate(attacker, { relayKey: new Uint8Array(32).fill(9) }));
    }
    // The fourth attempt of that DID is refused before its signature is checked, even a correct one.
    const refused = track(await RawPeer.connect(c.tcpUrl));
    await assert.rejects(refused.authenticate(attacker));
    assert.ok(
      refused.frames.some((f) => f.type === 'ERROR' && errorCodeFromWire(f.code) === 'AUTH_RATE_LIMITED'),
      `frames: ${JSON.stringify(refused.frames.map((f) => f.type))}`,
    );
    // Another peer behind the same address logs in.
    const honest = track(await RawPeer.connect(c.tcpUrl));
    await honest.authenticate(Ed25519Identity.generate());
    const metrics = await (await fetch(`${c.adminUrl}/metrics`)).text();
    assert.match(metrics, /relay_auth_failures_total\{reason="bad_signature"[^}]*\} 3/);
    assert.match(metrics, /relay_auth_failures_total\{reason="rate_limited"[^}]*\} 1/);
  });

  it('over its per-address bound, an address is refused to new DIDs but not to peers that logged in from it', async () => {
    const relay = await startRelay({
      redisUrl: redis.url,
      env: { RELAY_AUTH_FAILURES_PER_MINUTE: '3', RELAY_AUTH_FAILURES_PER_ADDRESS_PER_MINUTE: '5' },
    });
    try {
      const resident = Ed25519Identity.generate();
      await track(await RawPeer.connect(relay.tcpUrl)).authenticate(resident);
      // An abuser rotating fresh DIDs: each fails once, the address reaches its bound.
      for (let i = 0; i < 5; i++) {
        const p = track(await RawPeer.connect(relay.tcpUrl));
        await assert.rejects(p.authenticate(Ed25519Identity.generate(), { relayKey: new Uint8Array(32).fill(9) }));
      }
      const newcomer = track(await RawPeer.connect(relay.tcpUrl));
      await assert.rejects(newcomer.authenticate(Ed25519Identity.generate()));
      assert.ok(
        newcomer.frames.some((f) => f.type === 'ERROR' && errorCodeFromWire(f.code) === 'AUTH_RATE_LIMITED'),
        `frames: ${JSON.stringify(newcomer.frames.map((f) => f.type))}`,
      );
      // The peer already living behind the address still connects.
      const again = track(await RawPeer.connect(relay.wsUrl));
      await again.authenticate(resident);
      const metrics = await (await fetch(`${relay.adminUrl}/metrics`)).text();
      assert.match(metrics, /relay_auth_failures_total\{reason="rate_limited"[^}]*\} 1/);
    } finally {
      await relay.stop();
    }
  });

  it('answers garbage and oversized frames with an error frame and a close, leaving other peers untouched', async () => {
    const alice = await peer(b.wsUrl);
    const bob = await peer(b.wsUrl);
    track(alice.p);
    track(bob.p);
    const bad: Array<[string, Uint8Array, string]> = [
      ['garbage type', Uint8Array.from([1, 0x77, 0, 0, 0, 0]), 'UNKNOWN_FRAME_TYPE'],
      ['bad version', Uint8Array.from([9, 0x20, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]), 'UNSUPPORTED_VERSION'],
      ['oversized', Uint8Array.from([2, FrameType.SEND, 0x00, 0x10, 0x00, 0x00]), 'FRAME_TOO_LARGE'],
      [
        'version-1 frame after version 2',
        Uint8Array.from([1, FrameType.PING, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
        'UNSUPPORTED_VERSION',
      ],
    ];
    for (const [label, bytes, code] of bad) {
      for (const url of [b.wsUrl, b.tcpUrl]) {
        const { p } = await peer(url);
        p.send(bytes);
        const err = await p.next('ERROR');
        assert.equal(errorCodeFromWire(err.code), code, `${label} over ${url}`);
        assert.equal(err.flags & 1, 1);
        await p.closedPromise;
      }
    }
    // A payload just over the configured limit (64 KiB by default).
    const { p } = await peer(b.tcpUrl);
    p.send(encodeFrame(sendFrame(alice.id, bob.id, new Uint8Array(65537), false)));
    assert.equal(errorCodeFromWire((await p.next('ERROR')).code), 'FRAME_TOO_LARGE');
    await p.closedPromise;
    // The others still talk.
    alice.p.send(sendFrame(alice.id, bob.id, text('still here'), false));
    assert.equal(Buffer.from((await bob.p.next('DELIVER')).payload).toString(), 'still here');
  });

  it('over WebSocket, refuses a message that is empty or ends inside a frame (TRUNCATED), and takes one whole frame as a message', async () => {
    const alice = await peer(b.wsUrl);
    const bob = await peer(b.wsUrl);
    track(alice.p);
    track(bob.p);
    const ping = encodeFrame({ type: 'PING', data: new Uint8Array(8) });
    const cases: Array<[string, Uint8Array]> = [
      ['empty message', new Uint8Array(0)],
      ['a frame and 3 bytes of the next', Buffer.concat([ping, ping.subarray(0, 3)])],
      ['a frame cut short', ping.subarray(0, ping.length - 1)],
    ];
    for (const [label, bytes] of cases) {
      const { p } = await peer(b.wsUrl);
      p.send(bytes);
      const err = await p.next('ERROR');
      assert.equal(errorCodeFromWire(err.code), 'TRUNCATED', label);
      await p.closedPromise;
    }
    // One whole frame per message, and two in one: both delivered, in order.
    alice.p.send(sendFrame(alice.id, bob.id, text('one'), false));
    alice.p.send(
      Buffer.concat([
        encodeFrame(sendFrame(alice.id, bob.id, text('two'), false)),
        encodeFrame(sendFrame(alice.id, bob.id, text('three'), false)),
      ]),
    );
    for (const want of ['one', 'two', 'three']) {
      assert.equal(Buffer.from((await bob.p.next('DELIVER')).payload).toString(), want);
    }
  });

  it('answers PING only after the answers owed for earlier frames (PING is a barrier)', async () => {
    const alice = await peer(a.tcpUrl);
    track(alice.p);
    for (let i = 0; i < 20; i++) {
      const data = Uint8Array.from([0, 0, 0, 0, 0, 0, 0, i]);
      alice.p.send(sendFrame(alice.id, Ed25519Identity.generate(), text('x'), false));
      alice.p.send({ type: 'PING', data });
      await alice.p.next('PONG');
      // The PEER_GONE for the SEND must already be here: it was owed before the PONG.
      await alice.p.next('PEER_GONE', 1);
    }
  });

  it('refuses a SEND whose source is not the sender', async () => {
    const alice = await peer(a.wsUrl);
    track(alice.p);
    const mallory = Ed25519Identity.generate();
    alice.p.send(sendFrame(mallory, alice.id, text('spoof'), false));
    assert.equal(errorCodeFromWire((await alice.p.next('NACK')).code), 'SOURCE_MISMATCH');
  });

  it('closes a connection that does not finish the handshake in time', async () => {
    const slow = await startRelay({ redisUrl: redis.url, env: { RELAY_HANDSHAKE_TIMEOUT_MS: '300' } });
    try {
      const p = await RawPeer.connect(slow.tcpUrl);
      const err = await p.next('ERROR');
      assert.equal(errorCodeFromWire(err.code), 'AUTH_TIMEOUT');
      await p.closedPromise;
    } finally {
      await slow.stop();
    }
  });
});

describe('a slow peer', () => {
  it('costs bounded memory: fast frames beyond its send queue are dropped and counted, other peers are not stalled', async () => {
    const redis = await startRedis();
    const relay = await startRelay({
      redisUrl: redis.url,
      env: {
        RELAY_MAX_PAYLOAD_BYTES: '1024',
        RELAY_SEND_QUEUE_BYTES: '65536',
        RELAY_RATE_FRAMES_PER_SECOND: '1000000',
        RELAY_RATE_BURST: '1000000',
      },
    });
    try {
      const alice = await peer(relay.tcpUrl);
      const carol = await peer(relay.tcpUrl);
      // A peer that authenticates and then never reads: its kernel buffers
      // fill, then the relay's per-connection bound applies.
      const slowId = Ed25519Identity.generate();
      const stuckPeer = await RawPeer.connect(relay.tcpUrl);
      await stuckPeer.authenticate(slowId);
      stuckPeer.pauseReading();
      const payload = new Uint8Array(1024);
      const toSlow = encodeFrame(sendFrame(alice.id, slowId, payload, false));
      const batch = Buffer.concat(Array.from({ length: 200 }, () => toSlow));
      for (let i = 0; i < 150; i++) alice.p.send(batch); // 30,000 frames, 30 MiB for a peer that reads nothing
      // Carol is served all the same. A stall would last for good (the stuck peer
      // never reads); the relay still has to parse the 30 MiB before carol's
      // frame, which takes seconds on a loaded CI machine: a generous deadline.
      alice.p.send(sendFrame(alice.id, carol.id, text('not stalled'), false));
      const started = Date.now();
      assert.equal(Buffer.from((await carol.p.next('DELIVER', 30_000)).payload).toString(), 'not stalled');
      const waited = Date.now() - started;
      const metrics = await (await fetch(`${relay.adminUrl}/metrics`)).text();
      const drops = Number(/relay_drops_total\{reason="send_queue_overflow"[^}]*\} (\d+)/.exec(metrics)?.[1] ?? 0);
      const rss = Number(/process_resident_memory_bytes\{[^}]*\} (\d+)/.exec(metrics)?.[1] ?? 0);
      assert.ok(drops > 10_000, `expected most frames dropped for the stuck peer, got ${drops}`);
      assert.ok(rss < 300 * 1024 * 1024, `relay RSS ${rss} bytes`);
      console.log(
        `slow peer: ${drops} of 30000 frames dropped, carol served after ${waited} ms, relay rss ${Math.round(rss / 2 ** 20)} MiB`,
      );
      alice.p.close();
      carol.p.close();
      stuckPeer.close();
    } finally {
      await relay.stop();
      await redis.stop();
    }
  });
});

describe('relay drain on SIGTERM', () => {
  it('turns unready, sends GOAWAY with the other nodes as hint, finishes durable writes and exits in time', async () => {
    const redis = await startRedis();
    const survivor = await startRelay({ redisUrl: redis.url, env: { RELAY_PUBLIC_URLS: 'ws://survivor:1' } });
    const leaving = await startRelay({
      redisUrl: redis.url,
      env: { RELAY_DRAIN_TIMEOUT_MS: '5000', RELAY_HEARTBEAT_MS: '200' },
    });
    try {
      // The survivor's first heartbeat announces its URLs (the GOAWAY hint): wait
      // for it to be in Redis rather than for a fixed time.
      const r = new Redis(redis.url);
      try {
        const deadline = Date.now() + 20_000;
        while ((await r.hget('lr:nodes', survivor.nodeId)) === null) {
          const nodes = await r.hgetall('lr:nodes');
          assert.ok(Date.now() < deadline, `the survivor never announced itself; lr:nodes: ${JSON.stringify(nodes)}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      } finally {
        r.disconnect();
      }
      const alice = await peer(leaving.wsUrl);
      const bobId = Ed25519Identity.generate();
      for (let i = 0; i < 50; i++) alice.p.send(sendFrame(alice.id, bobId, text(`d${i}`), true));
      const started = Date.now();
      leaving.process.kill('SIGTERM');
      const goaway = await alice.p.next('GOAWAY');
      assert.equal(goaway.reason, 'draining');
      assert.match(goaway.reconnectHint, /ws:\/\/survivor:1/);
      // Alice stays connected, so the node is still in its grace period: not ready.
      const ready = await fetch(`${leaving.adminUrl}/readyz`);
      assert.equal(ready.status, 503);
      assert.match(await ready.text(), /draining/);
      const code = await leaving.exited;
      assert.equal(code, 0);
      // The drain budget is 5 s; the rest is slack for a loaded machine to run the
      // exit and report it. A drain that waited for Alice to leave would never end.
      const took = Date.now() - started;
      assert.ok(took < 9000, `drain took ${took} ms`);
      // Every durable SEND the node acknowledged is in Redis: the recipient gets them all from the survivor.
      const acked = alice.p.frames.filter((f) => f.type === 'ACK').length;
      const bob = await resumed(survivor.wsUrl, bobId);
      for (let i = 0; i < acked; i++) await bob.next('DELIVER');
      bob.close();
      alice.p.close();
    } finally {
      await survivor.stop();
      await leaving.stop();
      await redis.stop();
    }
  });
});
