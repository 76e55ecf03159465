/**
 * Frames that arrive over WebSocket live in recycled buffers
 * (src/transport/inbound-arena.ts); every path that keeps one for more than
 * a few turns must copy it first. The test harness runs relays with
 * RELAY_DEBUG_POISON_RECYCLED (a buffer is filled with 0xEE three turns
 * after its last message, and retired every turn), so a frame kept without
 * that copy arrives as garbage. This test drives every keeping path at once
 * and checks each delivered frame byte for byte:
 *
 * - durable SENDs (admission, then the store) to a peer on this node, one on
 *   the other node, and one offline that reads its mailbox later;
 * - the membrane holding the first SENDs to each recipient for a decision;
 * - fast SENDs to a peer on the other node (held for the presence lookup,
 *   then in the cross-node outbox) and to a local peer;
 * - all of it again on a node 30 ms away from Redis and without the
 *   membrane, where the SENDs reach the store and the lookup uncopied and
 *   wait there across many turns.
 * - ACKs (their message ids are kept for the turn's batched ack).
 *
 * Many frames to a message, so each message's frames share one buffer.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity, routingHint } from '@libertaria/identity';
import { type DeliverFrame, encodeFrame, errorCodeFromWire, type Frame, SendFlags } from '@libertaria/protocol';
import { type LatencyProxy, startLatencyProxy } from '../../../test-support/latency-proxy.js';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

/** Waits sized for a loaded 2-core machine. */
const WAIT_MS = 30_000;
const MESSAGES = 120;
const FRAMES_PER_MESSAGE = 20;
const PAYLOAD_BYTES = 600;

/** Limits far above what the test sends: only the buffers are under test. */
const ENV = {
  RELAY_RATE_FRAMES_PER_SECOND: '1000000',
  RELAY_RATE_BURST: '10000000',
  RELAY_DURABLE_FRAMES_PER_SENDER_PER_HOUR: '1000000000',
  RELAY_DURABLE_BYTES_PER_SENDER_PER_HOUR: String(2 ** 40),
  RELAY_DURABLE_FRAMES_PER_ADDRESS_PER_HOUR: '1000000000',
  RELAY_DURABLE_BYTES_PER_ADDRESS_PER_HOUR: String(2 ** 40),
};

/** A peer that records what it receives and ACKs durable frames at once. */
class Receiver {
  readonly delivered: DeliverFrame[] = [];
  readonly acks = new Map<string, number>();
  readonly problems: string[] = [];
  private constructor(
    readonly raw: RawPeer,
    readonly hint: Uint8Array,
  ) {
    raw.onFrames = (frames: Frame[]) => {
      for (const f of frames) {
        if (f.type === 'DELIVER') {
          this.delivered.push(f);
          if ((f.flags & SendFlags.DURABLE) !== 0)
            raw.send({ type: 'ACK', messageId: f.messageId, position: f.position });
        } else if (f.type === 'ACK') this.acks.set(Buffer.from(f.messageId).toString('hex'), f.position);
        else if (f.type === 'NACK') this.problems.push(`NACK ${errorCodeFromWire(f.code)}: ${f.message}`);
        else if (f.type === 'ERROR') this.problems.push(`ERROR ${errorCodeFromWire(f.code)}: ${f.message}`);
        else if (f.type === 'PEER_GONE') this.problems.push('PEER_GONE');
      }
    };
  }
  static async open(url: string, identity = Ed25519Identity.generate(), resume = true): Promise<Receiver> {
    const raw = await RawPeer.connect(url);
    const welcome = await raw.authenticate(identity);
    const peer = new Receiver(raw, welcome.hint);
    if (resume) raw.send({ type: 'RESUME', lastAcked: 0 });
    return peer;
  }
}

async function until(cond: () => boolean, what: () => string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('frames from recycled inbound buffers', () => {
  let redis: RedisHandle;
  let proxy: LatencyProxy;
  let a: RelayHandle;
  let b: RelayHandle;
  let slow: RelayHandle;
  before(async () => {
    redis = await startRedis();
    // Node `slow` reaches Redis over a link of 2 × 15 ms: every Redis answer it waits for spans many
    // turns of its event loop while the sender keeps writing, longer than a recycled buffer lives.
    proxy = await startLatencyProxy({ target: Number(new URL(redis.url).port), delayMs: 15 });
    [a, b, slow] = await Promise.all([
      startRelay({ redisUrl: redis.url, env: ENV }),
      startRelay({ redisUrl: redis.url, env: ENV }),
      // Without the membrane, whose hold for a first decision would copy the frames before the router's lookup.
      startRelay({ redisUrl: `redis://127.0.0.1:${proxy.port}`, env: { ...ENV, RELAY_MEMBRANE_ENABLED: 'false' } }),
    ]);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop(), slow?.stop()]);
    await proxy?.close();
    await redis?.stop();
  });

  it('arrive byte for byte on every path that keeps them: durable, membrane, lookup, cross-node, offline', async () => {
    await exercise(a, b);
  });

  it('arrive byte for byte when the sender’s node waits 30 ms for each Redis answer (no membrane)', async () => {
    await exercise(slow, b);
  });
});

/** Sends from a peer on `home` to a peer there, one on `other` and one offline; checks what each got. */
async function exercise(home: RelayHandle, other: RelayHandle): Promise<void> {
  const sender = await Receiver.open(home.wsUrl);
  const local = await Receiver.open(home.wsUrl);
  const remote = await Receiver.open(other.wsUrl);
  const offlineIdentity = Ed25519Identity.generate();
  const offlineHint = routingHint(offlineIdentity.publicKey);
  // Both online recipients hold presence from their WELCOME on: the fast frames find them.
  const expected = new Map<string, { payload: Buffer; to: string; durable: boolean }>();
  const routes = [
    { to: 'local', dest: local.hint, durable: true },
    { to: 'local', dest: local.hint, durable: false },
    { to: 'remote', dest: remote.hint, durable: true },
    { to: 'remote', dest: remote.hint, durable: false },
    { to: 'offline', dest: offlineHint, durable: true },
  ];
  let n = 0;
  for (let m = 0; m < MESSAGES; m++) {
    const frames: Uint8Array[] = [];
    for (let k = 0; k < FRAMES_PER_MESSAGE; k++, n++) {
      const route = routes[n % routes.length]!;
      const messageId = randomBytes(16);
      const payload = randomBytes(PAYLOAD_BYTES);
      expected.set(messageId.toString('hex'), { payload, to: route.to, durable: route.durable });
      frames.push(
        encodeFrame({
          type: 'SEND',
          dest: route.dest,
          source: sender.hint,
          sessionId: new Uint8Array(16),
          messageId,
          flags: route.durable ? SendFlags.DURABLE : 0,
          ttl: 0,
          position: 0,
          payload,
        }),
      );
    }
    // One WebSocket message of many frames: they share one inbound buffer.
    sender.raw.send(Buffer.concat(frames));
    await new Promise((r) => setImmediate(r));
  }
  const count = (to: string, durable?: boolean) =>
    [...expected.values()].filter((e) => e.to === to && (durable === undefined || e.durable === durable)).length;
  const durableIds = [...expected].filter(([, e]) => e.durable).map(([id]) => id);
  await until(
    () => durableIds.every((id) => sender.acks.has(id)) || sender.problems.length > 0,
    () => `${durableIds.filter((id) => !sender.acks.has(id)).length} durable SENDs not ACKed`,
  );
  assert.deepEqual(sender.problems, [], 'the sender was refused nothing');
  await until(
    () => local.delivered.length >= count('local') && remote.delivered.length >= count('remote'),
    () =>
      `delivered: local ${local.delivered.length}/${count('local')}, remote ${remote.delivered.length}/${count('remote')}`,
  );
  const offline = await Receiver.open(home.wsUrl, offlineIdentity);
  await until(
    () => offline.delivered.length >= count('offline'),
    () => `offline read ${offline.delivered.length}/${count('offline')}`,
  );

  for (const [name, peer] of [
    ['local', local],
    ['remote', remote],
    ['offline', offline],
  ] as const) {
    assert.deepEqual(peer.problems, [], `${name} saw no error`);
    const seen = new Set<string>();
    for (const f of peer.delivered) {
      const id = Buffer.from(f.messageId).toString('hex');
      const want = expected.get(id);
      assert.ok(want !== undefined, `${name} got a frame nobody sent (id ${id})`);
      assert.equal(want.to, name, `${name} got a frame meant for ${want.to}`);
      assert.ok(!seen.has(id), `${name} got ${id} twice`);
      seen.add(id);
      assert.ok(Buffer.from(f.source).equals(Buffer.from(sender.hint)), `${name}: the source hint of ${id} changed`);
      assert.ok(Buffer.from(f.payload).equals(want.payload), `${name}: the payload of ${id} changed`);
    }
    assert.equal(seen.size, count(name), `${name} got every frame sent to it`);
  }
  for (const peer of [sender, local, remote, offline]) peer.raw.close();
}
