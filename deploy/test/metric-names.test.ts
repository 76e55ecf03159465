/**
 * Every metric the shipped dashboard and alert rules read is exported by the
 * services: a real relay node (the built dist/main.js, federation on) and a
 * real Nostr bridge joined to it are started, their /metrics read, and every
 * name in the dashboard's and the rules' PromQL looked up there. prom-client
 * writes `# TYPE` for every registered metric, with or without samples, so
 * the exposition is the registries' full list. A renamed or removed metric
 * fails here instead of leaving an empty panel or an alert that never fires.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { silentLogger } from '@libertaria/log';
import { startNostrBridgeService } from '../../services/bridge-nostr/src/service.js';
import { startNostrRelay } from '../../services/bridge-nostr/test/support/nostr-relay.js';
import { startRedis } from '../../test-support/redis.js';
import { startRelay } from '../../test-support/relay-process.js';
import {
  alertExpressions,
  dashboardExpressions,
  exportedNames,
  isPrometheusOwn,
  metricNames,
} from './metrics-drift.js';

describe('metric names of the dashboard and alert rules', () => {
  const stops: (() => Promise<unknown>)[] = [];
  let exported = new Set<string>();

  before(async () => {
    const redis = await startRedis();
    stops.push(() => redis.stop());
    const nostr = await startNostrRelay();
    stops.push(() => nostr.stop());
    const relay = await startRelay({ redisUrl: redis.url });
    stops.push(() => relay.stop());
    const dir = mkdtempSync(join(tmpdir(), 'deploy-metrics-'));
    await writeKeyFile(join(dir, 'bridge.json'), Ed25519Identity.generate());
    const bridge = await startNostrBridgeService(
      {
        BRIDGE_NOSTR_RELAYS: nostr.url,
        BRIDGE_NOSTR_KEK: randomBytes(32).toString('hex'),
        BRIDGE_NOSTR_KEY_STORE_FILE: join(dir, 'keys.jsonl'),
        BRIDGE_NOSTR_HTTP_PORT: '0',
        BRIDGE_NOSTR_REDIS_URL: redis.url,
        BRIDGE_NOSTR_LIBERTARIA_RELAYS: relay.wsUrl,
        BRIDGE_NOSTR_IDENTITY_FILE: join(dir, 'bridge.json'),
        BRIDGE_NOSTR_STATE_DIR: join(dir, 'state'),
      },
      { log: silentLogger },
    );
    stops.push(() => bridge.close());
    const relayText = await (await fetch(`${relay.adminUrl}/metrics`)).text();
    const bridgeText = await (await fetch(`http://127.0.0.1:${bridge.http.port}/metrics`)).text();
    exported = new Set([...exportedNames(relayText), ...exportedNames(bridgeText)]);
  });

  after(async () => {
    for (const stop of stops.reverse()) await stop();
  });

  it('reads the services’ expositions (sanity: known names are there)', () => {
    for (const name of [
      'relay_connections',
      'relay_durable_queue_depth_bucket',
      'relay_redis_used_memory_bytes',
      'relay_federation_inbound_total',
      'bridge_federation_queue_jobs',
      'bridge_nostr_relay_up',
      'process_resident_memory_bytes',
    ]) {
      assert.ok(exported.has(name), `${name} is exported`);
    }
  });

  it('finds every dashboard metric among the exported ones', () => {
    const expressions = dashboardExpressions();
    assert.ok(expressions.length >= 20, `the dashboard has its panels (${expressions.length} expressions)`);
    const missing = expressions.flatMap(({ where, expr }) =>
      metricNames(expr)
        .filter((n) => !exported.has(n) && !isPrometheusOwn(n))
        .map((n) => `${where}: ${n}`),
    );
    assert.deepEqual(missing, [], 'metrics the dashboard reads but no service exports');
    for (const { where, expr } of expressions) {
      assert.ok(metricNames(expr).length > 0, `${where} reads a metric: ${expr}`);
    }
  });

  it('finds every alert rule metric among the exported ones', () => {
    const expressions = alertExpressions();
    assert.ok(expressions.length >= 10, `the rules are there (${expressions.length})`);
    const missing = expressions.flatMap(({ where, expr }) =>
      metricNames(expr)
        .filter((n) => !exported.has(n) && !isPrometheusOwn(n))
        .map((n) => `${where}: ${n}`),
    );
    assert.deepEqual(missing, [], 'metrics the alert rules read but no service exports');
  });

  it('extracts names from PromQL as expected', () => {
    assert.deepEqual(
      metricNames(
        'sum by (le) (rate(relay_durable_queue_depth_bucket{node=~"$node", le!="x"}[$__rate_interval])) - on (node) max(relay_peers offset 5m) > 0.8 and up{job="relay"} == 0',
      ).sort(),
      ['relay_durable_queue_depth_bucket', 'relay_peers', 'up'],
    );
  });
});
