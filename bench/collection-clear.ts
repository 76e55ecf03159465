/**
 * Why the relay's per-turn batches are replaced, not cleared
 * (`node --import tsx bench/collection-clear.ts`, about 30 s).
 *
 * A relay gathers each event-loop turn's work in a Map or Set that lives as
 * long as the process (the durable store's enqueues, the write batch's dirty
 * transports, the router's outbox, the budgets' charges). Emptied with
 * `clear()` (or key by key with `delete()`, which shrinks the table), V8
 * allocates a new hash table and leaves the old one pointing at it, for
 * iterators that may still walk it. Once one such table has been promoted,
 * every later table is reachable from a dead old-space object, and a
 * scavenge treats old space as alive: each turn's table and everything it
 * holds survives, is promoted, and waits for a full collection
 * (docs/benchmarks.md, "a collection cleared every turn").
 *
 * Each strategy runs in a child process of its own (a fresh heap, one full
 * collection after the warm-up, as any relay has had by the time it is under load), in
 * rounds that rotate their order, doing the same turns: a Map kept for the
 * process and cleared, the same Map emptied with delete(), and a new Map per
 * turn (what the relay does now, the baseline). Reports ns per turn, full
 * (mark-compact) collections per million turns, and each strategy's time
 * per turn / the baseline's.
 */
import { execFileSync } from 'node:child_process';
import { constants, type PerformanceEntry, PerformanceObserver, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const STRATEGIES = ['replace', 'clear', 'delete'] as const;
type Strategy = (typeof STRATEGIES)[number];
const TURNS = Number(process.env.BENCH_CLEAR_TURNS ?? 1_000_000);
const ROUNDS = Number(process.env.BENCH_CLEAR_ROUNDS ?? 3);
/** Per turn: work for two recipients, eight items each (a relay's turn under load holds more). */
const KEYS = 2;
const ITEMS = 8;

interface Result {
  strategy: Strategy;
  nsPerTurn: number;
  majorGcs: number;
}

async function child(strategy: Strategy): Promise<Result> {
  const majors: number[] = [];
  // Entries are delivered after the synchronous loop, once the process has waited a little.
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (
        (entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ===
        constants.NODE_PERFORMANCE_GC_MAJOR
      ) {
        majors.push(entry.startTime);
      }
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  let batches = new Map<number, Array<{ id: number; bytes: number[] }>>();
  let sink = 0;
  const turn = (t: number): void => {
    for (let k = 0; k < KEYS; k++) {
      const list: Array<{ id: number; bytes: number[] }> = [];
      for (let i = 0; i < ITEMS; i++) list.push({ id: t + i, bytes: [t, i, k, 0] });
      batches.set(k, list);
    }
    for (const list of batches.values()) sink += list.length;
    if (strategy === 'replace') batches = new Map();
    else if (strategy === 'clear') batches.clear();
    else for (let k = 0; k < KEYS; k++) batches.delete(k);
  };
  for (let t = 0; t < TURNS / 10; t++) turn(t); // warm up: the Map and the code settle
  // A relay has had full collections long before its load (start-up, an idle relay's memory
  // reducer); one moves the current table to old space, and the chain starts from there.
  (globalThis as { gc?: () => void }).gc!();
  const start = performance.now();
  for (let t = 0; t < TURNS; t++) turn(t);
  const ms = performance.now() - start;
  await new Promise((resolve) => setTimeout(resolve, 100));
  observer.disconnect();
  if (sink === 0) throw new Error('unreachable');
  const majorGcs = majors.filter((at) => at >= start).length;
  return { strategy, nsPerTurn: (ms * 1e6) / TURNS, majorGcs: (majorGcs * 1e6) / TURNS };
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

if (process.argv[2] === '--child') {
  process.stdout.write(JSON.stringify(await child(process.argv[3] as Strategy)));
} else {
  const self = fileURLToPath(import.meta.url);
  const results: Result[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const order = STRATEGIES.map((_, i) => STRATEGIES[(i + r) % STRATEGIES.length]!);
    for (const strategy of order) {
      const out = execFileSync(process.execPath, [...process.execArgv, '--expose-gc', self, '--child', strategy], {
        encoding: 'utf8',
      });
      results.push(JSON.parse(out) as Result);
    }
  }
  const baseline = median(results.filter((x) => x.strategy === 'replace').map((x) => x.nsPerTurn));
  console.log(`${TURNS} turns of ${KEYS} keys x ${ITEMS} items, ${ROUNDS} rounds, a child process each; medians`);
  console.log('strategy  ns/turn  full GCs per 1M turns  time / replace');
  for (const strategy of STRATEGIES) {
    const mine = results.filter((x) => x.strategy === strategy);
    const ns = median(mine.map((x) => x.nsPerTurn));
    const gcs = median(mine.map((x) => x.majorGcs));
    console.log(
      `${strategy.padEnd(8)}  ${ns.toFixed(0).padStart(7)}  ${gcs.toFixed(0).padStart(21)}  ${(ns / baseline).toFixed(2).padStart(14)}x`,
    );
  }
}
