/**
 * The bridge's HTTP listener:
 *
 *   GET /health    JSON BridgeHealth (+ `federation` when it runs); 200 unless `down` (503)
 *   GET /metrics   Prometheus text
 */
import { createServer } from 'node:http';
import {
  type BridgeFederation,
  type BridgeHttpServer,
  listenBridgeHttp,
  writeBridgeHealth,
  writeMetrics,
} from '@libertaria/bridge-kit/worker';
import type { BridgeXmtpMetrics } from './metrics.js';
import type { XmtpBridge } from './xmtp-bridge.js';

export type { BridgeHttpServer };

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
