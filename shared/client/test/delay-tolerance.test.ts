/**
 * Delay tolerance: a client behind a link whose one-way delay exceeds its
 * configured timeouts (700 ms each way against 1 s floors) connects after
 * its handshake timer has backed off, learns the round trip, and then keeps
 * its session and delivers durable messages without a reconnect. The same
 * client with adaptiveTimeouts off never gets through: the control that
 * shows the test can fail. (The chaos suite runs the 10 s version.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type InboundMessage, RelayClient } from '@libertaria/client';
import { Ed25519Identity } from '@libertaria/identity';
import { clientState, iteratorOf, str, text, within } from '../../../test-support/client-harness.js';
import { type LatencyProxy, startLatencyProxy } from '../../../test-support/latency-proxy.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const ONE_WAY_MS = 700;

describe('delay tolerance', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let proxy: LatencyProxy;
  const clients: RelayClient[] = [];

  before(async () => {
    redis = await startRedis();
    // The relay's own handshake timer must cover two one-way delays (docs/client.md#delay-tolerance).
    relay = await startRelay({ redisUrl: redis.url, env: { RELAY_HANDSHAKE_TIMEOUT_MS: '20000' } });
    proxy = await startLatencyProxy({ target: relay.ports.tcp, delayMs: ONE_WAY_MS });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await proxy?.close();
    await relay?.stop();
    await redis?.stop();
  });

  function slowClient(identity: Ed25519Identity, adaptive: boolean): RelayClient {
    const c = new RelayClient({
      relays: [`tcp://127.0.0.1:${proxy.port}`],
      identity,
      sealing: false,
      handshakeTimeoutMs: 1000,
      ackTimeoutMs: 1000,
      adaptiveTimeouts: adaptive,
      reconnect: { initialDelayMs: 50, maxDelayMs: 200, maxAttempts: adaptive ? 0 : 4 },
    });
    clients.push(c);
    return c;
  }

  it('connects, measures the round trip and delivers without reconnecting', async () => {
    const senderId = Ed25519Identity.generate();
    const receiverId = Ed25519Identity.generate();
    const receiver = new RelayClient({ relays: [relay.tcpUrl], identity: receiverId, sealing: false });
    clients.push(receiver);
    await receiver.connect();

    const sender = slowClient(senderId, true);
    const started = Date.now();
    await within(sender.connect(), 60_000, 'connect over the slow link', clientState(sender));
    const connectMs = Date.now() - started;
    let disconnects = 0;
    sender.events.on('disconnected', () => disconnects++);

    const sends = [0, 1, 2, 3, 4].map((i) => sender.send(receiverId.did, text(`slow ${i}`)));
    const results = await within(Promise.all(sends), 30_000, 'ACKs over the slow link', clientState(sender));
    assert.ok(results.every((r) => (r.position ?? 0) > 0));
    const it = iteratorOf(receiver);
    const got: string[] = [];
    for (let i = 0; i < 5; i++) {
      const m = (await within(it.next(), 20_000, `message after ${got.join(',')}`, clientState(receiver)))
        .value as InboundMessage;
      got.push(str(m.payload));
      await m.ack();
    }
    assert.deepEqual(got, ['slow 0', 'slow 1', 'slow 2', 'slow 3', 'slow 4']);
    // Quiet for a while: keepalives cross the slow link, nothing times out.
    await new Promise((r) => setTimeout(r, 5000));
    assert.equal(disconnects, 0, 'the session stayed up');
    const rtt = sender.stats.rttMs ?? 0;
    assert.ok(rtt >= 2 * ONE_WAY_MS * 0.9 && rtt < 2 * ONE_WAY_MS * 3, `measured RTT ${rtt.toFixed(0)} ms`);
    assert.ok(sender.stats.ackTimeoutMs > 2 * ONE_WAY_MS, `ack timeout ${sender.stats.ackTimeoutMs} ms`);
    assert.equal(sender.lifecycle.state, 'active');
    console.log(
      `# delay ${ONE_WAY_MS} ms each way: connected after ${connectMs} ms, RTT ${rtt.toFixed(0)} ms, ack timeout ${sender.stats.ackTimeoutMs} ms`,
    );
  });

  it('an established session whose delay jumps (each way at once) keeps delivering without a reconnect', async () => {
    const jumpProxy = await startLatencyProxy({ target: relay.ports.tcp, delayMs: 0 });
    try {
      const receiverId = Ed25519Identity.generate();
      const receiver = new RelayClient({ relays: [relay.tcpUrl], identity: receiverId, sealing: false });
      clients.push(receiver);
      await receiver.connect();
      const sender = new RelayClient({
        relays: [`tcp://127.0.0.1:${jumpProxy.port}`],
        identity: Ed25519Identity.generate(),
        sealing: false,
        ackTimeoutMs: 1000,
        reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
      });
      clients.push(sender);
      await sender.connect();
      await sender.send(receiverId.did, text('before'));
      let disconnects = 0;
      const reasons: string[] = [];
      sender.events.on('disconnected', (e) => {
        disconnects++;
        reasons.push(String(e.error?.message));
      });
      // From a fast link to a round trip of 3 s, three times the ACK floor, at once.
      jumpProxy.delayMs = 1500;
      const started = Date.now();
      const sends = [0, 1, 2].map((i) => sender.send(receiverId.did, text(`after ${i}`)));
      await within(Promise.all(sends), 30_000, 'ACKs after the jump', clientState(sender));
      const ackedAfter = Date.now() - started;
      assert.equal(disconnects, 0, `no reconnect: the late ACKs were waited for (${reasons.join('; ')})`);
      assert.ok(ackedAfter >= 2 * 1500 * 0.9, `ACKed after ${ackedAfter} ms`);
      const it = iteratorOf(receiver);
      const got: string[] = [];
      for (let i = 0; i < 4; i++) {
        const m = (await within(it.next(), 20_000, `message after ${got.join(',')}`, clientState(receiver)))
          .value as InboundMessage;
        got.push(str(m.payload));
        await m.ack();
      }
      assert.deepEqual(got, ['before', 'after 0', 'after 1', 'after 2']);
    } finally {
      await jumpProxy.close();
    }
  });

  it('without adaptive timeouts the same client never gets through (control)', async () => {
    const stuck = slowClient(Ed25519Identity.generate(), false);
    await assert.rejects(
      within(stuck.connect(), 60_000, 'connect'),
      (e: unknown) => (e as { code?: string }).code === 'AUTH_TIMEOUT',
    );
  });
});
