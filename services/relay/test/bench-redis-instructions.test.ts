/**
 * `npm run bench:redis-ir` in small (bench/redis-instructions.ts): CI runs it
 * so the benchmark keeps working as the durable store changes. Its own checks
 * are real ones: every frame enqueued is acknowledged through DurableStore,
 * or it exits non-zero. The figures themselves are not judged here, beyond
 * being counts at all (speed is shown by the benchmark, not by tests).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { runRepoScript } from '../../../test-support/bench-script.js';

it('bench:redis-ir counts Redis instructions for a few turns and writes its figures', {
  timeout: 240_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-redis-ir-'));
  const out = join(dir, 'figures.json');
  try {
    const { code, output } = await runRepoScript('bench/redis-instructions.ts', {
      BENCH_REDIS_IR_TURNS: '2',
      BENCH_REDIS_IR_WARM_TURNS: '3',
      BENCH_REDIS_IR_OUT: out,
    });
    assert.equal(code, 0, output);
    const figures = JSON.parse(readFileSync(out, 'utf8')) as {
      turns: number;
      instructionsPerFrame: Record<'ours' | 'floor', { enqueue: number; ack: number }>;
    };
    assert.equal(figures.turns, 2);
    for (const side of ['ours', 'floor'] as const) {
      for (const step of ['enqueue', 'ack'] as const) {
        const n = figures.instructionsPerFrame[side][step];
        assert.ok(Number.isFinite(n) && n > 1000, `${side} ${step}: ${n}`);
      }
    }
    assert.match(output, /Redis instructions per frame, enqueue/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
