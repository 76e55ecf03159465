/**
 * The operators' view of the federation queues: Bull Board (@bull-board/api
 * with its Express adapter) behind an admin token. It shows every bridge's
 * outbound queue (from the registry), the inbound queue, and the queues
 * bridges run for themselves and list in `<prefix>:dashboard-queues` (e.g.
 * the ActivityPub bridge's Fedify queue): waiting, active,
 * delayed, completed and failed jobs, their data, errors and attempts, and
 * lets an operator retry or remove them.
 *
 * Authentication: `Authorization: Bearer <token>`, or HTTP Basic with any
 * user name and the token as password (what a browser prompts for). The
 * token is compared in constant time; without it every path answers 401.
 * Serve it on an internal address only: job data holds sealed frames (never
 * plain text), but retry and remove act on real messages.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import {
  type BridgeRegistration,
  bridgesKey,
  checkRegistration,
  dashboardQueuesKey,
  INBOUND_QUEUE,
  isServiceQueueName,
} from '@libertaria/bridge-kit';
import { Queue } from 'bullmq';
import express from 'express';
import type { RedisClient } from '../redis-connection.js';

export interface DashboardOptions {
  readonly redis: RedisClient;
  readonly prefix: string;
  readonly token: string;
  readonly host: string;
  readonly port: number;
  /** How often the list of bridge queues is re-read from the registry, in milliseconds. */
  readonly refreshMs: number;
}

export interface Dashboard {
  readonly port: number;
  /** Re-reads the registry now (new bridges appear without a restart). */
  refresh(): Promise<void>;
  close(): Promise<void>;
}

/** True when the request carries the token, as a Bearer token or a Basic password. */
export function authorized(header: string | undefined, token: string): boolean {
  if (header === undefined) return false;
  let presented: string | undefined;
  if (header.startsWith('Bearer ')) presented = header.slice(7);
  else if (header.startsWith('Basic ')) {
    const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    presented = colon < 0 ? undefined : decoded.slice(colon + 1);
  }
  if (presented === undefined) return false;
  const a = Buffer.from(presented);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function startDashboard(o: DashboardOptions): Promise<Dashboard> {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath('/');
  const queues = new Map<string, Queue>();
  const open = (name: string): Queue => {
    let q = queues.get(name);
    if (!q) {
      q = new Queue(name, { connection: o.redis, prefix: o.prefix });
      queues.set(name, q);
    }
    return q;
  };
  const board = createBullBoard({ queues: [new BullMQAdapter(open(INBOUND_QUEUE))], serverAdapter });
  const refresh = async (): Promise<void> => {
    const entries = await o.redis.hgetall(bridgesKey(o.prefix));
    const registrations: BridgeRegistration[] = [];
    for (const value of Object.values(entries)) {
      try {
        registrations.push(checkRegistration(JSON.parse(value)));
      } catch {
        // The relay nodes log malformed registrations; the dashboard just leaves them out.
      }
    }
    // Bridges' own queues, by names isServiceQueueName accepts (never a federation queue's, never a ':').
    const own = (await o.redis.smembers(dashboardQueuesKey(o.prefix))).filter(isServiceQueueName).sort();
    const known = new Set(queues.keys());
    const names = [...new Set([...registrations.map((r) => r.queue), ...own])];
    const added = names.filter((name) => !known.has(name)).map((name) => new BullMQAdapter(open(name)));
    for (const adapter of added) board.addQueue(adapter);
  };
  await refresh();
  const timer = setInterval(() => void refresh().catch(() => undefined), o.refreshMs);
  timer.unref();

  const app = express();
  app.disable('x-powered-by');
  app.use((req, res, next) => {
    if (authorized(req.headers.authorization, o.token)) return next();
    res.set('www-authenticate', 'Basic realm="federation queues"').status(401).send('admin token required');
  });
  app.use('/', serverAdapter.getRouter());
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(o.port, o.host, () => resolve(s));
    s.once('error', reject);
  });
  return {
    port: (server.address() as AddressInfo).port,
    refresh,
    async close() {
      clearInterval(timer);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.allSettled([...queues.values()].map((q) => q.close()));
    },
  };
}
