/**
 * The pieces of the durable budgets (services/relay/src/budgets.ts) against a
 * real Redis, with the clock in the test's hands: the sliding-hour counters
 * shared by two nodes, refunds, the per-address key (IPv6 by /64), and the
 * per-node connection count. The relay-level behaviour (NACK codes, metrics,
 * an honest pair alongside) is in durable-budgets.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { addressKey, DurableBudgets, isOomError, KnownRecipients } from '../src/budgets.js';
import { ConnectionsPerAddress } from '../src/rate-limits.js';

describe('addressKey', () => {
  it('keeps IPv4, unmaps IPv4-mapped IPv6, and groups IPv6 by /64', () => {
    assert.equal(addressKey('127.0.0.2'), '127.0.0.2');
    assert.equal(addressKey('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(addressKey('0000:0000:0000:0000:0000:ffff:7f00:0002'), '127.0.0.2');
    assert.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8:1:2:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(addressKey('::1'), '0:0:0:0::/64');
    assert.equal(addressKey('unknown'), 'unknown');
  });
});

describe('ConnectionsPerAddress', () => {
  it('holds at most max per address and gives slots back', () => {
    const c = new ConnectionsPerAddress(2);
    assert.equal(c.tryTake('a'), true);
    assert.equal(c.tryTake('a'), true);
    assert.equal(c.tryTake('a'), false, 'the third connection of a is refused');
    assert.equal(c.tryTake('b'), true, 'another address is not affected');
    c.release('a');
    assert.equal(c.tryTake('a'), true, 'a released slot is free again');
    assert.equal(c.count('a'), 2);
  });
  it('0 is no limit', () => {
    const c = new ConnectionsPerAddress(0);
    for (let i = 0; i < 1000; i++) assert.equal(c.tryTake('a'), true);
  });
});

describe('isOomError', () => {
  it('finds the OOM reply as the error or its cause', () => {
    const oom = new Error("OOM command not allowed when used memory > 'maxmemory'.");
    assert.equal(isOomError(oom), true);
    assert.equal(isOomError(new Error('Redis did not confirm', { cause: oom })), true);
    assert.equal(isOomError(new Error('Connection is closed.')), false);
  });
});

describe('DurableBudgets (real Redis)', () => {
  let redis: RedisHandle;
  let a: Redis;
  let b: Redis;
  before(async () => {
    redis = await startRedis();
    a = new Redis(redis.url);
    b = new Redis(redis.url);
  });
  after(async () => {
    a.disconnect();
    b.disconnect();
    await redis.stop();
  });

  const WINDOW = 60_000;
  const budgets = (r: Redis, prefix: string, o: Partial<ConstructorParameters<typeof DurableBudgets>[1]> = {}) =>
    new DurableBudgets(r, {
      prefix,
      senderFrames: 0,
      senderBytes: 0,
      addressFrames: 0,
      addressBytes: 0,
      windowMs: WINDOW,
      ...o,
    });

  it('one sender budget holds across two nodes, exactly', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const nodes = [budgets(a, prefix, { senderFrames: 10 }), budgets(b, prefix, { senderFrames: 10 })];
    const sender = randomBytes(24);
    const t0 = 10 * WINDOW; // the start of a window: the previous one weighs fully, and is empty
    const results = await Promise.all(
      Array.from({ length: 25 }, (_, i) => nodes[i % 2]!.charge(sender, '10.0.0.1', 100, t0 + i)),
    );
    const charged = results.filter((r) => 'charge' in r).length;
    const refused = results.filter((r) => 'refused' in r && r.refused === 'sender_frames').length;
    assert.equal(charged, 10, `charged ${charged}, refused ${refused}`);
    assert.equal(refused, 15);
    // Both nodes now hold the refusal for a second without asking Redis.
    assert.equal(nodes[0]!.heldRefusal(sender, '10.0.0.1', t0 + 100), 'sender_frames');
    assert.equal(nodes[0]!.heldRefusal(sender, '10.0.0.1', t0 + 2_000), undefined);
    // Another sender has its own budget.
    const other = await nodes[0]!.charge(randomBytes(24), '10.0.0.1', 100, t0 + 2_000);
    assert.ok('charge' in other);
  });

  it('bytes are budgeted too, and a refund gives a charge back', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const node = budgets(a, prefix, { senderBytes: 1000 });
    const sender = randomBytes(24);
    const t0 = 20 * WINDOW;
    const first = await node.charge(sender, 'x', 600, t0);
    assert.ok('charge' in first);
    assert.deepEqual(await node.charge(sender, 'x', 600, t0 + 1), { refused: 'sender_bytes' });
    await node.refund(first.charge);
    const again = budgets(a, prefix, { senderBytes: 1000 }); // a node without the held refusal
    assert.ok('charge' in (await again.charge(sender, 'x', 600, t0 + 2)), 'the refunded bytes are free again');
  });

  it('a sender within its budget is refused when its address is over; the sender is not left charged', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const node = budgets(a, prefix, { senderFrames: 100, addressFrames: 3 });
    const t0 = 30 * WINDOW;
    for (let i = 0; i < 3; i++) assert.ok('charge' in (await node.charge(randomBytes(24), 'nat', 10, t0 + i)));
    const sender = randomBytes(24);
    assert.deepEqual(await node.charge(sender, 'nat', 10, t0 + 10), { refused: 'address_frames' });
    // One server: both subjects are decided in one step, so the sender was never charged for that frame.
    const key = `${prefix}:bud:{s:${sender.toString('hex')}}:${Math.floor((t0 + 10) / WINDOW)}`;
    assert.equal(Number((await a.hget(key, 'f')) ?? 0), 0, 'the sender is not charged');
  });

  it('with a call per subject (a Cluster), a frame the address refused is refunded to the sender', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const node = budgets(a, prefix, { senderFrames: 100, addressFrames: 3, callPerSubject: true });
    const t0 = 35 * WINDOW;
    for (let i = 0; i < 3; i++) assert.ok('charge' in (await node.charge(randomBytes(24), 'nat', 10, t0 + i)));
    const sender = randomBytes(24);
    assert.deepEqual(await node.charge(sender, 'nat', 10, t0 + 10), { refused: 'address_frames' });
    // The sender's call took the frame; its refund is asynchronous.
    const key = `${prefix}:bud:{s:${sender.toString('hex')}}:${Math.floor((t0 + 10) / WINDOW)}`;
    const deadline = Date.now() + 20_000;
    let frames: string | null = '1';
    while (Date.now() < deadline) {
      frames = await a.hget(key, 'f');
      if (frames === '0') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(frames, '0', `the sender's window holds ${frames} frames`);
  });

  it('the window slides: the last window counts by the share of it still inside the hour', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const sender = randomBytes(24);
    const t0 = 40 * WINDOW;
    const node = budgets(a, prefix, { senderFrames: 10 });
    for (let i = 0; i < 10; i++) assert.ok('charge' in (await node.charge(sender, 'x', 1, t0 + i)));
    // A quarter into the next window, 75 % of the last one still counts: 7 frames, so 3 more fit.
    const fresh = budgets(a, prefix, { senderFrames: 10 });
    const t1 = t0 + WINDOW + WINDOW / 4;
    const outcomes = [];
    for (let i = 0; i < 5; i++) outcomes.push(await fresh.charge(sender, 'x', 1, t1 + i));
    assert.deepEqual(
      outcomes.map((o) => ('charge' in o ? 'ok' : 'refused' in o ? o.refused : 'declined')),
      ['ok', 'ok', 'ok', 'sender_frames', 'sender_frames'],
    );
    // Counter keys expire on their own (two windows).
    const ttl = await a.pttl(`${prefix}:bud:{s:${sender.toString('hex')}}:${Math.floor(t1 / WINDOW)}`);
    assert.ok(ttl > 0 && ttl <= 2 * WINDOW, `ttl ${ttl}`);
  });
});

describe('DurableBudgets: one turn, one batch (real Redis)', () => {
  let redis: RedisHandle;
  let a: Redis;
  before(async () => {
    redis = await startRedis();
    a = new Redis(redis.url);
  });
  after(async () => {
    a.disconnect();
    await redis.stop();
  });

  const WINDOW = 60_000;
  const budgets = (r: Redis, prefix: string, o: Partial<ConstructorParameters<typeof DurableBudgets>[1]> = {}) =>
    new DurableBudgets(r, {
      prefix,
      senderFrames: 0,
      senderBytes: 0,
      addressFrames: 0,
      addressBytes: 0,
      windowMs: WINDOW,
      ...o,
    });
  const count = async (prefix: string, kind: 's' | 'a', id: string, t: number) => {
    const [f, b] = await a.hmget(`${prefix}:bud:{${kind}:${id}}:${Math.floor(t / WINDOW)}`, 'f', 'b');
    return { frames: Number(f ?? 0), bytes: Number(b ?? 0) };
  };
  /** Script calls Redis ran (EVALSHA and EVAL), from INFO commandstats. */
  const scriptCalls = async () => {
    const info = await a.info('commandstats');
    let n = 0;
    for (const m of info.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) n += Number(m[1]);
    return n;
  };
  const outcome = (r: Awaited<ReturnType<DurableBudgets['charge']>>) =>
    'charge' in r ? 'ok' : 'refused' in r ? r.refused : 'declined';

  for (const callPerSubject of [false, true]) {
    const how = callPerSubject ? 'a call per subject (Cluster)' : 'one call (one server)';
    it(`${how}: several senders in one turn; one over its budget in the middle is refused, the others pass; counts exact`, async () => {
      const prefix = `t${randomBytes(4).toString('hex')}`;
      const node = budgets(a, prefix, { senderFrames: 5, addressFrames: 100, callPerSubject });
      const t0 = 50 * WINDOW;
      const [s1, s2, s3] = [randomBytes(24), randomBytes(24), randomBytes(24)];
      // s2 has used 4 of its 5 frames (in earlier turns).
      for (let i = 0; i < 4; i++) assert.equal(outcome(await node.charge(s2, 'nat', 10, t0)), 'ok');
      const before = await scriptCalls();
      // One turn: s1, s2, s3, s1, s2, s3, s1, s2, s3 (s2's second and third are over).
      const order = [s1, s2, s3, s1, s2, s3, s1, s2, s3];
      const results = await Promise.all(order.map((s, i) => node.charge(s, 'nat', 10 + i, t0 + 1)));
      const calls = (await scriptCalls()) - before;
      assert.deepEqual(results.map(outcome), [
        'ok',
        'ok',
        'ok',
        'ok',
        'sender_frames',
        'ok',
        'ok',
        'sender_frames',
        'ok',
      ]);
      // One turn is one script call for all subjects, or one per subject (3 senders + 1 address).
      assert.equal(calls, callPerSubject ? 4 : 1, `script calls for the turn: ${calls}`);
      const hex = (s: Buffer) => s.toString('hex');
      assert.deepEqual(await count(prefix, 's', hex(s1), t0), { frames: 3, bytes: 10 + 13 + 16 });
      assert.deepEqual(await count(prefix, 's', hex(s3), t0), { frames: 3, bytes: 12 + 15 + 18 });
      assert.deepEqual(await count(prefix, 's', hex(s2), t0), { frames: 5, bytes: 4 * 10 + 11 });
      // The address holds exactly the frames charged (refunds on the per-subject path are asynchronous).
      const deadline = Date.now() + 20_000;
      let address = await count(prefix, 'a', 'nat', t0);
      while (address.frames !== 11 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
        address = await count(prefix, 'a', 'nat', t0);
      }
      assert.deepEqual(address, { frames: 11, bytes: 40 + 10 + 13 + 16 + 11 + 12 + 15 + 18 });
      // s2 is now held refused by this node; the others are not.
      assert.equal(node.heldRefusal(s2, 'nat', t0 + 2), 'sender_frames');
      assert.equal(node.heldRefusal(s1, 'nat', t0 + 2), undefined);
    });
  }

  it('a byte limit in the middle of a batch: a frame too large is refused, a smaller one after it still fits', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const node = budgets(a, prefix, { senderBytes: 1000 });
    const t0 = 60 * WINDOW;
    const s = randomBytes(24);
    const results = await Promise.all([400, 700, 500, 100, 1].map((bytes) => node.charge(s, 'x', bytes, t0)));
    assert.deepEqual(results.map(outcome), ['ok', 'sender_bytes', 'ok', 'ok', 'sender_bytes']);
    assert.deepEqual(await count(prefix, 's', s.toString('hex'), t0), { frames: 3, bytes: 1000 });
  });

  it('charges of different windows in one turn are decided in their own windows', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const node = budgets(a, prefix, { senderFrames: 2 });
    const s = randomBytes(24);
    const t0 = 70 * WINDOW;
    const t1 = 72 * WINDOW; // two windows later: nothing of t0's counts
    const results = await Promise.all([t0, t1, t0, t1, t0, t1].map((t) => node.charge(s, 'x', 1, t)));
    assert.deepEqual(results.map(outcome), ['ok', 'ok', 'ok', 'ok', 'sender_frames', 'sender_frames']);
    assert.equal((await count(prefix, 's', s.toString('hex'), t0)).frames, 2);
    assert.equal((await count(prefix, 's', s.toString('hex'), t1)).frames, 2);
  });

  it('Redis failing under a batch rejects every charge of it and leaves nothing charged', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const c = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, lazyConnect: true });
    await c.connect();
    const node = budgets(c, prefix, { senderFrames: 10, addressFrames: 10 });
    const t0 = 80 * WINDOW;
    const senders = [randomBytes(24), randomBytes(24), randomBytes(24)];
    const pending = senders.map((s) => node.charge(s, 'nat', 10, t0));
    // The connection goes before the turn's batch is sent.
    c.disconnect();
    const settled = await Promise.allSettled(pending);
    assert.deepEqual(
      settled.map((r) => r.status),
      ['rejected', 'rejected', 'rejected'],
    );
    for (const s of senders) assert.equal((await count(prefix, 's', s.toString('hex'), t0)).frames, 0);
    assert.equal((await count(prefix, 'a', 'nat', t0)).frames, 0);
    // The next turn on a working connection charges again from nothing.
    const again = budgets(a, prefix, { senderFrames: 10, addressFrames: 10 });
    assert.equal(outcome(await again.charge(senders[0]!, 'nat', 10, t0)), 'ok');
    assert.equal((await count(prefix, 'a', 'nat', t0)).frames, 1);
  });

  it('a call per subject: a subject failing mid-batch rejects its frames, and their other subject is refunded', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const node = budgets(a, prefix, { senderFrames: 10, addressFrames: 10, callPerSubject: true });
    const t0 = 90 * WINDOW;
    // The address's window is not a hash: its script call fails (WRONGTYPE), the senders' succeed.
    await a.set(`${prefix}:bud:{a:broken}:${Math.floor(t0 / WINDOW)}`, 'x');
    const [s1, s2] = [randomBytes(24), randomBytes(24)];
    const settled = await Promise.allSettled([
      node.charge(s1, 'fine', 10, t0),
      node.charge(s2, 'broken', 10, t0),
      node.charge(s1, 'fine', 10, t0),
    ]);
    assert.deepEqual(
      settled.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.equal((await count(prefix, 's', s1.toString('hex'), t0)).frames, 2);
    assert.equal((await count(prefix, 'a', 'fine', t0)).frames, 2);
    // s2's own charge was taken, then given back (asynchronously).
    const deadline = Date.now() + 20_000;
    let frames = -1;
    while (Date.now() < deadline) {
      frames = (await count(prefix, 's', s2.toString('hex'), t0)).frames;
      if (frames === 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(frames, 0, `s2's window holds ${frames} frames`);
  });

  it('refunds of one turn are summed per key', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const node = budgets(a, prefix, { senderFrames: 10 });
    const t0 = 100 * WINDOW;
    const s = randomBytes(24);
    const charges = await Promise.all(Array.from({ length: 6 }, () => node.charge(s, 'x', 7, t0)));
    const before = await scriptCalls();
    await Promise.all(charges.slice(0, 4).map((c) => ('charge' in c ? node.refund(c.charge) : undefined)));
    assert.equal((await scriptCalls()) - before, 1, 'one refund call for the key');
    assert.deepEqual(await count(prefix, 's', s.toString('hex'), t0), { frames: 2, bytes: 14 });
  });
});

describe('KnownRecipients', () => {
  it('answers from its cache, shares concurrent lookups, and forgets a no quickly', async () => {
    let lookups = 0;
    let published = false;
    const known = new KnownRecipients({
      lookup: async () => {
        lookups++;
        return published;
      },
      negativeMs: 50,
    });
    const hint = randomBytes(24);
    const [x, y] = [known.isKnown(hint), known.isKnown(hint)];
    assert.ok(x instanceof Promise && y instanceof Promise);
    assert.deepEqual(await Promise.all([x, y]), [false, false]);
    assert.equal(lookups, 1, 'one lookup for two concurrent misses');
    assert.equal(known.isKnown(hint), false, 'a fresh no comes from the cache');
    published = true;
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(await known.isKnown(hint), true, 'the no expired; the lookup now says yes');
    assert.equal(known.isKnown(hint), true);
    const other = randomBytes(24);
    known.markKnown(other);
    assert.equal(known.isKnown(other), true, 'a publication through this node is known at once');
  });
});
