/**
 * The bridge's HTTP listener: NIP-05 names, health and metrics.
 *
 *   GET /.well-known/nostr.json?name=<name>   NIP-05 document (CORS *)
 *   GET /health                               JSON BridgeHealth; 200 unless status is `down` (503)
 *   GET /metrics                              Prometheus text
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BridgeFederation } from '@libertaria/bridge-kit/worker';
import type { NostrKeys } from './key-store.js';
import type { BridgeNostrMetrics } from './metrics.js';
import { nip05Document } from './nip05.js';
import type { NostrBridge } from './nostr-bridge.js';

export interface BridgeHttpServer {
  readonly server: Server;
  readonly port: number;
  close(): Promise<void>;
}

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
      const health = bridge.health();
      const federation = options.federation;
      if (!federation) {
        res
          .writeHead(health.status === 'down' ? 503 : 200, { 'content-type': 'application/json' })
          .end(JSON.stringify(health));
        return;
      }
      federation.health().then(
        (f) => {
          // Without Redis or the relay connection nothing crosses the bridge: down, whatever Nostr says.
          const down = health.status === 'down' || f.redis !== 'ready' || f.relay === 'disconnected';
          res
            .writeHead(down ? 503 : 200, { 'content-type': 'application/json' })
            .end(JSON.stringify({ ...health, status: down ? 'down' : health.status, federation: f }));
        },
        () => res.writeHead(500).end(),
      );
      return;
    }
    if (url.pathname === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
