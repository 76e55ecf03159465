/**
 * What the durable queue costs per frame, on both sides of the Redis socket:
 * `npm run bench:redis` (about a minute). Issue 18's durable and drain
 * figures are set by these costs, and on a 2-core machine shared by the
 * relay, Redis and the load generator the end-to-end rates move by ±15 %
 * from run to run; these figures move far less, so a change to the queue
 * shows here first.
 *
 * 1. **Request encoding** (relay CPU): one enqueue request of 256 frames of
 *    1 KiB, as DurableStore sends it, encoded by ioredis' own Command (the
 *    baseline) and by EncodedScript's encodeRequest, alternating trials in
 *    one process: µs per frame and the ratio.
 * 2. **Redis's own time per frame** (INFO commandstats, so only the time
 *    Redis spends executing, whatever else the machine runs): 100k frames
 *    enqueued through DurableStore (one script call per 256, and on one
 *    server the pre-write's HSETNX per frame before it), read back as a
 *    delivery pump does (fetchWithin, 256 at a time) and acknowledged
 *    (ackMany per batch read). Beside each, the **floor**: the bare commands
 *    the layout needs for that step, pipelined per 256 frames with no
 *    script (enqueue: HSET d + ZADD z + ZADD e; read: ZRANGEBYSCORE z +
 *    HMGET d; ack: HDEL d + ZREM z + ZREM e + ZADD x). script / floor says
 *    what the scripts add (the frames passing through Lua, the checks).
 *
 * BENCH_REDIS_FRAMES (default 100000), BENCH_REDIS_TRIALS (default 3),
 * BENCH_REDIS_ACKED_IDS (default: as many as frames, the acknowledged ids remembered),
 * BENCH_REDIS_OUT (default bench/results/redis-requests-latest.json).
 * Prints a table and writes the figures as JSON there. CI runs a small
 * version (services/relay/test/bench-redis.test.ts) so the bench keeps
 * working.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname } from 'node:path';
import { Command, Redis } from 'ioredis';
import { DURABLE_STORE_REDIS_OPTIONS, DurableStore } from '../services/relay/src/durable-store.js';
import { encodeRequest } from '../services/relay/src/encoded-script.js';
import { startRedis } from '../test-support/redis.js';
import { durableDeliver } from './frames.js';
import { round, type Summary, summarize } from './stats.js';

const envInt = (name: string, fallback: number): number => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};
const FRAMES = envInt('BENCH_REDIS_FRAMES', 100_000);
const TRIALS = envInt('BENCH_REDIS_TRIALS', 3);
const OUT = process.env.BENCH_REDIS_OUT || 'bench/results/redis-requests-latest.json';
const BATCH = 256;
const PAYLOAD = 1024;

const started = Date.now();
const log = (msg: string) =>
  process.stderr.write(`[redis-bench ${((Date.now() - started) / 1000).toFixed(0)}s] ${msg}\n`);

// ---------------------------------------------------------------------------
// 1. Request encoding.

function enqueueArgs(frames: readonly Buffer[]): Array<string | number | Buffer> {
  const now = Date.now();
  const key = `lr:q:{${randomBytes(24).toString('hex')}}:`;
  const args: Array<string | number | Buffer> = ['0'.repeat(40), 7];
  for (const k of ['z', 'd', 'e', 'm', 'x', 's', 'p']) args.push(key + k);
  args.push(now, 10_000, 64 << 20, 604_800_000, 100, 2_500, 16 << 20);
  for (const frame of frames) args.push(frame, now + 604_800_000);
  return args;
}

/** µs per frame to encode `requests` enqueue requests of BATCH frames. */
function encodingTrial(args: readonly (string | number | Buffer)[], ours: boolean, requests: number): number {
  const t0 = performance.now();
  for (let i = 0; i < requests; i++) {
    if (ours) {
      encodeRequest('evalsha', args[0] as string, args, 1);
    } else {
      const command = new Command('evalsha', args as Array<string | number | Buffer>, { replyEncoding: 'utf8' });
      command.promise.catch(() => {});
      command.toWritable({});
    }
  }
  return ((performance.now() - t0) * 1000) / (requests * BATCH);
}

function encoding(): { ioredis: Summary; encoded: Summary; ratio: Summary } {
  const args = enqueueArgs(Array.from({ length: BATCH }, () => randomBytes(PAYLOAD + 100)));
  // Warm-up: both paths compiled before the first timed trial.
  encodingTrial(args, false, 200);
  encodingTrial(args, true, 200);
  const a: number[] = [];
  const b: number[] = [];
  for (let t = 0; t < 7; t++) {
    a.push(encodingTrial(args, false, 300));
    b.push(encodingTrial(args, true, 300));
  }
  return { ioredis: summarize(a), encoded: summarize(b), ratio: summarize(a.map((x, i) => b[i]! / x)) };
}

// ---------------------------------------------------------------------------
// 2. Redis's own time per frame.

type Stats = Map<string, number>;

async function commandStats(redis: Redis): Promise<Stats> {
  const out: Stats = new Map();
  for (const line of (await redis.info('commandstats')).split('\n')) {
    const m = /^cmdstat_(\w+):calls=\d+,usec=(\d+)/.exec(line);
    if (m && !['info', 'config', 'flushall', 'ping'].includes(m[1]!)) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/**
 * µs Redis spent per frame on `step`. A script's inner commands are counted
 * both under their own names and inside EVAL/EVALSHA, so the total is the
 * scripts plus the plain commands named in `outside` (sent by the relay
 * itself); with no script, every command counts. The breakdown lists all.
 */
async function measured(
  inspect: Redis,
  step: () => Promise<void>,
  outside: readonly string[] = [],
): Promise<{ usPerFrame: number; breakdown: Record<string, number> }> {
  await inspect.config('RESETSTAT');
  await step();
  const stats = await commandStats(inspect);
  const scripts = (stats.get('evalsha') ?? 0) + (stats.get('eval') ?? 0);
  let total = 0;
  for (const [name, usec] of stats) {
    if (scripts === 0 || name === 'evalsha' || name === 'eval' || outside.includes(name)) total += usec;
  }
  const breakdown: Record<string, number> = {};
  for (const [name, usec] of stats) breakdown[name] = round(usec / FRAMES, 2);
  return { usPerFrame: total / FRAMES, breakdown };
}

interface StepFigures {
  script: number;
  floor: number;
}

async function redisTrial(redis: Redis, inspect: Redis): Promise<Record<'enqueue' | 'read' | 'ack', StepFigures>> {
  await inspect.flushall();
  const store = new DurableStore(redis, {
    prefix: `b${randomBytes(3).toString('hex')}`,
    maxFrames: FRAMES * 2,
    // BENCH_REDIS_ACKED_IDS: how many acknowledged ids the queue remembers (RELAY_QUEUE_ACKED_IDS); default maxFrames.
    ...(process.env.BENCH_REDIS_ACKED_IDS ? { maxAcked: Number(process.env.BENCH_REDIS_ACKED_IDS) } : {}),
    maxBytes: 2 ** 31,
    maxTtlSeconds: 86_400,
  });
  const dest = randomBytes(24);
  const source = randomBytes(24);
  const payload = randomBytes(PAYLOAD);
  const ids = Array.from({ length: FRAMES }, () => randomBytes(16));
  const frames = ids.map((id) => durableDeliver(dest, source, id, payload));

  const enqueue = await measured(inspect, async () => {
    for (let i = 0; i < FRAMES; i += BATCH) {
      const batch: Promise<unknown>[] = [];
      for (let k = i; k < Math.min(FRAMES, i + BATCH); k++) batch.push(store.enqueue(dest, ids[k]!, frames[k]!, 0));
      await Promise.all(batch);
    }
    // The pre-write's commands (durable-queue.md#enqueue) are the enqueue's too: the relay sends them itself.
  }, ['hsetnx', 'pexpire']);
  const acks: Array<Array<{ messageId: Uint8Array; position: number }>> = [];
  const read = await measured(inspect, async () => {
    let after = 0;
    let total = 0;
    for (;;) {
      const { frames: batch, more } = await store.fetchWithin(dest, after, BATCH, 1 << 20);
      total += batch.length;
      if (batch.length > 0) after = batch[batch.length - 1]!.position;
      acks.push(batch.map((f) => ({ messageId: f.messageId, position: f.position })));
      if (!more) break;
    }
    if (total !== FRAMES) throw new Error(`read ${total} of ${FRAMES} frames`);
  }, ['hmget', 'zmscore']);
  const ack = await measured(inspect, async () => {
    let removed = 0;
    for (const batch of acks) removed += await store.ackMany(dest, batch);
    if (removed !== FRAMES) throw new Error(`acknowledged ${removed} of ${FRAMES} frames`);
  });

  // The floors, on keys of their own.
  const members = ids.map((id) => Buffer.concat([source, id]));
  const expiry = Date.now() + 86_400_000;
  const floorEnqueue = await measured(inspect, async () => {
    for (let i = 0; i < FRAMES; i += BATCH) {
      const h: Array<Buffer | Uint8Array> = [];
      const z: Array<number | Buffer> = [];
      const e: Array<number | Buffer> = [];
      for (let k = i; k < Math.min(FRAMES, i + BATCH); k++) {
        h.push(members[k]!, Buffer.from(frames[k]!.buffer, frames[k]!.byteOffset, frames[k]!.byteLength));
        z.push(k + 1, members[k]!);
        e.push(expiry, members[k]!);
      }
      await redis
        .pipeline()
        .hset('f:d', ...(h as Buffer[]))
        .zadd('f:z', ...z)
        .zadd('f:e', ...e)
        .exec();
    }
  });
  const floorRead = await measured(inspect, async () => {
    for (let i = 0; i < FRAMES; i += BATCH) {
      const names = await redis.zrangebyscoreBuffer('f:z', i + 1, i + BATCH);
      await redis.hmgetBuffer('f:d', ...names);
    }
  });
  const floorAck = await measured(inspect, async () => {
    for (let i = 0; i < FRAMES; i += BATCH) {
      const m = members.slice(i, i + BATCH);
      const x: Array<number | Buffer> = [];
      for (let k = i; k < Math.min(FRAMES, i + BATCH); k++) x.push(k + 1, members[k]!);
      await redis
        .pipeline()
        .hdel('f:d', ...m)
        .zrem('f:z', ...m)
        .zrem('f:e', ...m)
        .zadd('f:x', ...x)
        .exec();
    }
  });
  log(
    `trial: enqueue ${enqueue.usPerFrame.toFixed(2)} µs/frame ${JSON.stringify(enqueue.breakdown)}; ` +
      `read ${read.usPerFrame.toFixed(2)} ${JSON.stringify(read.breakdown)}; ack ${ack.usPerFrame.toFixed(2)} ${JSON.stringify(ack.breakdown)}`,
  );
  return {
    enqueue: { script: enqueue.usPerFrame, floor: floorEnqueue.usPerFrame },
    read: { script: read.usPerFrame, floor: floorRead.usPerFrame },
    ack: { script: ack.usPerFrame, floor: floorAck.usPerFrame },
  };
}

// ---------------------------------------------------------------------------

async function main(): Promise<void> {
  log('encoding');
  const enc = encoding();
  log(`encoding: ioredis ${enc.ioredis.median.toFixed(2)} µs/frame, encodeRequest ${enc.encoded.median.toFixed(2)}`);

  const server = await startRedis();
  const redis = new Redis(server.url, { ...DURABLE_STORE_REDIS_OPTIONS, commandTimeout: 60_000, lazyConnect: true });
  const inspect = new Redis(server.url, { lazyConnect: true });
  await Promise.all([redis.connect(), inspect.connect()]);
  const trials: Array<Awaited<ReturnType<typeof redisTrial>>> = [];
  try {
    for (let t = 0; t < TRIALS; t++) trials.push(await redisTrial(redis, inspect));
  } finally {
    redis.disconnect();
    inspect.disconnect();
    await server.stop();
  }
  const steps = ['enqueue', 'read', 'ack'] as const;
  const figure = (step: (typeof steps)[number]) => ({
    script: summarize(trials.map((t) => t[step].script)),
    floor: summarize(trials.map((t) => t[step].floor)),
    ratio: summarize(trials.map((t) => t[step].script / t[step].floor)),
  });
  const results = {
    measured: new Date().toISOString(),
    machine: `${cpus().length} cores (${cpus()[0]?.model ?? '?'}), node ${process.version}`,
    frames: FRAMES,
    payloadBytes: PAYLOAD,
    encodingUsPerFrame: enc,
    redisUsPerFrame: Object.fromEntries(steps.map((s) => [s, figure(s)])),
  };
  const rows: string[][] = [
    ['figure', 'median', 'min-max', 'baseline / floor', 'ratio'],
    [
      'enqueue request encoding, relay CPU (µs/frame)',
      enc.encoded.median.toFixed(2),
      `${enc.encoded.min.toFixed(2)}-${enc.encoded.max.toFixed(2)}`,
      `ioredis ${enc.ioredis.median.toFixed(2)}`,
      `${enc.ratio.median.toFixed(2)}x`,
    ],
  ];
  for (const step of steps) {
    const f = figure(step);
    rows.push([
      `Redis time per frame, ${step} (µs)`,
      f.script.median.toFixed(2),
      `${f.script.min.toFixed(2)}-${f.script.max.toFixed(2)}`,
      `bare commands ${f.floor.median.toFixed(2)}`,
      `${f.ratio.median.toFixed(2)}x`,
    ]);
  }
  const total = steps.reduce((s, step) => s + figure(step).script.median, 0);
  rows.push(['Redis time per frame, all three (µs)', total.toFixed(2), '', '', '']);
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const [i, r] of rows.entries()) {
    process.stdout.write(`| ${r.map((cell, c) => cell.padEnd(widths[c]!)).join(' | ')} |\n`);
    if (i === 0) process.stdout.write(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|\n`);
  }
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, `${JSON.stringify(results, null, 2)}\n`);
  log(`wrote ${OUT}`);
}

await main();
