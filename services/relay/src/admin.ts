/**
 * The admin port: /healthz (the process answers), /readyz (not draining, and
 * Redis reachable and accepting writes), /metrics (Prometheus text). Kept
 * apart from the peer listeners so it can stay private to the cluster.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface AdminHandlers {
  registry: Registry;
  /** Resolves to null when ready, else to the reason it is not. */
  readiness(): Promise<string | null>;
}

export function listenAdmin(
  host: string,
  port: number,
  handlers: AdminHandlers,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/readyz') {
      handlers.readiness().then(
        (reason) => {
          if (reason === null) res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n');
          else res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: ${reason}\n`);
        },
        (err: unknown) => res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: ${String(err)}\n`),
      );
      return;
    }
    if (path === '/metrics') {
      handlers.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': handlers.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err)),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /readyz or /metrics\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const addr = server.address();
      resolve({ server, port: typeof addr === 'object' && addr ? addr.port : port });
    });
  });
}
