/**
 * RelayClient and the lrelay CLI against real relay node processes
 * (services/relay/dist/main.js, built by `tsc -b`) on a private Redis.
 *
 * Connection loss is produced with a small TCP proxy in front of a relay, so
 * a test can cut a live connection, or hold back the bytes of one direction
 * (an ACK that never arrives), without touching the relay.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import {
  encodeEnvelope,
  RelayClient,
  type RelayClientEvents,
  type RelayClientOptions,
  randomBytes,
} from '@libertaria/client';
import { Ed25519Identity, Ed25519Identity as SharedIdentity, verifyEd25519 } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { type LibertariaError, RelayError, SendFlags } from '@libertaria/protocol';
import { cli, clientState, iteratorOf, nextMessage, str, text, within } from '../../../test-support/client-harness.js';
import { makePublication } from '../../../test-support/prekeys.js';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { freePort, type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

/** The next `event` matching `match`; the default deadline is sized for a loaded 2-core CI machine. */
function nextEvent<K extends keyof RelayClientEvents>(
  client: RelayClient,
  event: K,
  ms = 20_000,
  match: (payload: RelayClientEvents[K]) => boolean = () => true,
): Promise<RelayClientEvents[K]> {
  let off = (): void => {};
  const seen = new Promise<RelayClientEvents[K]>((resolve) => {
    off = client.events.on(event, (payload) => {
      if (!match(payload)) return;
      off();
      resolve(payload);
    });
  });
  return within(seen, ms, `event ${String(event)}`, clientState(client)).finally(off);
}

/**
 * RawPeer is typed against the package build (@libertaria/protocol and friends), whose
 * Ed25519Identity is a distinct class for the type checker: hand it one made
 * from the same seed.
 */
function asRawIdentity(identity: Ed25519Identity): SharedIdentity {
  return SharedIdentity.fromSeed(identity.exportSeed());
}

/** Polls `condition`; on timeout the error includes `seen()`, what the test observed instead. */
async function until(condition: () => boolean, ms: number, what: string, seen: () => unknown): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${ms} ms waiting for ${what}; saw: ${JSON.stringify(seen())}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Asserts nothing arrives for `ms`; the pending read is withdrawn so no later message is lost. */
async function expectNoMessage(client: RelayClient, ms = 400): Promise<void> {
  const it = client.messages()[Symbol.asyncIterator]();
  const pending = it.next();
  const outcome = await Promise.race([pending, new Promise<'quiet'>((r) => setTimeout(() => r('quiet'), ms))]);
  await it.return?.();
  if (outcome !== 'quiet' && !outcome.done) {
    assert.fail(`unexpected message ${str(outcome.value.payload)} (position ${outcome.value.position})`);
  }
}

interface Proxy {
  url(scheme: 'ws' | 'tcp'): string;
  /** Destroys every proxied connection (both ends see a reset). */
  cut(): void;
  /** Holds back bytes going 'up' (client → relay) or 'down' (relay → client); null forwards both. */
  hold(direction: 'up' | 'down' | null): void;
  close(): Promise<void>;
}

/** A TCP proxy to 127.0.0.1:`target`; WebSocket works through it too (it is TCP underneath). */
async function startProxy(target: number): Promise<Proxy> {
  const pairs = new Set<[Socket, Socket]>();
  let held: 'up' | 'down' | null = null;
  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: '127.0.0.1', port: target });
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    client.on('data', (d) => {
      if (held !== 'up') upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (held !== 'down') client.write(d);
    });
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return {
    url: (scheme) => `${scheme}://127.0.0.1:${address.port}`,
    cut: () => {
      for (const [a, b] of pairs) {
        a.resetAndDestroy();
        b.resetAndDestroy();
      }
      pairs.clear();
    },
    hold: (direction) => {
      held = direction;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const [a, b] of pairs) {
          a.destroy();
          b.destroy();
        }
        server.close(() => resolve());
      }),
  };
}

/** stderr without the one `warning: --unsealed: …` line an --unsealed run prints. */
const unwarned = (stderr: string): string => stderr.replace(/^warning: --unsealed: [^\n]*\n/, '');

describe('RelayClient against a real relay', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let smallRelay: RelayHandle;
  const clients: RelayClient[] = [];
  const proxies: Proxy[] = [];
  let dir: string;

  async function connected(relays: string[], options: Partial<RelayClientOptions> = {}): Promise<RelayClient> {
    const client = new RelayClient({
      relays,
      identity: options.identity ?? Ed25519Identity.generate(),
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
      // These tests are about the relay link: payloads as given unless a test seals.
      ...(options.sessions === undefined ? { sealing: false } : {}),
      ...options,
    });
    clients.push(client);
    await within(client.connect(), 20_000, 'connect', clientState(client));
    return client;
  }

  before(async () => {
    redis = await startRedis();
    [relay, smallRelay] = await Promise.all([
      startRelay({ redisUrl: redis.url }),
      // A queue of 2 frames, all of which one sender may take (its test is about QUEUE_FULL).
      startRelay({ redisUrl: redis.url, env: { RELAY_QUEUE_MAX_FRAMES: '2', RELAY_QUEUE_MAX_FRAMES_PER_SENDER: '2' } }),
    ]);
    dir = await mkdtemp(join(tmpdir(), 'lrelay-e2e-'));
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all([relay?.stop(), smallRelay?.stop()]);
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const [aliceVia, bobVia] of [
    ['ws', 'ws'],
    ['tcp', 'tcp'],
    ['ws', 'tcp'],
  ] as const) {
    it(`durable and fast messages between two peers (${aliceVia} → ${bobVia})`, async () => {
      const urlOf = (t: 'ws' | 'tcp'): string => (t === 'ws' ? relay.wsUrl : relay.tcpUrl);
      const alice = await connected([urlOf(aliceVia)]);
      const bob = await connected([urlOf(bobVia)]);

      const sent = await alice.send(bob.did, text('durable hello'));
      assert.ok(sent.position !== undefined && sent.position >= 1);
      const m1 = await nextMessage(bob);
      assert.equal(str(m1.payload), 'durable hello');
      assert.equal(m1.from, alice.did);
      assert.equal(m1.to, bob.did);
      assert.equal(m1.durable, true);
      assert.equal(m1.position, sent.position);
      assert.deepEqual(m1.messageId, sent.messageId);
      await m1.ack();

      const fast = await alice.send(bob.did, text('fast hello'), { durable: false });
      assert.equal(fast.position, undefined);
      const m2 = await nextMessage(bob);
      assert.equal(str(m2.payload), 'fast hello');
      assert.equal(m2.durable, false);
      assert.equal(m2.position, 0);
      assert.equal(m2.from, alice.did);

      // And back: bob answers alice.
      await bob.send(alice.did, text('reply'));
      const r = await nextMessage(alice);
      assert.equal(str(r.payload), 'reply');
      assert.equal(r.from, bob.did);
      await r.ack();
      assert.equal(typeof (await alice.ping()), 'number');
    });
  }

  it('reports PEER_GONE for a fast message to a peer connected nowhere', async () => {
    const alice = await connected([relay.wsUrl]);
    const nobody = Ed25519Identity.generate();
    const gone = nextEvent(alice, 'peer-gone');
    const { messageId } = await alice.send(nobody.did, text('anyone?'), { durable: false });
    const event = await gone;
    assert.deepEqual(event.messageId, messageId);
    assert.deepEqual(event.hint, nobody.hint);
    assert.equal(await alice.presence(nobody.did), false);
    assert.equal(await alice.presence(alice.did), true);
  });

  it('delivers durable messages to an offline peer when it connects, in order, once', async () => {
    const alice = await connected([relay.tcpUrl]);
    const carol = Ed25519Identity.generate();
    const positions: number[] = [];
    for (const body of ['one', 'two', 'three']) positions.push((await alice.send(carol.did, text(body))).position ?? 0);
    assert.deepEqual(
      positions,
      [...positions].sort((a, b) => a - b),
    );

    const first = await connected([relay.wsUrl], { identity: carol });
    const got: string[] = [];
    for (let i = 0; i < 3; i++) {
      const m = await nextMessage(first);
      assert.equal(m.position, positions[i]);
      got.push(str(m.payload));
      await m.ack();
    }
    assert.deepEqual(got, ['one', 'two', 'three']);
    assert.equal(first.stats.lastAcked, positions[2]);
    await first.ping(); // the ACKs are handled before the PONG
    await first.close();

    // Everything was acknowledged: a new client of the same identity gets nothing.
    const second = await connected([relay.tcpUrl], { identity: carol });
    await expectNoMessage(second);
  });

  it('hides the redelivery of an unacknowledged message after a reconnect', async () => {
    const proxy = await startProxy(relay.ports.tcp);
    proxies.push(proxy);
    const alice = await connected([relay.wsUrl]);
    const bobId = Ed25519Identity.generate();
    const bob = await connected([proxy.url('tcp')], { identity: bobId });

    const s1 = await alice.send(bob.did, text('m1'));
    const m1 = await nextMessage(bob);
    assert.equal(str(m1.payload), 'm1');

    // The connection drops before bob acknowledged m1: the relay redelivers it after RESUME.
    const back = nextEvent(bob, 'connected');
    proxy.cut();
    await back;
    await bob.ping();
    const s2 = await alice.send(bob.did, text('m2'));
    const m2 = await nextMessage(bob);
    assert.equal(str(m2.payload), 'm2', 'the redelivered m1 must not be yielded again');
    assert.equal(bob.stats.duplicates, 1, 'm1 did come back, and was hidden');
    assert.equal(bob.stats.unackedInbound, 2);

    await m1.ack(); // acknowledged on the new connection
    await m2.ack();
    assert.equal(bob.stats.lastAcked, s2.position);
    assert.ok((s1.position ?? 0) < (s2.position ?? 0));
    await bob.ping();
    await bob.close();
    const fresh = await connected([relay.wsUrl], { identity: bobId });
    await expectNoMessage(fresh);
  });

  it('counts an acknowledgement whose ACK frame was lost through RESUME', async () => {
    const proxy = await startProxy(relay.ports.ws);
    proxies.push(proxy);
    const alice = await connected([relay.tcpUrl]);
    const bobId = Ed25519Identity.generate();
    const bob = await connected([proxy.url('ws')], { identity: bobId });
    const sent = await alice.send(bob.did, text('acked, but the ACK is lost'));
    const m = await nextMessage(bob);
    proxy.hold('up'); // bob's ACK never reaches the relay
    await m.ack();
    const back = nextEvent(bob, 'connected');
    proxy.cut();
    proxy.hold(null);
    await back;
    // RESUME {lastAcked} told the relay; nothing comes back, not even as a hidden duplicate.
    assert.equal(bob.stats.lastAcked, sent.position);
    await bob.ping();
    await bob.close();
    const fresh = await connected([relay.wsUrl], { identity: bobId });
    await expectNoMessage(fresh);
  });

  it('sends a durable message again, with the same id, when its ACK was lost', async () => {
    const proxy = await startProxy(relay.ports.tcp);
    proxies.push(proxy);
    const alice = await connected([proxy.url('tcp')]);
    const bob = await connected([relay.wsUrl]);

    proxy.hold('down'); // the relay stores the message, but alice never sees the ACK
    let settled = false;
    const sending = alice.send(bob.did, text('exactly once')).finally(() => {
      settled = true;
    });
    const m = await nextMessage(bob);
    assert.equal(str(m.payload), 'exactly once');
    await m.ack();
    assert.equal(settled, false, 'no success without an ACK');

    const back = nextEvent(alice, 'connected');
    proxy.cut();
    proxy.hold(null);
    await back;
    const result = await within(sending, 20_000, 'the ACK of the resent message', clientState(alice));
    // The relay is idempotent on messageId: same position, stored once.
    assert.equal(result.position, m.position);
    assert.deepEqual(result.messageId, m.messageId);
    await expectNoMessage(bob);
  });

  it('yields two senders’ messages that share a message id, durable and fast (per-sender dedupe)', async () => {
    // Regression (issue 12 item 9): the SDK dropped the second sender's message
    // as a duplicate of the first, having tracked inbound ids without their sender.
    const alice = await connected([relay.wsUrl]);
    const mallory = await connected([relay.tcpUrl]);
    const bobId = Ed25519Identity.generate();
    const id = randomBytes(16);
    const fromMallory = await mallory.send(bobId.did, text('durable from mallory'), { messageId: id });
    const fromAlice = await alice.send(bobId.did, text('durable from alice'), { messageId: id });
    assert.notEqual(fromAlice.position, fromMallory.position, 'the relay stored both');
    const bob = await connected([relay.wsUrl], { identity: bobId });
    const durable = [await nextMessage(bob), await nextMessage(bob)];
    assert.deepEqual(
      durable.map((m) => [m.from, str(m.payload), m.position]),
      [
        [mallory.did, 'durable from mallory', fromMallory.position],
        [alice.did, 'durable from alice', fromAlice.position],
      ],
    );
    for (const m of durable) await m.ack();
    const fastId = randomBytes(16);
    await mallory.send(bob.did, text('fast from mallory'), { messageId: fastId, durable: false });
    assert.equal(str((await nextMessage(bob)).payload), 'fast from mallory');
    await alice.send(bob.did, text('fast from alice'), { messageId: fastId, durable: false });
    assert.equal(str((await nextMessage(bob)).payload), 'fast from alice');
    assert.equal(bob.stats.duplicates, 0);
    assert.equal(bob.stats.lastAcked, fromAlice.position);
  });

  it('fails over past a dead first URL', async () => {
    const dead = await freePort();
    const client = await connected([`ws://127.0.0.1:${dead}`, `tcp://127.0.0.1:${dead}`, relay.tcpUrl]);
    assert.equal(client.connected, true);
    const peer = await connected([relay.wsUrl]);
    await client.send(peer.did, text('via the third URL'));
    assert.equal(str((await nextMessage(peer)).payload), 'via the third URL');
  });

  it('gives up with the last error once every round failed', async () => {
    const dead = await freePort();
    const client = new RelayClient({
      relays: [`tcp://127.0.0.1:${dead}`],
      identity: Ed25519Identity.generate(),
      reconnect: { initialDelayMs: 10, maxDelayMs: 20, maxAttempts: 2 },
    });
    clients.push(client);
    await assert.rejects(client.connect(), (error: unknown) => {
      assert.ok(error instanceof RelayError);
      assert.match(error.message, /no relay reachable after 2 round/);
      return true;
    });
    await assert.rejects(client.send(Ed25519Identity.generate().did, text('x')), RelayError);
  });

  it('refuses a relay that proves another key than expectRelayDid, before signing', async () => {
    const someoneElse = Ed25519Identity.generate();
    const client = new RelayClient({
      relays: [relay.wsUrl],
      identity: Ed25519Identity.generate(),
      expectRelayDid: someoneElse.didKey,
    });
    clients.push(client);
    const refused = nextEvent(client, 'error');
    await assert.rejects(
      client.connect(),
      (error: unknown) => error instanceof RelayError && error.code === 'RELAY_IDENTITY_MISMATCH',
    );
    assert.match((await refused).error.message, new RegExp(`proved key ${relay.did}, but expectRelayDid expects`));
  });

  it('surfaces a NACK as the relay code and checks sizes locally', async () => {
    const alice = await connected([relay.wsUrl]);
    const bob = Ed25519Identity.generate();
    await assert.rejects(
      alice.send(bob.did, text('kept too long'), { ttlSeconds: 400_000_000 }),
      (error: unknown) => error instanceof RelayError && error.code === 'TTL_TOO_LONG',
    );
    await assert.rejects(
      alice.send(bob.did, new Uint8Array(65_536)),
      (error: unknown) => error instanceof RelayError && error.code === 'FRAME_TOO_LARGE',
    );
    assert.equal(alice.stats.pendingSends, 0);
  });

  it('drops poison frames (forged sender, broken envelope) and acknowledges the durable ones', async () => {
    const bobId = Ed25519Identity.generate();
    const bob = await connected([relay.wsUrl], { identity: bobId });
    const errors: LibertariaError[] = [];
    bob.events.on('error', ({ error }) => errors.push(error));
    // Mallory authenticates as herself but claims to be alice inside the payload.
    const alice = Ed25519Identity.generate();
    const mallory = Ed25519Identity.generate();
    const raw = await RawPeer.connect(relay.tcpUrl);
    await raw.authenticate(asRawIdentity(mallory));
    const forged = encodeEnvelope(alice.did, text('I am alice'));
    const cases: [Uint8Array, boolean][] = [
      [forged, true],
      [Uint8Array.of(9, 9, 9), true],
      [forged, false],
    ];
    for (const [payload, durable] of cases) {
      raw.send({
        type: 'SEND',
        dest: bobId.hint,
        source: mallory.hint,
        sessionId: new Uint8Array(16),
        messageId: randomBytes(16),
        flags: durable ? SendFlags.DURABLE : 0,
        ttl: 0,
        position: 0,
        payload,
      });
    }
    await raw.next('ACK');
    await raw.next('ACK');
    raw.close();
    await until(
      () => errors.length === 3,
      20_000,
      'three error events',
      () => errors.map((e) => e.message),
    );
    // Durable frames pass through Redis, the fast one does not: compare without order.
    assert.deepEqual(errors.map((e) => e.code).sort(), ['SOURCE_MISMATCH', 'SOURCE_MISMATCH', 'UNSUPPORTED_VERSION']);

    const real = await connected([relay.tcpUrl], { identity: alice });
    await real.send(bob.did, text('the real alice'));
    const m = await nextMessage(bob);
    assert.equal(str(m.payload), 'the real alice', 'no poison frame is yielded');
    await m.ack();
    await bob.ping();
    await bob.close();
    // The poison durable frames were acknowledged: they cannot block the queue.
    await expectNoMessage(await connected([relay.wsUrl], { identity: bobId }));
  });

  it('leaves durable messages with the relay while the application is behind, then yields each once', async () => {
    const bobId = Ed25519Identity.generate();
    const bob = await connected([relay.tcpUrl], { identity: bobId, inboundBufferSize: 4 });
    const alice = await connected([relay.wsUrl]);
    const n = 30;
    await Promise.all(Array.from({ length: n }, (_, i) => alice.send(bob.did, text(`n${i}`))));
    await bob.ping();
    await until(() => bob.stats.bufferedInbound === 4, 20_000, 'a full inbound buffer', clientState(bob));
    const got: string[] = [];
    for (let i = 0; i < n; i++) {
      const m = await nextMessage(bob);
      got.push(str(m.payload));
      await m.ack();
    }
    // Sends ran concurrently, so order by position, which is the relay's order.
    assert.equal(new Set(got).size, n, 'no duplicates');
    assert.deepEqual([...got].sort(), Array.from({ length: n }, (_, i) => `n${i}`).sort());
    assert.ok(bob.stats.connections > 1, 'frames left unread were fetched again on a fresh connection');
    assert.equal(bob.stats.unackedInbound, 0);
    await bob.ping();
    await bob.close();
    await expectNoMessage(await connected([relay.wsUrl], { identity: bobId }));
  });

  it('drops fast messages beyond the inbound buffer and counts them', async () => {
    const bob = await connected([relay.wsUrl], { inboundBufferSize: 2 });
    const alice = await connected([relay.wsUrl]);
    const dropped: number[] = [];
    bob.events.on('error', ({ error, dropped: count }) => {
      assert.equal(error.code, 'INBOUND_OVERFLOW');
      if (count !== undefined) dropped.push(count);
    });
    for (let i = 0; i < 6; i++) await alice.send(bob.did, text(`f${i}`), { durable: false });
    await until(() => bob.stats.droppedFast === 4, 20_000, 'four dropped fast frames', clientState(bob));
    assert.deepEqual(dropped, [1, 2, 3, 4]);
    assert.equal(str((await nextMessage(bob)).payload), 'f0');
    assert.equal(str((await nextMessage(bob)).payload), 'f1');
  });

  it('replaces a connection that does not ACK within ackTimeoutMs, and sends again', async () => {
    const proxy = await startProxy(relay.ports.ws);
    proxies.push(proxy);
    const alice = await connected([proxy.url('ws')], { ackTimeoutMs: 400 });
    const bob = await connected([relay.tcpUrl]);
    proxy.hold('down');
    const sending = alice.send(bob.did, text('stuck path'));
    // Awaited below; marked handled so a failure before that is not also an unhandled rejection.
    sending.catch(() => undefined);
    const lost = await nextEvent(alice, 'disconnected');
    // 400 ms is the floor: the RTT-adaptive timer may add to it on a loaded machine (seen: 401 ms).
    const waited = /no ACK within (\d+) ms/.exec(lost.error?.message ?? '');
    assert.ok(waited !== null && Number(waited[1]) >= 400, `disconnect reason: ${lost.error?.message}`);
    proxy.hold(null);
    const result = await within(sending, 20_000, 'the ACK after reconnecting', clientState(alice));
    const m = await nextMessage(bob);
    assert.equal(m.position, result.position);
    await m.ack();
    await expectNoMessage(bob);
  });

  it('close() rejects pending sends with CLIENT_CLOSED, ends messages() and refuses new work', async () => {
    const proxy = await startProxy(relay.ports.tcp);
    proxies.push(proxy);
    const alice = await connected([proxy.url('tcp')]);
    proxy.hold('down');
    const pending = alice.send(Ed25519Identity.generate().did, text('never acknowledged'));
    const reading = iteratorOf(alice).next();
    const rejected = assert.rejects(pending, (error: unknown) => {
      assert.ok(error instanceof RelayError);
      assert.equal(error.code, 'CLIENT_CLOSED');
      assert.match(error.message, /may or may not have been stored/);
      return true;
    });
    await alice.close();
    await rejected;
    assert.deepEqual(await reading, { value: undefined, done: true });
    await assert.rejects(alice.send(alice.did, text('x')), /closed/);
    await assert.rejects(alice.connect(), /closed/);
    await assert.rejects(alice.ping(), /not connected/);
    await alice.close(); // idempotent
  });

  describe('prekeys', () => {
    it('publishes a publication larger than a frame, fetches verified bundles by DID and by hint, reports status', async () => {
      const aliceId = Ed25519Identity.generate();
      const alice = await connected([relay.wsUrl], { identity: aliceId });
      const bob = await connected([relay.tcpUrl]);
      // 100 one-time KEM prekeys are 125 KB: three PREKEY_PUBLISH frames under the 64 KiB limit.
      const pub = makePublication(aliceId, { oneTimeX25519: 100, oneTimeKem: 100 });
      const status = await within(alice.publishPrekeys(pub), 20_000, 'publishPrekeys', clientState(alice));
      assert.deepEqual(status, {
        published: true,
        oneTimeX25519: 100,
        oneTimeKem: 100,
        cap: 100,
        lowWater: 10,
        lastOneTimeX25519Id: 100,
        lastOneTimeKemId: 100,
      });
      const byDid = await bob.fetchPrekeys(alice.did, { verify: verifyEd25519 });
      assert.equal(byDid.oneTimePrekey?.id, 1);
      assert.equal(byDid.oneTimeKemPrekey?.id, 1);
      assert.deepEqual(byDid.identityKey, aliceId.publicKey);
      const byHint = await bob.fetchPrekeys(aliceId.hint, { verify: verifyEd25519 });
      assert.equal(byHint.oneTimePrekey?.id, 2);
      assert.deepEqual(byHint.lastResortKemPrekey.publicKey, pub.lastResortKemPrekey.publicKey);
      const after = await alice.prekeyStatus();
      assert.deepEqual([after.oneTimeX25519, after.oneTimeKem], [98, 98]);
      const metrics = await (await fetch(`${relay.adminUrl}/metrics`)).text();
      const stored = Number(/relay_prekey_publishes_total\{result="stored"[^}]*\} (\d+)/.exec(metrics)?.[1] ?? 0);
      assert.ok(stored >= 3, `expected the publication in 3 frames, ${stored} stored`);
    });

    it("emits 'prekeys-low' when fetches leave fewer one-time prekeys than the relay's low-water mark", async () => {
      const carolId = Ed25519Identity.generate();
      const carol = await connected([relay.tcpUrl], { identity: carolId });
      const bob = await connected([relay.wsUrl]);
      await carol.publishPrekeys(makePublication(carolId, { oneTimeX25519: 11, oneTimeKem: 11 }));
      const low = nextEvent(carol, 'prekeys-low');
      await bob.fetchPrekeys(carol.did);
      await bob.fetchPrekeys(carol.did);
      const event = await low;
      assert.deepEqual([event.oneTimeX25519, event.oneTimeKem, event.lowWater], [9, 9, 10]);
    });

    it('rejects with typed errors and keeps the connection', async () => {
      const aliceId = Ed25519Identity.generate();
      const alice = await connected([relay.wsUrl], { identity: aliceId });
      const code = (c: string) => (error: unknown) => error instanceof RelayError && error.code === c;
      await assert.rejects(alice.fetchPrekeys(Ed25519Identity.generate().did), code('PREKEY_NOT_FOUND'));
      await assert.rejects(
        alice.publishPrekeys(makePublication(Ed25519Identity.generate())),
        code('PREKEY_IDENTITY_MISMATCH'),
      );
      const pub = makePublication(aliceId, { oneTimeKem: 1 });
      const forged = { ...pub, oneTimeKemPrekeys: [{ ...pub.oneTimeKemPrekeys[0]!, id: 2 }] };
      await assert.rejects(alice.publishPrekeys(forged), code('PREKEY_BAD_SIGNATURE'));
      await assert.rejects(alice.publishPrekeys({ ...pub, identityKey: new Uint8Array(31) }), code('BAD_FIELD'));
      await assert.rejects(alice.fetchPrekeys(new Uint8Array(5)), code('BAD_FIELD'));
      assert.ok(alice.connected);
      assert.equal((await alice.prekeyStatus()).published, false);
    });

    it('times out a prekey request without an answer, and refuses one while not connected', async () => {
      const proxy = await startProxy(relay.ports.tcp);
      proxies.push(proxy);
      const alice = await connected([proxy.url('tcp')], { ackTimeoutMs: 400 });
      proxy.hold('down');
      await assert.rejects(
        alice.fetchPrekeys(Ed25519Identity.generate().did),
        (error: unknown) => error instanceof RelayError && error.code === 'TIMEOUT',
      );
      await alice.close();
      await assert.rejects(
        alice.prekeyStatus(),
        (error: unknown) => error instanceof RelayError && error.code === 'CLIENT_CLOSED',
      );
    });
  });

  describe('lrelay CLI end to end', () => {
    let aliceKey: string;
    let bobKey: string;
    let alice: Ed25519Identity;
    let bob: Ed25519Identity;

    before(async () => {
      alice = Ed25519Identity.generate();
      bob = Ed25519Identity.generate();
      aliceKey = join(dir, 'alice.json');
      bobKey = join(dir, 'bob.json');
      await writeKeyFile(aliceKey, alice);
      await writeKeyFile(bobKey, bob);
    });

    it('send --stdin (durable) then listen --count prints and acknowledges each message', async () => {
      const sent = await cli(
        ['send', '--unsealed', '--relay', relay.tcpUrl, '--key', aliceKey, '--to', bob.did, '--stdin'],
        'first line\nsecond line, with "quotes" and ünïcode\n',
      ).done;
      assert.equal(sent.code, 0, sent.stderr);
      // --unsealed says once what it means; nothing else is printed.
      assert.equal(
        sent.stderr,
        'warning: --unsealed: payloads travel readable by every relay and Redis on the path, and a relay can forge them\n',
      );

      const dead = await freePort();
      const heard = await cli([
        'listen',
        '--unsealed',
        '--relay',
        `ws://127.0.0.1:${dead},${relay.wsUrl}`,
        '--key',
        bobKey,
        '--count',
        '2',
        '--timeout',
        '20',
      ]).done;
      assert.equal(heard.code, 0, heard.stderr);
      const lines = heard.stdout.trimEnd().split('\n');
      assert.equal(lines.length, 2);
      const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.deepEqual(
        parsed.map((p) => p['text']),
        ['first line', 'second line, with "quotes" and ünïcode'],
      );
      for (const p of parsed) {
        assert.deepEqual(Object.keys(p), ['id', 'from', 'to', 'text', 'durable', 'sealed']);
        assert.equal(p['from'], alice.did);
        assert.equal(p['to'], bob.did);
        assert.equal(p['durable'], true);
        assert.equal(p['sealed'], false, 'sent and read with --unsealed');
        assert.match(String(p['id']), /^[0-9a-f]{32}$/);
      }

      // They were acknowledged: another listen times out empty-handed, exit 3.
      const empty = await cli([
        'listen',
        '--unsealed',
        '--relay',
        relay.tcpUrl,
        '--key',
        bobKey,
        '--count',
        '1',
        '--timeout',
        '3',
      ]).done;
      assert.equal(empty.code, 3, empty.stderr);
      assert.equal(empty.stdout, '');
      assert.match(unwarned(empty.stderr), /^error: TIMEOUT: received 0 of 1 message\(s\) within 3 s\n$/);
      // Without --count, the timeout is the normal end.
      const idle = await cli(['listen', '--unsealed', '--relay', relay.wsUrl, '--key', bobKey, '--timeout', '3']).done;
      assert.equal(idle.code, 0, idle.stderr);
    });

    it('send --fast reaches a listening peer and exits 0', async () => {
      const listener = cli([
        'listen',
        '--unsealed',
        '--relay',
        relay.wsUrl,
        '--key',
        bobKey,
        '--count',
        '1',
        // Long enough for this listener's start plus the sending CLI's, on a loaded CI machine.
        '--timeout',
        '40',
      ]);
      let listenerEnded = false;
      void listener.done.finally(() => {
        listenerEnded = true;
      });
      // Wait until the listener is connected, or the fast message would find nobody.
      const probe = await connected([relay.tcpUrl]);
      const deadline = Date.now() + 30_000;
      while (!(await probe.presence(bob.did))) {
        if (listenerEnded || Date.now() > deadline) {
          const run = await listener.done.catch((error: Error) => error.message);
          assert.fail(`listener never connected: ${typeof run === 'string' ? run : JSON.stringify(run)}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      const sent = await cli([
        'send',
        '--unsealed',
        '--relay',
        relay.tcpUrl,
        '--key',
        aliceKey,
        '--to',
        bob.did,
        '--fast',
        '--text',
        'quick',
      ]).done;
      assert.equal(sent.code, 0, sent.stderr);
      const heard = await listener.done;
      assert.equal(heard.code, 0, heard.stderr);
      const line = JSON.parse(heard.stdout) as Record<string, unknown>;
      assert.equal(line['text'], 'quick');
      assert.equal(line['durable'], false);
    });

    it('send --fast to a peer connected nowhere exits 1 with PEER_GONE', async () => {
      const nobody = Ed25519Identity.generate();
      const result = await cli([
        'send',
        '--unsealed',
        '--relay',
        relay.wsUrl,
        '--key',
        aliceKey,
        '--to',
        nobody.did,
        '--fast',
        '--text',
        'x',
      ]).done;
      assert.equal(result.code, 1);
      assert.equal(unwarned(result.stderr), 'error: PEER_GONE: recipient is connected nowhere\n');
    });

    it('send exits 1 with the NACK code when the queue is full', async () => {
      const nobody = Ed25519Identity.generate();
      const result = await cli(
        ['send', '--unsealed', '--relay', smallRelay.wsUrl, '--key', aliceKey, '--to', nobody.did, '--stdin'],
        'a\nb\nc\n',
      ).done;
      assert.equal(result.code, 1);
      assert.match(unwarned(result.stderr), /^error: QUEUE_FULL: /);
      assert.doesNotMatch(result.stderr, /\n\s+at /);
    });
  });
});

describe('RelayClient across relay restarts', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  const relays: RelayHandle[] = [];
  const clients: RelayClient[] = [];

  async function startWithPublicUrls(): Promise<RelayHandle> {
    const [ws, tcp] = [await freePort(), await freePort()];
    const handle = await startRelay({
      redisUrl: redis.url,
      env: {
        RELAY_WS_PORT: String(ws),
        RELAY_TCP_PORT: String(tcp),
        RELAY_PUBLIC_URLS: `ws://127.0.0.1:${ws},tcp://127.0.0.1:${tcp}`,
        RELAY_DRAIN_TIMEOUT_MS: '2000',
      },
    });
    relays.push(handle);
    return handle;
  }

  before(async () => {
    redis = await startRedis();
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(relays.map((r) => r.stop()));
    await redis?.stop();
  });

  function client(urls: string[], identity = Ed25519Identity.generate()): RelayClient {
    const c = new RelayClient({
      relays: urls,
      identity,
      sealing: false,
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    });
    clients.push(c);
    return c;
  }

  it('follows GOAWAY to the hinted relay when its relay drains', async () => {
    const [b, c] = await Promise.all([startWithPublicUrls(), startWithPublicUrls()]);
    const peer = client([b.wsUrl]); // c is not in its list: only the GOAWAY hint names it
    await peer.connect();
    const sender = client([c.tcpUrl]);
    await sender.connect();

    const goaway = nextEvent(peer, 'goaway');
    // A 2 s drain, then reconnecting to the hint: several times that on a loaded CI machine.
    const moved = nextEvent(peer, 'connected', 30_000, (e) => e.url.startsWith(c.wsUrl) || e.url === c.tcpUrl);
    const stopping = b.stop();
    const event = await goaway;
    assert.equal(event.reason, 'draining');
    assert.ok(event.reconnectHint.includes(`${c.wsUrl}#${c.did}`), `hint ${event.reconnectHint.join(',')}`);
    await moved;
    await stopping;

    await sender.send(peer.did, text('after the move'));
    const m = await nextMessage(peer);
    assert.equal(str(m.payload), 'after the move');
    await m.ack();
  });

  it('fails over when its relay dies, and receives what was queued meanwhile', async () => {
    const [d, e] = await Promise.all([startWithPublicUrls(), startWithPublicUrls()]);
    const peerId = Ed25519Identity.generate();
    const peer = client([d.tcpUrl, e.wsUrl], peerId);
    await peer.connect();
    const sender = client([e.tcpUrl]);
    await sender.connect();

    const disconnected = nextEvent(peer, 'disconnected');
    const reconnected = nextEvent(peer, 'connected', 30_000, (ev) => ev.url.startsWith(e.wsUrl));
    d.kill('SIGKILL');
    await disconnected;
    await sender.send(peer.did, text('queued while failing over'));
    await reconnected;
    const m = await nextMessage(peer);
    assert.equal(str(m.payload), 'queued while failing over');
    await m.ack();
  });
});

describe('RelayClient keepalive', { timeout: 60_000 }, () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  before(async () => {
    redis = await startRedis();
    // Heartbeat 1 s: the relay closes connections idle for 8 s (its idle timeout granularity is 4 s).
    relay = await startRelay({ redisUrl: redis.url, env: { RELAY_HEARTBEAT_MS: '1000' } });
  });
  after(async () => {
    await relay?.stop();
    await redis?.stop();
  });

  it('keeps an idle connection open where a silent peer is dropped', async () => {
    const client = new RelayClient({ relays: [relay.tcpUrl], identity: Ed25519Identity.generate(), sealing: false });
    let drops = 0;
    client.events.on('disconnected', () => drops++);
    await client.connect();
    const silent = await RawPeer.connect(relay.tcpUrl);
    await silent.authenticate(asRawIdentity(Ed25519Identity.generate()));
    // Wait for the relay to drop the silent peer (8 s idle; the event, not a fixed
    // sleep, so a loaded machine that runs the relay's timer late does not fail
    // it): by then the client, connected first, has been idle at least as long.
    await within(silent.closedPromise, 30_000, 'the relay to close the silent connection', () => ({
      frames: silent.describeFrames(),
      client: clientState(client)(),
    }));
    assert.equal(drops, 0, 'the client sent keepalive PINGs');
    assert.equal(client.stats.connections, 1);
    await client.ping();
    await client.close();
  });
});

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('RelayClient over TLS', { timeout: 60_000, skip: !hasOpenssl() && 'openssl not installed' }, () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let dir: string;
  let ca: string;
  let terminator: Server;
  let wssPort = 0;
  const clients: RelayClient[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lrelay-tls-'));
    const [cert, key] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    ca = await readFile(cert, 'utf8');
    redis = await startRedis();
    // The TCP listener serves TLS itself; WebSocket TLS is terminated in front of the relay, as in production.
    relay = await startRelay({ redisUrl: redis.url, env: { RELAY_TLS_CERT_FILE: cert, RELAY_TLS_KEY_FILE: key } });
    const keyPem = await readFile(key);
    terminator = createTlsServer({ cert: ca, key: keyPem }, (tlsSocket) => {
      const upstream = createConnection({ host: '127.0.0.1', port: relay.ports.ws });
      tlsSocket.pipe(upstream).pipe(tlsSocket);
      tlsSocket.on('error', () => upstream.destroy());
      upstream.on('error', () => tlsSocket.destroy());
    });
    await new Promise<void>((resolve) => terminator.listen(0, '127.0.0.1', resolve));
    const address = terminator.address();
    assert.ok(address !== null && typeof address === 'object');
    wssPort = address.port;
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await new Promise<void>((resolve) => (terminator ? terminator.close(() => resolve()) : resolve()));
    await relay?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('talks over tls:// (binding "tls") and wss:// (binding "ws") with a private CA', async () => {
    const make = async (url: string): Promise<RelayClient> => {
      const c = new RelayClient({ relays: [url], identity: Ed25519Identity.generate(), tls: { ca }, sealing: false });
      clients.push(c);
      await within(c.connect(), 20_000, `connect ${url}`, clientState(c));
      return c;
    };
    const tlsUrl = relay.tcpUrl.replace('tcp://', 'tls://');
    const alice = await make(tlsUrl);
    const bob = await make(`wss://localhost:${wssPort}`);
    await alice.send(bob.did, text('over tls'));
    const m = await nextMessage(bob);
    assert.equal(str(m.payload), 'over tls');
    assert.equal(m.from, alice.did);
    await m.ack();
    await bob.send(alice.did, text('over wss'), { durable: false });
    assert.equal(str((await nextMessage(alice)).payload), 'over wss');
  });

  it('a TLS-terminating man in the middle the client trusts cannot log it in at the relay (the exporter is bound)', async () => {
    // M holds a certificate the client trusts (the same CA here, as a mis-issued certificate
    // would be), ends the client's TLS, and opens its own TLS to the relay, passing the
    // bytes through both ways: every frame reaches each side unchanged.
    const keyPem = await readFile(join(dir, 'key.pem'));
    let relayed = 0;
    const mitm = createTlsServer({ cert: ca, key: keyPem }, (fromClient) => {
      relayed++;
      const toRelay = tlsConnect({ host: '127.0.0.1', port: relay.ports.tcp, ca, servername: 'localhost' });
      fromClient.pipe(toRelay).pipe(fromClient);
      fromClient.on('error', () => toRelay.destroy());
      toRelay.on('error', () => fromClient.destroy());
    });
    await new Promise<void>((resolve) => mitm.listen(0, '127.0.0.1', resolve));
    const { port } = mitm.address() as { port: number };
    try {
      for (const pinned of [false, true]) {
        const url = `tls://localhost:${port}${pinned ? `#${relay.did}` : ''}`;
        const c = new RelayClient({
          relays: [url],
          identity: Ed25519Identity.generate(),
          tls: { ca },
          sealing: false,
          reconnect: { maxAttempts: 1 },
        });
        clients.push(c);
        await assert.rejects(c.connect(), (error: unknown) => {
          assert.ok(error instanceof RelayError, String(error));
          assert.equal(error.code, 'RELAY_IDENTITY_MISMATCH', error.message);
          assert.match(error.message, /does not verify over our nonce and this tls connection/);
          return true;
        });
      }
      assert.ok(relayed >= 2, 'the connections went through the man in the middle');
    } finally {
      await new Promise<void>((resolve) => mitm.close(() => resolve()));
    }
    // The control: a plain TCP pipe in front of the same TLS port (the client's TLS ends at the relay) works.
    const pipe = createServer((socket) => {
      const upstream = createConnection({ host: '127.0.0.1', port: relay.ports.tcp });
      socket.pipe(upstream).pipe(socket);
      socket.on('error', () => upstream.destroy());
      upstream.on('error', () => socket.destroy());
    });
    await new Promise<void>((resolve) => pipe.listen(0, '127.0.0.1', resolve));
    try {
      const { port: pipePort } = pipe.address() as { port: number };
      const c = new RelayClient({
        relays: [`tls://localhost:${pipePort}#${relay.did}`],
        identity: Ed25519Identity.generate(),
        tls: { ca },
        sealing: false,
        reconnect: { maxAttempts: 1 },
      });
      clients.push(c);
      await within(c.connect(), 20_000, 'connect through a TCP pipe', clientState(c));
      await c.close();
    } finally {
      await new Promise<void>((resolve) => pipe.close(() => resolve()));
    }
  });

  it('refuses a certificate it does not trust', async () => {
    const c = new RelayClient({
      relays: [relay.tcpUrl.replace('tcp://', 'tls://')],
      identity: Ed25519Identity.generate(),
      reconnect: { maxAttempts: 1 },
    });
    clients.push(c);
    await assert.rejects(c.connect(), /self-signed|certificate/i);
  });
});
