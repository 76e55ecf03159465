/**
 * Rate windows and quota spends on a real Redis: the same answers as the
 * in-memory state for the same sequence, and exact limits under real
 * concurrency (several processes, several connections each, all spending at
 * once), including through full Membrane decisions on two "nodes".
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Ed25519Identity } from '@libertaria/identity';
import {
  type ConsumeOp,
  DEFAULT_MEMBRANE_LIMITS,
  Membrane,
  MemoryAuditSink,
  MemoryConstraintState,
  MemoryRevocationList,
  MemoryTrustProvider,
} from '@libertaria/membrane';
import { RedisConstraintState, RedisPolicyStore } from '@libertaria/membrane/redis';
import { Redis, type RedisOptions } from 'ioredis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';

const op = (kind: 'rate' | 'quota', id: string, limit: number, windowMs: number, perPeer = true): ConsumeOp => ({
  kind,
  id,
  limit,
  windowMs,
  perPeer,
  field: `constraints[${id}]`,
});

let redis: RedisHandle;
let conn: Redis;
/** Every connection a test opens, closed in `after` even when the test failed half-way (or the suite would hang). */
const opened: Redis[] = [];
function connect(options: RedisOptions = {}): Redis {
  const c = new Redis(redis.url, options);
  opened.push(c);
  return c;
}
let n = 0;
const freshPrefix = () => `t${process.pid}x${n++}`;

before(async () => {
  redis = await startRedis();
  conn = connect();
});
after(async () => {
  for (const c of opened) c.disconnect();
  await redis.stop();
});

describe('membrane constraint state on Redis', () => {
  it('answers exactly as the in-memory state over a long mixed sequence', async () => {
    const mem = new MemoryConstraintState();
    const red = new RedisConstraintState(conn, freshPrefix());
    const ops = [
      op('rate', 'r1', 5, 1000),
      op('rate', 'r2', 3, 0 || 2500, false),
      op('quota', 'q1', 40, 0),
      op('quota', 'q2', 15, 3000),
    ];
    // A fixed pseudo-random walk: subsets of ops, two peers, amounts 0..9, time moving on.
    let seed = 7;
    const rnd = (k: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % k;
    };
    let now = 1_700_000_000_000;
    let refusals = 0;
    for (let i = 0; i < 300; i++) {
      const subset = ops.filter(() => rnd(2) === 0);
      const peer = rnd(2) === 0 ? 'did:a' : 'did:b';
      const amount = rnd(10);
      const expected = mem.consume('scope', subset, peer, amount, now);
      const got = await red.consume('scope', subset, peer, amount, now);
      assert.equal(got, expected, `step ${i}`);
      if (expected >= 0) refusals++;
      now += rnd(400);
    }
    assert.ok(refusals > 30, `the walk exercised refusals (${refusals})`);
    for (const o of ops) assert.equal(await red.used('scope', o, 'did:a', now), mem.used('scope', o, 'did:a', now));
  });

  it('keeps counters per scope and per peer, under the relay prefix and one hash tag', async () => {
    const prefix = freshPrefix();
    const red = new RedisConstraintState(conn, prefix);
    const q = op('quota', 'q', 1, 0);
    assert.equal(await red.consume('did:x', [q], 'did:a', 1, 0), -1);
    assert.equal(await red.consume('did:x', [q], 'did:a', 1, 0), 0);
    assert.equal(await red.consume('did:x', [q], 'did:b', 1, 0), -1);
    assert.equal(await red.consume('did:y', [q], 'did:a', 1, 0), -1);
    const keys = (await conn.keys(`${prefix}:*`)).sort();
    assert.deepEqual(keys, [
      `${prefix}:mb:c:{did:x}:q:did:a`,
      `${prefix}:mb:c:{did:x}:q:did:b`,
      `${prefix}:mb:c:{did:y}:q:did:a`,
    ]);
    assert.equal(await conn.pttl(keys[0]!), -1, 'a lifetime quota persists');
    const r = op('rate', 'r', 1, 10_000);
    await red.consume('did:x', [r], 'did:a', 1, 0);
    const ttl = await conn.pttl(`${prefix}:mb:c:{did:x}:r:did:a`);
    assert.ok(ttl > 10_000 && ttl <= 20_000, `a window counter expires after two windows (${ttl})`);
  });

  it('never exceeds a quota under parallel spends from separate processes and connections', async () => {
    const prefix = freshPrefix();
    // Above what one process asks for (200 spends of 5 units on average), so no single process can take it all.
    const limit = 1500;
    const ops = [op('rate', 'r', 100_000, 60_000), op('quota', 'q', limit, 0)];
    // 3 processes × 4 connections × 200 spends of 1..9 units: about 3,000 units asked for 1,500.
    const procs = [0, 1, 2].map((p) =>
      spawnSpender({
        url: redis.url,
        prefix,
        scope: 'did:owner',
        ops,
        amounts: Array.from({ length: 200 }, (_, i) => 1 + ((i * 7 + p * 3) % 9)),
        nowMs: 1_700_000_000_000,
        connections: 4,
      }),
    );
    await Promise.all(procs.map((p) => p.ready));
    for (const p of procs) p.go();
    const results = await Promise.all(procs.map((p) => p.result));
    const spent = results.reduce((a, r) => a + r.spent, 0);
    const allowed = results.reduce((a, r) => a + r.allowed, 0);
    const red = new RedisConstraintState(conn, prefix);
    const used = await red.used('did:owner', ops[1]!, 'did:peer', 1_700_000_000_000);
    assert.equal(used, spent, 'the counter holds exactly what the allowed spends spent');
    assert.ok(spent <= limit, `spent ${spent} of ${limit}`);
    // Spends are 1..9 units, so once refusals start at most 8 units can be left over.
    assert.ok(spent > limit - 9, `the quota was used up (${spent})`);
    assert.equal(
      await red.used('did:owner', ops[0]!, 'did:peer', 1_700_000_000_000),
      allowed,
      'refused spends took no rate slot',
    );
    assert.ok(results.filter((r) => r.allowed > 0).length >= 2, 'the processes really competed');
  });

  it('two nodes deciding through full Membranes never exceed a policy quota together', async () => {
    const prefix = freshPrefix();
    const owner = Ed25519Identity.generate();
    const peers = Array.from({ length: 4 }, () => Ed25519Identity.generate());
    const nodes = [0, 1].map(() => {
      const c = connect();
      const sub = connect();
      const policies = new RedisPolicyStore(c, sub, { prefix, limits: DEFAULT_MEMBRANE_LIMITS });
      const audit = new MemoryAuditSink();
      const membrane = new Membrane({
        policies,
        trust: new MemoryTrustProvider(),
        state: new RedisConstraintState(c, prefix),
        revocations: new MemoryRevocationList(),
        audit,
        whenNoPolicy: 'deny',
      });
      return { c, sub, policies, membrane, audit };
    });
    await Promise.all(nodes.map((x) => x.policies.start()));
    await nodes[0]!.policies.put(owner.did, {
      version: 1,
      capabilities: [{ resource: 'service://payment', action: 'call' }],
      constraints: [{ type: 'quota', units: 250, scope: 'all' }],
    });
    const decisions = await Promise.all(
      Array.from({ length: 400 }, (_, i) =>
        nodes[i % 2]!.membrane.checkAccess({
          peer: peers[i % 4]!.did,
          owner: owner.did,
          resource: 'service://payment',
          action: 'call',
          amount: 1,
        }),
      ),
    );
    const ok = decisions.filter((d) => d.allowed).length;
    assert.equal(ok, 250);
    assert.ok(decisions.filter((d) => !d.allowed).every((d) => !d.allowed && d.code === 'ACCESS_QUOTA_EXHAUSTED'));
    assert.equal(nodes[0]!.audit.records.length + nodes[1]!.audit.records.length, 400, 'every decision audited');
    for (const x of nodes) {
      await x.policies.stop();
      x.c.disconnect();
      x.sub.disconnect();
    }
  });

  it('refuses with STORE_UNAVAILABLE when Redis is gone', async () => {
    const c = connect({ maxRetriesPerRequest: 0 });
    await c.ping();
    const red = new RedisConstraintState(c, freshPrefix());
    c.disconnect();
    await assert.rejects(red.consume('s', [op('quota', 'q', 1, 0)], 'p', 1, 0), { code: 'STORE_UNAVAILABLE' });
  });
});

interface SpenderResult {
  allowed: number;
  spent: number;
}

function spawnSpender(job: unknown): { ready: Promise<void>; go: () => void; result: Promise<SpenderResult> } {
  const script = fileURLToPath(new URL('./membrane-spender.js', import.meta.url));
  const child = spawn(process.execPath, [script, JSON.stringify(job)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let out = '';
  let readyResolve!: () => void;
  const ready = new Promise<void>((r) => {
    readyResolve = r;
  });
  const result = new Promise<SpenderResult>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('ready\n')) readyResolve();
    });
    child.on('exit', (code) => {
      const last = out.trim().split('\n').at(-1) ?? '';
      if (code !== 0) reject(new Error(`spender exited ${code}: ${out}`));
      else resolve(JSON.parse(last) as SpenderResult);
    });
  });
  return { ready, go: () => child.stdin.write('go\n'), result };
}
