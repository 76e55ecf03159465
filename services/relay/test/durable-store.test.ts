/**
 * The durable queue against a real redis-server of its own (never mocked):
 * positions, idempotency, limits, expiry, acks, two relay nodes racing on
 * one recipient, Redis going away, and bytes of every value.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  decodeFrame,
  encodeFrame,
  LibertariaError,
  MIN_ROUTED_FRAME_SIZE,
  RelayError,
  RoutedAt,
  readRoutedPosition,
  SendFlags,
} from '@libertaria/protocol';
import { type Command, Redis, type RedisOptions, ReplyError } from 'ioredis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import {
  DURABLE_STORE_REDIS_OPTIONS,
  DurableStore,
  type DurableStoreOptions,
  type EnqueueResult,
  type NamedFrames,
} from '../src/durable-store.js';
import { PresenceRegistry } from '../src/presence.js';

/** Enqueue results without the `depth` and `holders` fields (checked on their own below). */
function withoutDepth(r: EnqueueResult): EnqueueResult {
  const { depth: _depth, holders: _holders, ...rest } = r;
  return rest;
}

const hint = (): Uint8Array => new Uint8Array(randomBytes(24));
const messageId = (): Uint8Array => new Uint8Array(randomBytes(16));
/** The sender of deliver()'s frames unless one is given. */
const SOURCE = new Uint8Array(24).fill(0x51);

/** The DELIVER frame a relay stores: header included, position 0. */
function deliver(
  dest: Uint8Array,
  id: Uint8Array,
  payload: Uint8Array = new Uint8Array([0x68, 0x69]),
  source: Uint8Array = SOURCE,
): Uint8Array {
  return encodeFrame({
    type: 'DELIVER',
    dest,
    source,
    sessionId: new Uint8Array(16).fill(0x5e),
    messageId: id,
    flags: SendFlags.DURABLE,
    ttl: 0,
    position: 0,
    payload,
  });
}

/** A frame's member in the queue's keys: source ‖ messageId. */
function member(id: Uint8Array, source: Uint8Array = SOURCE): Buffer {
  return Buffer.concat([source, id]);
}

/** The u64 big-endian bytes of a position. */
function u64(position: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(position));
  return b;
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<LibertariaError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof LibertariaError, `expected a LibertariaError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected a rejection with ${code}`);
}

// Every test twice: frames pre-written by HSETNX (one server's default) and handed to the script (a Cluster's way).
for (const framesPath of ['prewrite', 'script'] as const) {
  describe(`DurableStore (frames by ${framesPath})`, () => {
    let server: RedisHandle;
    const connections: Redis[] = [];

    /** A connection with the options the relay uses (fail fast, auto-pipelining), ready before use. */
    async function connect(url: string, extra: RedisOptions = {}): Promise<Redis> {
      const redis = new Redis(url, { ...DURABLE_STORE_REDIS_OPTIONS, lazyConnect: true, ...extra });
      redis.on('error', () => {}); // reconnect noise in the Redis-down test; failures surface on commands
      await redis.connect();
      connections.push(redis);
      return redis;
    }

    let redis: Redis;
    before(async () => {
      server = await startRedis();
      redis = await connect(server.url);
    });
    after(async () => {
      for (const c of connections) c.disconnect();
      await server.stop();
    });

    /** Options under a fresh random prefix, so tests share nothing. */
    function storeOptions(overrides: Partial<DurableStoreOptions> = {}): DurableStoreOptions {
      return {
        prefix: `t${randomBytes(4).toString('hex')}`,
        maxFrames: 1000,
        maxBytes: 1 << 24,
        maxTtlSeconds: 3600,
        framesPath,
        // Every call by the pre-write in its run, however few frames (the relay's default is 16).
        prewriteMinFrames: 1,
        ...overrides,
      };
    }
    function store(overrides: Partial<DurableStoreOptions> = {}, connection: Redis = redis): DurableStore {
      return new DurableStore(connection, storeOptions(overrides));
    }

    it('reports the queue depth after each store, and none for a duplicate', async () => {
      const s = store();
      const dest = hint();
      const ids = Array.from({ length: 3 }, messageId);
      for (const [i, id] of ids.entries()) assert.equal((await s.enqueue(dest, id, deliver(dest, id), 0)).depth, i + 1);
      assert.equal(await s.ack(dest, ids[0]!, 1), true);
      const next = messageId();
      assert.equal((await s.enqueue(dest, next, deliver(dest, next), 0)).depth, 3);
      assert.equal((await s.enqueue(dest, next, deliver(dest, next), 0)).depth, undefined);
    });

    it('names the nodes holding presence on the recipient, as presence.ts writes them; the relay filters dead ones', async () => {
      const { prefix } = storeOptions();
      const s = new DurableStore(redis, storeOptions({ prefix }));
      const dest = hint();
      const first = messageId();
      assert.deepEqual((await s.enqueue(dest, first, deliver(dest, first), 0)).holders, []);
      const now = Date.now();
      const nodeA = new PresenceRegistry(redis, { prefix, nodeId: 'node-a', leaseMs: 10_000 });
      const nodeB = new PresenceRegistry(redis, { prefix, nodeId: 'node-b', leaseMs: 10 });
      await nodeA.announceNode([], now);
      await nodeB.announceNode([], now - 1000); // its lease has already run out
      await nodeA.add(dest);
      await nodeB.add(dest);
      const next = messageId();
      const holders = (await s.enqueue(dest, next, deliver(dest, next), 0, now)).holders ?? [];
      assert.deepEqual([...holders].sort(), ['node-a', 'node-b'], 'the script lists every node presence points at');
      await nodeA.renew(undefined, now);
      assert.deepEqual(nodeA.liveHolders(holders, now), ['node-a'], 'the registry view drops the expired node');
    });

    it('removes a burst of ACKs in one call, ignoring wrong positions and repeats, across the batch limit', async () => {
      const s = store({ maxFrames: 1000 });
      const dest = hint();
      const ids = Array.from({ length: 600 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      const acks = ids.slice(0, 550).map((id, i) => ({ messageId: id, position: i + 1 }));
      acks.push({ messageId: ids[590]!, position: 7 }); // stored elsewhere: ignored
      acks.push({ messageId: ids[0]!, position: 1 }); // repeated: counted once
      assert.equal(await s.ackMany(dest, acks), 550);
      assert.deepEqual(
        (await s.fetch(dest, 0, 100)).map((f) => f.position),
        Array.from({ length: 50 }, (_, i) => 551 + i),
      );
      assert.equal((await s.depth(dest)).frames, 50);
      // Acknowledged ids stay duplicates: a re-send is not stored again.
      assert.equal((await s.enqueue(dest, ids[3]!, deliver(dest, ids[3]!), 0)).status, 'duplicate');
      // A sparse batch (positions far apart) is looked up position by position: same rules.
      const sparse = [
        { messageId: ids[551]!, position: 552 },
        { messageId: ids[560]!, position: 600 },
        { messageId: ids[599]!, position: 600 },
        { messageId: ids[551]!, position: 552 },
      ];
      assert.equal(await s.ackMany(dest, sparse), 2);
      assert.equal((await s.depth(dest)).frames, 48);
    });

    it('matches each ACK to its own position in a batch whose range has holes', async () => {
      const s = store({ maxFrames: 1000 });
      const dest = hint();
      const ids = Array.from({ length: 20 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      // Positions 3 and 7 go first: the batch below spans 1..10 with two of them gone, so its
      // members cannot be told by their order in the range.
      assert.equal(
        await s.ackMany(dest, [
          { messageId: ids[2]!, position: 3 },
          { messageId: ids[6]!, position: 7 },
        ]),
        2,
      );
      const batch = ids.slice(0, 10).map((id, i) => ({ messageId: id, position: i + 1 }));
      // One ACK names the frame after its own: it removes nothing.
      batch[8] = { messageId: ids[9]!, position: 9 };
      assert.equal(await s.ackMany(dest, batch), 7);
      assert.deepEqual(
        (await s.fetch(dest, 0, 100)).map((f) => f.position),
        [9, ...Array.from({ length: 10 }, (_, i) => 11 + i)],
      );
      // With no hole, the same mismatch is refused as well.
      assert.equal(
        await s.ackMany(dest, [
          { messageId: ids[11]!, position: 11 },
          { messageId: ids[10]!, position: 12 },
        ]),
        0,
      );
      assert.equal(
        await s.ackMany(dest, [
          { messageId: ids[10]!, position: 11 },
          { messageId: ids[11]!, position: 12 },
        ]),
        2,
      );
      assert.equal((await s.depth(dest)).frames, 9);
    });

    it('refuses a batch of ACKs with a position that is no count before removing any of them', async () => {
      const s = store({ maxFrames: 1000 });
      const dest = hint();
      const ids = Array.from({ length: 300 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      const acks = ids.map((id, i) => ({ messageId: id, position: i + 1 }));
      // In the second script call's share (past ACK_BATCH = 256): the first must not have run either.
      acks[280] = { messageId: ids[280]!, position: -1 };
      await assert.rejects(s.ackMany(dest, acks), (err: Error & { code?: string }) => err.code === 'BAD_FIELD');
      acks[280] = { messageId: ids[280]!, position: 1.5 };
      await assert.rejects(s.ackMany(dest, acks), (err: Error & { code?: string }) => err.code === 'BAD_FIELD');
      assert.equal((await s.depth(dest)).frames, 300);
    });

    it('names the frames of a read without the script in the common case, and leaves the rest to it', async () => {
      const s = store();
      const dest = hint();
      const [, , , m] = s.keys(dest);
      const scriptCalls = async (): Promise<number> => {
        const stats = await redis.info('commandstats');
        return ['evalsha', 'eval'].reduce(
          (sum, name) => sum + Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0),
          0,
        );
      };
      const now = Date.now();
      const ids = Array.from({ length: 6 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0, now);
      const large = Number(await redis.hget(m, 'largest'));
      const read = async (after: number, limit: number, maxBytes: number, nowMs = now) => {
        const before = await scriptCalls();
        const r = await s.fetchWithin(dest, after, limit, maxBytes, nowMs);
        return {
          positions: r.frames.map((f) => f.position),
          more: r.more,
          last: r.last,
          scripts: (await scriptCalls()) - before,
        };
      };
      // Nothing expired, m whole, the cursor within the queue, limit x largest fits: no script.
      assert.deepEqual(await read(0, 4, 4 * large), { positions: [1, 2, 3, 4], more: true, last: 4, scripts: 0 });
      assert.deepEqual(await read(4, 10, 0), { positions: [5, 6], more: false, last: 6, scripts: 0 });
      // Limit x largest might not fit: the script looks at the sizes.
      assert.deepEqual(await read(0, 4, 4 * large - 1), { positions: [1, 2, 3], more: true, last: 3, scripts: 1 });
      // A cursor past the last position issued (a queue that restarted): the script reads from the start.
      assert.deepEqual((await read(50, 2, 0)).positions, [1, 2]);
      // m.largest missing, then m.seq missing (m lost): the script.
      await redis.hdel(m, 'largest');
      assert.equal((await read(0, 2, 0)).scripts, 1);
      await redis.del(m);
      assert.deepEqual(await read(2, 2, 0), { positions: [3, 4], more: true, last: 4, scripts: 1 });
      // A frame expired (stored with a TTL of 1 s, read 2 s later), on a queue m whole: the script purges it first.
      const fresh = hint();
      const [fz] = s.keys(fresh);
      const freshIds = Array.from({ length: 3 }, messageId);
      for (const [i, id] of freshIds.entries()) await s.enqueue(fresh, id, deliver(fresh, id), i === 1 ? 1 : 0, now);
      const before = await scriptCalls();
      const later = await s.fetchWithin(fresh, 0, 10, 0, now + 2000);
      assert.deepEqual(
        later.frames.map((f) => f.position),
        [1, 3],
      );
      assert.ok((await scriptCalls()) - before >= 1);
      assert.equal(await redis.zcard(fz), 2, 'the expired frame purged');
    });

    it('fetches within a byte limit, at least one frame, and says whether more follow', async () => {
      const s = store();
      const dest = hint();
      const ids = Array.from({ length: 5 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      const size = (await s.fetch(dest, 0, 1))[0]!.frame.length;
      const positions = (r: { frames: Array<{ position: number }>; more: boolean }) => ({
        positions: r.frames.map((f) => f.position),
        more: r.more,
      });
      assert.deepEqual(positions(await s.fetchWithin(dest, 0, 10, 2 * size + size - 1)), {
        positions: [1, 2],
        more: true,
      });
      assert.deepEqual(positions(await s.fetchWithin(dest, 0, 10, 1)), { positions: [1], more: true });
      assert.deepEqual(positions(await s.fetchWithin(dest, 2, 10, 0)), { positions: [3, 4, 5], more: false });
      assert.deepEqual(positions(await s.fetchWithin(dest, 0, 3, 0)), { positions: [1, 2, 3], more: true });
      assert.deepEqual(positions(await s.fetchWithin(dest, 2, 3, 3 * size)), { positions: [3, 4, 5], more: false });
      assert.deepEqual(positions(await s.fetchWithin(dest, 5, 3, size)), { positions: [], more: false });
    });

    it('says which position a read named last, and how many named frames were gone when read', async () => {
      const s = store();
      const dest = hint();
      const ids = Array.from({ length: 6 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      const summary = (r: Awaited<ReturnType<DurableStore['fetchWithin']>>) => ({
        positions: r.frames.map((f) => f.position),
        more: r.more,
        last: r.last,
        vanished: r.vanished,
      });
      assert.deepEqual(summary(await s.fetchWithin(dest, 0, 4, 0)), {
        positions: [1, 2, 3, 4],
        more: true,
        last: 4,
        vanished: 0,
      });
      assert.deepEqual(summary(await s.fetchWithin(dest, 6, 4, 0)), {
        positions: [],
        more: false,
        last: 6,
        vanished: 0,
      });
      // Frames 3 and 4 lost from the frames hash (what an evicting Redis does to the whole hash), still indexed.
      const d = s.keys(dest)[1];
      await redis.hdel(d, Buffer.concat([SOURCE, ids[2]!]), Buffer.concat([SOURCE, ids[3]!]));
      assert.deepEqual(summary(await s.fetchWithin(dest, 2, 2, 0)), {
        positions: [],
        more: true,
        last: 4,
        vanished: 2,
      });
      assert.deepEqual(summary(await s.fetchWithin(dest, 0, 10, 0)), {
        positions: [1, 2, 5, 6],
        more: false,
        last: 6,
        vanished: 2,
      });
    });

    it('keeps issuing positions after the highest one queued or acknowledged when m is lost, and reads on from a cursor', async () => {
      const s = store();
      const dest = hint();
      const ids = Array.from({ length: 5 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      assert.equal(await s.ackMany(dest, [{ messageId: ids[4]!, position: 5 }]), 1);
      // What a Redis that evicts keys may do: m goes, z, d, e and x stay.
      await redis.del(s.keys(dest)[3]);
      // Reads from a cursor inside the queue go on from there (not from 1 again, as for a queue that
      // expired), also from the acknowledged 5, above every frame still queued.
      assert.deepEqual(
        (await s.fetch(dest, 2, 10)).map((f) => f.position),
        [3, 4],
      );
      assert.deepEqual(await s.fetch(dest, 5, 10), []);
      // New frames take positions after every one issued, the acknowledged 5 included.
      const next = messageId();
      assert.equal((await s.enqueue(dest, next, deliver(dest, next), 0)).position, 6);
      // RESUME within the queue is no restart.
      assert.deepEqual(await s.ackUpTo(dest, 3), { removed: 3, restarted: false });
      assert.deepEqual(
        (await s.fetch(dest, 3, 10)).map((f) => f.position),
        [4, 6],
      );
    });

    it('counts a top frame that expired, not yet purged, as issued when m is lost', async () => {
      const s = store();
      const dest = hint();
      const now = Date.now();
      const ids = Array.from({ length: 3 }, messageId);
      await s.enqueue(dest, ids[0]!, deliver(dest, ids[0]!), 0, now);
      await s.enqueue(dest, ids[1]!, deliver(dest, ids[1]!), 0, now);
      assert.equal((await s.enqueue(dest, ids[2]!, deliver(dest, ids[2]!), 1, now)).position, 3);
      await redis.del(s.keys(dest)[3]);
      // Two seconds on, position 3 has expired; the enqueue purges it, and must not issue 3 again.
      const next = messageId();
      assert.equal((await s.enqueue(dest, next, deliver(dest, next), 0, now + 2000)).position, 4);
    });

    it('looks at frame sizes only when the largest queued frame could break the byte limit, and stays exact around one', async () => {
      const s = store();
      const dest = hint();
      const [, , , m] = s.keys(dest);
      const ids = Array.from({ length: 9 }, messageId);
      const big = new Uint8Array(3000);
      for (const [i, id] of ids.entries()) await s.enqueue(dest, id, deliver(dest, id, i === 5 ? big : undefined), 0);
      const small = deliver(dest, ids[0]!).length;
      const large = deliver(dest, ids[5]!, big).length;
      assert.equal(Number(await redis.hget(m, 'largest')), large);
      const sizeLooks = async (): Promise<number> =>
        Number(/cmdstat_hstrlen:calls=(\d+)/.exec(await redis.info('commandstats'))?.[1] ?? 0);
      const read = async (after: number, limit: number, maxBytes: number) => {
        const before = await sizeLooks();
        const r = await s.fetchWithin(dest, after, limit, maxBytes);
        return { positions: r.frames.map((f) => f.position), more: r.more, looks: (await sizeLooks()) - before };
      };
      // 4 frames of the largest size fit: no size is looked at.
      assert.deepEqual(await read(0, 4, 4 * large), { positions: [1, 2, 3, 4], more: true, looks: 0 });
      // They might not: sizes are looked at, and the limit holds to the byte.
      assert.deepEqual(await read(0, 10, 5 * small + large - 1), { positions: [1, 2, 3, 4, 5], more: true, looks: 6 });
      assert.deepEqual(await read(5, 10, large), { positions: [6], more: true, looks: 2 });
      // A queue an earlier relay wrote last has no such bound: every size is looked at.
      await redis.hdel(m, 'largest');
      assert.deepEqual((await read(0, 4, 100 * large)).looks, 4);
      // The bound starts again once the queue was empty.
      await s.ackUpTo(dest, 9);
      const id = messageId();
      await s.enqueue(dest, id, deliver(dest, id), 0);
      assert.equal(Number(await redis.hget(m, 'largest')), small);
    });

    it('never sets m.largest below a frame already queued, and drops a value a read finds too small', async () => {
      const s = store();
      const dest = hint();
      const [, , , m] = s.keys(dest);
      const big = new Uint8Array(5000);
      const ids = Array.from({ length: 4 }, messageId);
      for (const id of ids.slice(0, 3)) await s.enqueue(dest, id, deliver(dest, id, big), 0);
      const large = deliver(dest, ids[0]!, big).length;
      const small = deliver(dest, ids[3]!).length;
      // A queue an earlier relay wrote (no field) gets none from a store into it while not empty.
      await redis.hdel(m, 'largest');
      await s.enqueue(dest, ids[3]!, deliver(dest, ids[3]!), 0);
      assert.equal(await redis.hget(m, 'largest'), null);
      let r = await s.fetchWithin(dest, 0, 10, 2 * large);
      assert.deepEqual(
        r.frames.map((f) => f.position),
        [1, 2],
        'sizes looked at: the byte limit holds',
      );
      // A value too small (an earlier relay stored a larger frame after this one set it):
      // the read that finds more bytes than named drops it, and the next read holds its limit again.
      await redis.hset(m, 'largest', small);
      r = await s.fetchWithin(dest, 0, 10, 2 * large);
      assert.equal(r.frames.length, 4, 'this read went past its limit once');
      const deadline = Date.now() + 5000;
      while ((await redis.hget(m, 'largest')) !== null && Date.now() < deadline)
        await new Promise((t) => setTimeout(t, 10));
      assert.equal(await redis.hget(m, 'largest'), null);
      r = await s.fetchWithin(dest, 0, 10, 2 * large);
      assert.deepEqual(
        r.frames.map((f) => f.position),
        [1, 2],
      );
    });

    it('tells which frames a read names before it returns them: the last position, their bytes (at least), more', async () => {
      const s = store();
      const dest = hint();
      const ids = Array.from({ length: 5 }, messageId);
      const big = new Uint8Array(2000);
      for (const [i, id] of ids.entries()) await s.enqueue(dest, id, deliver(dest, id, i === 1 ? big : undefined), 0);
      const small = deliver(dest, ids[0]!).length;
      const large = deliver(dest, ids[1]!, big).length;
      const told: NamedFrames[] = [];
      const read = async (after: number, limit: number, maxBytes: number) => {
        let returned = false;
        const r = await s.fetchWithin(dest, after, limit, maxBytes, Date.now(), (named) => {
          assert.equal(returned, false, 'told before the frames are returned');
          told.push(named);
        });
        returned = true;
        return r.frames.map((f) => f.position);
      };
      // Sizes looked at (3 of the largest frame would not fit): their exact sum.
      assert.deepEqual(await read(0, 3, small + large + small), [1, 2, 3]);
      assert.deepEqual(told.pop(), { last: 3, bytes: small + large + small, more: true });
      // Sizes not looked at (limit x largest fits): limit x largest, at least what is read.
      assert.deepEqual(await read(3, 10, 10 * large), [4, 5]);
      assert.deepEqual(told.pop(), { last: 5, bytes: 2 * large, more: false });
      // No byte limit, no m.largest: unknown.
      const [, , , m] = s.keys(dest);
      await redis.hdel(m, 'largest');
      assert.deepEqual(await read(0, 2, 0), [1, 2]);
      assert.deepEqual(told.pop(), { last: 2, bytes: -1, more: true });
      // Nothing after the last position: no names to tell.
      assert.deepEqual(await read(5, 10, 0), []);
      assert.equal(told.length, 0);
    });

    it('leaves out a frame gone between the script naming it and the frame read (acknowledged or purged meanwhile)', async () => {
      // fetchWithin asks the script which frames to read, then reads them with
      // HMGET: a frame removed in between reads as null. Removing one by hand
      // gives the read that null for certain.
      const s = store();
      const dest = hint();
      const ids = Array.from({ length: 3 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      const [, d] = s.keys(dest);
      await redis.hdel(d, member(ids[1]!));
      const fetched = await s.fetchWithin(dest, 0, 10, 0);
      assert.deepEqual(
        fetched.frames.map((f) => [f.position, Buffer.from(f.messageId).toString('hex')]),
        [
          [1, Buffer.from(ids[0]!).toString('hex')],
          [3, Buffer.from(ids[2]!).toString('hex')],
        ],
      );
      assert.equal(fetched.more, false);
    });

    it('issues positions 1, 2, 3, … and fetches in position order', async () => {
      const s = store();
      const dest = hint();
      const ids = Array.from({ length: 5 }, messageId);
      for (const [i, id] of ids.entries()) {
        assert.deepEqual(withoutDepth(await s.enqueue(dest, id, deliver(dest, id), 0)), {
          status: 'stored',
          position: i + 1,
        });
      }
      const frames = await s.fetch(dest, 0, 10);
      assert.deepEqual(
        frames.map((f) => f.position),
        [1, 2, 3, 4, 5],
      );
      for (const [i, f] of frames.entries()) {
        assert.deepEqual(new Uint8Array(f.messageId), ids[i]);
        const decoded = decodeFrame(f.frame);
        assert.equal(decoded.type, 'DELIVER');
        assert.equal(decoded.type === 'DELIVER' && decoded.position, i + 1);
      }
      assert.deepEqual(await s.depth(dest), { frames: 5, bytes: 5 * deliver(dest, ids[0]!).length });
    });

    it('writes the position into the frame at offset 91 and leaves every other byte as stored (the store time aside)', async () => {
      const s = store();
      const dest = hint();
      // Start high so the upper 32 bits of the u64 are exercised too.
      const [, , , m] = s.keys(dest);
      await redis.hset(m, 'seq', 2 ** 40 + 0x1234);
      const id = messageId();
      const original = deliver(dest, id, new Uint8Array(randomBytes(300)));
      const before = Date.now();
      const { position } = await s.enqueue(dest, id, original, 0);
      const storedAt = readRoutedPosition(original);
      assert.equal(position, 2 ** 40 + 0x1235);
      const [f] = await s.fetch(dest, 0, 1);
      assert.ok(f);
      assert.equal(RoutedAt.POSITION, 91);
      assert.equal(f.frame.length, original.length);
      assert.deepEqual(f.frame.subarray(91, 99), u64(position));
      assert.deepEqual(f.frame.subarray(0, 91), Buffer.from(original.subarray(0, 91)));
      assert.deepEqual(f.frame.subarray(99), Buffer.from(original.subarray(99)));
      // The caller's frame is modified in its position field alone: the store time, written before it was sent.
      assert.ok(storedAt >= before && storedAt <= Date.now(), `store time ${storedAt}`);
      assert.equal(f.storedAtMs, storedAt);
    });

    it('is idempotent on messageId, also after the frame was acknowledged', async () => {
      const s = store();
      const dest = hint();
      const id = messageId();
      const frame = deliver(dest, id);
      const first = messageId();
      assert.deepEqual(withoutDepth(await s.enqueue(dest, first, deliver(dest, first), 0)), {
        status: 'stored',
        position: 1,
      });
      assert.deepEqual(withoutDepth(await s.enqueue(dest, id, frame, 0)), { status: 'stored', position: 2 });
      assert.deepEqual(withoutDepth(await s.enqueue(dest, id, frame, 0)), { status: 'duplicate', position: 2 });
      assert.deepEqual(await s.depth(dest), { frames: 2, bytes: 2 * frame.length });
      assert.equal(await s.ack(dest, id, 2), true);
      assert.deepEqual(withoutDepth(await s.enqueue(dest, id, frame, 0)), { status: 'duplicate', position: 2 });
      assert.deepEqual(await s.depth(dest), { frames: 1, bytes: frame.length });
      assert.deepEqual(
        (await s.fetch(dest, 0, 10)).map((f) => f.position),
        [1],
      );
      // The same id for another recipient is another message.
      const other = hint();
      assert.deepEqual(withoutDepth(await s.enqueue(other, id, deliver(other, id), 0)), {
        status: 'stored',
        position: 1,
      });
    });

    it('remembers at most maxFrames acknowledged ids', async () => {
      const s = store({ maxFrames: 3 });
      const dest = hint();
      const ids = Array.from({ length: 5 }, messageId);
      for (const [i, id] of ids.entries()) {
        await s.enqueue(dest, id, deliver(dest, id), 0);
        assert.equal(await s.ack(dest, id, i + 1), true);
      }
      const [, , , , x] = s.keys(dest);
      assert.equal(await redis.zcard(x), 3);
      // The newest acknowledged ids are still duplicates; the oldest has been forgotten.
      assert.deepEqual(withoutDepth(await s.enqueue(dest, ids[4]!, deliver(dest, ids[4]!), 0)), {
        status: 'duplicate',
        position: 5,
      });
      assert.deepEqual(withoutDepth(await s.enqueue(dest, ids[2]!, deliver(dest, ids[2]!), 0)), {
        status: 'duplicate',
        position: 3,
      });
      assert.deepEqual(withoutDepth(await s.enqueue(dest, ids[0]!, deliver(dest, ids[0]!), 0)), {
        status: 'stored',
        position: 6,
      });
    });

    it('remembers maxAcked acknowledged ids when set apart from maxFrames, on ACKs and on RESUME', async () => {
      const s = store({ maxFrames: 100, maxAcked: 2 });
      const dest = hint();
      const ids = Array.from({ length: 6 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      const [, , , , x] = s.keys(dest);
      // Three by ACK, the rest by a cumulative ACK: both keep the two newest.
      for (let i = 0; i < 3; i++) assert.equal(await s.ack(dest, ids[i]!, i + 1), true);
      assert.equal(await redis.zcard(x), 2);
      await s.ackUpTo(dest, 6);
      assert.equal(await redis.zcard(x), 2);
      assert.deepEqual(withoutDepth(await s.enqueue(dest, ids[5]!, deliver(dest, ids[5]!), 0)), {
        status: 'duplicate',
        position: 6,
      });
      assert.deepEqual(withoutDepth(await s.enqueue(dest, ids[3]!, deliver(dest, ids[3]!), 0)), {
        status: 'stored',
        position: 7,
      });
      assert.throws(() => store({ maxAcked: 0 }), /maxAcked/);
    });

    it('refuses QUEUE_FULL exactly at maxFrames and evicts nothing', async () => {
      const s = store({ maxFrames: 4 });
      const dest = hint();
      const ids = Array.from({ length: 4 }, messageId);
      for (const id of ids) assert.equal((await s.enqueue(dest, id, deliver(dest, id), 0)).status, 'stored');
      const extra = messageId();
      const err = await rejectsWith(s.enqueue(dest, extra, deliver(dest, extra), 0), 'QUEUE_FULL');
      assert.ok(err instanceof RelayError);
      // A duplicate is still answered while full.
      assert.deepEqual(withoutDepth(await s.enqueue(dest, ids[1]!, deliver(dest, ids[1]!), 0)), {
        status: 'duplicate',
        position: 2,
      });
      const frames = await s.fetch(dest, 0, 10);
      assert.deepEqual(
        frames.map((f) => [f.position, Buffer.from(f.messageId).toString('hex')]),
        ids.map((id, i) => [i + 1, Buffer.from(id).toString('hex')]),
      );
      // Room after an ack; the refused attempt did not use up a position.
      assert.equal(await s.ack(dest, ids[0]!, 1), true);
      assert.deepEqual(withoutDepth(await s.enqueue(dest, extra, deliver(dest, extra), 0)), {
        status: 'stored',
        position: 5,
      });
    });

    it('refuses QUEUE_BYTES_FULL beyond maxBytes and evicts nothing', async () => {
      const dest = hint();
      const size = deliver(dest, messageId()).length;
      const s = store({ maxBytes: 3 * size });
      const ids = Array.from({ length: 3 }, messageId);
      // Exactly at the limit is accepted.
      for (const id of ids) assert.equal((await s.enqueue(dest, id, deliver(dest, id), 0)).status, 'stored');
      const extra = messageId();
      await rejectsWith(s.enqueue(dest, extra, deliver(dest, extra, new Uint8Array(0)), 0), 'QUEUE_BYTES_FULL');
      assert.deepEqual(await s.depth(dest), { frames: 3, bytes: 3 * size });
      assert.equal((await s.fetch(dest, 0, 10)).length, 3);
      await s.ackUpTo(dest, 1);
      assert.deepEqual(withoutDepth(await s.enqueue(dest, extra, deliver(dest, extra), 0)), {
        status: 'stored',
        position: 4,
      });
      assert.deepEqual(await s.depth(dest), { frames: 3, bytes: 3 * size });
    });

    it('refuses TTL_TOO_LONG and applies the default TTL for 0', async () => {
      const s = store({ maxTtlSeconds: 600 });
      const dest = hint();
      const now = Date.now();
      const tooLong = messageId();
      await rejectsWith(s.enqueue(dest, tooLong, deliver(dest, tooLong), 601, now), 'TTL_TOO_LONG');
      assert.deepEqual(await s.depth(dest, now), { frames: 0, bytes: 0 });
      const [z, d, e, m, , senders] = s.keys(dest);
      const atMax = messageId();
      await s.enqueue(dest, atMax, deliver(dest, atMax), 600, now);
      const byDefault = messageId();
      await s.enqueue(dest, byDefault, deliver(dest, byDefault), 0, now + 5);
      assert.equal(Number(await redis.zscore(e, member(atMax))), now + 600_000);
      assert.equal(Number(await redis.zscore(e, member(byDefault))), now + 5 + 600_000);
      // Keys expire with the latest frame (the sender counts with them); the counter outlives it by maxTtl.
      for (const key of [z, d, e, senders]) assert.equal(await redis.pexpiretime(key), now + 5 + 600_000);
      assert.equal(await redis.pexpiretime(m), now + 5 + 2 * 600_000);
    });

    it('writes its frames the way it was asked to (one server: both ways)', async () => {
      const s = store();
      const dest = hint();
      const id = messageId();
      await s.enqueue(dest, id, deliver(dest, id), 0);
      assert.equal(s.enqueueFramesPath, framesPath);
    });

    it('leaves no field of a frame it did not store, and never another bytes in a stored one', async () => {
      const s = store({ maxFrames: 2 });
      const dest = hint();
      const d = s.keys(dest)[1];
      const ids = [messageId(), messageId()];
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      // A re-send with other, larger bytes: a duplicate; the stored frame and the byte count stay.
      const original = deliver(dest, ids[0]!);
      const bigger = deliver(dest, ids[0]!, new Uint8Array(5000).fill(7));
      assert.equal((await s.enqueue(dest, ids[0]!, bigger, 0)).status, 'duplicate');
      assert.equal(await redis.hstrlen(d, member(ids[0]!)), original.length);
      assert.deepEqual(await s.depth(dest), { frames: 2, bytes: 2 * original.length });
      // Refused (the queue is full): no field left behind.
      const refused = messageId();
      await rejectsWith(s.enqueue(dest, refused, deliver(dest, refused), 0), 'QUEUE_FULL');
      assert.equal(await redis.hexists(d, member(refused)), 0);
      // Acknowledged, then sent again: a duplicate, and no field comes back.
      assert.equal(await s.ack(dest, ids[1]!, 2), true);
      assert.equal((await s.enqueue(dest, ids[1]!, deliver(dest, ids[1]!), 0)).status, 'duplicate');
      assert.equal(await redis.hexists(d, member(ids[1]!)), 0);
      assert.equal(await redis.hlen(d), 1);
      assert.deepEqual(await s.depth(dest), { frames: 1, bytes: original.length });
    });

    it('counts a stored frame at the size it is stored with, whatever a field left before held', async () => {
      // A field with no place in the queue (a pre-write whose script call never ran): the next store of
      // that member keeps whichever bytes the path keeps, and counts exactly those.
      const s = store();
      const dest = hint();
      const id = messageId();
      const d = s.keys(dest)[1];
      const earlier = deliver(dest, id, new Uint8Array(600));
      await redis.hset(d, member(id), Buffer.from(earlier));
      const frame = deliver(dest, id);
      assert.equal((await s.enqueue(dest, id, frame, 0)).status, 'stored');
      const kept = framesPath === 'prewrite' ? earlier : frame;
      assert.equal(await redis.hstrlen(d, member(id)), kept.length);
      assert.deepEqual(await s.depth(dest), { frames: 1, bytes: kept.length });
      assert.equal((await s.fetch(dest, 0, 10))[0]!.frame.length, kept.length);
    });

    if (framesPath === 'prewrite') {
      it('pre-writes a call of at least prewriteMinFrames frames; a smaller one takes the script form', async () => {
        const spied = await connect(server.url);
        const send = spied.sendCommand.bind(spied);
        const sent: string[] = [];
        spied.sendCommand = ((command: Command) => {
          sent.push(command.name);
          return send(command);
        }) as typeof spied.sendCommand;
        const s = store({ prewriteMinFrames: 16 }, spied);
        const dest = hint();
        const turn = async (n: number): Promise<string[]> => {
          const ids = Array.from({ length: n }, messageId);
          sent.length = 0;
          const results = await Promise.all(ids.map((id) => s.enqueue(dest, id, deliver(dest, id), 0)));
          assert.ok(results.every((r) => r.status === 'stored'));
          return sent.filter((name) => name === 'hsetnx');
        };
        assert.deepEqual(await turn(15), []);
        assert.deepEqual(await turn(16), ['hsetnx']);
        assert.equal((await s.depth(dest)).frames, 31);
      });

      it('takes the script form on a server that does not have CLIENT, and on one answering LOADING asks again', async () => {
        const renamed = await startRedis({
          args: ['--rename-command', 'CLIENT', `CLIENT_${randomBytes(4).toString('hex')}`],
        });
        try {
          const s = store({}, await connect(renamed.url));
          const dest = hint();
          const id = messageId();
          assert.equal((await s.enqueue(dest, id, deliver(dest, id), 0)).status, 'stored');
          assert.equal(s.enqueueFramesPath, 'script');
          assert.equal((await s.fetch(dest, 0, 10)).length, 1);
        } finally {
          await renamed.stop();
        }
        // A passing refusal (a server still loading) is no answer: the path stays open and is asked again.
        const busy = await connect(server.url);
        const call = busy.call.bind(busy);
        let refused = 0;
        busy.call = ((...args: Parameters<typeof busy.call>) => {
          if (String(args[0]).toUpperCase() === 'CLIENT' && refused++ === 0) {
            return Promise.reject(new ReplyError('LOADING Redis is loading the dataset in memory'));
          }
          return call(...args);
        }) as typeof busy.call;
        const s = store({}, busy);
        const dest = hint();
        const id = messageId();
        await rejectsWith(s.enqueue(dest, id, deliver(dest, id), 0), 'STORE_UNAVAILABLE');
        assert.equal(s.enqueueFramesPath, undefined);
        assert.equal((await s.enqueue(dest, id, deliver(dest, id), 0)).status, 'stored');
        assert.equal(s.enqueueFramesPath, 'prewrite');
      });

      it('sends a frame again, as a script argument, when its pre-write was lost (NOT_WRITTEN), and stores it once', async () => {
        // A connection that drops the first pre-write: the script finds no frame, answers NOT_WRITTEN, and the
        // store's next call writes it again (a lost write stands for a concurrent call removing it).
        const lossy = await connect(server.url);
        const send = lossy.sendCommand.bind(lossy);
        let dropped = 0;
        const sent: string[] = [];
        lossy.sendCommand = ((command: Command) => {
          sent.push(command.name);
          if (command.name === 'hsetnx' && dropped === 0) {
            dropped++;
            command.resolve('OK');
            return command.promise;
          }
          return send(command);
        }) as typeof lossy.sendCommand;
        const s = store({}, lossy);
        const dest = hint();
        const ids = [messageId(), messageId()];
        const results = await Promise.all(ids.map((id) => s.enqueue(dest, id, deliver(dest, id), 0)));
        assert.equal(dropped, 1);
        // The second call carries the frames itself (the script form): no pre-write to miss again.
        assert.deepEqual(
          sent.filter((name) => name === 'hsetnx' || name === 'evalsha'),
          ['hsetnx', 'evalsha', 'evalsha'],
        );
        assert.deepEqual(results.map(withoutDepth), [
          { status: 'stored', position: 1 },
          { status: 'stored', position: 2 },
        ]);
        const fetched = await s.fetch(dest, 0, 10);
        assert.deepEqual(
          fetched.map((f) => Buffer.from(f.frame).subarray(RoutedAt.MESSAGE_ID, RoutedAt.MESSAGE_ID + 16)),
          ids.map((id) => Buffer.from(id)),
        );
        assert.deepEqual(await s.depth(dest), { frames: 2, bytes: 2 * deliver(dest, ids[0]!).length });
      });
    }

    it('enqueueFrameTo takes recipient, id and TTL from the frame itself, as enqueue would', async () => {
      const s = store({ maxTtlSeconds: 600 });
      const dest = hint();
      const now = Date.now();
      const outcome = (frame: Uint8Array): Promise<EnqueueResult> =>
        new Promise((resolve, reject) =>
          s.enqueueFrameTo(Buffer.from(frame), { enqueued: resolve, enqueueFailed: reject }, now),
        );
      const withTtl = (id: Uint8Array, ttl: number): Uint8Array => {
        const frame = Buffer.from(deliver(dest, id));
        frame.writeUInt32BE(ttl, RoutedAt.TTL);
        return frame;
      };
      const id = messageId();
      assert.deepEqual(withoutDepth(await outcome(withTtl(id, 120))), { status: 'stored', position: 1 });
      assert.equal(Number(await redis.zscore(s.keys(dest)[2], member(id))), now + 120_000);
      // The same frame again: the original's position; and enqueue() agrees on the same (dest, id).
      assert.deepEqual(await outcome(withTtl(id, 120)), { status: 'duplicate', position: 1 });
      assert.deepEqual(await s.enqueue(dest, id, withTtl(id, 120), 120, now), { status: 'duplicate', position: 1 });
      // Refusals are thrown before anything is batched: a TTL over the maximum, a frame too short to be routed.
      const sink = {
        enqueued: () => assert.fail('no outcome expected'),
        enqueueFailed: () => assert.fail('no failure expected'),
      };
      assert.throws(() => s.enqueueFrameTo(Buffer.from(withTtl(messageId(), 601)), sink), { code: 'TTL_TOO_LONG' });
      assert.throws(() => s.enqueueFrameTo(Buffer.alloc(MIN_ROUTED_FRAME_SIZE - 1), sink), { code: 'BAD_FIELD' });
      assert.deepEqual(await s.depth(dest, now), { frames: 1, bytes: withTtl(id, 120).length });
    });

    it('tells when each fetched frame was stored, from its expiry and its own TTL', async () => {
      const s = store({ maxTtlSeconds: 600 });
      const dest = hint();
      const now = Date.now() - 90_000;
      const byDefault = messageId();
      await s.enqueue(dest, byDefault, deliver(dest, byDefault), 0, now);
      const own = messageId();
      const withTtl = encodeFrame({
        type: 'DELIVER',
        dest,
        source: SOURCE,
        sessionId: new Uint8Array(16),
        messageId: own,
        flags: SendFlags.DURABLE,
        ttl: 120,
        position: 0,
        payload: new Uint8Array(3),
      });
      await s.enqueue(dest, own, withTtl, 120, now + 7_000);
      const fetched = await s.fetch(dest, 0, 10, now + 60_000);
      assert.deepEqual(
        fetched.map((f) => f.storedAtMs),
        [now, now + 7_000],
      );
    });

    it('keeps the store time in the stored frame, and dates frames an earlier relay stored from their expiry', async () => {
      const s = store({ maxTtlSeconds: 600 });
      const dest = hint();
      const now = Date.now() - 30_000;
      const ids = [messageId(), messageId()];
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0, now);
      const [, d] = s.keys(dest);
      // The store time rides in the stored frame's position field, until delivery writes the position there.
      const stored = await redis.hgetBuffer(d, member(ids[0]!));
      assert.equal(readRoutedPosition(stored!), now);
      // A relay before this one stored position 0: its frame is dated from its expiry (now + 600 s) minus its TTL.
      await redis.hset(d, member(ids[1]!), Buffer.from(deliver(dest, ids[1]!)));
      const fetched = await s.fetch(dest, 0, 10, now + 5_000);
      assert.deepEqual(
        fetched.map((f) => [f.position, readRoutedPosition(f.frame), f.storedAtMs]),
        [
          [1, 1, now],
          [2, 2, now],
        ],
      );
    });

    it('neither fetches nor counts expired frames, and frees their room', async () => {
      const dest = hint();
      const size = deliver(dest, messageId()).length;
      const s = store({ maxFrames: 3 });
      const base = Date.now();
      const ids = Array.from({ length: 3 }, messageId);
      await s.enqueue(dest, ids[0]!, deliver(dest, ids[0]!), 1, base);
      await s.enqueue(dest, ids[1]!, deliver(dest, ids[1]!), 3600, base);
      await s.enqueue(dest, ids[2]!, deliver(dest, ids[2]!), 2, base);
      assert.deepEqual(
        (await s.fetch(dest, 0, 10, base + 999)).map((f) => f.position),
        [1, 2, 3],
      );
      const late = messageId();
      await rejectsWith(s.enqueue(dest, late, deliver(dest, late), 0, base + 999), 'QUEUE_FULL');
      // expiresAt = now + ttl; at that instant the frame is gone.
      assert.deepEqual(
        (await s.fetch(dest, 0, 10, base + 1000)).map((f) => f.position),
        [2, 3],
      );
      assert.deepEqual(await s.depth(dest, base + 2000), { frames: 1, bytes: size });
      assert.deepEqual(withoutDepth(await s.enqueue(dest, late, deliver(dest, late), 0, base + 2000)), {
        status: 'stored',
        position: 4,
      });
      assert.equal(await s.ack(dest, ids[0]!, 1), false, 'an expired frame is gone');
      // An expired id is not a duplicate: it was never delivered.
      assert.equal((await s.enqueue(dest, ids[0]!, deliver(dest, ids[0]!), 0, base + 2000)).status, 'stored');
    });

    it('purges a large expired backlog in bounded steps', async () => {
      const dest = hint();
      const small = deliver(dest, messageId()).length;
      const s = store({ maxFrames: 5000, maxBytes: 1500 * small });
      const base = Date.now();
      // Expired by the clock the test passes (base + TTL), not by Redis's own key
      // expiry: a TTL long enough that Redis expires nothing during the test,
      // however slow the machine (with 1 s, a slow enqueue let Redis free the
      // bytes itself before the QUEUE_BYTES_FULL check).
      const ttlSeconds = 120;
      const later = base + ttlSeconds * 1000;
      const outcomes = await s.enqueueMany(
        Array.from({ length: 1500 }, () => {
          const id = messageId();
          return { dest, messageId: id, frame: deliver(dest, id), ttlSeconds };
        }),
        base,
      );
      assert.ok(outcomes.every((o) => o.status === 'stored'));
      const live = messageId();
      // Needs ~300 small frames' room: more than one enqueue purge batch (100) frees.
      const big = deliver(dest, live, new Uint8Array(300 * small - 99));
      await rejectsWith(s.enqueue(dest, live, big, 0, base), 'QUEUE_BYTES_FULL');
      assert.equal((await s.enqueue(dest, live, big, 0, later)).status, 'stored');
      // fetch and depth purge at most 1,000 per call and loop until none is left.
      assert.deepEqual(
        (await s.fetch(dest, 0, 10, later)).map((f) => f.position),
        [1501],
      );
      assert.deepEqual(await s.depth(dest, later), { frames: 1, bytes: big.length });
      const [z, , e] = s.keys(dest);
      assert.equal(await redis.zcard(z), 1);
      assert.equal(await redis.zcard(e), 1);
    });

    it('counts no bytes for frames whose keys Redis expired on its own', async () => {
      // Regression: the byte count (in m, which outlives the frames) stayed at the expired
      // frames' total, so a returning recipient's queue looked full.
      const dest = hint();
      const small = deliver(dest, messageId()).length;
      const s = store({ maxFrames: 100, maxBytes: 10 * small });
      for (let i = 0; i < 10; i++) {
        const id = messageId();
        assert.equal((await s.enqueue(dest, id, deliver(dest, id), 1)).status, 'stored');
      }
      const [z, , , m] = s.keys(dest);
      await new Promise((r) => setTimeout(r, 1300));
      assert.equal(await redis.exists(z), 0, 'Redis expired the frame keys');
      assert.ok(Number(await redis.hget(m, 'bytes')) > 0, 'the stale count is still there');
      assert.deepEqual(await s.depth(dest), { frames: 0, bytes: 0 });
      for (let i = 0; i < 10; i++) {
        const id = messageId();
        assert.equal((await s.enqueue(dest, id, deliver(dest, id), 60)).status, 'stored', `frame ${i}`);
      }
      assert.deepEqual(await s.depth(dest), { frames: 10, bytes: 10 * small });
    });

    it('lets an abandoned queue disappear entirely', async () => {
      const s = store({ maxTtlSeconds: 1 });
      const dest = hint();
      const id = messageId();
      await s.enqueue(dest, id, deliver(dest, id), 1);
      await s.ack(dest, id, 1);
      const other = messageId();
      await s.enqueue(dest, other, deliver(dest, other), 1);
      assert.equal(await redis.exists(...s.keys(dest)), 6);
      await new Promise((r) => setTimeout(r, 2300));
      assert.equal(await redis.exists(...s.keys(dest)), 0);
    });

    it('acks only the matching (messageId, position)', async () => {
      const s = store();
      const dest = hint();
      const ids = Array.from({ length: 3 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      const size = deliver(dest, ids[0]!).length;
      assert.equal(await s.ack(dest, ids[1]!, 1), false, 'right id, wrong position');
      assert.equal(await s.ack(dest, messageId(), 2), false, 'unknown id');
      assert.equal(await s.ack(hint(), ids[1]!, 2), false, 'another recipient');
      assert.equal(await s.ack(dest, ids[1]!, 2), true);
      assert.equal(await s.ack(dest, ids[1]!, 2), false, 'already removed');
      assert.deepEqual(await s.depth(dest), { frames: 2, bytes: 2 * size });
      assert.deepEqual(
        (await s.fetch(dest, 0, 10)).map((f) => f.position),
        [1, 3],
      );
    });

    it('acks cumulatively up to a position (RESUME)', async () => {
      const s = store();
      const dest = hint();
      const ids = Array.from({ length: 10 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      assert.equal((await s.ackUpTo(dest, 0)).removed, 0);
      assert.equal((await s.ackUpTo(dest, 4)).removed, 4);
      assert.deepEqual(
        (await s.fetch(dest, 0, 20)).map((f) => f.position),
        [5, 6, 7, 8, 9, 10],
      );
      assert.equal((await s.ackUpTo(dest, 4)).removed, 0);
      assert.equal(await s.ack(dest, ids[6]!, 7), true);
      assert.equal((await s.ackUpTo(dest, 10)).removed, 5);
      assert.deepEqual(await s.depth(dest), { frames: 0, bytes: 0 });
      assert.deepEqual(withoutDepth(await s.enqueue(dest, ids[2]!, deliver(dest, ids[2]!), 0)), {
        status: 'duplicate',
        position: 3,
      });
      const next = messageId();
      assert.deepEqual(withoutDepth(await s.enqueue(dest, next, deliver(dest, next), 0)), {
        status: 'stored',
        position: 11,
      });
    });

    it('never removes frames for an ack beyond the last position issued (a queue that expired and restarted)', async () => {
      const s = store();
      const dest = hint();
      const ids = Array.from({ length: 3 }, messageId);
      for (const id of ids) await s.enqueue(dest, id, deliver(dest, id), 0);
      // The recipient remembers lastAcked 41 of a queue that expired entirely.
      assert.deepEqual(await s.ackUpTo(dest, 41), { removed: 0, restarted: true });
      assert.deepEqual(
        (await s.fetch(dest, 41, 10)).map((f) => f.position),
        [1, 2, 3],
      );
      assert.deepEqual(
        (await s.fetch(dest, 3, 10)).map((f) => f.position),
        [],
      );
    });

    it('fetches after a position, at most limit frames', async () => {
      const s = store();
      const dest = hint();
      for (let i = 0; i < 10; i++) {
        const id = messageId();
        await s.enqueue(dest, id, deliver(dest, id), 0);
      }
      const positions = async (after: number, limit: number) =>
        (await s.fetch(dest, after, limit)).map((f) => f.position);
      assert.deepEqual(await positions(3, 4), [4, 5, 6, 7]);
      assert.deepEqual(await positions(7, 100), [8, 9, 10]);
      assert.deepEqual(await positions(10, 5), []);
      assert.deepEqual(await positions(0, 0), []);
      assert.deepEqual(await positions(0, 1), [1]);
      assert.deepEqual(await s.fetch(hint(), 0, 10), []);
    });

    it('gives 2,000 concurrent enqueues from two nodes 2,000 distinct positions', async (t) => {
      // About positions, not speed: 1,000 scripts queued on one connection can
      // take longer than the relay's 2 s command timeout on a loaded machine.
      const patient = { commandTimeout: 30_000 };
      const first = await connect(server.url, patient);
      const second = await connect(server.url, patient);
      const options = storeOptions({ maxFrames: 5000 });
      const nodeA = new DurableStore(first, options);
      const nodeB = new DurableStore(second, options);
      const dest = hint();
      const ids = Array.from({ length: 2000 }, messageId);
      const started = performance.now();
      const results = await Promise.all(
        ids.map((id, i) => (i % 2 === 0 ? nodeA : nodeB).enqueue(dest, id, deliver(dest, id), 0)),
      );
      const elapsed = performance.now() - started;
      t.diagnostic(`2,000 concurrent enqueues over two connections: ${elapsed.toFixed(0)} ms`);
      assert.ok(results.every((r) => r.status === 'stored'));
      assert.deepEqual(
        results.map((r) => r.position).sort((x, y) => x - y),
        Array.from({ length: 2000 }, (_, i) => i + 1),
      );
      const fetched = await nodeB.fetch(dest, 0, 5000);
      assert.equal(fetched.length, 2000);
      const byId = new Map(ids.map((id, i) => [Buffer.from(id).toString('hex'), results[i]!.position]));
      for (const f of fetched) assert.equal(byId.get(f.messageId.toString('hex')), f.position);
      assert.equal((await nodeA.depth(dest)).frames, 2000);
      // RESUME over 2,000 frames runs in bounded batches.
      assert.equal((await nodeA.ackUpTo(dest, 2000)).removed, 2000);
      assert.deepEqual(await nodeB.depth(dest), { frames: 0, bytes: 0 });
    });

    it('stores the same 500 ids once when both nodes receive them concurrently', async () => {
      const second = await connect(server.url);
      const options = storeOptions();
      const a = new DurableStore(redis, options);
      const b = new DurableStore(second, options);
      const dest = hint();
      const ids = Array.from({ length: 500 }, messageId);
      const [fromA, fromB] = await Promise.all([
        Promise.all(ids.map((id) => a.enqueue(dest, id, deliver(dest, id), 0))),
        Promise.all(ids.map((id) => b.enqueue(dest, id, deliver(dest, id), 0))),
      ]);
      const all = [...fromA, ...fromB];
      assert.equal(all.filter((r) => r.status === 'stored').length, 500);
      assert.equal(all.filter((r) => r.status === 'duplicate').length, 500);
      for (let i = 0; i < 500; i++) {
        assert.equal(fromA[i]!.position, fromB[i]!.position);
        assert.notEqual(fromA[i]!.status, fromB[i]!.status);
      }
      assert.deepEqual(
        fromA.map((r) => r.position).sort((x, y) => x - y),
        Array.from({ length: 500 }, (_, i) => i + 1),
      );
      assert.equal((await a.depth(dest)).frames, 500);
    });

    it('enqueues many in one turn and reports each item', async () => {
      const s = store({ maxTtlSeconds: 60 });
      const dest = hint();
      const ids = Array.from({ length: 3 }, messageId);
      const outcomes = await s.enqueueMany([
        { dest, messageId: ids[0]!, frame: deliver(dest, ids[0]!), ttlSeconds: 0 },
        { dest, messageId: ids[1]!, frame: deliver(dest, ids[1]!), ttlSeconds: 61 },
        { dest, messageId: ids[0]!, frame: deliver(dest, ids[0]!), ttlSeconds: 0 },
        { dest: new Uint8Array(5), messageId: ids[2]!, frame: deliver(dest, ids[2]!), ttlSeconds: 0 },
        { dest, messageId: ids[2]!, frame: deliver(dest, ids[1]!), ttlSeconds: 0 },
        { dest, messageId: ids[2]!, frame: deliver(dest, ids[2]!), ttlSeconds: 0 },
      ]);
      const summary = outcomes.map((o) => (o.status === 'rejected' ? o.error.code : `${o.status}@${o.position}`));
      assert.deepEqual(summary, ['stored@1', 'TTL_TOO_LONG', 'duplicate@1', 'INVALID_HINT', 'BAD_FIELD', 'stored@2']);
      assert.deepEqual(await s.enqueueMany([]), []);
    });

    describe('one turn, one script call per recipient', () => {
      /** Script calls Redis ran (EVALSHA and EVAL), from INFO commandstats. */
      const scriptCalls = async () => {
        const info = await redis.info('commandstats');
        let n = 0;
        for (const m of info.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) n += Number(m[1]);
        return n;
      };
      const senders = [new Uint8Array(24).fill(0x01), new Uint8Array(24).fill(0x02), new Uint8Array(24).fill(0x03)];

      it('several senders to several recipients in one turn: one call per recipient, positions in the order sent', async () => {
        const s = store();
        const dests = [hint(), hint()];
        // Warm up (the script loaded), outside the counted turn.
        const w = messageId();
        await s.enqueue(dests[0]!, w, deliver(dests[0]!, w), 0);
        const before = await scriptCalls();
        const sent: Array<{ dest: number; id: Uint8Array; source: number }> = [];
        for (let i = 0; i < 12; i++) sent.push({ dest: i % 2, id: messageId(), source: i % 3 });
        const results = await Promise.all(
          sent.map(({ dest, id, source }) =>
            s.enqueue(dests[dest]!, id, deliver(dests[dest]!, id, undefined, senders[source]), 0),
          ),
        );
        assert.equal((await scriptCalls()) - before, 2, 'one script call per recipient');
        // Recipient 0 had the warm-up frame at 1.
        assert.deepEqual(
          results.map((r) => `${r.status}@${r.position}`),
          sent.map(({ dest }, i) => `stored@${dest === 0 ? 2 + i / 2 : 1 + (i - 1) / 2}`),
        );
        // Depth counts each frame as stored in turn; holders are read once per call.
        assert.deepEqual(
          results.filter((_, i) => i % 2 === 1).map((r) => r.depth),
          [1, 2, 3, 4, 5, 6],
        );
        for (const [d, dest] of dests.entries()) {
          const fetched = await s.fetch(dest, 0, 100);
          const expected = sent.filter((f) => f.dest === d).map((f) => Buffer.from(f.id).toString('hex'));
          assert.deepEqual(fetched.map((f) => f.messageId.toString('hex')).slice(d === 0 ? 1 : 0), expected);
          assert.deepEqual(
            fetched.map((f) => f.position),
            fetched.map((_, i) => i + 1),
          );
        }
      });

      it('a frame refused in the middle of a batch stores nothing and takes no position; the frames around it are stored', async () => {
        const s = store({ maxFrames: 100, maxFramesPerSender: 2 });
        const dest = hint();
        const ids = Array.from({ length: 7 }, messageId);
        const from = [0, 1, 0, 1, 0, 2, 0];
        const settled = await Promise.allSettled([
          ...ids.map((id, i) => s.enqueue(dest, id, deliver(dest, id, undefined, senders[from[i]!]), 0)),
          // The first frame again, in the same batch: a duplicate of it.
          s.enqueue(dest, ids[0]!, deliver(dest, ids[0]!, undefined, senders[0]), 0),
        ]);
        const summary = settled.map((r) =>
          r.status === 'fulfilled' ? `${r.value.status}@${r.value.position}` : (r.reason as LibertariaError).code,
        );
        assert.deepEqual(summary, [
          'stored@1',
          'stored@2',
          'stored@3',
          'stored@4',
          'QUEUE_SENDER_FULL',
          'stored@5',
          'QUEUE_SENDER_FULL',
          'duplicate@1',
        ]);
        assert.deepEqual(await s.depth(dest), {
          frames: 5,
          bytes: 5 * deliver(dest, ids[0]!).length,
        });
        assert.deepEqual(await s.senderUsage(dest, senders[0]!), {
          frames: 2,
          bytes: 2 * deliver(dest, ids[0]!).length,
        });
      });

      it('Redis failing for one recipient mid-turn rejects that recipient’s frames only; the others are stored', async () => {
        const s = store();
        const [good, broken] = [hint(), hint()];
        // A queue key of the wrong type: that recipient's script call fails (WRONGTYPE).
        const [, , , m] = s.keys(broken);
        await redis.set(m, 'not a hash');
        const ids = Array.from({ length: 6 }, messageId);
        const settled = await Promise.allSettled(
          ids.map((id, i) => {
            const dest = i % 2 === 0 ? good : broken;
            return s.enqueue(dest, id, deliver(dest, id), 0);
          }),
        );
        const summary = settled.map((r) =>
          r.status === 'fulfilled' ? `${r.value.status}@${r.value.position}` : (r.reason as LibertariaError).code,
        );
        assert.deepEqual(summary, [
          'stored@1',
          'STORE_UNAVAILABLE',
          'stored@2',
          'STORE_UNAVAILABLE',
          'stored@3',
          'STORE_UNAVAILABLE',
        ]);
        assert.equal(await redis.zcard(s.keys(broken)[0]), 0, 'nothing of the failed call is stored');
      });

      it('a batch whose reply never came: every frame rejected; the retries are duplicates at the original positions, stored once', async () => {
        const conn = await connect(server.url, { commandTimeout: 300 });
        const s = store({}, conn);
        const dest = hint();
        const ids = Array.from({ length: 5 }, messageId);
        // CLIENT PAUSE WRITE holds the call past the command timeout; Redis runs it afterwards.
        await redis.call('CLIENT', 'PAUSE', '1000', 'WRITE');
        let settled: PromiseSettledResult<EnqueueResult>[];
        try {
          settled = await Promise.allSettled(ids.map((id) => s.enqueue(dest, id, deliver(dest, id), 0)));
        } finally {
          await redis.call('CLIENT', 'UNPAUSE');
        }
        assert.deepEqual(
          settled.map((r) => r.status === 'rejected' && (r.reason as LibertariaError).code),
          ids.map(() => 'STORE_UNAVAILABLE'),
        );
        const retries = await Promise.all(ids.map((id) => s.enqueue(dest, id, deliver(dest, id), 0)));
        // Applied once (the timed-out call ran after the pause) or stored now: positions 1..5 in order either way.
        assert.deepEqual(
          retries.map((r) => r.position),
          [1, 2, 3, 4, 5],
        );
        assert.deepEqual(
          (await s.fetch(dest, 0, 100)).map((f) => f.messageId.toString('hex')),
          ids.map((id) => Buffer.from(id).toString('hex')),
        );
      });

      it('a full queue still purging expired frames: the frames from the first one refused go again in the next turn, in order', async () => {
        const dest = hint();
        const s = store({ maxFrames: 250 });
        const base = Date.now();
        // 250 frames expiring at base + 1 s: the queue is full of them.
        const filled = await s.enqueueMany(
          Array.from({ length: 250 }, () => {
            const id = messageId();
            return { dest, messageId: id, frame: deliver(dest, id), ttlSeconds: 1 };
          }),
          base,
        );
        assert.ok(filled.every((o) => o.status === 'stored'));
        // Later, 150 new frames in one turn: the call purges 100 expired ones and
        // stores 100 frames; the 101st finds the queue full with expired frames
        // left (AGAIN), so it and the 49 after it go in the next turn's call.
        const later = base + 2000;
        const ids = Array.from({ length: 150 }, messageId);
        const results = await Promise.all(ids.map((id) => s.enqueue(dest, id, deliver(dest, id), 0, later)));
        assert.deepEqual(
          results.map((r) => r.position),
          ids.map((_, i) => 251 + i),
        );
        assert.deepEqual(await s.depth(dest, later), { frames: 150, bytes: 150 * deliver(dest, ids[0]!).length });
      });
    });

    it('fails with STORE_UNAVAILABLE, fast, when Redis is gone', async () => {
      const doomed = await startRedis();
      try {
        const conn = await connect(doomed.url);
        const s = store({}, conn);
        const dest = hint();
        const id = messageId();
        assert.equal((await s.enqueue(dest, id, deliver(dest, id), 0)).status, 'stored');
        await doomed.stop();
        const started = performance.now();
        const next = messageId();
        const err = await rejectsWith(s.enqueue(dest, next, deliver(dest, next), 0), 'STORE_UNAVAILABLE');
        assert.ok(err instanceof RelayError);
        assert.ok(err.cause instanceof Error, 'the ioredis error is attached as cause');
        await rejectsWith(s.fetch(dest, 0, 10), 'STORE_UNAVAILABLE');
        await rejectsWith(s.ack(dest, id, 1), 'STORE_UNAVAILABLE');
        await rejectsWith(s.ackUpTo(dest, 1), 'STORE_UNAVAILABLE');
        await rejectsWith(s.depth(dest), 'STORE_UNAVAILABLE');
        const [outcome] = await s.enqueueMany([{ dest, messageId: next, frame: deliver(dest, next), ttlSeconds: 0 }]);
        assert.equal(outcome?.status === 'rejected' && outcome.error.code, 'STORE_UNAVAILABLE');
        assert.ok(performance.now() - started < 1000, 'no command waits for a reconnect');
      } finally {
        await doomed.stop();
      }
    });

    it('fails with STORE_UNAVAILABLE when Redis stalls (commandTimeout)', async () => {
      const conn = await connect(server.url, { commandTimeout: 300 });
      const s = store({}, conn);
      const dest = hint();
      const id = messageId();
      // CLIENT PAUSE WRITE holds every script call, like a Redis stuck on a slow disk.
      await redis.call('CLIENT', 'PAUSE', '1000', 'WRITE');
      try {
        const started = performance.now();
        await rejectsWith(s.enqueue(dest, id, deliver(dest, id), 0), 'STORE_UNAVAILABLE');
        assert.ok(performance.now() - started < 900);
      } finally {
        await redis.call('CLIENT', 'UNPAUSE');
      }
      // The timed-out write may still have been applied; the retry is then a duplicate of it.
      const retry = await s.enqueue(dest, id, deliver(dest, id), 0);
      assert.equal(retry.position, 1);
    });

    it('keeps every key of a queue under the {hintHex} hash tag', async () => {
      const { prefix } = storeOptions();
      const s = new DurableStore(redis, storeOptions({ prefix }));
      const dests = [hint(), hint(), hint()];
      for (const dest of dests) {
        for (let i = 0; i < 2; i++) {
          const id = messageId();
          await s.enqueue(dest, id, deliver(dest, id), 0);
          if (i === 0) await s.ack(dest, id, 1);
        }
      }
      const keys = await redis.keys(`${prefix}:*`);
      assert.equal(keys.length, 18);
      const hexes = new Set(dests.map((d) => Buffer.from(d).toString('hex')));
      for (const key of keys) {
        const match = /^(.+):q:\{([0-9a-f]{48})\}:([zdemxs])$/.exec(key);
        assert.ok(match, `${key} carries no hash tag`);
        assert.equal(match[1], prefix);
        assert.ok(hexes.has(match[2]!));
      }
    });

    it('is binary-safe for ids, hints and payloads of every byte value', async () => {
      const s = store();
      const every = new Uint8Array(256).map((_, i) => i);
      // 16 ids cover 0x00..0xff; two more differ from another only in their last byte.
      const ids = Array.from({ length: 16 }, (_, i) => every.slice(16 * i, 16 * i + 16));
      ids.push(new Uint8Array(16), new Uint8Array(16).fill(0, 0, 15).fill(1, 15));
      const dests = [every.slice(0, 24), every.slice(232, 256), new Uint8Array(24), new Uint8Array(24).fill(0xff)];
      const payload = new Uint8Array(1024).map((_, i) => (i * 7 + 3) & 0xff);
      payload.set(every, 0);
      for (const dest of dests) {
        const frames = ids.map((id) => deliver(dest, id, payload));
        for (const [i, id] of ids.entries()) {
          assert.deepEqual(withoutDepth(await s.enqueue(dest, id, frames[i]!, 0)), {
            status: 'stored',
            position: i + 1,
          });
        }
        for (const [i, id] of ids.entries()) {
          assert.deepEqual(withoutDepth(await s.enqueue(dest, id, frames[i]!, 0)), {
            status: 'duplicate',
            position: i + 1,
          });
        }
        const fetched = await s.fetch(dest, 0, 100);
        assert.equal(fetched.length, ids.length);
        for (const [i, f] of fetched.entries()) {
          assert.deepEqual(new Uint8Array(f.messageId), ids[i]);
          const decoded = decodeFrame(f.frame);
          assert.ok(decoded.type === 'DELIVER');
          assert.deepEqual(new Uint8Array(decoded.dest), dest);
          assert.deepEqual(new Uint8Array(decoded.messageId), ids[i]);
          assert.deepEqual(new Uint8Array(decoded.payload), payload);
          assert.equal(decoded.position, i + 1);
        }
        assert.equal(await s.ack(dest, ids[17]!, 18), true);
        assert.equal(await s.ack(dest, ids[16]!, 18), false);
        assert.equal((await s.depth(dest)).frames, ids.length - 1);
      }
    });

    describe('idempotency per sender (issue 12 item 9)', () => {
      const alice = new Uint8Array(24).fill(0xa1);
      const mallory = new Uint8Array(24).fill(0xee);

      it('stores and delivers two senders’ frames with the same messageId; each retry is its own duplicate', async () => {
        // Regression: the member was the messageId alone, so the second sender got an
        // ACK with the first sender's position and its frame was discarded.
        const s = store();
        const dest = hint();
        const id = messageId();
        const fromAlice = deliver(dest, id, new Uint8Array([1]), alice);
        const fromMallory = deliver(dest, id, new Uint8Array([2]), mallory);
        assert.deepEqual(withoutDepth(await s.enqueue(dest, id, fromMallory, 0)), { status: 'stored', position: 1 });
        assert.deepEqual(withoutDepth(await s.enqueue(dest, id, fromAlice, 0)), { status: 'stored', position: 2 });
        const frames = await s.fetch(dest, 0, 10);
        assert.deepEqual(
          frames.map((f) => {
            const d = decodeFrame(f.frame);
            assert.ok(d.type === 'DELIVER');
            assert.deepEqual(new Uint8Array(f.messageId), id);
            return [f.position, d.source[0], d.payload[0]];
          }),
          [
            [1, 0xee, 2],
            [2, 0xa1, 1],
          ],
        );
        // The same sender retrying still gets its own original position and stores nothing.
        assert.deepEqual(withoutDepth(await s.enqueue(dest, id, fromAlice, 0)), { status: 'duplicate', position: 2 });
        assert.deepEqual(withoutDepth(await s.enqueue(dest, id, fromMallory, 0)), { status: 'duplicate', position: 1 });
        assert.equal(await s.isStored(dest, alice, id), true);
        assert.equal(await s.isStored(dest, new Uint8Array(24).fill(0x07), id), false);
        assert.deepEqual(await s.depth(dest), { frames: 2, bytes: fromAlice.length + fromMallory.length });
        // ACKs carry (messageId, position): each removes exactly the frame at its position.
        assert.equal(await s.ack(dest, id, 3), false, 'no frame at that position');
        assert.equal(await s.ack(dest, messageId(), 2), false, 'another id at that position');
        assert.equal(await s.ack(dest, id, 2), true);
        assert.deepEqual(
          (await s.fetch(dest, 0, 10)).map((f) => f.position),
          [1],
        );
        // Acknowledged: still a duplicate for its sender (x remembers the member), and only for it.
        assert.deepEqual(withoutDepth(await s.enqueue(dest, id, fromAlice, 0)), { status: 'duplicate', position: 2 });
        assert.equal(await s.isStored(dest, alice, id), true);
        assert.equal((await s.ackUpTo(dest, 1)).removed, 1);
        assert.deepEqual(withoutDepth(await s.enqueue(dest, id, fromMallory, 0)), { status: 'duplicate', position: 1 });
        const third = new Uint8Array(24).fill(0x33);
        assert.deepEqual(withoutDepth(await s.enqueue(dest, id, deliver(dest, id, undefined, third), 0)), {
          status: 'stored',
          position: 3,
        });
      });

      it('reads, acknowledges and deduplicates frames a relay of the earlier layout stored (member = messageId)', async () => {
        const s = store();
        const dest = hint();
        const [z, d, e, m] = s.keys(dest);
        const now = Date.now();
        // What a relay before this change wrote for one frame of alice's.
        const id = messageId();
        const legacy = deliver(dest, id, undefined, alice);
        await redis
          .multi()
          .hset(m, 'seq', 1, 'bytes', legacy.length)
          .zadd(z, 1, Buffer.from(id))
          .hset(d, Buffer.from(id), Buffer.from(legacy))
          .zadd(e, now + 3_600_000, Buffer.from(id))
          .exec();
        // Its sender's retry is a duplicate; another sender's frame with that id is not.
        assert.deepEqual(withoutDepth(await s.enqueue(dest, id, legacy, 0)), { status: 'duplicate', position: 1 });
        assert.equal(await s.isStored(dest, alice, id), true);
        assert.deepEqual(withoutDepth(await s.enqueue(dest, id, deliver(dest, id, undefined, mallory), 0)), {
          status: 'stored',
          position: 2,
        });
        const fetched = await s.fetch(dest, 0, 10);
        assert.deepEqual(
          fetched.map((f) => [f.position, Buffer.from(f.messageId).equals(Buffer.from(id))]),
          [
            [1, true],
            [2, true],
          ],
        );
        // The legacy frame was never counted for its sender; removing it takes nothing off anyone.
        assert.equal(await s.ack(dest, id, 1), true);
        assert.deepEqual(await s.senderUsage(dest, mallory), {
          frames: 1,
          bytes: deliver(dest, id, undefined, mallory).length,
        });
        assert.deepEqual(await s.senderUsage(dest, alice), { frames: 0, bytes: 0 });
        assert.equal(await s.ack(dest, id, 2), true);
        assert.deepEqual(await s.depth(dest), { frames: 0, bytes: 0 });
        assert.deepEqual(await s.senderUsage(dest, mallory), { frames: 0, bytes: 0 });
      });
    });

    describe('a sender’s share of one recipient’s queue (issue 12 item 5)', () => {
      const hostile = new Uint8Array(24).fill(0xee);
      const honest = new Uint8Array(24).fill(0xa1);

      it('refuses QUEUE_SENDER_FULL at maxFramesPerSender while other senders still get in, and counts back to zero on acks', async () => {
        const s = store({ maxFrames: 10, maxFramesPerSender: 4 });
        const dest = hint();
        const size = deliver(dest, messageId()).length;
        const hostileIds = Array.from({ length: 4 }, messageId);
        for (const id of hostileIds) {
          assert.equal((await s.enqueue(dest, id, deliver(dest, id, undefined, hostile), 0)).status, 'stored');
        }
        const more = messageId();
        const err = await rejectsWith(
          s.enqueue(dest, more, deliver(dest, more, undefined, hostile), 0),
          'QUEUE_SENDER_FULL',
        );
        assert.match(err.message, /frames/);
        // A retry of a stored frame is still answered while the share is full.
        assert.deepEqual(
          withoutDepth(await s.enqueue(dest, hostileIds[2]!, deliver(dest, hostileIds[2]!, undefined, hostile), 0)),
          {
            status: 'duplicate',
            position: 3,
          },
        );
        const honestIds = Array.from({ length: 4 }, messageId);
        for (const [i, id] of honestIds.entries()) {
          assert.deepEqual(withoutDepth(await s.enqueue(dest, id, deliver(dest, id, undefined, honest), 0)), {
            status: 'stored',
            position: 5 + i,
          });
        }
        assert.deepEqual(await s.senderUsage(dest, hostile), { frames: 4, bytes: 4 * size });
        assert.deepEqual(await s.senderUsage(dest, honest), { frames: 4, bytes: 4 * size });
        // The refusal used no position.
        assert.deepEqual(
          (await s.fetch(dest, 0, 20)).map((f) => f.position),
          [1, 2, 3, 4, 5, 6, 7, 8],
        );
        // One ack frees one frame of the share; RESUME's cumulative ack frees the rest.
        assert.equal(await s.ack(dest, hostileIds[0]!, 1), true);
        assert.deepEqual(await s.senderUsage(dest, hostile), { frames: 3, bytes: 3 * size });
        assert.equal((await s.enqueue(dest, more, deliver(dest, more, undefined, hostile), 0)).status, 'stored');
        assert.equal((await s.ackUpTo(dest, 9)).removed, 8);
        assert.deepEqual(await s.depth(dest), { frames: 0, bytes: 0 });
        assert.deepEqual(await s.senderUsage(dest, hostile), { frames: 0, bytes: 0 });
        assert.deepEqual(await s.senderUsage(dest, honest), { frames: 0, bytes: 0 });
        assert.equal(await redis.exists(s.keys(dest)[5]), 0, 'no sender left: the counts key is gone');
      });

      it('refuses QUEUE_SENDER_FULL beyond maxBytesPerSender, and the queue’s own limits still apply', async () => {
        const dest = hint();
        const size = deliver(dest, messageId()).length;
        const s = store({ maxFrames: 5, maxBytes: 100 * size, maxBytesPerSender: 3 * size });
        for (let i = 0; i < 3; i++) {
          const id = messageId();
          assert.equal((await s.enqueue(dest, id, deliver(dest, id, undefined, hostile), 0)).status, 'stored');
        }
        const id = messageId();
        const err = await rejectsWith(
          s.enqueue(dest, id, deliver(dest, id, new Uint8Array(0), hostile), 0),
          'QUEUE_SENDER_FULL',
        );
        assert.match(err.message, /bytes/);
        for (let i = 0; i < 2; i++) {
          const next = messageId();
          assert.equal((await s.enqueue(dest, next, deliver(dest, next, undefined, honest), 0)).status, 'stored');
        }
        const last = messageId();
        await rejectsWith(s.enqueue(dest, last, deliver(dest, last, undefined, honest), 0), 'QUEUE_FULL');
      });

      it('takes expired frames off their sender’s counts, whichever script purges them, and when Redis expires the keys', async () => {
        const s = store({ maxFrames: 100, maxFramesPerSender: 3 });
        const dest = hint();
        const size = deliver(dest, messageId()).length;
        const base = Date.now();
        // Expiry by the clock the test passes: two frames of 1 s, one of an hour.
        for (const ttl of [1, 1, 3600]) {
          const id = messageId();
          assert.equal((await s.enqueue(dest, id, deliver(dest, id, undefined, hostile), ttl, base)).status, 'stored');
        }
        const id = messageId();
        await rejectsWith(s.enqueue(dest, id, deliver(dest, id, undefined, hostile), 0, base), 'QUEUE_SENDER_FULL');
        // depth purges: the two expired frames leave the share.
        assert.deepEqual(await s.depth(dest, base + 1000), { frames: 1, bytes: size });
        assert.deepEqual(await s.senderUsage(dest, hostile), { frames: 1, bytes: size });
        // enqueue purges too, in the same step as its check.
        for (const ttl of [1, 1]) {
          const next = messageId();
          assert.equal(
            (await s.enqueue(dest, next, deliver(dest, next, undefined, hostile), ttl, base + 1000)).status,
            'stored',
          );
        }
        const [, , , , , senders] = s.keys(dest);
        const late = messageId();
        assert.equal(
          (await s.enqueue(dest, late, deliver(dest, late, undefined, hostile), 0, base + 2000)).status,
          'stored',
          'the purge inside enqueue freed the share before checking it',
        );
        assert.deepEqual(await s.senderUsage(dest, hostile), { frames: 2, bytes: 2 * size });
        // fetch purges as well.
        const [left] = await s.fetch(dest, 0, 10, base + 3_601_000);
        assert.equal(left?.position, 6);
        assert.deepEqual(await s.senderUsage(dest, hostile), { frames: 1, bytes: size });
        assert.equal((await s.ackUpTo(dest, 6)).removed, 1);
        assert.equal(await redis.exists(senders), 0);

        // Redis expiring the keys itself (nobody touched the queue): the counts go with the frames.
        const quiet = hint();
        const first = messageId();
        await s.enqueue(quiet, first, deliver(quiet, first, undefined, hostile), 1);
        const [z, , , , , quietSenders] = s.keys(quiet);
        assert.equal(await redis.pexpiretime(quietSenders), await redis.pexpiretime(z));
        await new Promise((r) => setTimeout(r, 1300));
        assert.equal(await redis.exists(z, quietSenders), 0);
        assert.deepEqual(await s.senderUsage(quiet, hostile), { frames: 0, bytes: 0 });
      });

      it('clears counts a relay of the earlier layout left too high once the queue is empty', async () => {
        // During a rolling upgrade an old relay removes frames (RESUME, expiry) without knowing s.
        const s = store({ maxFrames: 10, maxFramesPerSender: 2 });
        const dest = hint();
        const [z, d, e] = s.keys(dest);
        const ids = Array.from({ length: 2 }, messageId);
        for (const id of ids) await s.enqueue(dest, id, deliver(dest, id, undefined, hostile), 0);
        // What the earlier ackUpTo script did to position 1: z, d, e only.
        const gone = member(ids[0]!, hostile);
        await redis.multi().zrem(z, gone).hdel(d, gone).zrem(e, gone).exec();
        assert.deepEqual((await s.senderUsage(dest, hostile)).frames, 2, 'too high: one frame is gone');
        const next = messageId();
        await rejectsWith(s.enqueue(dest, next, deliver(dest, next, undefined, hostile), 0), 'QUEUE_SENDER_FULL');
        assert.equal(await s.ack(dest, ids[1]!, 2), true);
        assert.deepEqual(await s.senderUsage(dest, hostile), { frames: 0, bytes: 0 });
        assert.equal((await s.enqueue(dest, next, deliver(dest, next, undefined, hostile), 0)).status, 'stored');
      });

      it('keeps exact counts under concurrent stores, acks and expiry from two nodes', async () => {
        const patient = { commandTimeout: 30_000 };
        const options = storeOptions({ maxFrames: 2000, maxFramesPerSender: 150 });
        const nodeA = new DurableStore(await connect(server.url, patient), options);
        const nodeB = new DurableStore(await connect(server.url, patient), options);
        const dest = hint();
        const senders = Array.from({ length: 8 }, () => new Uint8Array(randomBytes(24)));
        const base = Date.now();
        // Every sender tries 200 frames (50 over its share), half of them expiring at base + 1 s.
        const attempts = senders.flatMap((source, k) =>
          Array.from({ length: 200 }, (_, i) => {
            const id = messageId();
            const node = (i + k) % 2 === 0 ? nodeA : nodeB;
            return node.enqueue(dest, id, deliver(dest, id, undefined, source), i % 2 === 0 ? 1 : 3600, base).then(
              (r) => r.status,
              (err: LibertariaError) => err.code,
            );
          }),
        );
        const outcomes = await Promise.all(attempts);
        assert.equal(outcomes.filter((o) => o === 'stored').length, 8 * 150);
        assert.equal(outcomes.filter((o) => o === 'QUEUE_SENDER_FULL').length, 8 * 50);
        for (const source of senders) assert.equal((await nodeA.senderUsage(dest, source)).frames, 150);
        // Acks of a third of the frames from one node while the other purges the expired ones.
        const frames = await nodeA.fetch(dest, 0, 2000, base);
        const acks = frames
          .filter((_, i) => i % 3 === 0)
          .map((f) => ({ messageId: f.messageId, position: f.position }));
        await Promise.all([nodeA.ackMany(dest, acks), nodeB.depth(dest, base + 1000)]);
        const left = await nodeB.fetch(dest, 0, 2000, base + 1000);
        let total = 0;
        for (const source of senders) {
          // The source hint sits at frame offset 6 + 24.
          const mine = left.filter((f) => f.frame.subarray(30, 54).equals(source));
          const usage = await nodeB.senderUsage(dest, source);
          assert.equal(usage.frames, mine.length);
          assert.equal(
            usage.bytes,
            mine.reduce((n, f) => n + f.frame.length, 0),
          );
          total += usage.frames;
        }
        assert.equal(total, left.length);
        assert.equal(
          (await nodeA.ackUpTo(dest, 1_000_000)).restarted,
          true,
          'beyond the last position: nothing removed',
        );
        assert.equal((await nodeA.ackUpTo(dest, frames.at(-1)!.position)).removed, left.length);
        assert.equal(await redis.exists(nodeA.keys(dest)[5]), 0);
      });
    });

    it('rejects malformed arguments with stable codes', async () => {
      const s = store();
      const dest = hint();
      const id = messageId();
      await rejectsWith(s.enqueue(new Uint8Array(23), id, deliver(dest, id), 0), 'INVALID_HINT');
      await rejectsWith(s.enqueue(dest, new Uint8Array(15), deliver(dest, id), 0), 'BAD_FIELD');
      await rejectsWith(s.enqueue(dest, id, deliver(dest, id).subarray(0, 98), 0), 'BAD_FIELD');
      await rejectsWith(s.enqueue(dest, id, deliver(hint(), id), 0), 'BAD_FIELD');
      await rejectsWith(s.enqueue(dest, id, deliver(dest, id), -1), 'BAD_FIELD');
      await rejectsWith(s.fetch(dest, -1, 10), 'BAD_FIELD');
      assert.deepEqual(await s.depth(dest), { frames: 0, bytes: 0 });
    });
  });
}
