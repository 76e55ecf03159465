/**
 * The HTTP pieces every bridge service serves the same way (Node-only):
 * `/health` (the bridge's health, with its federation's when it runs) and
 * `/metrics`, and the listener's start and close.
 */
import type { Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { BridgeFederation, FederationHealth } from './federation-worker.js';
import type { BridgeHealth } from './types.js';

export interface BridgeHttpServer {
  readonly server: Server;
  readonly port: number;
  /** Stops listening and ends open connections (keep-alive ones too). */
  close(): Promise<void>;
}

/** Listens on `host:port` (0: a free port) and resolves once bound. */
export async function listenBridgeHttp(server: Server, port: number, host: string): Promise<BridgeHttpServer> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
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

/**
 * The health a bridge reports: its own, and with federation, the relay
 * cluster's side. Without Redis or the relay connection nothing crosses the
 * bridge: down, whatever the foreign network says. A scaled-out follower
 * holds no relay connection by design (`standby`): not down. Undefined
 * health (a bridge still starting) is down.
 */
export function bridgeHealthReport(
  health: BridgeHealth | undefined,
  federation: FederationHealth | undefined,
): { readonly down: boolean; readonly body: Record<string, unknown> } {
  const down =
    health === undefined ||
    health.status === 'down' ||
    (federation !== undefined && (federation.redis !== 'ready' || federation.relay === 'disconnected'));
  return {
    down,
    body: { ...health, status: down ? 'down' : health?.status, ...(federation ? { federation } : {}) },
  };
}

/** GET /health: the report as JSON, 503 when down. */
export async function writeBridgeHealth(
  res: ServerResponse,
  health: BridgeHealth | undefined,
  federation: BridgeFederation | undefined,
): Promise<void> {
  const report = bridgeHealthReport(health, federation ? await federation.health() : undefined);
  res.writeHead(report.down ? 503 : 200, { 'content-type': 'application/json' }).end(JSON.stringify(report.body));
}

/** GET /metrics: the registry in Prometheus text. */
export async function writeMetrics(res: ServerResponse, registry: Registry): Promise<void> {
  const text = await registry.metrics();
  res.writeHead(200, { 'content-type': registry.contentType }).end(text);
}
