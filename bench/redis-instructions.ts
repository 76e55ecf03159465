/**
 * Redis instructions per durable frame, counted by valgrind's callgrind:
 * `npm run bench:redis-ir` (about two minutes). Time on this shared 2-core
 * machine moves by a third from hour to hour (docs/benchmarks.md: the same
 * scripts took Redis 10.0 µs a frame in one full run and 13.9 in the next);
 * an instruction count does not, so a change to the scripts shows here to
 * within a few per cent (the same build moved 2–4 % between runs here),
 * where `npm run bench:redis` needs many trials to see 10 %.
 *
 * The workload is the durable benchmark's, in one process: one recipient,
 * turns of 170 frames (1 KiB payloads, two senders), each enqueued as
 * DurableStore sends it (the pre-write's HSETNX per frame, then one script
 * call), and acknowledged two turns later (ackMany), so the queue keeps a
 * standing backlog as a loaded recipient's window does; the acknowledged set
 * remembers 10,000 ids (a default relay's). Redis runs under callgrind with
 * counting off; it is turned on around the enqueues (enqueue figure) or the
 * acknowledgements (ack figure) of the measured turns, after 70 turns of
 * warm-up (scripts loaded, the acknowledged set full).
 *
 * The baseline in the same run is the **floor**: the bare commands the
 * layout needs, pipelined per turn with no script (enqueue: HSET d + ZADD z +
 * ZADD e; ack: HDEL d + ZREM z + ZREM e + ZADD x + ZREMRANGEBYRANK x),
 * counted the same way. script / floor says what the scripts add.
 * BENCH_REDIS_IR_BASE=<another checkout> also measures that checkout's
 * DurableStore in the same run (an A/B of two builds: its figures and ours
 * side by side, with the ratios).
 *
 * BENCH_REDIS_IR_TURNS (default 30 measured turns), BENCH_REDIS_IR_OUT
 * (default bench/results/redis-instructions-latest.json). Needs valgrind
 * (callgrind_control) and redis-server on the PATH.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../test-support/redis.js';
import { durableDeliver } from './frames.js';
import { round } from './stats.js';

const TURNS = Number(process.env.BENCH_REDIS_IR_TURNS || 30);
const WARM_TURNS = Number(process.env.BENCH_REDIS_IR_WARM_TURNS || 70);
const OUT = process.env.BENCH_REDIS_IR_OUT || 'bench/results/redis-instructions-latest.json';
const BASE = process.env.BENCH_REDIS_IR_BASE;
const FRAMES_PER_TURN = 170;
const PAYLOAD = 1024;
const ACKED_IDS = 10_000;

const started = Date.now();
const log = (msg: string) => process.stderr.write(`[redis-ir ${((Date.now() - started) / 1000).toFixed(0)}s] ${msg}\n`);

/** A redis-server under callgrind, counting only while told to. */
class CountedRedis {
  private constructor(
    readonly port: number,
    private readonly child: ChildProcess,
    private readonly dir: string,
  ) {}

  static async start(): Promise<CountedRedis> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'redis-ir-'));
    const child = spawn(
      'valgrind',
      [
        '--tool=callgrind',
        '--instr-atstart=no',
        `--callgrind-out-file=${join(dir, 'callgrind.out')}`,
        'redis-server',
        '--port',
        String(port),
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const counted = new CountedRedis(port, child, dir);
    // Under valgrind Redis starts in seconds, not milliseconds.
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`valgrind redis-server exited: ${stderr.slice(-500)}`);
      const probe = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on('error', () => {}); // refused until the server listens: the loop asks again
      try {
        await probe.connect();
        await probe.ping();
        probe.disconnect();
        return counted;
      } catch {
        probe.disconnect();
        if (Date.now() > deadline)
          throw new Error(`redis-server under valgrind did not answer in 60 s: ${stderr.slice(-500)}`);
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }

  /**
   * Runs `work`, counting Redis's instructions meanwhile when `on`. Counting
   * starts before `work` is called, so what it sends at the end of this turn
   * (the store's per-turn batches) is counted too.
   */
  async counted<T>(on: boolean, work: () => Promise<T>): Promise<{ value: T; instructions: number }> {
    if (!on) return { value: await work(), instructions: 0 };
    const pid = String(this.child.pid);
    execFileSync('callgrind_control', ['-i', 'on', pid], { stdio: 'ignore' });
    const value = await work();
    execFileSync('callgrind_control', ['-i', 'off', pid], { stdio: 'ignore' });
    // A dump (callgrind_control -d) holds what was counted since the last one, and zeroes the count.
    for (const f of readdirSync(this.dir)) if (f.startsWith('callgrind.out')) rmSync(join(this.dir, f));
    execFileSync('callgrind_control', ['-d', pid], { stdio: 'ignore' });
    let instructions = 0;
    for (const f of readdirSync(this.dir).filter((name) => name.startsWith('callgrind.out'))) {
      const m = /^totals:\s*(\d+)/m.exec(readFileSync(join(this.dir, f), 'utf8'));
      if (!m) throw new Error(`no totals line in callgrind dump ${f}`);
      instructions += Number(m[1]);
    }
    return { value, instructions };
  }

  async stop(): Promise<void> {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

interface Figures {
  enqueue: number;
  ack: number;
}

type Acks = Array<{ messageId: Uint8Array; position: number }>;

/** The frames of turn `t` (ids unique per run and prefix). */
function turnFrames(
  dest: Uint8Array,
  t: number,
  tag: number,
): Array<{ id: Buffer; frame: Uint8Array; member: Buffer }> {
  const sources = [Buffer.alloc(24, 1), Buffer.alloc(24, 2)];
  const payload = Buffer.alloc(PAYLOAD, 3);
  return Array.from({ length: FRAMES_PER_TURN }, (_, k) => {
    const id = Buffer.alloc(16);
    id.writeUInt32BE(tag, 0);
    id.writeUInt32BE(t * FRAMES_PER_TURN + k, 12);
    const source = sources[k % 2]!;
    // member: the queue's name for the frame, source ‖ messageId (durable-store.ts), for the floor's commands.
    return { id, frame: durableDeliver(dest, source, id, payload), member: Buffer.concat([source, id]) };
  });
}

/** Enqueue and ack instructions per frame of the DurableStore in `tree` (a checkout's root). */
async function measureStore(redisServer: CountedRedis, tree: string, tag: number): Promise<Figures> {
  const mod = (await import(
    resolve(tree, 'services/relay/src/durable-store.ts')
  )) as typeof import('../services/relay/src/durable-store.js');
  // That tree's own ioredis: its store may hand ioredis objects of its own version to the client.
  const { Redis: TreeRedis } = (await import(resolve(tree, 'node_modules/ioredis/built/index.js'))) as {
    Redis: typeof Redis;
  };
  const redis = new TreeRedis({ port: redisServer.port, ...mod.DURABLE_STORE_REDIS_OPTIONS, commandTimeout: 600_000 });
  await new Promise((r) => redis.once('ready', r));
  const store = new mod.DurableStore(redis, {
    prefix: `ir${tag}`,
    maxFrames: 1_000_000,
    maxAcked: ACKED_IDS,
    maxBytes: 2 ** 31,
    maxTtlSeconds: 86_400,
  });
  const dest = Buffer.alloc(24, tag);
  const backlog: Acks[] = [];
  let enqueueIr = 0;
  let ackIr = 0;
  let measured = 0;
  for (let t = 0; t < WARM_TURNS + TURNS; t++) {
    const counting = t >= WARM_TURNS;
    const frames = turnFrames(dest, t, tag);
    const enqueued = await redisServer.counted(counting, () =>
      Promise.all(frames.map((f) => store.enqueue(dest, f.id, f.frame, 0))),
    );
    enqueueIr += enqueued.instructions;
    const results = enqueued.value;
    backlog.push(results.map((r, k) => ({ messageId: frames[k]!.id, position: r.position })));
    if (backlog.length > 2) {
      const acks = backlog.shift()!;
      const { value: removed, instructions } = await redisServer.counted(counting, () => store.ackMany(dest, acks));
      ackIr += instructions;
      if (counting) measured += acks.length;
      if (removed !== acks.length) throw new Error(`acknowledged ${removed} of ${acks.length} frames`);
    }
  }
  redis.disconnect();
  return { enqueue: enqueueIr / (TURNS * FRAMES_PER_TURN), ack: ackIr / measured };
}

/** The floor: the bare commands per turn, pipelined, no script. */
async function measureFloor(redisServer: CountedRedis): Promise<Figures> {
  const redis = new Redis({ port: redisServer.port, commandTimeout: 600_000 });
  const dest = Buffer.alloc(24, 99);
  const expiry = Date.now() + 86_400_000;
  const backlog: Array<Array<{ member: Buffer; position: number }>> = [];
  let position = 0;
  let enqueueIr = 0;
  let ackIr = 0;
  let measured = 0;
  for (let t = 0; t < WARM_TURNS + TURNS; t++) {
    const counting = t >= WARM_TURNS;
    const frames = turnFrames(dest, t, 99);
    const h: Buffer[] = [];
    const z: Array<number | Buffer> = [];
    const e: Array<number | Buffer> = [];
    const turn: Array<{ member: Buffer; position: number }> = [];
    for (const { frame, member } of frames) {
      position++;
      h.push(member, Buffer.from(frame));
      z.push(position, member);
      e.push(expiry, member);
      turn.push({ member, position });
    }
    const enqueued = await redisServer.counted(counting, () =>
      redis
        .pipeline()
        .hset('f:d', ...h)
        .zadd('f:z', ...z)
        .zadd('f:e', ...e)
        .exec(),
    );
    enqueueIr += enqueued.instructions;
    backlog.push(turn);
    if (backlog.length > 2) {
      const acked = backlog.shift()!;
      const members = acked.map((a) => a.member);
      const x = acked.flatMap((a) => [a.position, a.member]);
      const removed = await redisServer.counted(counting, () =>
        redis
          .pipeline()
          .hdel('f:d', ...members)
          .zrem('f:z', ...members)
          .zrem('f:e', ...members)
          .zadd('f:x', ...x)
          .zremrangebyrank('f:x', 0, -(ACKED_IDS + 1))
          .exec(),
      );
      ackIr += removed.instructions;
      if (counting) measured += acked.length;
    }
  }
  redis.disconnect();
  return { enqueue: enqueueIr / (TURNS * FRAMES_PER_TURN), ack: ackIr / measured };
}

async function main(): Promise<void> {
  const redisServer = await CountedRedis.start();
  try {
    log(`redis-server under callgrind on port ${redisServer.port}; ${WARM_TURNS} warm-up turns, ${TURNS} measured`);
    const ours = await measureStore(redisServer, process.cwd(), 1);
    log(`this checkout: enqueue ${Math.round(ours.enqueue)}, ack ${Math.round(ours.ack)} instructions per frame`);
    const base = BASE ? await measureStore(redisServer, BASE, 2) : undefined;
    if (base) log(`${BASE}: enqueue ${Math.round(base.enqueue)}, ack ${Math.round(base.ack)}`);
    const floor = await measureFloor(redisServer);
    log(`floor: enqueue ${Math.round(floor.enqueue)}, ack ${Math.round(floor.ack)}`);

    const k = (n: number) => `${round(n / 1000, 1)}k`;
    const rows: string[][] = [
      ['figure', 'this checkout', 'floor', 'script / floor', ...(base ? ['base', 'this / base'] : [])],
    ];
    for (const step of ['enqueue', 'ack'] as const) {
      rows.push([
        `Redis instructions per frame, ${step}`,
        k(ours[step]),
        k(floor[step]),
        `${round(ours[step] / floor[step], 2)}x`,
        ...(base ? [k(base[step]), `${round(ours[step] / base[step], 3)}x`] : []),
      ]);
    }
    const sum = (f: Figures) => f.enqueue + f.ack;
    rows.push([
      'Redis instructions per frame, both',
      k(sum(ours)),
      k(sum(floor)),
      `${round(sum(ours) / sum(floor), 2)}x`,
      ...(base ? [k(sum(base)), `${round(sum(ours) / sum(base), 3)}x`] : []),
    ]);
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    const line = (r: string[]) => `| ${r.map((cell, c) => cell.padEnd(widths[c]!)).join(' | ')} |`;
    process.stdout.write(
      [line(rows[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n') +
        '\n',
    );
    mkdirSync(dirname(OUT), { recursive: true });
    writeFileSync(
      OUT,
      `${JSON.stringify(
        {
          turns: TURNS,
          warmTurns: WARM_TURNS,
          framesPerTurn: FRAMES_PER_TURN,
          payloadBytes: PAYLOAD,
          ackedIds: ACKED_IDS,
          instructionsPerFrame: { ours, floor, ...(base ? { base, baseTree: BASE } : {}) },
          measured: new Date().toISOString(),
        },
        null,
        2,
      )}\n`,
    );
    log(`wrote ${OUT}`);
  } finally {
    await redisServer.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
