/**
 * MultipathSession (docs/multipath.md): the inner frame, the reorder buffer
 * and the schedulers on their own, then real sessions: a private Redis, real
 * relay processes (one killed with SIGKILL per "lose a path" test), a TCP
 * proxy of our own that adds latency or cuts a path, real PQXDH and Double
 * Ratchet sealing with one SessionManager per peer shared by all its paths.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  decodeMultipathFrame,
  encodeMultipathFrame,
  type InboundMessage,
  InMemorySessionStore,
  MULTIPATH_HEADER_SIZE,
  type MultipathEvents,
  MultipathInbound,
  type MultipathMessage,
  MultipathSession,
  type MultipathStrategy,
  PathScheduler,
  type PathView,
  RelayClient,
  ReorderBuffer,
  type ReorderTimers,
  SessionManager,
  toHex,
} from '@libertaria/client';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import { LibertariaError, RelayError } from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { clientState, str, text, within } from '../../../test-support/client-harness.js';
import { type LatencyProxy, startLatencyProxy } from '../../../test-support/latency-proxy.js';
import { repoPath } from '../../../test-support/paths.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

function code(expected: string): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof LibertariaError, `expected a LibertariaError, got ${String(error)}`);
    assert.equal(error.code, expected, (error as Error).message);
    return true;
  };
}

/** A virtual clock: timers fire when the test advances time past them. */
class ManualTimers implements ReorderTimers {
  readonly pending = new Map<number, { due: number; callback: () => void }>();
  #next = 0;
  #now = 0;
  now(): number {
    return this.#now;
  }
  set(callback: () => void, ms: number): unknown {
    const id = ++this.#next;
    this.pending.set(id, { due: this.#now + ms, callback });
    return id;
  }
  clear(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      let first: [number, { due: number; callback: () => void }] | undefined;
      for (const entry of this.pending)
        if (entry[1].due <= until && (!first || entry[1].due < first[1].due)) first = entry;
      if (first === undefined) break;
      this.pending.delete(first[0]);
      this.#now = Math.max(this.#now, first[1].due);
      first[1].callback();
    }
    this.#now = until;
  }
}

describe('multipath parts', () => {
  describe('inner frame', () => {
    it('round-trips stream id, sequence number and payload', () => {
      const streamId = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
      for (const seq of [0, 1, 0xffffffff, 0x1_0000_0000, Number.MAX_SAFE_INTEGER]) {
        const bytes = encodeMultipathFrame(streamId, seq, text('payload'));
        assert.equal(bytes.length, MULTIPATH_HEADER_SIZE + 7);
        const frame = decodeMultipathFrame(bytes);
        assert.equal(frame.seq, seq);
        assert.deepEqual([...frame.streamId], [...streamId]);
        assert.equal(str(frame.payload), 'payload');
      }
      assert.equal(decodeMultipathFrame(encodeMultipathFrame(streamId, 7, new Uint8Array(0))).payload.length, 0);
    });

    it('refuses malformed headers with stable codes', () => {
      const good = encodeMultipathFrame(new Uint8Array(8), 5, text('x'));
      assert.throws(() => decodeMultipathFrame(good.subarray(0, MULTIPATH_HEADER_SIZE - 1)), code('TRUNCATED'));
      assert.throws(() => decodeMultipathFrame(Uint8Array.of(2, ...good.subarray(1))), code('UNSUPPORTED_VERSION'));
      assert.throws(() => decodeMultipathFrame(Uint8Array.of(1, 1, ...good.subarray(2))), code('BAD_FIELD'));
      const tooBig = Uint8Array.from(good);
      tooBig[10] = 0x00;
      tooBig[11] = 0x20; // high word 0x0020_0000: seq ≥ 2^53
      assert.throws(() => decodeMultipathFrame(tooBig), code('BAD_FIELD'));
      assert.throws(() => encodeMultipathFrame(new Uint8Array(7), 0, text('x')), code('BAD_FIELD'));
      assert.throws(() => encodeMultipathFrame(new Uint8Array(8), -1, text('x')), code('BAD_FIELD'));
      assert.throws(() => encodeMultipathFrame(new Uint8Array(8), 2 ** 53, text('x')), code('BAD_FIELD'));
    });
  });

  describe('reorder buffer', () => {
    function buffer(options: ConstructorParameters<typeof ReorderBuffer>[0] = {}) {
      const out: Array<[string, boolean]> = [];
      const timers = new ManualTimers();
      const rb = new ReorderBuffer<string>(options, (item, late) => out.push([item, late]), timers);
      return { rb, out, timers };
    }

    it('releases in order, holding frames that arrive early', () => {
      const { rb, out, timers } = buffer();
      rb.push('s', 2, 'c');
      rb.push('s', 1, 'b');
      assert.deepEqual(out, []);
      assert.equal(timers.pending.size, 1, 'a gap starts a timer');
      rb.push('s', 0, 'a');
      rb.push('s', 3, 'd');
      assert.deepEqual(out, [
        ['a', false],
        ['b', false],
        ['c', false],
        ['d', false],
      ]);
      assert.equal(timers.pending.size, 0, 'no gap, no timer');
      assert.equal(rb.stats.reordered, 2);
      assert.equal(rb.stats.buffered, 0);
      assert.equal(rb.expected('s'), 4);
    });

    it('gives a gap up once a frame has waited gapTimeoutMs, then releases the late frame flagged', () => {
      const { rb, out, timers } = buffer({ gapTimeoutMs: 50 });
      rb.push('s', 0, 'a');
      rb.push('s', 2, 'c');
      timers.advance(30);
      rb.push('s', 4, 'e'); // arrives later: its own deadline is at 80
      timers.advance(20); // t = 50: c has waited 50 ms, gives up seq 1; e waits for 3
      assert.deepEqual(out, [
        ['a', false],
        ['c', false],
      ]);
      rb.push('s', 1, 'b');
      assert.deepEqual(out.at(-1), ['b', true]);
      timers.advance(29);
      assert.equal(out.length, 3, 'e has waited 49 ms');
      timers.advance(1);
      assert.deepEqual(out.at(-1), ['e', false]);
      assert.equal(timers.pending.size, 0);
      assert.deepEqual(rb.stats, { buffered: 0, late: 1, skipped: 2, gapTimeouts: 2, overflows: 0, reordered: 2 });
    });

    it('gives many gaps up with one timeout: no frame waits longer than gapTimeoutMs', () => {
      const { rb, out, timers } = buffer({ gapTimeoutMs: 100 });
      for (const seq of [2, 4, 6, 8, 10]) rb.push('s', seq, `f${seq}`);
      timers.advance(99);
      assert.equal(out.length, 0);
      timers.advance(1);
      assert.deepEqual(
        out.map(([item, late]) => `${item}${late ? '!' : ''}`),
        ['f2', 'f4', 'f6', 'f8', 'f10'],
      );
      assert.equal(rb.stats.skipped, 6);
      assert.equal(rb.stats.gapTimeouts, 1);
      assert.equal(rb.expected('s'), 11);
    });

    it('gives a gap up at once when a stream buffers more than maxBufferedFrames', () => {
      const { rb, out } = buffer({ maxBufferedFrames: 3 });
      for (const seq of [1, 2, 3]) rb.push('s', seq, `f${seq}`);
      assert.equal(out.length, 0);
      rb.push('s', 5, 'f5');
      assert.deepEqual(
        out.map(([item]) => item),
        ['f1', 'f2', 'f3'],
      );
      assert.equal(rb.stats.overflows, 1);
      assert.equal(rb.stats.buffered, 1);
      assert.equal(rb.expected('s'), 4);
    });

    it('keeps streams apart and flushes the least recently used one beyond maxStreams', () => {
      const { rb, out } = buffer({ maxStreams: 2 });
      rb.push('a', 1, 'a1');
      rb.push('b', 0, 'b0');
      rb.push('c', 0, 'c0'); // evicts a: its buffered a1 is released
      assert.deepEqual(
        out.map(([item]) => item),
        ['b0', 'a1', 'c0'],
      );
      assert.equal(rb.expected('a'), undefined);
      assert.equal(rb.expected('b'), 1);
    });

    it('validates its limits', () => {
      for (const bad of [{ maxBufferedFrames: 0 }, { gapTimeoutMs: -1 }, { maxStreams: 1.5 }]) {
        assert.throws(() => new ReorderBuffer(bad, () => {}), code('BAD_FIELD'));
      }
    });

    it('uses real timers by default', async () => {
      const out: string[] = [];
      const rb = new ReorderBuffer<string>({ gapTimeoutMs: 20 }, (item) => out.push(item));
      rb.push('s', 1, 'b');
      // Wait for the release itself: a fixed 60 ms sleep left 40 ms for a timer a loaded machine may run late.
      const deadline = Date.now() + 15_000;
      while (out.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(out, ['b']);
    });
  });

  describe('inbound merge', () => {
    const sender = Ed25519Identity.generate();
    const streamId = Uint8Array.from([9, 9, 9, 9, 9, 9, 9, 9]);
    /** A copy as a path client yields it; `acks` counts its ack() calls. */
    function copy(id: number, seq: number, durable = true, acks = { n: 0 }): InboundMessage & { acks: { n: number } } {
      const messageId = new Uint8Array(16);
      messageId[15] = id;
      return {
        messageId,
        from: sender.did,
        fromHint: sender.hint,
        to: sender.did,
        payload: encodeMultipathFrame(streamId, seq, text(`m${id}`)),
        durable,
        position: durable ? id : 0,
        sessionId: new Uint8Array(16),
        sealed: false,
        acks,
        ack: () => {
          acks.n++;
          return Promise.resolve();
        },
      };
    }
    function inbound(options: Partial<ConstructorParameters<typeof MultipathInbound>[0]> = {}) {
      const errors: string[] = [];
      const ib = new MultipathInbound({
        capacity: 100,
        dedupeSize: 100,
        open: (c) => c.payload,
        onError: (error, path) => errors.push(`${path}:${error.code}`),
        ...options,
      });
      const it = ib.messages()[Symbol.asyncIterator]();
      const next = async () => (await within(it.next(), 1000, 'a message')).value as MultipathMessage;
      return { ib, errors, next };
    }

    it('delivers the first copy, hides the others and acknowledges every copy on ack()', async () => {
      const { ib, next } = inbound();
      const a = copy(1, 0);
      const b = copy(1, 0);
      assert.equal(ib.add('p0', a), 'first');
      assert.equal(ib.add('p1', b), 'duplicate');
      const m = await next();
      assert.equal(str(m.payload), 'm1');
      assert.equal(m.path, 'p0');
      assert.equal(a.acks.n + b.acks.n, 0, 'nothing acknowledged before the application');
      const c = copy(1, 0);
      ib.add('p2', c);
      await m.ack();
      await m.ack();
      assert.deepEqual([a.acks.n, b.acks.n, c.acks.n], [1, 1, 1]);
      const late = copy(1, 0);
      assert.equal(ib.add('p1', late), 'duplicate');
      assert.equal(late.acks.n, 1, 'a copy after ack() is acknowledged at once');
      assert.deepEqual({ ...ib.stats, reorder: undefined }, { delivered: 1, duplicates: 3, reorder: undefined });
      ib.close();
    });

    it('tells two senders’ messages with the same messageId apart (dedupe per sender)', async () => {
      const { ib, next } = inbound();
      const other = Ed25519Identity.generate();
      const mine = copy(1, 0);
      const theirs = {
        ...copy(1, 0),
        from: other.did,
        fromHint: other.hint,
        payload: encodeMultipathFrame(Uint8Array.from([7, 7, 7, 7, 7, 7, 7, 7]), 0, text('theirs')),
      };
      assert.equal(ib.add('p0', mine), 'first');
      assert.equal(ib.add('p0', theirs), 'first', 'another sender’s message, not a copy');
      const got = [str((await next()).payload), str((await next()).payload)].sort();
      assert.deepEqual(got, ['m1', 'theirs']);
      ib.close();
    });

    it('acknowledges a first copy that does not open (and its copies), reports it and delivers the next', async () => {
      const { ib, errors, next } = inbound({
        reorder: { gapTimeoutMs: 50 },
        open: (c) => {
          if (c.messageId[15] === 1) throw new RelayError('DECRYPT_FAILED', 'tampered');
          return c.payload;
        },
      });
      const bad = copy(1, 0);
      const badCopy = copy(1, 0);
      ib.add('p0', bad);
      ib.add('p1', badCopy);
      ib.add('p0', copy(2, 1));
      const m = await next();
      assert.equal(str(m.payload), 'm2');
      assert.equal(m.late, false, 'seq 1 waited for the refused seq 0 (one gap timeout), then went out in order');
      assert.deepEqual([bad.acks.n, badCopy.acks.n], [1, 1]);
      assert.deepEqual(errors, ['p0:DECRYPT_FAILED']);
      ib.close();
    });

    it('remembers dedupeSize acknowledged ids: a copy older than that window is delivered again', async () => {
      const { ib, next } = inbound({ dedupeSize: 2, reorder: { gapTimeoutMs: 0 } });
      for (const id of [1, 2, 3]) {
        ib.add('p0', copy(id, id - 1));
        await (await next()).ack();
      }
      assert.equal(ib.add('p1', copy(3, 2)), 'duplicate');
      assert.equal(ib.add('p1', copy(1, 0)), 'first', 'id 1 left the window');
      const again = await next();
      assert.equal(str(again.payload), 'm1');
      assert.equal(again.late, true);
      ib.close();
    });

    it('is full while capacity messages wait, and has room again once one is taken', async () => {
      const { ib, next } = inbound({ capacity: 2 });
      ib.add('p0', copy(1, 0, false));
      ib.add('p0', copy(2, 1, false));
      assert.equal(ib.full, true);
      let woke = false;
      const room = ib.waitForRoom().then(() => {
        woke = true;
      });
      await new Promise((r) => setImmediate(r));
      assert.equal(woke, false);
      await next();
      await room;
      assert.equal(ib.full, false);
      ib.close(new RelayError('CLIENT_CLOSED', 'closed'));
      assert.equal(ib.full, false, 'closed: never full');
    });
  });

  describe('schedulers', () => {
    const view = (connected: boolean, outstanding = 0, weight = 1): PathView => ({ connected, outstanding, weight });
    const picks = (s: PathScheduler, paths: PathView[], n: number) => Array.from({ length: n }, () => s.pick(paths));

    it('failover: the first connected path, in order', () => {
      const s = new PathScheduler('failover');
      assert.deepEqual(picks(s, [view(true), view(true)], 3), [0, 0, 0]);
      assert.equal(s.pick([view(false), view(true), view(true)]), 1);
      assert.equal(s.pick([view(false), view(false)]), undefined);
      assert.equal(s.pick([view(true), view(true)], new Set([0])), 1);
    });

    it('load-balance: fewest outstanding sends, round robin among equals', () => {
      const s = new PathScheduler('load-balance');
      assert.deepEqual(picks(s, [view(true), view(true), view(true)], 6), [0, 1, 2, 0, 1, 2]);
      assert.equal(s.pick([view(true, 5), view(true, 2), view(true, 9)]), 1);
      assert.deepEqual(picks(s, [view(true), view(false), view(true)], 4), [2, 0, 2, 0]);
    });

    it('aggregate: shares by weight, evenly interleaved', () => {
      const s = new PathScheduler('aggregate');
      const paths = [view(true, 0, 3), view(true, 100, 1)];
      const chosen = picks(s, paths, 8);
      assert.deepEqual(chosen, [0, 0, 1, 0, 0, 0, 1, 0], 'queues do not matter, weights do');
      assert.deepEqual(picks(new PathScheduler('aggregate'), [view(true), view(false), view(true)], 4), [0, 2, 0, 2]);
    });
  });

  it('bundles for a browser with no Node module (like the client it drives)', async () => {
    const { build } = await import('esbuild');
    const result = await build({
      stdin: {
        contents: "export { MultipathSession } from './multipath.js';\n",
        resolveDir: repoPath('shared/client/src'),
        loader: 'ts',
      },
      bundle: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      logLevel: 'silent',
    });
    assert.equal(result.errors.length, 0);
    const bundled = result.outputFiles[0]!.text;
    assert.doesNotMatch(bundled, /require\(["']node:|from ["']node:/);
    assert.ok(bundled.includes('MultipathSession'), 'the bundle holds the session');
  });

  describe('MultipathSession options', () => {
    const me = Ed25519Identity.generate();
    const client = (identity = me, extra: Partial<ConstructorParameters<typeof RelayClient>[0]> = {}) =>
      new RelayClient({
        relays: ['ws://127.0.0.1:1'],
        identity,
        ...(extra.sessions === undefined ? { sealing: false } : {}),
        ...extra,
      });

    it('refuses what cannot work', () => {
      const sessions = new SessionManager({
        identity: me,
        store: new InMemorySessionStore(),
        provider: nodeCrypto,
        verify: verifyEd25519,
      });
      const other = Ed25519Identity.generate();
      const cases: Array<[string, () => unknown]> = [
        ['no paths', () => new MultipathSession({ paths: [], strategy: 'failover' })],
        [
          'unknown strategy',
          () => new MultipathSession({ paths: [{ client: client() }], strategy: 'fastest' as MultipathStrategy }),
        ],
        [
          'two identities',
          () =>
            new MultipathSession({ paths: [{ client: client() }, { client: client(other) }], strategy: 'failover' }),
        ],
        [
          'a sealing path client',
          () => new MultipathSession({ paths: [{ client: client(me, { sessions }) }], strategy: 'failover' }),
        ],
        [
          'one client twice',
          () => {
            const c = client();
            return new MultipathSession({ paths: [{ client: c }, { client: c }], strategy: 'failover' });
          },
        ],
        [
          'duplicate names',
          () =>
            new MultipathSession({
              paths: [
                { client: client(), name: 'x' },
                { client: client(), name: 'x' },
              ],
              strategy: 'failover',
            }),
        ],
        [
          'a zero weight',
          () => new MultipathSession({ paths: [{ client: client(), weight: 0 }], strategy: 'aggregate' }),
        ],
        [
          'a SessionManager of another identity',
          () =>
            new MultipathSession({
              paths: [{ client: client(other) }],
              strategy: 'failover',
              sessions,
            }),
        ],
        [
          'inboundBufferSize 0',
          () => new MultipathSession({ paths: [{ client: client() }], strategy: 'failover', inboundBufferSize: 0 }),
        ],
        [
          'dedupeSize 0',
          () => new MultipathSession({ paths: [{ client: client() }], strategy: 'failover', dedupeSize: 0 }),
        ],
        [
          'a bad reorder limit',
          () =>
            new MultipathSession({
              paths: [{ client: client() }],
              strategy: 'failover',
              reorder: { gapTimeoutMs: -5 },
            }),
        ],
      ];
      for (const [what, make] of cases) assert.throws(make, code('BAD_FIELD'), what);
    });

    it('gives up when every path gave up: connect(), pending sends and messages() fail with the code', async () => {
      const dead = (name: string) => ({
        name,
        client: client(me, { reconnect: { maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 20 } }),
      });
      const mp = new MultipathSession({ paths: [dead('a'), dead('b')], strategy: 'load-balance' });
      const failed: string[] = [];
      mp.events.on('path-failed', ({ path, error }) => failed.push(`${path}:${error.code}`));
      mp.events.on('error', () => {});
      const connecting = mp.connect();
      // Nothing is connected: a durable send waits for a path instead of failing at once.
      const pending = mp.send(me.did, text('waits'));
      await assert.rejects(within(connecting, 20_000, 'give up'), code('CONNECTION_FAILED'));
      await assert.rejects(pending, code('CONNECTION_FAILED'));
      assert.deepEqual(failed.sort(), ['a:CONNECTION_FAILED', 'b:CONNECTION_FAILED']);
      await assert.rejects(mp.messages()[Symbol.asyncIterator]().next(), code('CONNECTION_FAILED'));
      await assert.rejects(mp.send(me.did, text('x')), code('CONNECTION_FAILED'));
      await assert.rejects(mp.send('not a did', text('x')), code('CONNECTION_FAILED'));
    });

    it('refuses a recipient that is not a DID, a messageId of the wrong size and a bad ttl', async () => {
      const mp = new MultipathSession({ paths: [{ client: client() }], strategy: 'failover' });
      void mp.connect().catch(() => {});
      await assert.rejects(mp.send('not a did', text('x')), code('INVALID_DID'));
      await assert.rejects(mp.send(me.did, text('x'), { messageId: new Uint8Array(3) }), code('BAD_FIELD'));
      await assert.rejects(mp.send(me.did, text('x'), { ttlSeconds: -1 }), code('BAD_FIELD'));
      await mp.close();
    });

    it('refuses sends before connect() and after close()', async () => {
      const mp = new MultipathSession({ paths: [{ client: client() }], strategy: 'failover' });
      await assert.rejects(mp.send(me.did, text('x')), code('CONNECTION_FAILED'));
      await mp.close();
      await assert.rejects(mp.send(me.did, text('x')), code('CLIENT_CLOSED'));
      await assert.rejects(mp.connect(), code('CLIENT_CLOSED'));
    });
  });
});

// ---------------------------------------------------------------------------

interface Peer {
  id: Ed25519Identity;
  mp: MultipathSession;
  sessions: SessionManager | undefined;
  clients: RelayClient[];
  errors: MultipathEvents['error'][];
  events: Array<[string, unknown]>;
}

interface PathSpec {
  url: string;
  name?: string;
  weight?: number;
}

describe('MultipathSession against real relays', { timeout: 180_000 }, () => {
  let redis: RedisHandle;
  let r1: RelayHandle;
  let r2: RelayHandle;
  const relays: RelayHandle[] = [];
  const peers: Peer[] = [];
  const proxies: LatencyProxy[] = [];

  before(async () => {
    redis = await startRedis();
    [r1, r2] = await Promise.all([startRelay({ redisUrl: redis.url }), startRelay({ redisUrl: redis.url })]);
    relays.push(r1, r2);
  });

  after(async () => {
    await Promise.all(peers.map((p) => p.mp.close()));
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(relays.map((r) => r.stop()));
    await redis?.stop();
  });

  async function peer(
    paths: PathSpec[],
    strategy: MultipathStrategy,
    options: { sealed?: boolean; id?: Ed25519Identity; gapTimeoutMs?: number; sessions?: SessionManager } = {},
  ): Promise<Peer> {
    const id = options.id ?? Ed25519Identity.generate();
    const sessions =
      options.sealed === false
        ? undefined
        : (options.sessions ??
          new SessionManager({
            identity: id,
            store: new InMemorySessionStore(),
            provider: nodeCrypto,
            verify: verifyEd25519,
            oneTimePrekeys: 5,
          }));
    const clients = paths.map(
      (p) =>
        new RelayClient({
          relays: [p.url],
          identity: id,
          sealing: false,
          reconnect: { initialDelayMs: 50, maxDelayMs: 300 },
          ackTimeoutMs: 5000,
        }),
    );
    const mp = new MultipathSession({
      strategy,
      ...(sessions ? { sessions } : {}),
      reorder: { gapTimeoutMs: options.gapTimeoutMs ?? 5000 },
      paths: paths.map((p, i) => ({
        name: p.name ?? `p${i}`,
        ...(p.weight !== undefined ? { weight: p.weight } : {}),
        client: clients[i]!,
      })),
    });
    const p: Peer = { id, mp, sessions, clients, errors: [], events: [] };
    mp.events.on('error', (e) => p.errors.push(e));
    for (const name of ['path-up', 'path-down', 'path-failed', 'switch', 'rerouted'] as const) {
      mp.events.on(name, (e) => p.events.push([name, e]));
    }
    peers.push(p);
    // Deadlines here are sized for a loaded 2-core CI machine; each reports what it saw.
    await within(mp.connect(), 20_000, 'multipath connect', () => mp.stats);
    await within(
      waitFor(() => mp.stats.paths.every((s) => s.connected)),
      20_000,
      'every path up',
      () => mp.stats.paths,
    );
    return p;
  }

  async function waitFor(condition: () => boolean, stepMs = 20): Promise<void> {
    while (!condition()) await new Promise((r) => setTimeout(r, stepMs));
  }

  /** A receiver's prekeys are on the relays (sealed senders fetch them). */
  async function published(p: Peer): Promise<void> {
    const client = p.clients.find((c) => c.connected);
    assert.ok(client, 'a connected path');
    if (p.sessions !== undefined)
      await within(p.sessions.ensurePublished(client), 20_000, 'prekeys published', clientState(client));
  }

  async function receive(p: Peer, n: number, ms = 20_000): Promise<MultipathMessage[]> {
    const out: MultipathMessage[] = [];
    const it = p.mp.messages()[Symbol.asyncIterator]();
    await within(
      (async () => {
        while (out.length < n) {
          const r = await it.next();
          assert.ok(!r.done, 'messages() ended');
          out.push(r.value);
          await r.value.ack();
        }
      })(),
      ms,
      `${n} messages`,
      () => ({ got: out.map((m) => str(m.payload)), stats: p.mp.stats }),
    );
    await it.return?.();
    return out;
  }

  function assertInOrderOnce(got: MultipathMessage[], prefix: string, n: number): void {
    assert.equal(got.length, n);
    assert.deepEqual(
      got.map((m) => str(m.payload)),
      Array.from({ length: n }, (_, i) => `${prefix}${i}`),
    );
    assert.deepEqual(
      got.map((m) => m.seq),
      Array.from({ length: n }, (_, i) => got[0]!.seq + i),
    );
    assert.equal(new Set(got.map((m) => toHex(m.messageId))).size, n, 'each message once');
    assert.ok(got.every((m) => !m.late));
  }

  /** Durable queue length of a peer in Redis (prefix lr). */
  async function queueDepth(p: Peer): Promise<number> {
    const r = new Redis(redis.url);
    try {
      return await r.zcard(`lr:q:{${toHex(p.id.hint)}}:z`);
    } finally {
      r.disconnect();
    }
  }

  /** Waits until a peer's durable queue in Redis is empty (every copy acknowledged reaches Redis asynchronously). */
  async function emptyQueue(p: Peer): Promise<void> {
    let depth = -1;
    await within(
      (async () => {
        for (;;) {
          depth = await queueDepth(p);
          if (depth === 0) return;
          await new Promise((r) => setTimeout(r, 50));
        }
      })(),
      20_000,
      'an empty queue',
      () => ({ depth, clients: p.clients.map((c) => c.stats) }),
    );
  }

  /** Sends `n` messages `${prefix}${i}` at once (all in flight together); resolves with the results. */
  function sendAll(from: Peer, to: Peer, prefix: string, n: number, durable = true) {
    return Promise.all(
      Array.from({ length: n }, (_, i) => from.mp.send(to.id.did, text(`${prefix}${i}`), { durable })),
    );
  }

  const sentOn = (p: Peer) => Object.fromEntries(p.mp.stats.paths.map((s) => [s.name, s.sent]));

  it('failover: everything on the primary while it is up; durable frames arrive on every path, delivered once, in order', async () => {
    const bob = await peer(
      [
        { url: r1.tcpUrl, name: 'r1-tcp' },
        { url: r2.wsUrl, name: 'r2-ws' },
      ],
      'failover',
    );
    await published(bob);
    const alice = await peer(
      [
        { url: r1.wsUrl, name: 'primary' },
        { url: r2.tcpUrl, name: 'backup' },
      ],
      'failover',
    );
    assert.ok(alice.mp.sealed);
    const results = await within(sendAll(alice, bob, 'f', 100), 20_000, 'ACKs', () => alice.mp.stats);
    assert.ok(results.every((r) => r.path === 'primary' && r.position !== undefined));
    assert.deepEqual(sentOn(alice), { primary: 100, backup: 0 });
    const got = await receive(bob, 100);
    assertInOrderOnce(got, 'f', 100);
    assert.equal(got[0]!.from, alice.id.did);
    // Both of bob's connections read the one durable queue: the copies were hidden and acknowledged too.
    await within(
      waitFor(() => bob.mp.stats.duplicates >= 100 - 5),
      20_000,
      'the copies',
      () => bob.mp.stats,
    );
    const received = bob.mp.stats.paths.map((s) => s.received + s.duplicates);
    assert.ok(
      received.every((n) => n >= 90),
      `each path carried (nearly) every durable frame: ${received}`,
    );
    await within(
      waitFor(() => bob.clients.every((c) => c.stats.unackedInbound === 0)),
      20_000,
      'every copy acknowledged',
      () => bob.clients.map((c) => c.stats),
    );
    await emptyQueue(bob);
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  });

  it('failover: switches to the backup when the primary is cut and back when it returns', async () => {
    const proxy = await startLatencyProxy({ target: r1.ports.ws });
    proxies.push(proxy);
    const bob = await peer([{ url: r1.tcpUrl }, { url: r2.wsUrl }], 'failover');
    await published(bob);
    const alice = await peer(
      [
        { url: `ws://127.0.0.1:${proxy.port}`, name: 'primary' },
        { url: r2.tcpUrl, name: 'backup' },
      ],
      'failover',
    );
    const phase = async (prefix: string, expected: string) => {
      const results = await within(sendAll(alice, bob, prefix, 30), 20_000, `${prefix} ACKs`, () => alice.mp.stats);
      assert.deepEqual(new Set(results.map((r) => r.path)), new Set([expected]), prefix);
    };
    await phase('a', 'primary');
    proxy.cut();
    await within(
      waitFor(() => !alice.clients[0]!.connected),
      20_000,
      'primary down',
      clientState(alice.clients[0]!),
    );
    await phase('b', 'backup');
    proxy.restore();
    await within(
      waitFor(() => alice.clients[0]!.connected),
      20_000,
      'primary back',
      clientState(alice.clients[0]!),
    );
    await phase('c', 'primary');
    const switches = alice.events.filter(([name]) => name === 'switch').map(([, e]) => e);
    assert.deepEqual(switches.slice(-2), [
      { from: 'primary', to: 'backup' },
      { from: 'backup', to: 'primary' },
    ]);
    const got = await receive(bob, 90);
    assert.deepEqual(
      got.map((m) => str(m.payload)),
      [
        ...Array.from({ length: 30 }, (_, i) => `a${i}`),
        ...Array.from({ length: 30 }, (_, i) => `b${i}`),
        ...Array.from({ length: 30 }, (_, i) => `c${i}`),
      ],
    );
    assert.deepEqual(bob.errors, []);
  });

  it('load-balance uses every path: fast frames round robin, durable ones by the shortest queue', async () => {
    const bob = await peer([{ url: r1.tcpUrl }, { url: r2.wsUrl }], 'load-balance');
    await published(bob);
    const alice = await peer(
      [
        { url: r1.wsUrl, name: 'r1-ws' },
        { url: r1.tcpUrl, name: 'r1-tcp' },
        { url: r2.wsUrl, name: 'r2-ws' },
      ],
      'load-balance',
    );
    // One durable message first, so the session exists before fast frames (a fast frame is not retried).
    await alice.mp.send(bob.id.did, text('hello'));
    assert.equal(str((await receive(bob, 1))[0]!.payload), 'hello');
    const sentBefore = sentOn(alice);
    const fast = await sendAll(alice, bob, 'x', 90, false);
    const fastCounts: Record<string, number> = {};
    for (const r of fast) fastCounts[r.path] = (fastCounts[r.path] ?? 0) + 1;
    assert.deepEqual({ ...fastCounts }, { 'r1-ws': 30, 'r1-tcp': 30, 'r2-ws': 30 });
    assertInOrderOnce(await receive(bob, 90), 'x', 90);

    const durable = await within(sendAll(alice, bob, 'd', 150), 20_000, 'ACKs', () => alice.mp.stats);
    const acked: Record<string, number> = {};
    for (const r of durable) acked[r.path] = (acked[r.path] ?? 0) + 1;
    const sentAfter = sentOn(alice);
    for (const name of ['r1-ws', 'r1-tcp', 'r2-ws']) {
      const n = sentAfter[name]! - sentBefore[name]! - fastCounts[name]!;
      assert.ok(n >= 30, `${name} carried ${n} of 150 durable frames (${JSON.stringify(acked)})`);
    }
    assertInOrderOnce(await receive(bob, 150), 'd', 150);
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  });

  it("a NACK rejects the send with the relay's code; the receiver skips that sequence number after one gap timeout", async () => {
    const bob = await peer([{ url: r1.tcpUrl }, { url: r2.wsUrl }], 'load-balance', { gapTimeoutMs: 200 });
    await published(bob);
    const alice = await peer([{ url: r1.wsUrl }, { url: r2.tcpUrl }], 'load-balance');
    await alice.mp.send(bob.id.did, text('n-first'));
    // Above RELAY_QUEUE_TTL_SECONDS (30 days): every relay refuses it.
    await assert.rejects(alice.mp.send(bob.id.did, text('n-refused'), { ttlSeconds: 2_592_001 }), code('TTL_TOO_LONG'));
    await alice.mp.send(bob.id.did, text('n-after'));
    const got = await receive(bob, 2);
    assert.deepEqual(
      got.map((m) => [str(m.payload), m.seq, m.late]),
      [
        ['n-first', 0, false],
        ['n-after', 2, false],
      ],
    );
    assert.equal(bob.mp.stats.reorder.skipped, 1);
    assert.equal(alice.mp.stats.pendingSends, 0);
  });

  it('a durable send made while no path is connected goes out on the first path that comes up', async () => {
    const proxy = await startLatencyProxy({ target: r1.ports.tcp });
    proxies.push(proxy);
    const bob = await peer([{ url: r2.wsUrl }], 'failover');
    await published(bob);
    const alice = await peer([{ url: `tcp://127.0.0.1:${proxy.port}`, name: 'only' }], 'failover');
    await alice.mp.send(bob.id.did, text('w-first'));
    proxy.cut();
    await within(
      waitFor(() => !alice.mp.connected),
      20_000,
      'no path',
      () => alice.mp.stats,
    );
    let settled = false;
    const sending = alice.mp.send(bob.id.did, text('w-offline')).finally(() => {
      settled = true;
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(settled, false, 'waits for a path');
    assert.equal(alice.mp.stats.pendingSends, 1);
    proxy.restore();
    const result = await within(sending, 20_000, 'ACK after the path returned', () => alice.mp.stats);
    assert.equal(result.path, 'only');
    assert.deepEqual(
      (await receive(bob, 2)).map((m) => str(m.payload)),
      ['w-first', 'w-offline'],
    );
  });

  it('stops reading its paths while inboundBufferSize messages wait for the application, then delivers the rest in order', async () => {
    const bobId = Ed25519Identity.generate();
    const bobSessions = new SessionManager({
      identity: bobId,
      store: new InMemorySessionStore(),
      provider: nodeCrypto,
      verify: verifyEd25519,
      oneTimePrekeys: 5,
    });
    const clients = [r1.tcpUrl, r2.wsUrl].map(
      (url) =>
        new RelayClient({
          relays: [url],
          identity: bobId,
          sealing: false,
          reconnect: { initialDelayMs: 50, maxDelayMs: 300 },
        }),
    );
    const mp = new MultipathSession({
      strategy: 'load-balance',
      sessions: bobSessions,
      inboundBufferSize: 4,
      paths: clients.map((client) => ({ client })),
    });
    const bob: Peer = { id: bobId, mp, sessions: bobSessions, clients, errors: [], events: [] };
    peers.push(bob);
    await within(mp.connect(), 20_000, 'connect', () => mp.stats);
    await within(
      waitFor(() => clients.every((c) => c.connected)),
      20_000,
      'paths up',
      () => mp.stats.paths,
    );
    await published(bob);
    // One sending path: the frames are stored, and reach bob, in sequence order, so nothing waits in
    // the reorder buffer (a run released from there may overshoot the bound by up to its size).
    const alice = await peer([{ url: r1.wsUrl }], 'failover');
    await within(sendAll(alice, bob, 'b', 40), 20_000, 'ACKs', () => alice.mp.stats);
    await new Promise((r) => setTimeout(r, 500));
    // At most the buffer, plus one message per path read before it noticed.
    assert.equal(mp.stats.reorder.reordered, 0);
    assert.ok(mp.stats.delivered <= 4 + 2, `released ${mp.stats.delivered} while the application read nothing`);
    assertInOrderOnce(await receive(bob, 40), 'b', 40);
  });

  for (const durable of [false, true]) {
    it(`aggregate: splits by weight over paths of different latency; the receiver reorders (${durable ? 'durable' : 'fast'})`, async () => {
      const slow = await startLatencyProxy({ target: r2.ports.tcp, delayMs: 40 });
      proxies.push(slow);
      const bob = await peer([{ url: r1.tcpUrl }, { url: r2.wsUrl }], 'aggregate');
      await published(bob);
      const alice = await peer(
        [
          { url: r1.wsUrl, name: 'fast', weight: 2 },
          { url: `tcp://127.0.0.1:${slow.port}`, name: 'slow', weight: 1 },
        ],
        'aggregate',
      );
      await alice.mp.send(bob.id.did, text('hello'));
      await receive(bob, 1);
      const reorderedBefore = bob.mp.stats.reorder.reordered;
      const n = 150;
      const results = await within(sendAll(alice, bob, 'g', n, durable), 20_000, 'sends', () => alice.mp.stats);
      const counts: Record<string, number> = {};
      for (const r of results) counts[r.path] = (counts[r.path] ?? 0) + 1;
      assert.deepEqual(counts, { fast: 100, slow: 50 });
      const got = await receive(bob, n);
      assertInOrderOnce(got, 'g', n);
      const reorder = bob.mp.stats.reorder;
      assert.ok(
        reorder.reordered - reorderedBefore > 10,
        `frames arrived out of order and waited: ${reorder.reordered - reorderedBefore}`,
      );
      assert.equal(reorder.late, 0);
      assert.equal(reorder.skipped, 0);
      if (!durable) {
        // A fast frame reaches bob through the node it was sent to: both of bob's paths carried some.
        const firsts = bob.mp.stats.paths.map((p) => p.received);
        assert.ok(
          firsts.every((x) => x >= 40),
          `first copies per bob path: ${firsts}`,
        );
      }
      assert.deepEqual(alice.errors, []);
      assert.deepEqual(bob.errors, []);
    });
  }

  it('aggregate: fast frames lost with a cut path cost the receiver about one gap timeout, then it goes on in order', async (t) => {
    // Long enough that one timeout and ten in a row (10 s) stay far apart even
    // when a loaded machine delays timers and frames by a second or two.
    const gapTimeoutMs = 1000;
    const slow = await startLatencyProxy({ target: r2.ports.tcp, delayMs: 300 });
    proxies.push(slow);
    const bob = await peer([{ url: r1.tcpUrl }, { url: r2.wsUrl }], 'aggregate', { gapTimeoutMs });
    await published(bob);
    const alice = await peer(
      [
        { url: r1.wsUrl, name: 'direct' },
        { url: `tcp://127.0.0.1:${slow.port}`, name: 'slow' },
      ],
      'aggregate',
    );
    await alice.mp.send(bob.id.did, text('hello'));
    await receive(bob, 1);
    const sent = await sendAll(alice, bob, 'L', 20, false);
    // The slow path's frames are still inside the proxy (300 ms): cutting it loses them.
    slow.cut();
    const started = performance.now();
    const lostSeqs = sent.filter((r) => r.path === 'slow').map((r) => r.seq);
    assert.equal(lostSeqs.length, 10);
    const it = bob.mp.messages()[Symbol.asyncIterator]();
    const got: MultipathMessage[] = [];
    while (got.length < 10) got.push((await within(it.next(), 20_000, 'more frames')).value as MultipathMessage);
    const waited = performance.now() - started;
    await it.return?.();
    const seqs = got.map((m) => m.seq);
    assert.deepEqual(
      seqs,
      sent.filter((r) => r.path === 'direct').map((r) => r.seq),
      'the direct path’s frames, in order',
    );
    assert.ok(got.every((m) => !m.late));
    assert.equal(bob.mp.stats.reorder.skipped, 10);
    // Frames that arrived together are released together: timeouts ≤ gaps, and the whole wait is about one.
    assert.ok(bob.mp.stats.reorder.gapTimeouts >= 1 && bob.mp.stats.reorder.gapTimeouts <= 10);
    // Held back by the gaps for one timeout (frame seq 1 is lost), not for ten.
    assert.ok(
      waited >= gapTimeoutMs - 50 && waited < 4 * gapTimeoutMs,
      `the last frame came ${waited.toFixed(0)} ms after the sends`,
    );
    t.diagnostic(
      `10 of 20 fast frames lost: the other 10 were all delivered, in order, ${waited.toFixed(0)} ms after the sends ` +
        `(gapTimeoutMs ${gapTimeoutMs}); reorder ${JSON.stringify(bob.mp.stats.reorder)}`,
    );
  });

  for (const strategy of ['failover', 'load-balance', 'aggregate'] as const) {
    it(`${strategy}: SIGKILL of a relay mid-stream loses no durable frame and delivers each once, in order`, async (t) => {
      const doomed = await startRelay({ redisUrl: redis.url });
      relays.push(doomed);
      // 20 ms each way in front of the doomed node, cut at the moment it is killed: whatever was on
      // that path's wire dies with it (frames not yet stored, and ACKs of frames already stored).
      const slow = await startLatencyProxy({ target: doomed.ports.ws, delayMs: 20 });
      proxies.push(slow);
      // Both peers lose a path: alice's first (the failover primary), bob's first.
      const bob = await peer(
        [
          { url: doomed.tcpUrl, name: 'doomed' },
          { url: r2.wsUrl, name: 'r2' },
        ],
        strategy,
      );
      await published(bob);
      const alice = await peer(
        [
          { url: `ws://127.0.0.1:${slow.port}`, name: 'doomed' },
          { url: r1.tcpUrl, name: 'r1' },
        ],
        strategy,
      );
      await alice.mp.send(bob.id.did, text('hello'));
      await receive(bob, 1);
      const n = 400;
      let acked = 0;
      const sends = Array.from({ length: n }, (_, i) =>
        alice.mp.send(bob.id.did, text(`k${i}`)).then((r) => {
          acked++;
          return r;
        }),
      );
      const receiving = receive(bob, n, 40_000);
      await within(
        waitFor(() => acked >= 40 && alice.mp.stats.paths[0]!.outstanding >= 1, 1),
        20_000,
        'the first ACKs, and frames in flight on the doomed path',
        () => ({ acked, paths: alice.mp.stats.paths }),
      );
      const inFlight = alice.mp.stats.paths[0]!.outstanding;
      const ackedAtKill = acked;
      const killedAt = performance.now();
      slow.cut();
      doomed.kill('SIGKILL');
      const results = await within(Promise.all(sends), 30_000, 'every durable send ACKed', () => ({
        acked,
        paths: alice.mp.stats.paths,
      }));
      const allAckedMs = performance.now() - killedAt;
      assert.equal(results.length, n);
      const rerouted = alice.mp.stats.paths.reduce((a, p) => a + p.rerouted, 0);
      const onDoomed = alice.mp.stats.paths[0]!.sent;
      assert.ok(onDoomed > 0, 'the doomed path carried frames');
      assert.ok(
        rerouted >= inFlight && rerouted > 0,
        `every frame in flight on the dead path (${inFlight}) was written again elsewhere (${rerouted})`,
      );
      const got = await receiving;
      assertInOrderOnce(got, 'k', n);
      assert.ok(alice.events.some(([name, e]) => name === 'path-down' && (e as { path: string }).path === 'doomed'));
      // Nothing is left behind, and nothing comes again.
      await emptyQueue(bob);
      assert.equal(bob.mp.stats.delivered, n + 1);
      t.diagnostic(
        `${strategy}: ${n} durable sends, ${ackedAtKill} ACKed before the kill; ${inFlight} in flight on the killed path, ` +
          `${rerouted} re-sent elsewhere; every send ACKed ${allAckedMs.toFixed(0)} ms after SIGKILL; ` +
          `sent per path ${JSON.stringify(sentOn(alice))}; bob: ${bob.mp.stats.delivered} delivered, ` +
          `${bob.mp.stats.duplicates} copies hidden, reorder ${JSON.stringify(bob.mp.stats.reorder)}`,
      );
      // Losing the path is not an error anyone has to handle: no error events at all.
      assert.deepEqual(alice.errors, []);
      assert.deepEqual(bob.errors, []);
    });
  }

  it('seals the multipath header: relays and Redis never see the stream id or the payload (an unsealed control does show both)', async () => {
    const dump = async (): Promise<Buffer> => {
      const r = new Redis(redis.url);
      try {
        const parts: Buffer[] = [];
        for (const key of await r.keysBuffer('*')) {
          parts.push(key);
          const type = await r.type(key);
          if (type === 'hash') for (const v of Object.values(await r.hgetallBuffer(key))) parts.push(v);
          else if (type === 'zset') parts.push(...(await r.zrangeBuffer(key, 0, -1)));
          else if (type === 'string') parts.push((await r.getBuffer(key)) ?? Buffer.alloc(0));
        }
        return Buffer.concat(parts);
      } finally {
        r.disconnect();
      }
    };
    for (const sealed of [true, false]) {
      const bobId = Ed25519Identity.generate();
      const marker = `MARKER-${sealed}-${toHex(bobId.hint).slice(0, 8)}`;
      // Bob publishes prekeys, then goes offline: the frames wait in Redis.
      const bob0 = await peer([{ url: r1.tcpUrl }], 'failover', { id: bobId, sealed });
      await published(bob0);
      await bob0.mp.close();
      const alice = await peer([{ url: r1.wsUrl }, { url: r2.tcpUrl }], 'load-balance', { sealed });
      await within(
        Promise.all([0, 1, 2].map((i) => alice.mp.send(bobId.did, text(`${marker}-${i}`)))),
        20_000,
        'ACKs',
        () => alice.mp.stats,
      );
      const stored = await dump();
      // Bob comes back with the same SessionManager (its prekey secrets) on another node.
      const bob = await peer([{ url: r2.wsUrl }], 'failover', {
        id: bobId,
        sealed,
        ...(bob0.sessions ? { sessions: bob0.sessions } : {}),
      });
      const got = await receive(bob, 3);
      assert.deepEqual(
        got.map((m) => str(m.payload)).sort(),
        [0, 1, 2].map((i) => `${marker}-${i}`),
      );
      const streamId = Buffer.from(got[0]!.streamId, 'hex');
      assert.equal(stored.includes(marker), !sealed, `payload visible in Redis: ${!sealed}`);
      assert.equal(stored.includes(streamId), !sealed, `stream id visible in Redis: ${!sealed}`);
    }
  });
});
