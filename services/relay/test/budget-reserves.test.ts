/**
 * A node's budget reserves (services/relay/src/budget-reserves.ts) against a
 * real Redis, the clock in the test's hands: a steady sender is admitted from
 * its reserve without a Redis call per frame, the budget is never exceeded
 * and its last eighth is charged frame by frame (exact, on one node and on
 * two), refunds go back into the reserve, and what a reserve holds unused
 * goes back to Redis when idle, at a window change and at close.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { BudgetReserves, RESERVE_IDLE_MS } from '../src/budget-reserves.js';
import { type ChargeResult, DurableBudgets } from '../src/budgets.js';

const WINDOW = 60_000;

describe('BudgetReserves (real Redis)', () => {
  let redis: RedisHandle;
  let a: Redis;
  let b: Redis;
  const open: BudgetReserves[] = [];
  before(async () => {
    redis = await startRedis();
    a = new Redis(redis.url);
    b = new Redis(redis.url);
  });
  after(async () => {
    for (const r of open) await r.close();
    a.disconnect();
    b.disconnect();
    await redis.stop();
  });

  const node = (r: Redis, prefix: string, limits: { senderFrames?: number; senderBytes?: number }, max = 256) => {
    const budgets = new DurableBudgets(r, {
      prefix,
      senderFrames: limits.senderFrames ?? 0,
      senderBytes: limits.senderBytes ?? 0,
      addressFrames: 0,
      addressBytes: 0,
      windowMs: WINDOW,
    });
    const reserves = new BudgetReserves(budgets, max, WINDOW);
    open.push(reserves);
    return reserves;
  };
  /** What Redis counts for a sender in the window of `t`. */
  const counted = async (prefix: string, sender: Buffer, t: number) => {
    const key = `${prefix}:bud:{s:${sender.toString('hex')}}:${Math.floor(t / WINDOW)}`;
    const [f, bytes] = await a.hmget(key, 'f', 'b');
    return { frames: Number(f ?? 0), bytes: Number(bytes ?? 0) };
  };
  const ok = (r: ChargeResult) => 'charge' in r;
  /** n charges of `bytes`, at most `inFlight` unsettled at once (a connection's window). */
  const run = async (reserves: BudgetReserves, sender: Buffer, n: number, bytes: number, t: number, inFlight = 64) => {
    const results: ChargeResult[] = [];
    let batch: Array<ChargeResult | Promise<ChargeResult>> = [];
    for (let i = 0; i < n; i++) {
      batch.push(reserves.charge(sender, '10.0.0.1', bytes, t));
      if (batch.length === inFlight) {
        results.push(...(await Promise.all(batch)));
        batch = [];
      }
    }
    results.push(...(await Promise.all(batch)));
    return results;
  };

  it('a steady sender is admitted from its reserve: one Redis charge per reservation, not per frame', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const reserves = node(a, prefix, { senderFrames: 1_000_000 });
    const sender = randomBytes(24);
    const t = 10 * WINDOW;
    const results = await run(reserves, sender, 5000, 100, t);
    assert.equal(results.filter(ok).length, 5000);
    const { local, reservations, exact } = reserves.stats;
    assert.ok(local >= 4900, `local ${local}, reservations ${reservations}, exact ${exact}`);
    assert.ok(reservations <= 40, `reservations ${reservations}`);
    // Redis holds at least what was handed out (never less), and the reserve's rest goes back at close.
    assert.ok((await counted(prefix, sender, t)).frames >= 5000);
    await reserves.close();
    assert.deepEqual(await counted(prefix, sender, t), { frames: 5000, bytes: 500_000 });
  });

  it('close() waits for a reservation still in flight and gives it back too', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const reserves = node(a, prefix, { senderFrames: 1_000_000 });
    const sender = randomBytes(24);
    const t = 15 * WINDOW;
    await run(reserves, sender, 300, 100, t);
    // Take from the reserve, synchronously, until it is down to half its last grant and asks for the
    // next one; then close at once, with that reservation on its way.
    let taken = 300;
    while (reserves.requestsInFlight === 0) {
      const r = reserves.charge(sender, '10.0.0.1', 100, t);
      assert.ok(!(r instanceof Promise) && 'charge' in r, 'taken from the reserve');
      taken++;
    }
    await reserves.close();
    assert.equal(reserves.requestsInFlight, 0);
    assert.deepEqual(await counted(prefix, sender, t), { frames: taken, bytes: taken * 100 });
  });

  it('never exceeds a budget, and its last eighth is charged frame by frame: exactly the limit on one node', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const reserves = node(a, prefix, { senderFrames: 800 });
    const sender = randomBytes(24);
    const t = 20 * WINDOW;
    const results = await run(reserves, sender, 1000, 10, t);
    assert.equal(results.filter(ok).length, 800);
    assert.equal(results.filter((r) => 'refused' in r && r.refused === 'sender_frames').length, 200);
    // The first 800 were the ones taken: frames are decided in order.
    assert.ok(results.slice(0, 800).every(ok));
    assert.ok(reserves.stats.exact >= 100, `exact ${reserves.stats.exact}: the last eighth`);
    await reserves.close();
    assert.equal((await counted(prefix, sender, t)).frames, 800);
  });

  it('a byte budget holds exactly too, with frames of mixed sizes', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const reserves = node(a, prefix, { senderBytes: 100_000 });
    const sender = randomBytes(24);
    const t = 25 * WINDOW;
    let taken = 0;
    for (let i = 0; i < 400; i++) {
      const bytes = i % 3 === 0 ? 700 : 300;
      if (ok(await reserves.charge(sender, '10.0.0.1', bytes, t))) taken += bytes;
    }
    assert.ok(taken <= 100_000 && taken > 100_000 - 700, `taken ${taken}`);
    await reserves.close();
    assert.equal((await counted(prefix, sender, t)).bytes, taken);
  });

  it('a sender on two nodes that keeps sending on both gets exactly its budget across them', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const nodes = [node(a, prefix, { senderFrames: 2000 }), node(b, prefix, { senderFrames: 2000 })];
    const sender = randomBytes(24);
    const t = 30 * WINDOW;
    const results = (await Promise.all(nodes.map((n) => run(n, sender, 1500, 10, t, 32)))).flat();
    assert.equal(results.filter(ok).length, 2000);
    for (const n of nodes) await n.close();
    assert.equal((await counted(prefix, sender, t)).frames, 2000);
  });

  it('a refund goes back into the reserve (no Redis call); an idle reserve goes back to Redis', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const reserves = node(a, prefix, { senderFrames: 1_000_000 });
    const sender = randomBytes(24);
    const t = 40 * WINDOW;
    const results = await run(reserves, sender, 300, 10, t);
    const before = { ...reserves.stats };
    // Give 100 back (duplicates, say), then take 100 again: all from the reserve.
    for (const r of results.slice(0, 100)) if ('charge' in r) reserves.refund(r.charge);
    await run(reserves, sender, 100, 10, t);
    assert.equal(reserves.stats.reservations, before.reservations, 'no new reservation');
    assert.equal(reserves.stats.local, before.local + 100);
    // Idle: the rest goes back, and Redis counts exactly the 300 frames in use.
    reserves.sweep(Date.now() + RESERVE_IDLE_MS + 1);
    const deadline = Date.now() + 20_000;
    while ((await counted(prefix, sender, t)).frames !== 300 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal((await counted(prefix, sender, t)).frames, 300);
  });

  it('a new window starts a new reserve; the old one goes back to the window it was charged in', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const reserves = node(a, prefix, { senderFrames: 1_000_000 });
    const sender = randomBytes(24);
    const t0 = 50 * WINDOW + WINDOW - 10;
    await run(reserves, sender, 500, 10, t0);
    await run(reserves, sender, 70, 10, t0 + 20);
    const deadline = Date.now() + 20_000;
    while ((await counted(prefix, sender, t0)).frames !== 500 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal((await counted(prefix, sender, t0)).frames, 500, 'the old window keeps only what was used');
    await reserves.close();
    assert.equal((await counted(prefix, sender, t0 + 20)).frames, 70);
  });

  it('Redis failing under a reservation rejects the frame waiting for it; nothing is left charged', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const c = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, lazyConnect: true });
    await c.connect();
    const reserves = node(c, prefix, { senderFrames: 1_000_000 });
    const sender = randomBytes(24);
    const t = 60 * WINDOW;
    const pending = [reserves.charge(sender, '10.0.0.1', 10, t), reserves.charge(sender, '10.0.0.1', 10, t)];
    c.disconnect();
    const settled = await Promise.allSettled(pending);
    assert.deepEqual(
      settled.map((s) => s.status),
      ['rejected', 'rejected'],
    );
    assert.equal((await counted(prefix, sender, t)).frames, 0);
  });

  it('0 or 1 reserves nothing: every frame is charged in Redis on its own', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const reserves = node(a, prefix, { senderFrames: 1_000_000 }, 0);
    const sender = randomBytes(24);
    const t = 70 * WINDOW;
    await run(reserves, sender, 50, 10, t);
    assert.deepEqual(reserves.stats, { local: 0, reservations: 0, exact: 50 });
    assert.equal((await counted(prefix, sender, t)).frames, 50);
  });
});
