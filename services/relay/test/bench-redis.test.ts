/**
 * `npm run bench:redis` in small (bench/redis-requests.ts): CI runs it so the
 * benchmark keeps working as the durable store changes. Its own checks are
 * real ones: every frame enqueued is read back and acknowledged through
 * DurableStore, or it exits non-zero. The figures themselves are not judged
 * here (speed is shown by the benchmark, not by tests).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { runRepoScript } from '../../../test-support/bench-script.js';

it('bench:redis runs on 2,048 frames and writes its figures', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-redis-'));
  const out = join(dir, 'figures.json');
  try {
    const { code, output } = await runRepoScript('bench/redis-requests.ts', {
      BENCH_REDIS_FRAMES: '2048',
      BENCH_REDIS_TRIALS: '1',
      BENCH_REDIS_OUT: out,
    });
    assert.equal(code, 0, output);
    const figures = JSON.parse(readFileSync(out, 'utf8')) as {
      frames: number;
      encodingUsPerFrame: { ioredis: { median: number }; encoded: { median: number } };
      redisUsPerFrame: Record<'enqueue' | 'read' | 'ack', { script: { median: number }; floor: { median: number } }>;
    };
    assert.equal(figures.frames, 2048);
    assert.ok(figures.encodingUsPerFrame.ioredis.median > 0 && figures.encodingUsPerFrame.encoded.median > 0);
    for (const step of ['enqueue', 'read', 'ack'] as const) {
      const f = figures.redisUsPerFrame[step];
      assert.ok(f.script.median > 0 && f.floor.median > 0, `${step}: ${JSON.stringify(f)}`);
    }
    assert.match(output, /Redis time per frame, enqueue/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
