/**
 * The bridge's HTTP listener (node:http): everything ActivityPub goes to
 * Fedify (`ActivityPubBridge.fetch`), after the inbox checks Fedify does not
 * count for us; plus health and metrics.
 *
 *   POST /inbox, /users/<handle>/inbox   body at most BRIDGE_AP_MAX_ACTIVITY_BYTES (else 413),
 *                                        an ActivityPub or JSON media type (else 415), a JSON
 *                                        object with string `id`, `type`, `actor` (else 400),
 *                                        signed (a Signature or Signature-Input header, or an
 *                                        embedded proof or signature; else 401); then Fedify
 *   GET  /health                         JSON: the bridge's and the federation's health; 503 when down
 *   GET  /metrics                        Prometheus text
 *   anything else                        Fedify (WebFinger, actors, collections, NodeInfo) or 404
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  type BridgeFederation,
  type BridgeHttpServer,
  listenBridgeHttp,
  writeBridgeHealth,
  writeMetrics,
} from '@libertaria/bridge-kit/worker';
import type { ActivityPubBridge } from './activitypub-bridge.js';
import type { BridgeActivityPubMetrics } from './metrics.js';

export type { BridgeHttpServer };

export interface BridgeHttpOptions {
  readonly host: string;
  readonly port: number;
  readonly metrics: BridgeActivityPubMetrics;
  readonly maxActivityBytes: number;
  /** Set once the bridge exists (the bridge needs the origin, which needs the port). */
  bridge?: ActivityPubBridge;
  federation?: BridgeFederation;
}

const INBOX_PATH = /^\/(?:inbox|users\/[A-Za-z0-9_]{1,64}\/inbox)$/;
const ACTIVITY_TYPES = /^application\/(?:activity\+json|ld\+json|json)\b/i;

class TooLarge extends Error {}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new TooLarge();
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > limit) throw new TooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function toRequest(req: IncomingMessage, body: Buffer | undefined): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (typeof value === 'string') headers.set(name, value);
    else if (Array.isArray(value)) for (const v of value) headers.append(name, v);
  }
  // The URL's origin is not trusted for ids (Fedify builds them from BRIDGE_AP_ORIGIN); the path is what routes.
  return new Request(`http://${req.headers.host ?? 'bridge.invalid'}${req.url ?? '/'}`, {
    method: req.method ?? 'GET',
    headers,
    ...(body === undefined ? {} : { body }),
  });
}

async function write(res: ServerResponse, response: Response): Promise<void> {
  res.writeHead(response.status, Object.fromEntries(response.headers));
  res.end(Buffer.from(await response.arrayBuffer()));
}

/** Why an inbox body is refused before Fedify sees it, or undefined when it may go on. */
function precheck(req: IncomingMessage, body: Buffer): { status: number; reason: string } | undefined {
  if (!ACTIVITY_TYPES.test(String(req.headers['content-type'] ?? ''))) return { status: 415, reason: 'content_type' };
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    return { status: 400, reason: 'json' };
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return { status: 400, reason: 'shape' };
  const activity = json as Record<string, unknown>;
  const actor =
    typeof activity.actor === 'object' && activity.actor !== null
      ? (activity.actor as { id?: unknown }).id
      : activity.actor;
  if (typeof activity.id !== 'string' || typeof activity.type !== 'string' || typeof actor !== 'string') {
    return { status: 400, reason: 'shape' };
  }
  const signed =
    req.headers.signature !== undefined ||
    req.headers['signature-input'] !== undefined ||
    activity.signature !== undefined ||
    activity.proof !== undefined;
  if (!signed) return { status: 401, reason: 'unsigned' };
  return undefined;
}

export async function startBridgeHttpServer(options: BridgeHttpOptions): Promise<BridgeHttpServer> {
  const { metrics } = options;
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/metrics' && req.method === 'GET') {
      await writeMetrics(res, metrics.registry);
      return;
    }
    if (path === '/health' && req.method === 'GET') {
      // Still starting (no bridge yet) is down.
      await writeBridgeHealth(res, options.bridge?.health(), options.federation);
      return;
    }
    const bridge = options.bridge;
    if (!bridge) {
      res.writeHead(503, { 'content-type': 'text/plain' }).end('starting');
      return;
    }
    let body: Buffer | undefined;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      try {
        body = await readBody(req, options.maxActivityBytes);
      } catch (err) {
        if (!(err instanceof TooLarge)) throw err;
        if (INBOX_PATH.test(path)) metrics.refused.labels('too_large').inc();
        res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end('too large');
        return;
      }
      if (req.method === 'POST' && INBOX_PATH.test(path)) {
        const refused = precheck(req, body);
        if (refused) {
          metrics.refused.labels(refused.reason).inc();
          res.writeHead(refused.status, { 'content-type': 'text/plain' }).end(refused.reason);
          return;
        }
      }
    }
    const response = await bridge.fetch(toRequest(req, body));
    if (req.method === 'POST' && INBOX_PATH.test(path)) {
      if (response.status === 400) metrics.refused.labels('invalid_activity').inc();
      else if (response.status === 401) metrics.refused.labels('signature').inc();
    }
    await write(res, response);
  };
  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error');
    });
  });
  return listenBridgeHttp(server, options.port, options.host);
}
