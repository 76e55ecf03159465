/**
 * Durable delivery pumps read Redis a bounded slice at a time, and only
 * PUMP_FETCH_CONCURRENCY of them per node at once (found by the adversarial
 * suite's case S03, docs/security.md#found-by-the-suite): many connections
 * that RESUME a large backlog and never read must not queue megabytes of
 * replies ahead of every other command on the node's one Redis connection.
 * Real PeerConnections around a store whose fetches the test holds open.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { authTranscript, Ed25519Identity } from '@libertaria/identity';
import { silentLogger } from '@libertaria/log';
import { decodeFrames, encodeFrame, type Frame, SendFlags } from '@libertaria/protocol';
import { loadRelayConfig } from '../src/config.js';
import type { NamedFrames, StoredFrame } from '../src/durable-store.js';
import { InFlightCount } from '../src/in-flight-count.js';
import { RelayMetrics } from '../src/metrics.js';
import { PeerConnection, PUMP_FETCH_BYTES, PUMP_FETCH_CONCURRENCY } from '../src/peer-connection.js';
import { AckHoldBudget, type PackedAcks } from '../src/pending-acks.js';
import { ConcurrencyLimit, ConnectionsPerAddress, HandshakeFailureLimiter, WaitingSlots } from '../src/rate-limits.js';
import type { RelayContext } from '../src/relay-context.js';
import type { PeerTransport } from '../src/transport/types.js';

class FakeTransport implements PeerTransport {
  readonly kind = 'tcp' as const;
  readonly remoteAddress = '192.0.2.1';
  readonly out: Frame[] = [];
  write(bytes: Uint8Array): void {
    this.out.push(...decodeFrames(bytes));
  }
  bufferedBytes(): number {
    return 0;
  }
  socketBufferedBytes(): number {
    return 0;
  }
  end(): void {}
  destroy(): void {}
  channelBinding(): undefined {
    return undefined;
  }
}

const relayIdentity = Ed25519Identity.generate();
const clientNonce = new Uint8Array(32).fill(7);

const tick = () => new Promise((r) => setTimeout(r, 5));

/** A transport that holds every byte written until the test drains it. */
class HoldingTransport extends FakeTransport {
  buffered = 0;
  peak = 0;
  override write(bytes: Uint8Array): void {
    super.write(bytes);
    this.buffered += bytes.length;
    this.peak = Math.max(this.peak, this.buffered);
  }
  override bufferedBytes(): number {
    return this.buffered;
  }
}

function context(store: unknown, config = loadRelayConfig({})): RelayContext {
  return {
    config,
    identity: relayIdentity,
    nodeId: 'pump-test',
    log: silentLogger,
    metrics: new RelayMetrics('pump-test'),
    router: { attach: async () => undefined, detach: () => undefined },
    store,
    authLimiter: new HandshakeFailureLimiter({ perPeer: 1000, perAddress: 1000 }),
    anonSlots: new ConcurrencyLimit(10),
    connectionsPerAddress: new ConnectionsPerAddress(0),
    fetchSlots: new WaitingSlots(PUMP_FETCH_CONCURRENCY),
    membrane: undefined,
    isDraining: () => false,
    trackDurableWrite: () => undefined,
    durableWrites: new InFlightCount(),
  } as unknown as RelayContext;
}

/** A PeerConnection authenticated as `id` (a fresh identity unless given) over `transport`. */
async function openConnection(
  ctx: RelayContext,
  transport: FakeTransport,
  id: Ed25519Identity = Ed25519Identity.generate(),
): Promise<PeerConnection> {
  const conn = new PeerConnection(ctx, transport);
  conn.onFrame(Buffer.from(encodeFrame({ type: 'HELLO', minVersion: 2, maxVersion: 2, features: 0, clientNonce })));
  const challenge = transport.out.find((f) => f.type === 'CHALLENGE');
  assert.ok(challenge && challenge.type === 'CHALLENGE');
  const signature = id.sign(
    authTranscript({ relayNonce: challenge.nonce, clientNonce, relayKey: relayIdentity.publicKey, binding: 'tcp' }),
  );
  conn.onFrame(Buffer.from(encodeFrame({ type: 'AUTH', keyType: 1, publicKey: id.publicKey, signature, did: id.did })));
  await tick();
  assert.ok(transport.out.some((f) => f.type === 'WELCOME'));
  return conn;
}

/** A queue of `total` small DELIVER frames at positions 1…total, as StoredFrames. */
function smallQueue(total: number, payloadBytes = 10): StoredFrame[] {
  const queue: StoredFrame[] = [];
  for (let position = 1; position <= total; position++) {
    const messageId = new Uint8Array(16);
    new DataView(messageId.buffer).setUint32(0, position);
    const frame = Buffer.from(
      encodeFrame({
        type: 'DELIVER',
        dest: new Uint8Array(24).fill(1),
        source: new Uint8Array(24).fill(2),
        sessionId: new Uint8Array(16),
        messageId,
        flags: SendFlags.DURABLE,
        ttl: 0,
        position,
        payload: new Uint8Array(payloadBytes),
      }),
    );
    queue.push({ position, messageId: Buffer.from(messageId), frame, storedAtMs: Date.now() });
  }
  return queue;
}

describe('durable delivery pumps of one node', () => {
  it(`read at most ${PUMP_FETCH_BYTES} bytes per fetch and at most ${PUMP_FETCH_CONCURRENCY} fetches at once`, async () => {
    let inFlight = 0;
    let most = 0;
    const asked: number[] = [];
    const pending: Array<() => void> = [];
    const store = {
      ackUpTo: async () => undefined,
      fetchWithin: (_hint: Uint8Array, _after: number, _limit: number, maxBytes: number) => {
        inFlight++;
        most = Math.max(most, inFlight);
        asked.push(maxBytes);
        return new Promise((resolve) => {
          pending.push(() => {
            inFlight--;
            resolve({ frames: [], more: false });
          });
        });
      },
    };
    const ctx = context(store);

    // One DID, many connections, each RESUMEs (with an empty transport: room for its whole budget).
    const id = Ed25519Identity.generate();
    const connections = 3 * PUMP_FETCH_CONCURRENCY;
    const conns: PeerConnection[] = [];
    for (let i = 0; i < connections; i++) {
      const conn = await openConnection(ctx, new FakeTransport(), id);
      conns.push(conn);
      conn.onFrame(Buffer.from(encodeFrame({ type: 'RESUME', lastAcked: 0 })));
    }
    await tick();
    assert.equal(inFlight, PUMP_FETCH_CONCURRENCY, 'the others wait their turn');
    // Answer them one by one: every connection gets its read, never more than the bound at once.
    while (pending.length > 0) {
      pending.shift()!();
      await tick();
    }
    assert.equal(asked.length, connections);
    assert.equal(most, PUMP_FETCH_CONCURRENCY);
    assert.ok(
      asked.every((b) => b <= PUMP_FETCH_BYTES),
      `asked ${Math.max(...asked)} bytes`,
    );
    for (const conn of conns) conn.onClose();
  });
  for (const tellsNames of [false, true]) {
    it(`read the next batch while writing one, within the budget, and skip nothing when a batch is cut short${tellsNames ? '; the next read starts once Redis named the frames' : ''}`, async () => {
      // A queue of small frames (256 of them, one read's limit, are far below
      // the budget, so reads ahead are taken) larger than the budget (so the
      // pump pauses, and drops a read ahead, several times).
      const total = 3000;
      const queue = smallQueue(total, 100);
      const budget = 4 * 65536;
      const transport = new HoldingTransport();
      const delivered = (): number => transport.out.filter((f) => f.type === 'DELIVER').length;
      const reads: Array<{ after: number; maxBytes: number; written: number; buffered: number; overlapping: boolean }> =
        [];
      let open = 0;
      const store = {
        ackUpTo: async () => ({ removed: 0, restarted: false }),
        fetchWithin: async (
          _hint: Uint8Array,
          after: number,
          limit: number,
          maxBytes: number,
          _nowMs?: number,
          onNamed?: (named: NamedFrames) => void,
        ) => {
          reads.push({ after, maxBytes, written: delivered(), buffered: transport.buffered, overlapping: open > 0 });
          open++;
          await tick();
          const frames: StoredFrame[] = [];
          let bytes = 0;
          for (const item of queue) {
            if (item.position <= after) continue;
            if (frames.length === limit || (frames.length > 0 && bytes + item.frame.length > maxBytes)) break;
            bytes += item.frame.length;
            // The relay writes its version into the frame: a copy, as Redis would give.
            frames.push({ ...item, frame: Buffer.from(item.frame) });
          }
          const last = frames.at(-1)?.position ?? after;
          if (tellsNames && frames.length > 0) {
            // As Redis does: the names first, then the frames a round trip later.
            onNamed?.({ last, bytes, more: last < total });
            await tick();
          }
          open--;
          // A store that tells the names tells the last one named too, as DurableStore does.
          return tellsNames ? { frames, more: last < total, last, vanished: 0 } : { frames, more: last < total };
        },
      };
      const ctx = context(store, loadRelayConfig({ RELAY_SEND_QUEUE_BYTES: String(budget) }));
      const conn = await openConnection(ctx, transport);
      conn.onFrame(Buffer.from(encodeFrame({ type: 'RESUME', lastAcked: 0 })));
      for (let round = 0; round < 200 && delivered() < total; round++) {
        await tick();
        transport.buffered = 0; // the peer read everything
        conn.onDrain();
      }
      const positions = transport.out
        .filter((f) => f.type === 'DELIVER')
        .map((f) => (f.type === 'DELIVER' ? f.position : 0));
      assert.deepEqual(
        positions,
        queue.map((q) => q.position),
        'every frame once, in order',
      );
      assert.ok(transport.peak <= budget, `held ${transport.peak} bytes, budget ${budget}`);
      const frameSize = queue[0]!.frame.length;
      const ahead = reads.filter((r) => r.after > r.written);
      assert.ok(ahead.length > 0, 'some reads asked for frames after a batch not yet written');
      for (const r of ahead) {
        // The batch read but not yet written, what the transport holds, and this read: within the budget.
        const unwritten = (r.after - r.written) * frameSize;
        assert.ok(
          unwritten + r.buffered + r.maxBytes <= budget,
          `read after ${r.after} with ${r.written} written asked ${r.maxBytes} bytes`,
        );
      }
      // Reads ahead are used, not only dropped: fewer reads than one per batch written plus one per pause.
      assert.ok(reads.length < 2 * Math.ceil(total / 256) + 20, `${reads.length} reads`);
      // Told the names, the pump asks for the next batch while the one before is still being read.
      assert.equal(
        reads.some((r) => r.overlapping),
        tellsNames,
        'reads overlap exactly when the store tells the names',
      );
      conn.onClose();
    });
  }

  /** A store over `queue` as DurableStore reads it: names `limit` positions, returns those not `gone`. */
  function namingStore(queue: StoredFrame[], gone: (position: number) => boolean, reads: number[]) {
    return {
      ackUpTo: async () => ({ removed: 0, restarted: false }),
      fetchWithin: async (
        _hint: Uint8Array,
        after: number,
        limit: number,
        _maxBytes: number,
        _nowMs?: number,
        onNamed?: (named: NamedFrames) => void,
      ) => {
        reads.push(after);
        // As Redis does: the names a round trip after the call, the frames a round trip later.
        await tick();
        const named = queue.filter((q) => q.position > after).slice(0, limit);
        const last = named.at(-1)?.position ?? after;
        const more = last < queue.length;
        onNamed?.({ last, bytes: named.length * queue[0]!.frame.length, more });
        await tick();
        const frames = named.filter((q) => !gone(q.position)).map((q) => ({ ...q, frame: Buffer.from(q.frame) }));
        return { frames, more, last, vanished: named.length - frames.length };
      },
    };
  }

  it('passes frames Redis named but no longer holds, and delivers the rest once, in order', async () => {
    const total = 1200;
    // Whole reads of gone frames (256 named, none read) and a partly gone one.
    const gone = (p: number) => (p > 100 && p <= 700) || p === 1200;
    const reads: number[] = [];
    const transport = new FakeTransport();
    const ctx = context(namingStore(smallQueue(total), gone, reads));
    const conn = await openConnection(ctx, transport);
    try {
      conn.onFrame(Buffer.from(encodeFrame({ type: 'RESUME', lastAcked: 0 })));
      const expected = Array.from({ length: total }, (_, i) => i + 1).filter((p) => !gone(p));
      const positions = () =>
        transport.out.filter((f) => f.type === 'DELIVER').map((f) => (f.type === 'DELIVER' ? f.position : 0));
      for (let round = 0; round < 400 && positions().length < expected.length && reads.length < 100; round++) {
        await tick();
      }
      // A pump that read the gone frames again would still be reading.
      for (let round = 0; round < 10; round++) await tick();
      assert.deepEqual(positions(), expected);
      assert.ok(reads.length <= 8, `${reads.length} reads for ${total} frames`);
      const metrics = await ctx.metrics.registry.metrics();
      assert.match(metrics, /relay_durable_vanished_frames_total\{[^}]*\} 601\n/);
    } finally {
      conn.onClose();
    }
  });

  it('reads again from where a RESUME during a read put the cursor, skipping nothing', async () => {
    const total = 600;
    const reads: number[] = [];
    const queue = smallQueue(total);
    const transport = new FakeTransport();
    const ctx = context(namingStore(queue, () => false, reads));
    const conn = await openConnection(ctx, transport);
    const delivered = (from = 0) =>
      transport.out
        .slice(from)
        .filter((f) => f.type === 'DELIVER')
        .map((f) => (f.type === 'DELIVER' ? f.position : 0));
    conn.onFrame(Buffer.from(encodeFrame({ type: 'RESUME', lastAcked: 0 })));
    for (let round = 0; round < 200 && delivered().length < total; round++) await tick();
    assert.equal(delivered().length, total);
    // 100 more frames stored; one announced out of order starts a read after 600, and while it is
    // in flight the peer RESUMEs from 100 on the same connection.
    queue.push(...smallQueue(total + 100).slice(total));
    const before = transport.out.length;
    const readsBefore = reads.length;
    conn.offerDurable(queue.at(-1)!.frame, total + 100);
    assert.equal(reads.length, readsBefore + 1, 'a read is in flight');
    conn.onFrame(Buffer.from(encodeFrame({ type: 'RESUME', lastAcked: 100 })));
    for (let round = 0; round < 200 && delivered(before).length < total; round++) await tick();
    assert.deepEqual(
      delivered(before),
      Array.from({ length: total }, (_, i) => 101 + i),
      'every frame after the RESUME position, once, in order',
    );
    conn.onClose();
  });
});

describe('ACKs held while a backlog is delivered (RELAY_DURABLE_ACK_HOLD)', () => {
  /**
   * A store whose reads after position `gateAfter` wait until the test opens
   * the gate (the pump is then reading a backlog), and which records the
   * positions of each ACK call.
   */
  function gatedStore(queue: StoredFrame[], gateAfter: number) {
    const waiting: Array<() => void> = [];
    let open = false;
    const ackCalls: number[][] = [];
    const store = {
      ackCalls,
      /** Reads and ACK sends to fail next (each failure used once). */
      failReads: 0,
      failAcks: 0,
      /** Called as each read starts, with the position it reads after. */
      onRead: (_after: number) => {},
      /** Reads see frames up to this position. */
      visible: queue.length,
      openGate() {
        open = true;
        for (const release of waiting.splice(0)) release();
      },
      ackUpTo: async () => ({ removed: 0, restarted: false }),
      ackPacked: async (_hint: Uint8Array, acks: PackedAcks) => {
        ackCalls.push(Array.from(acks.positions.subarray(0, acks.count)));
        await tick();
        if (store.failAcks > 0) {
          store.failAcks--;
          throw new Error('Redis did not confirm: test');
        }
        return acks.count;
      },
      fetchWithin: async (
        _hint: Uint8Array,
        after: number,
        limit: number,
        _maxBytes: number,
        _nowMs?: number,
        onNamed?: (named: NamedFrames) => void,
      ) => {
        store.onRead(after);
        if (after >= gateAfter && !open) await new Promise<void>((r) => waiting.push(r));
        await tick();
        if (store.failReads > 0) {
          store.failReads--;
          throw new Error('Redis did not confirm: test');
        }
        const named = queue.filter((q) => q.position > after && q.position <= store.visible).slice(0, limit);
        const last = named.at(-1)?.position ?? after;
        const more = last < store.visible;
        onNamed?.({ last, bytes: named.length * queue[0]!.frame.length, more });
        await tick();
        return { frames: named.map((q) => ({ ...q, frame: Buffer.from(q.frame) })), more, last, vanished: 0 };
      },
    };
    return store;
  }

  function holdingContext(store: unknown, limit: number): RelayContext & { ackHold: AckHoldBudget } {
    const ctx = { ...context(store), ackHold: new AckHoldBudget(limit) };
    ctx.metrics.acksHeld = () => ctx.ackHold.held;
    return ctx;
  }

  const deliveries = (transport: FakeTransport) =>
    transport.out.flatMap((f) => (f.type === 'DELIVER' ? [{ messageId: f.messageId, position: f.position }] : []));
  const ackEach = (conn: PeerConnection, frames: Array<{ messageId: Uint8Array; position: number }>) => {
    for (const f of frames) conn.onFrame(Buffer.from(encodeFrame({ type: 'ACK', ...f })));
  };
  const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
  async function until(what: string, done: () => boolean): Promise<void> {
    for (let round = 0; round < 400 && !done(); round++) await tick();
    assert.ok(done(), what);
  }

  /** A connection that RESUMEd a backlog of 600 and got its first 256; the read after them waits on the gate. */
  async function resumedBacklog(limit: number, beforeResume?: (ctx: RelayContext) => void) {
    const store = gatedStore(smallQueue(600), 256);
    const ctx = holdingContext(store, limit);
    const transport = new FakeTransport();
    const conn = await openConnection(ctx, transport);
    beforeResume?.(ctx);
    conn.onFrame(Buffer.from(encodeFrame({ type: 'RESUME', lastAcked: 0 })));
    await until('the first batch delivered', () => deliveries(transport).length === 256);
    return { store, ctx, transport, conn };
  }

  it('holds them while the pump reads, sends them in order once it has caught up, then as before', async () => {
    const { store, ctx, transport, conn } = await resumedBacklog(10_000);
    try {
      // The pump now waits for the read after 256: the recipient acknowledges what it has.
      ackEach(conn, deliveries(transport));
      for (let round = 0; round < 5; round++) await tick();
      assert.deepEqual(store.ackCalls, [], 'no ACK sent while the backlog is read');
      assert.equal(ctx.ackHold.held, 256);
      assert.match(await ctx.metrics.registry.metrics(), /relay_durable_acks_held\{[^}]*\} 256\n/);
      store.openGate();
      await until('every frame delivered', () => deliveries(transport).length === 600);
      await until('the held ACKs sent', () => store.ackCalls.length === 1);
      assert.deepEqual(store.ackCalls[0], range(1, 256));
      await until('their budget given back', () => ctx.ackHold.held === 0);
      // Caught up: ACKs go in the turn's call, as without a hold.
      ackEach(conn, deliveries(transport).slice(256));
      await until('the rest sent', () => store.ackCalls.length === 2);
      assert.deepEqual(store.ackCalls[1], range(257, 600));
      assert.equal(ctx.ackHold.held, 0);
    } finally {
      conn.onClose();
    }
  });

  for (const limit of [0, 100]) {
    it(`sends them each turn once the node holds its limit (${limit})`, async () => {
      const { store, ctx, transport, conn } = await resumedBacklog(limit);
      try {
        ackEach(conn, deliveries(transport));
        // The ACK past the limit sends all of them (those held too) in that turn's call.
        await until('the ACKs sent while the pump still reads', () => store.ackCalls.length === 1);
        assert.deepEqual(store.ackCalls[0], range(1, 256));
        await until('the budget given back', () => ctx.ackHold.held === 0);
        store.openGate();
        await until('every frame delivered', () => deliveries(transport).length === 600);
      } finally {
        conn.onClose();
      }
    });
  }

  it('sends the ACKs it holds when the connection closes', async () => {
    const { store, ctx, transport, conn } = await resumedBacklog(10_000);
    ackEach(conn, deliveries(transport).slice(0, 200));
    for (let round = 0; round < 5; round++) await tick();
    assert.equal(store.ackCalls.length, 0);
    conn.onClose();
    assert.deepEqual(store.ackCalls, [range(1, 200)], 'sent as the connection closed');
    await until('the budget given back', () => ctx.ackHold.held === 0);
    store.openGate();
  });

  it('sends them each time a read catches up, though new frames keep the pump going', async () => {
    const queue = smallQueue(400);
    const store = gatedStore(queue, Number.POSITIVE_INFINITY);
    store.visible = 256;
    const ctx = holdingContext(store, 10_000);
    const transport = new FakeTransport();
    const conn = await openConnection(ctx, transport);
    // Each read lets one more frame in and announces it while the read is in flight (pumpAgain).
    store.onRead = () => {
      if (store.visible >= 300) return;
      store.visible++;
      const next = queue[store.visible - 1]!;
      setImmediate(() => conn.offerDurable(next.frame, next.position));
    };
    try {
      conn.onFrame(Buffer.from(encodeFrame({ type: 'RESUME', lastAcked: 0 })));
      let acked = 0;
      for (let round = 0; round < 400 && store.visible < 300; round++) {
        await tick();
        const now = deliveries(transport);
        ackEach(conn, now.slice(acked));
        acked = now.length;
      }
      assert.ok(store.visible < 300 || store.ackCalls.length > 0, 'the feed outlasted the test');
      assert.ok(store.ackCalls.length > 0, 'ACKs sent while the frames kept coming');
      await until('every frame delivered', () => deliveries(transport).length === 300);
      ackEach(conn, deliveries(transport).slice(acked));
      await until('every ACK sent', () => store.ackCalls.flat().length === 300);
      await until('the budget given back', () => ctx.ackHold.held === 0);
    } finally {
      conn.onClose();
    }
  });

  it('keeps them through a failed read, and sends again those Redis failed', async () => {
    const { store, ctx, transport, conn } = await resumedBacklog(10_000);
    try {
      ackEach(conn, deliveries(transport));
      for (let round = 0; round < 5; round++) await tick();
      store.failReads = 1;
      store.failAcks = 1;
      store.openGate();
      // The read fails; the pump tries again a second later: nothing sent meanwhile.
      for (let round = 0; round < 20; round++) await tick();
      assert.deepEqual(store.ackCalls, [], 'not sent into a failing Redis');
      assert.equal(ctx.ackHold.held, 256);
      await until('every frame delivered', () => deliveries(transport).length === 600);
      // Caught up: sent, failed, kept, and sent again a second later.
      await until('sent twice', () => store.ackCalls.length === 2);
      assert.deepEqual(store.ackCalls, [range(1, 256), range(1, 256)]);
      await until('the budget given back', () => ctx.ackHold.held === 0);
    } finally {
      conn.onClose();
    }
  });

  it('sends what it holds when the node closes the connection, before the socket has closed', async () => {
    const { store, ctx, transport, conn } = await resumedBacklog(10_000);
    ackEach(conn, deliveries(transport).slice(0, 100));
    for (let round = 0; round < 5; round++) await tick();
    assert.equal(ctx.ackHold.held, 100);
    conn.close(); // as RelayNode.drain does: the transport ends; the socket closes later
    assert.deepEqual(store.ackCalls, [range(1, 100)]);
    conn.onClose();
    store.openGate();
    await until('the budget given back', () => ctx.ackHold.held === 0);
  });

  it('holds nothing on a draining node', async () => {
    const { store, ctx, transport, conn } = await resumedBacklog(10_000, (ctx) => {
      ctx.isDraining = () => true;
    });
    ackEach(conn, deliveries(transport));
    await until('sent in the turn while the pump still reads', () => store.ackCalls.length === 1);
    assert.deepEqual(store.ackCalls[0], range(1, 256));
    assert.equal(ctx.ackHold.held, 0);
    store.openGate();
    conn.onClose();
  });
});
