/**
 * Redis as the relay sees it, read when /metrics is scraped (one `INFO memory`
 * per scrape on the node's command connection, at most 1 s): whether it
 * answers, how long that round trip took, and its memory against
 * `maxmemory`. They feed the shipped dashboard and alerts
 * (deploy/prometheus/alerts.yml) without a separate Redis exporter; with a
 * managed Redis that refuses INFO they read 0 for memory and up stays 1.
 */
import type { Redis } from 'ioredis';
import { Gauge, type Registry } from 'prom-client';

/** Milliseconds one scrape waits for Redis before reporting it down. */
const SCRAPE_TIMEOUT_MS = 1000;

/** `used_memory:123` lines of an INFO reply, as numbers. */
export function parseInfoNumbers(info: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of info.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0 || line.startsWith('#')) continue;
    const value = Number(line.slice(colon + 1));
    if (Number.isFinite(value)) out.set(line.slice(0, colon), value);
  }
  return out;
}

export function registerRedisMetrics(registry: Registry, redis: Pick<Redis, 'info'>): void {
  let up = 0;
  let roundTripSeconds = 0;
  let usedBytes = 0;
  let maxBytes = 0;
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
      const numbers = parseInfoNumbers(info);
      usedBytes = numbers.get('used_memory') ?? 0;
      maxBytes = numbers.get('maxmemory') ?? 0;
      up = 1;
    } catch {
      up = 0;
    } finally {
      clearTimeout(timer);
    }
  };
  // prom-client calls every metric's collect before awaiting any, so the four
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
  gauge('relay_redis_used_memory_bytes', 'Redis used_memory at the last scrape', () => usedBytes);
  gauge('relay_redis_maxmemory_bytes', 'Redis maxmemory at the last scrape (0: no limit set)', () => maxBytes);
}
