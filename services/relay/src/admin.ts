/**
 * The admin port: /healthz (the process answers), /readyz (not draining, and
 * Redis reachable and accepting writes), /metrics (Prometheus text), and,
 * when RELAY_ADMIN_TOKEN is set, behind `Authorization: Bearer <token>`:
 * GET /membrane/audit (the membrane's audit trail), PUT/DELETE
 * /membrane/trust/<did> (operator-set trust scores) and POST
 * /membrane/revocations (revoke a grant link by its cid). Kept apart from the peer
 * listeners so it can stay private to the cluster.
 *
 * Refusals are `text/plain` bodies that start with a stable code from
 * shared/protocol/src/errors.ts: `BAD_FIELD: …` (400: a malformed path, body or
 * parameter), the store's code (503), `INTERNAL: …` (500: a bug, counted in
 * relay_internal_errors_total{where="admin"}). No request, with or without the
 * token, can throw out of the handler: a throw answers 500 and the node goes on.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AuditPage, AuditQuery } from '@libertaria/membrane/redis';
import type { Registry } from 'prom-client';

export interface AdminHandlers {
  /** The node's relay identity, served at GET /identity. */
  identity: { did: string; didKey: string };
  registry: Registry;
  /** Resolves to null when ready, else to the reason it is not. */
  readiness(): Promise<string | null>;
  /** The audit endpoint; absent (404) without an admin token or with the membrane off. */
  membraneAudit?: { token: string; query(q: AuditQuery): Promise<AuditPage> };
  /** Operator writes (trust scores, revocations); absent (404) like the audit. */
  /** Called with a throw or rejection the handler contained (counted, logged by the node). */
  onInternalError?: (err: unknown) => void;
  membraneAdmin?: {
    token: string;
    setTrust(did: string, score: number): Promise<void>;
    removeTrust(did: string): Promise<boolean>;
    revoke(cid: string, untilMs?: number): Promise<void>;
  };
}

/** Largest request body the admin port reads (a trust score or a revocation is a few dozen bytes). */
const ADMIN_BODY_LIMIT = 4096;

/**
 * Reads a JSON body of at most ADMIN_BODY_LIMIT bytes. A larger one is
 * refused with BAD_FIELD (answered 413 on a connection that then closes): the
 * rest of it is read and dropped rather than the socket destroyed, so the
 * client gets the answer instead of a reset (the adversarial suite's P03).
 */
function readJson(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > ADMIN_BODY_LIMIT) {
        req.off('data', onData);
        chunks.length = 0;
        res.setHeader('connection', 'close');
        reject(
          Object.assign(new Error(`the body is above ${ADMIN_BODY_LIMIT} bytes`), { code: 'BAD_FIELD', status: 413 }),
        );
        req.resume();
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => {
      if (size > ADMIN_BODY_LIMIT) return;
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(new Error('the body is not JSON'));
      }
    });
    req.on('error', reject);
  });
}

/** PUT/DELETE /membrane/trust/<did>, POST /membrane/revocations. */
function serveMembraneAdmin(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  admin: NonNullable<AdminHandlers['membraneAdmin']>,
  contain: (err: unknown) => void,
): void {
  const text = (status: number, body: string) =>
    res.writeHead(status, { 'content-type': 'text/plain' }).end(`${body}\n`);
  if (!tokenMatches(req.headers.authorization, admin.token)) {
    res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' }).end('unauthorized\n');
    return;
  }
  const fail = (err: unknown) => {
    const code = err instanceof Error ? (err as { code?: unknown }).code : undefined;
    const message = err instanceof Error ? err.message : String(err);
    if (code === 'BAD_FIELD' || code === 'INVALID_DID' || typeof code !== 'string') {
      const status = (err as { status?: unknown }).status === 413 ? 413 : 400;
      text(status, `${typeof code === 'string' ? code : 'BAD_FIELD'}: ${message}`);
    } else {
      text(503, `${code}: ${message}`);
    }
  };
  if (path.startsWith('/membrane/trust/')) {
    let did: string;
    try {
      did = decodeURIComponent(path.slice('/membrane/trust/'.length));
    } catch {
      // URIError: a `%` not followed by two hex digits, or bytes that are not UTF-8.
      text(400, 'BAD_FIELD: the DID in the path is not valid percent-encoding');
      return;
    }
    if (req.method === 'DELETE') {
      admin
        .removeTrust(did)
        .then((removed) => text(removed ? 200 : 404, removed ? 'removed' : 'no score'), fail)
        .catch(contain);
      return;
    }
    if (req.method !== 'PUT') return void res.writeHead(405, { allow: 'PUT, DELETE' }).end();
    readJson(req, res)
      .then((body) => admin.setTrust(did, (body as { score?: unknown }).score as number))
      .then(() => text(200, 'stored'), fail)
      .catch(contain);
    return;
  }
  if (req.method !== 'POST') return void res.writeHead(405, { allow: 'POST' }).end();
  readJson(req, res)
    .then((body) => {
      const { cid, untilMs } = body as { cid?: unknown; untilMs?: unknown };
      if (untilMs !== undefined && (typeof untilMs !== 'number' || !Number.isSafeInteger(untilMs))) {
        throw Object.assign(new Error('untilMs: milliseconds since the epoch'), { code: 'BAD_FIELD' });
      }
      return admin.revoke(cid as string, untilMs as number | undefined);
    })
    .then(() => text(200, 'revoked'), fail)
    .catch(contain);
}

/** Most records one /membrane/audit call returns. */
export const ADMIN_AUDIT_MAX_LIMIT = 1000;
const STREAM_ID = /^\d{1,16}-\d{1,16}$/;
const MS = /^\d{1,16}$/;

/** Compares tokens in constant time (hashes first, so lengths do not leak either). */
function tokenMatches(header: string | undefined, token: string): boolean {
  const given = header?.startsWith('Bearer ') ? header.slice(7) : '';
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b) && given.length > 0;
}

/** Query string -> AuditQuery, or a message saying which parameter is wrong. */
export function parseAuditQuery(params: URLSearchParams): AuditQuery | string {
  const q: AuditQuery = {};
  for (const [name, value] of params) {
    switch (name) {
      case 'peer':
      case 'owner':
      case 'resource':
      case 'action':
        if (value.length === 0 || value.length > 256) return `${name}: 1 to 256 characters`;
        q[name] = value;
        break;
      case 'allowed':
        if (value !== 'true' && value !== 'false') return 'allowed: true or false';
        q.allowed = value === 'true';
        break;
      case 'since':
      case 'until':
        if (!MS.test(value)) return `${name}: milliseconds since the epoch`;
        q[name === 'since' ? 'sinceMs' : 'untilMs'] = Number(value);
        break;
      case 'after':
        if (!STREAM_ID.test(value)) return 'after: a cursor (the `next` of a previous answer)';
        q.after = value;
        break;
      case 'limit': {
        const n = Number(value);
        if (!/^\d{1,4}$/.test(value) || n < 1 || n > ADMIN_AUDIT_MAX_LIMIT) {
          return `limit: 1 to ${ADMIN_AUDIT_MAX_LIMIT}`;
        }
        q.limit = n;
        break;
      }
      default:
        return `unknown parameter ${name}: peer, owner, resource, action, allowed, since, until, after, limit`;
    }
  }
  return q;
}

function serveAudit(
  req: IncomingMessage,
  res: ServerResponse,
  audit: NonNullable<AdminHandlers['membraneAudit']>,
  contain: (err: unknown) => void,
): void {
  if (!tokenMatches(req.headers.authorization, audit.token)) {
    res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' }).end('unauthorized\n');
    return;
  }
  const q = parseAuditQuery(new URL(req.url ?? '/', 'http://admin').searchParams);
  if (typeof q === 'string') {
    res.writeHead(400, { 'content-type': 'text/plain' }).end(`BAD_FIELD: ${q}\n`);
    return;
  }
  audit
    .query(q)
    .then(
      (page) =>
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(`${JSON.stringify({ records: page.records, next: page.next ?? null })}\n`),
      (err: unknown) =>
        res
          .writeHead(503, { 'content-type': 'text/plain' })
          .end(`STORE_UNAVAILABLE: audit unavailable: ${String(err)}\n`),
    )
    .catch(contain);
}

export function listenAdmin(
  host: string,
  port: number,
  handlers: AdminHandlers,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    try {
      route(req, res);
    } catch (err) {
      internal(res, err);
    }
  });
  /** A throw contained: counted and logged by the node, answered 500 if the answer has not started. */
  const internal = (res: ServerResponse, err: unknown): void => {
    try {
      handlers.onInternalError?.(err);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('INTERNAL: internal error\n');
      else res.destroy();
    } catch {
      res.destroy();
    }
  };
  const route = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (
      handlers.membraneAdmin !== undefined &&
      (path.startsWith('/membrane/trust/') || path === '/membrane/revocations')
    ) {
      serveMembraneAdmin(req, res, path, handlers.membraneAdmin, (err) => internal(res, err));
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/identity') {
      // Public: the same DID every CHALLENGE proves. Operators publish it as the fragment of their relay URLs.
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(`${JSON.stringify({ did: handlers.identity.did, didKey: handlers.identity.didKey })}\n`);
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/readyz') {
      handlers
        .readiness()
        .then(
          (reason) => {
            if (reason === null) res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n');
            else res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: ${reason}\n`);
          },
          (err: unknown) => res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: ${String(err)}\n`),
        )
        .catch((err: unknown) => internal(res, err));
      return;
    }
    if (path === '/membrane/audit' && handlers.membraneAudit !== undefined) {
      serveAudit(req, res, handlers.membraneAudit, (err) => internal(res, err));
      return;
    }
    if (path === '/metrics') {
      handlers.registry
        .metrics()
        .then(
          (text) => res.writeHead(200, { 'content-type': handlers.registry.contentType }).end(text),
          (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err)),
        )
        .catch((err: unknown) => internal(res, err));
      return;
    }
    res
      .writeHead(404, { 'content-type': 'text/plain' })
      .end('not found: try /healthz, /readyz, /identity or /metrics\n');
  };
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const addr = server.address();
      resolve({ server, port: typeof addr === 'object' && addr ? addr.port : port });
    });
  });
}
