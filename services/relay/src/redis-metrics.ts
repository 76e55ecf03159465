/**
 * Redis as the relay sees it, read when /metrics is scraped (one `INFO memory`
 * per scrape on the node's command connection, at most 1 s): whether it
 * answers and how long that round trip took (its memory against `maxmemory`
 * is exported by the durable budgets' memory guard, budgets.ts). They feed the shipped dashboard and alerts
 * (deploy/prometheus/alerts.yml) without a separate Redis exporter; with a
 * managed Redis that refuses INFO they read 0 for memory and up stays 1.
 */

import { Gauge, type Registry } from 'prom-client';
import type { RedisClient as Redis } from './redis-connection.js';

/** Milliseconds one scrape waits for Redis before reporting it down. */
const SCRAPE_TIMEOUT_MS = 1000;

export function registerRedisMetrics(registry: Registry, redis: Pick<Redis, 'info'>): void {
  let up = 0;
  let roundTripSeconds = 0;
  let pending: Promise<void> | undefined;
  const read = async (): Promise<void> => {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      const info = await Promise.race([
        redis.info('memory'),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('timeout')), SCRAPE_TIMEOUT_MS);
        }),
      ]);
      roundTripSeconds = (performance.now() - started) / 1000;
      if (typeof info !== 'string') throw new Error('INFO gave no text');
      up = 1;
    } catch {
      up = 0;
    } finally {
      clearTimeout(timer);
    }
  };
  // prom-client calls every metric's collect before awaiting any, so the two
  // share one INFO per scrape: the first starts it, the others wait for it.
  const refresh = (): Promise<void> => {
    pending ??= read().finally(() => {
      pending = undefined;
    });
    return pending;
  };
  const gauge = (name: string, help: string, value: () => number): void => {
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        await refresh();
        this.set(value());
      },
    });
  };
  gauge('relay_redis_up', "1 when the node's Redis answered INFO at the last scrape within 1 s, else 0", () => up);
  gauge(
    'relay_redis_roundtrip_seconds',
    "Round trip of the last scrape's INFO memory on the node's command connection (Redis latency as the node sees it, queueing behind its own commands included)",
    () => roundTripSeconds,
  );
  // relay_redis_used_memory_bytes and relay_redis_maxmemory_bytes come from the durable budgets' memory guard
  // (budgets.ts, sampled every RELAY_REDIS_MEMORY_CHECK_MS), which decides STORE_FULL from the same figures.
}
