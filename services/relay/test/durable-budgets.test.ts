/**
 * "Anyone can fill Redis" (issue 12, item 5; docs/relay.md#durable-budgets),
 * on real relay processes and real Redis, each attack with an honest pair
 * running alongside whose frames must all arrive:
 *
 * - a sender DID connected to two nodes stores no more than its hourly
 *   budget of frames (or bytes) across both: the rest is NACKed
 *   DURABLE_BUDGET_EXCEEDED and counted;
 * - many DIDs from one source address share the address's budget;
 * - one address holds at most RELAY_CONNECTIONS_PER_ADDRESS connections to a
 *   node (ERROR ADDRESS_CONNECTION_LIMIT), on TCP and WebSocket;
 * - with RELAY_DURABLE_REQUIRE_PREKEYS, durable frames to invented hints are
 *   refused (RECIPIENT_UNKNOWN) and those to peers with prekeys stored;
 * - a Redis near or at maxmemory (noeviction) refuses durable SENDs with
 *   STORE_FULL, while handshakes, fast frames, deliveries and ACKs keep
 *   working and /readyz stays 200.
 *
 * Other source addresses are other loopback addresses (127.0.0.2, …): every
 * 127.0.0.0/8 address reaches a relay listening on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity, routingHint } from '@libertaria/identity';
import {
  type DeliverFrame,
  errorCodeFromWire,
  maxBodySize,
  PREKEY_PUBLISH_HEADER_SIZE,
  SendFlags,
  splitPrekeyPublication,
} from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { metric } from '../../../test-support/metrics.js';
import { makePublication } from '../../../test-support/prekeys.js';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

/** Waits sized for a loaded 2-core machine. */
const WAIT_MS = 25_000;

/** An authenticated raw peer that records what the relay answers (codes as strings: they print in failures). */
class Peer {
  readonly acks = new Map<string, number>();
  readonly nacks = new Map<string, string>();
  readonly delivered: DeliverFrame[] = [];
  readonly errors: string[] = [];
  readonly other: string[] = [];
  pongs = 0;

  private constructor(
    readonly raw: RawPeer,
    readonly hint: Uint8Array,
    readonly identity: Ed25519Identity,
  ) {
    raw.onFrames = (frames) => {
      for (const f of frames) {
        if (f.type === 'ACK') this.acks.set(Buffer.from(f.messageId).toString('hex'), f.position);
        else if (f.type === 'NACK') this.nacks.set(Buffer.from(f.messageId).toString('hex'), errorCodeFromWire(f.code));
        else if (f.type === 'DELIVER') {
          this.delivered.push(f);
          if ((f.flags & SendFlags.DURABLE) !== 0)
            raw.send({ type: 'ACK', messageId: f.messageId, position: f.position });
        } else if (f.type === 'ERROR') this.errors.push(errorCodeFromWire(f.code));
        else if (f.type === 'PONG') this.pongs++;
        else this.other.push(f.type);
      }
    };
  }

  static async open(url: string, options: { localAddress?: string; identity?: Ed25519Identity } = {}): Promise<Peer> {
    const identity = options.identity ?? Ed25519Identity.generate();
    const raw = await RawPeer.connect(url, options);
    const welcome = await raw.authenticate(identity);
    return new Peer(raw, welcome.hint, identity);
  }

  /** A SEND; returns its message id (hex). */
  send(dest: Uint8Array, opts: { durable?: boolean; size?: number } = {}): string {
    const messageId = randomBytes(16);
    this.raw.send({
      type: 'SEND',
      dest,
      source: this.hint,
      sessionId: new Uint8Array(16),
      messageId,
      flags: opts.durable === false ? 0 : SendFlags.DURABLE,
      ttl: 0,
      position: 0,
      payload: randomBytes(opts.size ?? 64),
    });
    return messageId.toString('hex');
  }

  /** RESUME 0, then a PING barrier: durable frames flow to this peer from now on. */
  async resume(): Promise<void> {
    this.raw.send({ type: 'RESUME', lastAcked: 0 });
    await this.ping();
  }

  /** PING is a barrier: every ACK/NACK owed for earlier frames has arrived when its PONG does. */
  async ping(): Promise<void> {
    const before = this.pongs;
    this.raw.send({ type: 'PING', data: new Uint8Array(8) });
    await until(
      () => this.pongs > before,
      () => `no PONG; ${this.describe()}`,
    );
  }

  /** Waits for an ACK or NACK of every id. */
  async settle(ids: string[]): Promise<void> {
    await until(
      () => ids.every((id) => this.acks.has(id) || this.nacks.has(id)),
      () => `${ids.filter((id) => !this.acks.has(id) && !this.nacks.has(id)).length} of ${ids.length} unanswered`,
    );
  }

  nackCodes(ids: string[]): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const id of ids) {
      const code = this.nacks.get(id);
      if (code !== undefined) counts[code] = (counts[code] ?? 0) + 1;
    }
    return counts;
  }

  describe(): string {
    return `acks ${this.acks.size}, nacks ${JSON.stringify(this.nackCodes([...this.nacks.keys()]))}, delivered ${this.delivered.length}, errors [${this.errors.join(',')}], closed ${this.raw.closed}`;
  }

  close(): void {
    this.raw.close();
  }
}

async function until(cond: () => boolean, what: () => string, timeoutMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * The honest pair: Alice sends Bob `count` durable and `count` fast frames
 * (spread over `during`, the attack's duration); every one must arrive and
 * every durable one be ACKed. Alice and Bob may be on different nodes.
 */
async function honestPair(
  aliceUrl: string,
  bobUrl: string,
  during: () => Promise<void>,
  options: { count?: number; prepareBob?: (bob: Peer) => Promise<void> } = {},
): Promise<void> {
  const count = options.count ?? 20;
  const alice = await Peer.open(aliceUrl);
  const bob = await Peer.open(bobUrl);
  try {
    await options.prepareBob?.(bob);
    await bob.resume();
    const durable: string[] = [];
    const fast: string[] = [];
    let stop = false;
    const sending = (async () => {
      for (let i = 0; i < count && !stop; i++) {
        durable.push(alice.send(bob.hint));
        fast.push(alice.send(bob.hint, { durable: false }));
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    try {
      await during();
    } finally {
      await sending;
      stop = true;
    }
    await alice.settle(durable);
    const seen = () => new Set(bob.delivered.map((f) => Buffer.from(f.messageId).toString('hex')));
    const describe = () =>
      `honest pair: alice ${alice.describe()}; bob ${bob.describe()}; missing ${[...durable, ...fast].filter((id) => !seen().has(id)).length}`;
    assert.deepEqual(alice.nackCodes(durable), {}, describe());
    assert.equal(alice.acks.size, durable.length, describe());
    await until(() => [...durable, ...fast].every((id) => seen().has(id)), describe);
  } finally {
    alice.close();
    bob.close();
  }
}

async function metricSum(relays: RelayHandle[], name: string, labels: Record<string, string>): Promise<number> {
  let sum = 0;
  for (const r of relays) sum += await metric(r, name, labels);
  return sum;
}

describe('durable budgets per sender and per address, across two nodes', () => {
  let redis: RedisHandle;
  let a: RelayHandle;
  let b: RelayHandle;
  const env = {
    RELAY_DURABLE_FRAMES_PER_SENDER_PER_HOUR: '40',
    RELAY_DURABLE_BYTES_PER_SENDER_PER_HOUR: '200000',
    RELAY_DURABLE_FRAMES_PER_ADDRESS_PER_HOUR: '100',
    RELAY_CONNECTIONS_PER_ADDRESS: '8',
    // Idle attacker connections in the connection test wait in the handshake.
    RELAY_HANDSHAKE_TIMEOUT_MS: '60000',
  };
  before(async () => {
    redis = await startRedis();
    [a, b] = await Promise.all([startRelay({ redisUrl: redis.url, env }), startRelay({ redisUrl: redis.url, env })]);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  it('a sender on two nodes stores its frame budget once, not once per node', async () => {
    const identity = Ed25519Identity.generate();
    const onA = await Peer.open(a.tcpUrl, { identity, localAddress: '127.0.0.3' });
    const onB = await Peer.open(b.wsUrl, { identity, localAddress: '127.0.0.3' });
    const before = await metricSum([a, b], 'relay_budget_refused_total', { budget: 'sender_frames' });
    const sent: Array<[Peer, string]> = [];
    try {
      await honestPair(a.tcpUrl, b.tcpUrl, async () => {
        for (let i = 0; i < 60; i++) {
          const via = i % 2 === 0 ? onA : onB;
          sent.push([via, via.send(randomBytes(24))]); // invented hints: the abuse
          if (i % 10 === 9) await Promise.all([onA.ping(), onB.ping()]);
        }
      });
      await Promise.all([onA.ping(), onB.ping()]);
      const acked = sent.filter(([p, id]) => p.acks.has(id)).length;
      const refused = sent.filter(([p, id]) => p.nacks.get(id) === 'DURABLE_BUDGET_EXCEEDED').length;
      const seen = `acked ${acked}, refused ${refused}; A: ${onA.describe()}; B: ${onB.describe()}`;
      assert.equal(acked, 40, seen);
      assert.equal(refused, 20, seen);
      const counted = (await metricSum([a, b], 'relay_budget_refused_total', { budget: 'sender_frames' })) - before;
      assert.equal(counted, 20, `relay_budget_refused_total{budget="sender_frames"} rose by ${counted}; ${seen}`);
      assert.ok((await metricSum([a, b], 'relay_durable_sends_total', { result: 'DURABLE_BUDGET_EXCEEDED' })) >= 20);
    } finally {
      onA.close();
      onB.close();
    }
  });

  it('a sender stores its byte budget and no more', async () => {
    const attacker = await Peer.open(a.tcpUrl, { localAddress: '127.0.0.4' });
    try {
      const ids: string[] = [];
      await honestPair(a.tcpUrl, a.wsUrl, async () => {
        // 16 KiB payloads: 16,483-byte frames, 12 of which fit in 200,000 bytes.
        for (let i = 0; i < 20; i++) ids.push(attacker.send(randomBytes(24), { size: 16_384 }));
        await attacker.settle(ids);
      });
      const acked = ids.filter((id) => attacker.acks.has(id)).length;
      assert.equal(acked, 12, attacker.describe());
      assert.deepEqual(attacker.nackCodes(ids), { DURABLE_BUDGET_EXCEEDED: 8 }, attacker.describe());
      assert.ok((await metric(a, 'relay_budget_refused_total', { budget: 'sender_bytes' })) >= 8);
    } finally {
      attacker.close();
    }
  });

  it('many DIDs from one address share its budget, on both nodes; other addresses are not affected', async () => {
    const attackers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => Peer.open(i % 2 === 0 ? a.tcpUrl : b.tcpUrl, { localAddress: '127.0.0.2' })),
    );
    try {
      const sent: Array<[Peer, string]> = [];
      await honestPair(a.tcpUrl, b.wsUrl, async () => {
        for (let round = 0; round < 15; round++) {
          for (const p of attackers) sent.push([p, p.send(randomBytes(24))]); // 15 each: under the sender budget
          await Promise.all(attackers.map((p) => p.ping()));
        }
      });
      const acked = sent.filter(([p, id]) => p.acks.has(id)).length;
      const refused = sent.filter(([p, id]) => p.nacks.get(id) === 'DURABLE_BUDGET_EXCEEDED').length;
      assert.equal(acked, 100, `acked ${acked}, refused ${refused}`);
      assert.equal(refused, 50, `acked ${acked}, refused ${refused}`);
      assert.ok((await metricSum([a, b], 'relay_budget_refused_total', { budget: 'address_frames' })) >= 50);
    } finally {
      for (const p of attackers) p.close();
    }
  });

  /** Frames (or bytes) charged to a subject in Redis, over its windows (a test may cross a window's end). */
  async function charged(kind: 's' | 'a', id: string, field: 'f' | 'b' = 'f'): Promise<number> {
    const r = new Redis(redis.url);
    try {
      let n = 0;
      for (const key of await r.keys(`lr:bud:{${kind}:${id}}:*`)) n += Number((await r.hget(key, field)) ?? 0);
      return n;
    } finally {
      r.disconnect();
    }
  }
  const hex = (hint: Uint8Array) => Buffer.from(hint).toString('hex');

  it('several senders in one burst: the one over its budget is refused mid-batch, the others stored in order, once; budgets exact', async () => {
    const bob = await Peer.open(a.tcpUrl, { localAddress: '127.0.0.7' });
    const senders = await Promise.all([0, 1, 2].map(() => Peer.open(a.tcpUrl, { localAddress: '127.0.0.6' })));
    const [s1, s2, s3] = senders as [Peer, Peer, Peer];
    try {
      await bob.resume();
      // s2 has spent 35 of its 40 frames.
      const early = Array.from({ length: 35 }, () => s2.send(bob.hint));
      await s2.settle(early);
      // Then the three send at once, interleaved: their SENDs reach the relay in the same turns.
      const sent: Array<[Peer, string]> = [];
      for (let i = 0; i < 10; i++) for (const p of senders) sent.push([p, p.send(bob.hint)]);
      await Promise.all(senders.map((p) => p.ping()));
      const ids = (p: Peer) => sent.filter(([q]) => q === p).map(([, id]) => id);
      const answers = (p: Peer) => ids(p).map((id) => (p.acks.has(id) ? 'ACK' : (p.nacks.get(id) ?? 'none')));
      const ten = (what: string) => Array.from({ length: 10 }, () => what);
      assert.deepEqual(answers(s1), ten('ACK'), s1.describe());
      assert.deepEqual(answers(s3), ten('ACK'), s3.describe());
      // s2's first five fit its budget, the five after them do not.
      assert.deepEqual(
        answers(s2),
        [...ten('ACK').slice(5), ...ten('DURABLE_BUDGET_EXCEEDED').slice(5)],
        s2.describe(),
      );

      // Bob receives every acknowledged frame once, at the position its sender was told, positions 1..60 in order.
      const acked = new Map<string, number>();
      for (const p of senders) for (const [id, position] of p.acks) acked.set(id, position);
      assert.equal(acked.size, 60);
      await until(
        () => bob.delivered.length >= 60,
        () => `bob: ${bob.describe()}`,
      );
      await bob.ping();
      const delivered = bob.delivered.map((f) => [Buffer.from(f.messageId).toString('hex'), f.position] as const);
      assert.deepEqual(
        delivered.map(([, position]) => position),
        Array.from({ length: 60 }, (_, i) => i + 1),
      );
      assert.deepEqual(new Map(delivered), acked);
      // Each sender's frames in the order it sent them.
      for (const p of senders) {
        const order = [...(p === s2 ? early : []), ...ids(p)].filter((id) => acked.has(id));
        assert.deepEqual(
          delivered.filter(([id]) => order.includes(id)).map(([id]) => id),
          order,
        );
      }
      // Redis holds exactly the frames stored against each budget, once the node gave back what its
      // reserves held unused (budget-reserves.ts: after RESERVE_IDLE_MS without use).
      const counts = async () => [
        await charged('s', hex(s1.hint)),
        await charged('s', hex(s2.hint)),
        await charged('s', hex(s3.hint)),
        await charged('a', '127.0.0.6'),
      ];
      const deadline = Date.now() + WAIT_MS;
      let seen = await counts();
      while (seen.join() !== '10,40,10,60' && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        seen = await counts();
      }
      assert.deepEqual(seen, [10, 40, 10, 60], 'charged to s1, s2, s3 and their address');
    } finally {
      bob.close();
      for (const p of senders) p.close();
    }
  });

  it('Redis failing for one recipient mid-burst: its frames NACKed STORE_UNAVAILABLE and refunded; the others stored', async () => {
    const bob = await Peer.open(a.tcpUrl, { localAddress: '127.0.0.9' });
    const senders = await Promise.all([0, 1].map(() => Peer.open(a.tcpUrl, { localAddress: '127.0.0.8' })));
    const broken = randomBytes(24);
    const r = new Redis(redis.url);
    // A queue key of the wrong type: every enqueue script call for that recipient fails (WRONGTYPE).
    await r.set(`lr:q:{${broken.toString('hex')}}:m`, 'not a hash');
    r.disconnect();
    const before = await metric(a, 'relay_redis_errors_total', { operation: 'enqueue' });
    try {
      await bob.resume();
      const sent: Array<[Peer, string, boolean]> = [];
      for (let i = 0; i < 6; i++) {
        for (const p of senders) sent.push([p, p.send(i % 2 === 1 ? broken : bob.hint), i % 2 === 1]);
      }
      await Promise.all(senders.map((p) => p.ping()));
      for (const [p, id, toBroken] of sent) {
        if (toBroken) assert.equal(p.nacks.get(id), 'STORE_UNAVAILABLE', p.describe());
        else assert.ok(p.acks.has(id), p.describe());
      }
      await until(
        () => bob.delivered.length >= 6,
        () => `bob: ${bob.describe()}`,
      );
      assert.deepEqual(
        bob.delivered.map((f) => f.position),
        [1, 2, 3, 4, 5, 6],
      );
      assert.ok((await metric(a, 'relay_redis_errors_total', { operation: 'enqueue' })) - before >= 6);
      // The failed frames' charges were given back (asynchronously): only the stored ones count.
      const counts = async () => [
        await charged('s', hex(senders[0]!.hint)),
        await charged('s', hex(senders[1]!.hint)),
        await charged('a', '127.0.0.8'),
      ];
      const deadline = Date.now() + WAIT_MS;
      let seen = await counts();
      while (JSON.stringify(seen) !== JSON.stringify([3, 3, 6]) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        seen = await counts();
      }
      assert.deepEqual(seen, [3, 3, 6]);
    } finally {
      bob.close();
      for (const p of senders) p.close();
    }
  });

  it('one address holds at most RELAY_CONNECTIONS_PER_ADDRESS connections to a node', async () => {
    const before = await metric(a, 'relay_budget_refused_total', { budget: 'connections_per_address' });
    const held: RawPeer[] = [];
    try {
      // Eight connections that never finish their handshake: four TCP, four WebSocket.
      for (let i = 0; i < 8; i++)
        held.push(await RawPeer.connect(i % 2 ? a.wsUrl : a.tcpUrl, { localAddress: '127.0.0.5' }));
      await honestPair(a.tcpUrl, a.wsUrl, async () => {
        for (const url of [a.tcpUrl, a.wsUrl]) {
          const extra = await RawPeer.connect(url, { localAddress: '127.0.0.5' });
          const error = await extra.next('ERROR');
          assert.equal(errorCodeFromWire(error.code), 'ADDRESS_CONNECTION_LIMIT', `on ${url}`);
          assert.equal(error.flags & 1, 1, 'fatal');
          await until(
            () => extra.closed,
            () => `still open on ${url}`,
          );
        }
        // The same address on the other node is counted apart (the limit is per node).
        const elsewhere = await Peer.open(b.tcpUrl, { localAddress: '127.0.0.5' });
        elsewhere.close();
      });
      assert.equal((await metric(a, 'relay_budget_refused_total', { budget: 'connections_per_address' })) - before, 2);
      // A closed connection gives its slot back.
      held.pop()!.close();
      const deadline = Date.now() + WAIT_MS;
      let again: Peer | undefined;
      let lastError = '';
      while (again === undefined && Date.now() < deadline) {
        try {
          again = await Peer.open(a.tcpUrl, { localAddress: '127.0.0.5' });
        } catch (err) {
          lastError = String(err);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      assert.ok(again !== undefined, `no slot came free: ${lastError}`);
      again.close();
    } finally {
      for (const p of held) p.close();
    }
  });
});

describe('RELAY_DURABLE_REQUIRE_PREKEYS', () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  before(async () => {
    redis = await startRedis();
    relay = await startRelay({ redisUrl: redis.url, env: { RELAY_DURABLE_REQUIRE_PREKEYS: 'true' } });
  });
  after(async () => {
    await relay?.stop();
    await redis?.stop();
  });

  async function publishPrekeys(peer: Peer): Promise<void> {
    const parts = splitPrekeyPublication(
      makePublication(peer.identity, { oneTimeX25519: 2, oneTimeKem: 2 }),
      maxBodySize(65536) - PREKEY_PUBLISH_HEADER_SIZE,
    );
    for (const publication of parts) {
      peer.raw.send({ type: 'PREKEY_PUBLISH', requestId: randomBytes(16), flags: 0, publication });
    }
    await until(
      () => peer.other.filter((t) => t === 'PREKEY_STATUS').length >= parts.length,
      () => `prekeys not published: ${peer.describe()}, other ${peer.other.join(',')}`,
    );
  }

  it('stores durable frames for peers with prekeys only; invented hints get RECIPIENT_UNKNOWN', async () => {
    const attacker = await Peer.open(relay.tcpUrl);
    const carol = await Peer.open(relay.wsUrl);
    try {
      const ids: string[] = [];
      // Bob, like any SDK client with sessions, publishes prekeys: his durable frames are stored.
      await honestPair(
        relay.tcpUrl,
        relay.wsUrl,
        async () => {
          for (let i = 0; i < 30; i++) ids.push(attacker.send(randomBytes(24)));
          await attacker.settle(ids);
        },
        { prepareBob: publishPrekeys },
      );
      assert.deepEqual(attacker.nackCodes(ids), { RECIPIENT_UNKNOWN: 30 }, attacker.describe());
      assert.ok((await metric(relay, 'relay_budget_refused_total', { budget: 'recipient_prekeys' })) >= 30);
      // Carol is refused until she publishes; then stored at once (this node learns it from the publication).
      const refused = attacker.send(carol.hint);
      await attacker.settle([refused]);
      assert.equal(attacker.nacks.get(refused), 'RECIPIENT_UNKNOWN');
      await publishPrekeys(carol);
      await carol.resume();
      const stored = attacker.send(carol.hint);
      await attacker.settle([stored]);
      assert.ok(attacker.acks.has(stored), attacker.describe());
      await until(
        () => carol.delivered.some((f) => Buffer.from(f.messageId).toString('hex') === stored),
        () => carol.describe(),
      );
    } finally {
      attacker.close();
      carol.close();
    }
  });
});

/** Key of a recipient's queue ZSET (services/relay/src/durable-store.ts, default prefix). */
const queueKey = (hint: Uint8Array) => `lr:q:{${Buffer.from(hint).toString('hex')}}:z`;

/**
 * Fills Redis with durable frames to invented hints (the abuse) from one
 * connection, a window at a time, until the relay answers STORE_FULL;
 * returns every code seen (to tell STORE_FULL from STORE_UNAVAILABLE).
 */
async function fillUntilFull(url: string): Promise<{ stored: number; codes: Record<string, number> }> {
  const attacker = await Peer.open(url, { localAddress: '127.0.0.6' });
  const ids: string[] = [];
  try {
    for (let round = 0; round < 2000; round++) {
      const batch = Array.from({ length: 8 }, () => attacker.send(randomBytes(24), { size: 32_768 }));
      ids.push(...batch);
      await attacker.settle(batch);
      if (batch.some((id) => attacker.nacks.has(id))) break;
    }
    return { stored: ids.filter((id) => attacker.acks.has(id)).length, codes: attacker.nackCodes(ids) };
  } finally {
    attacker.close();
  }
}

async function readyz(relay: RelayHandle): Promise<string> {
  const res = await fetch(`${relay.adminUrl}/readyz`);
  return `${res.status} ${(await res.text()).trim()}`;
}

for (const scenario of [
  { name: 'at the reserve (RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT=60)', percent: '60' },
  { name: "at maxmemory itself (percent 100: Redis' OOM)", percent: '100' },
]) {
  describe(`Redis full, ${scenario.name}`, () => {
    let redis: RedisHandle;
    let relay: RelayHandle;
    let inspect: Redis;
    before(async () => {
      redis = await startRedis({ args: ['--maxmemory', '24mb', '--maxmemory-policy', 'noeviction'] });
      inspect = new Redis(redis.url);
      relay = await startRelay({
        redisUrl: redis.url,
        env: {
          RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT: scenario.percent,
          RELAY_REDIS_MEMORY_CHECK_MS: '100',
          // Budgets off: this is the memory reserve's test.
          RELAY_DURABLE_FRAMES_PER_SENDER_PER_HOUR: '0',
          RELAY_DURABLE_BYTES_PER_SENDER_PER_HOUR: '0',
          RELAY_DURABLE_FRAMES_PER_ADDRESS_PER_HOUR: '0',
          RELAY_DURABLE_BYTES_PER_ADDRESS_PER_HOUR: '0',
        },
      });
    });
    after(async () => {
      inspect?.disconnect();
      await relay?.stop();
      await redis?.stop();
    });

    it('durable SENDs get STORE_FULL; handshakes, fast frames, deliveries, ACKs and /readyz keep working', async () => {
      // Before the fill: an honest pair that has talked (its membrane allow is cached per connection),
      // and a durable frame waiting for Dave, who is offline.
      const alice = await Peer.open(relay.tcpUrl);
      const bob = await Peer.open(relay.wsUrl);
      const dave = Ed25519Identity.generate();
      let daveConn: Peer | undefined;
      try {
        await bob.resume();
        const warm = alice.send(bob.hint, { durable: false });
        await until(
          () => bob.delivered.some((f) => Buffer.from(f.messageId).toString('hex') === warm),
          () => bob.describe(),
        );
        const daveHint = routingHint(dave.publicKey);
        const forDave = alice.send(daveHint);
        await alice.settle([forDave]);
        assert.ok(alice.acks.has(forDave), alice.describe());

        const fill = await fillUntilFull(relay.tcpUrl);
        const info = await inspect.info('memory');
        const used = Number(/used_memory:(\d+)/.exec(info)?.[1]);
        const seen = `stored ${fill.stored} frames, codes ${JSON.stringify(fill.codes)}, used_memory ${used}`;
        assert.deepEqual(Object.keys(fill.codes), ['STORE_FULL'], seen);
        assert.ok(fill.stored > 100, seen);
        if (scenario.percent !== '100') {
          // The reserve held: Redis stopped short of maxmemory, with room left for everything else.
          assert.ok(used < 0.9 * 24 * 1024 * 1024, `the reserve did not hold: ${seen}`);
        }

        // A new handshake (presence must be written), and Dave's.
        const carol = await Peer.open(relay.tcpUrl);
        carol.close();
        daveConn = await Peer.open(relay.wsUrl, { identity: dave });
        // Dave gets the frame stored before the fill and acknowledges it: the queue empties.
        await daveConn.resume();
        await until(
          () => daveConn!.delivered.some((f) => Buffer.from(f.messageId).toString('hex') === forDave),
          () => `dave: ${daveConn!.describe()}`,
        );
        await daveConn.ping();
        const deadline = Date.now() + WAIT_MS;
        while ((await inspect.zcard(queueKey(daveHint))) > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.equal(await inspect.zcard(queueKey(daveHint)), 0, 'the ACK removed the frame');

        // Fast frames still flow; a durable one is refused with STORE_FULL, not STORE_UNAVAILABLE.
        const fast = Array.from({ length: 10 }, () => alice.send(bob.hint, { durable: false }));
        await until(
          () => fast.every((id) => bob.delivered.some((f) => Buffer.from(f.messageId).toString('hex') === id)),
          () => `fast frames: bob ${bob.describe()}; alice ${alice.describe()}`,
        );
        const durable = alice.send(bob.hint);
        await alice.settle([durable]);
        assert.equal(alice.nacks.get(durable), 'STORE_FULL', alice.describe());

        assert.equal(await readyz(relay), '200 ready');
        assert.ok((await metric(relay, 'relay_budget_refused_total', { budget: 'redis_memory' })) >= 2);
        assert.equal(await metric(relay, 'relay_durable_store_full', {}), 1);
        assert.ok((await metric(relay, 'relay_redis_maxmemory_bytes', {})) === 24 * 1024 * 1024);
      } finally {
        alice.close();
        bob.close();
        daveConn?.close();
      }
    });
  });
}
