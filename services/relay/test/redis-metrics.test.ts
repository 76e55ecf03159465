/** The Redis gauges read at scrape (src/redis-metrics.ts), against a stand-in for ioredis' info(). */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { Registry } from 'prom-client';
import { registerRedisMetrics } from '../src/redis-metrics.js';

const INFO =
  '# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:4194304\r\nmaxmemory_policy:noeviction\r\n';

function value(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} in the exposition`);
  return Number(line.split(' ')[1]);
}

it('reports round trip and up from one INFO per scrape (memory comes from the budget guard)', async () => {
  let calls = 0;
  const registry = new Registry();
  registerRedisMetrics(registry, {
    info: (async () => {
      calls++;
      return INFO;
    }) as never,
  });
  const text = await registry.metrics();
  assert.equal(calls, 1, 'one INFO serves both gauges');
  assert.equal(value(text, 'relay_redis_up'), 1);
  assert.ok(value(text, 'relay_redis_roundtrip_seconds') >= 0);
  await registry.metrics();
  assert.equal(calls, 2, 'read again at the next scrape');
});

it('reports down when INFO fails or takes over a second, and the scrape still answers', async () => {
  const failing = new Registry();
  registerRedisMetrics(failing, { info: (async () => Promise.reject(new Error('NOAUTH'))) as never });
  assert.equal(value(await failing.metrics(), 'relay_redis_up'), 0);
  const stuck = new Registry();
  registerRedisMetrics(stuck, { info: (() => new Promise(() => {})) as never });
  const started = Date.now();
  assert.equal(value(await stuck.metrics(), 'relay_redis_up'), 0);
  assert.ok(Date.now() - started < 3000, 'bounded by the 1 s timeout');
});
