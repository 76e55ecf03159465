/**
 * The bridge's HTTP listener:
 *
 *   GET /health    JSON BridgeHealth (+ `federation` when it runs); 200 unless `down` (503)
 *   GET /metrics   Prometheus text
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BridgeFederation } from '@libertaria/bridge-kit/worker';
import type { BridgeXmtpMetrics } from './metrics.js';
import type { XmtpBridge } from './xmtp-bridge.js';

export interface BridgeHttpServer {
  readonly server: Server;
  readonly port: number;
  close(): Promise<void>;
}

export async function startBridgeHttpServer(options: {
  host: string;
  port: number;
  bridge: XmtpBridge;
  metrics: BridgeXmtpMetrics;
  /** Adds `federation` (relay connection, Redis, worker, job counts) to /health. */
  federation?: BridgeFederation;
}): Promise<BridgeHttpServer> {
  const { bridge, metrics } = options;
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://bridge.invalid');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
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
          // Without Redis or the relay connection nothing crosses the bridge: down, whatever XMTP says.
          const down = health.status === 'down' || f.redis !== 'ready' || f.relay !== 'connected';
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
