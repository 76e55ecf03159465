/** Reading metrics in tests: a relay's Prometheus text from its admin port, or a prom-client counter in process. */
import type { Counter } from 'prom-client';
import type { RelayHandle } from './relay-process.js';

/** A counter's value from /metrics: the line of `name` carrying every label given (the node label aside); 0 when absent. */
export async function metric(relay: RelayHandle, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`${relay.adminUrl}/metrics`)).text();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const found = text
    .split('\n')
    .find((l) => l.startsWith(`${name}{`) && wanted.every((w) => l.slice(0, l.indexOf('}')).includes(w)));
  return found === undefined ? 0 : Number(found.slice(found.lastIndexOf(' ') + 1));
}

/** Sum of an in-process prom-client counter over its label sets matching `labels` (all when none given). */
export async function counterTotal(counter: Counter<string>, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await counter.get();
  return values
    .filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want))
    .reduce((sum, v) => sum + v.value, 0);
}
