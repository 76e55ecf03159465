/**
 * A real Nostr relay on loopback for tests: @nostr-relay/core (the relay
 * library behind nostr-relay-nestjs and nostr-relay-tray) with its SQLite
 * event repository (in memory) and its message validator, served over `ws`
 * on 127.0.0.1 and a free port, the way its README wires it.
 *
 *   const relay = await startNostrRelay({ auth: true });   // { url, port, stop(), restart() }
 *
 * `auth: true` turns on the library's NIP-42 (it sends an AUTH challenge on
 * connect) and, like relays that keep gift wraps private, refuses REQs for
 * kind 1059 from connections that have not authenticated (CLOSED
 * "auth-required: …").
 */
import type { AddressInfo } from 'node:net';
import { type ClientContext, type HandleMessagePlugin, type IncomingMessage, LogLevel } from '@nostr-relay/common';
import { NostrRelay } from '@nostr-relay/core';
import { EventRepositorySqlite } from '@nostr-relay/event-repository-sqlite';
import { Validator } from '@nostr-relay/validator';
import { WebSocketServer } from 'ws';

export interface NostrRelayHandle {
  readonly url: string;
  readonly port: number;
  /** AUTH events the relay accepted (pubkeys), in order. */
  readonly authenticated: string[];
  /** Stops listening and drops every connection; the stored events are kept for restart(). */
  stop(): Promise<void>;
  /** Listens again on the same port with the same events. */
  restart(): Promise<void>;
  /** Refuses the next `count` EVENTs with `OK false "rate-limited: …"` (NIP-01), as a relay that throttles does. */
  rateLimitNext(count: number): void;
  /**
   * Holds every EVENT (neither stored nor answered) until the returned
   * function is called, as a relay that hangs does: publishers wait for
   * their OK meanwhile. `held()` counts the EVENTs waiting.
   */
  holdEvents(): () => void;
  held(): number;
}

export interface StartNostrRelayOptions {
  readonly auth?: boolean;
  /** Listen on this port (default: a free one). */
  readonly port?: number;
}

class GiftWrapAuthGuard implements HandleMessagePlugin {
  async handleMessage(ctx: ClientContext, message: IncomingMessage, next: () => Promise<never>) {
    if (message[0] === 'REQ' && !ctx.pubkey) {
      const [, subscriptionId, ...filters] = message;
      if (filters.some((f) => f.kinds?.includes(1059))) {
        ctx.sendMessage(['CLOSED', subscriptionId, 'auth-required: gift wraps are served to their recipient only']);
        return { messageType: 'REQ', events: [] } as never;
      }
    }
    return next();
  }
}

class RateLimiter implements HandleMessagePlugin {
  pending = 0;
  async handleMessage(ctx: ClientContext, message: IncomingMessage, next: () => Promise<never>) {
    if (message[0] === 'EVENT' && this.pending > 0) {
      this.pending--;
      ctx.sendMessage(['OK', message[1].id, false, 'rate-limited: slow down']);
      return { messageType: 'EVENT', success: false } as never;
    }
    return next();
  }
}

class EventGate implements HandleMessagePlugin {
  gate: Promise<void> | undefined;
  waiting = 0;
  async handleMessage(_ctx: ClientContext, message: IncomingMessage, next: () => Promise<never>) {
    if (message[0] === 'EVENT' && this.gate) {
      this.waiting++;
      await this.gate;
      this.waiting--;
    }
    return next();
  }
}

export async function startNostrRelay(options: StartNostrRelayOptions = {}): Promise<NostrRelayHandle> {
  const repository = new EventRepositorySqlite(':memory:');
  await repository.init(); // creates the tables (its migrations)
  const relay = new NostrRelay(repository, {
    ...(options.auth ? { hostname: '127.0.0.1' } : {}),
    logLevel: LogLevel.ERROR, // the library logs every connection at info
  });
  if (options.auth) relay.register(new GiftWrapAuthGuard());
  const limiter = new RateLimiter();
  relay.register(limiter);
  const gate = new EventGate();
  relay.register(gate);
  const validator = new Validator();
  const authenticated: string[] = [];
  let wss: WebSocketServer | undefined;
  let port = options.port ?? 0;

  const listen = async (): Promise<void> => {
    const server = new WebSocketServer({ host: '127.0.0.1', port });
    server.on('connection', (ws) => {
      relay.handleConnection(ws, '127.0.0.1');
      ws.on('message', async (data) => {
        try {
          const message = await validator.validateIncomingMessage(data);
          const result = await relay.handleMessage(ws, message);
          if (message[0] === 'AUTH' && result && (result as { success?: boolean }).success) {
            authenticated.push(message[1].pubkey);
          }
        } catch (error) {
          ws.send(JSON.stringify(['NOTICE', (error as Error).message]));
        }
      });
      ws.on('close', () => relay.handleDisconnect(ws));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('listening', resolve);
      server.once('error', reject);
    });
    port = (server.address() as AddressInfo).port;
    wss = server;
  };

  await listen();
  return {
    get url() {
      return `ws://127.0.0.1:${port}/`;
    },
    get port() {
      return port;
    },
    authenticated,
    async stop() {
      const server = wss;
      wss = undefined;
      if (!server) return;
      for (const client of server.clients) client.terminate();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    restart: listen,
    rateLimitNext(count: number) {
      limiter.pending = count;
    },
    holdEvents() {
      let release: () => void = () => {};
      gate.gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      return () => {
        gate.gate = undefined;
        release();
      };
    },
    held: () => gate.waiting,
  };
}
