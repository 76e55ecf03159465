/**
 * The bridge's HTTP listener: NIP-05 names, health and metrics.
 *
 *   GET /.well-known/nostr.json?name=<name>   NIP-05 document (CORS *)
 *   GET /health                               JSON BridgeHealth; 200 unless status is `down` (503)
 *   GET /metrics                              Prometheus text
 */
import { createServer } from 'node:http';
import {
  type BridgeFederation,
  type BridgeHttpServer,
  listenBridgeHttp,
  writeBridgeHealth,
  writeMetrics,
} from '@libertaria/bridge-kit/worker';
import type { NostrKeys } from './key-store.js';
import type { BridgeNostrMetrics } from './metrics.js';
import { nip05Document } from './nip05.js';
import type { NostrBridge } from './nostr-bridge.js';

export type { BridgeHttpServer };

export async function startBridgeHttpServer(options: {
  host: string;
  port: number;
  bridge: NostrBridge;
  keys: NostrKeys;
  metrics: BridgeNostrMetrics;
  /** Adds `federation` (relay connection, Redis, worker, job counts) to /health. */
  federation?: BridgeFederation;
}): Promise<BridgeHttpServer> {
  const { bridge, keys, metrics } = options;
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://bridge.invalid');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url.pathname === '/.well-known/nostr.json') {
      const name = url.searchParams.get('name') ?? '';
      const identity = keys.byName(name);
      const entry = identity?.name === undefined ? undefined : { name: identity.name, pubkey: identity.pubkey };
      res
        .writeHead(200, { 'content-type': 'application/json', 'access-control-allow-origin': '*' })
        .end(JSON.stringify(nip05Document(entry, bridge.relayUrls)));
      return;
    }
    if (url.pathname === '/health') {
      writeBridgeHealth(res, bridge.health(), options.federation).catch(() => res.writeHead(500).end());
      return;
    }
    if (url.pathname === '/metrics') {
      writeMetrics(res, metrics.registry).catch(() => res.writeHead(500).end());
      return;
    }
    res.writeHead(404).end();
  });
  return listenBridgeHttp(server, options.port, options.host);
}
