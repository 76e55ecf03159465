/**
 * A TCP proxy on 127.0.0.1 (port 0) in front of one target, for multipath
 * tests: it adds a fixed delay to every chunk in both directions (so a
 * path's round trip grows by 2 × delayMs), and can cut the path (close every
 * connection and refuse new ones) and restore it. Works for ws:// and tcp://
 * relay URLs alike (it only moves bytes).
 *
 *   const proxy = await startLatencyProxy({ target: relay.ports.tcp, delayMs: 40 });
 *   new RelayClient({ relays: [`tcp://127.0.0.1:${proxy.port}`], ... });
 *   proxy.cut(); proxy.restore(); await proxy.close();
 *
 * Chunks keep their order: each is forwarded at its arrival time + delayMs,
 * and Node fires timers with equal timeouts in the order they were set.
 */
import { createConnection, createServer, type Socket } from 'node:net';

export interface LatencyProxy {
  port: number;
  /** Added to each chunk, each direction; may be changed at any time (affects later chunks). */
  delayMs: number;
  /** Closes every connection and refuses new ones until restore(). */
  cut(): void;
  restore(): void;
  /** Connections opened through the proxy so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

export interface LatencyProxyOptions {
  /** Port on 127.0.0.1 to forward to. */
  target: number;
  delayMs?: number;
}

export async function startLatencyProxy(options: LatencyProxyOptions): Promise<LatencyProxy> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let isCut = false;
  let accepted = 0;

  const pipe = (from: Socket, to: Socket): void => {
    from.on('data', (chunk: Buffer) => {
      const send = (): void => {
        if (!to.destroyed) to.write(chunk);
      };
      if (proxy.delayMs <= 0) {
        send();
        return;
      }
      const timer = setTimeout(() => {
        timers.delete(timer);
        send();
      }, proxy.delayMs);
      timers.add(timer);
    });
    // A close travels after the data already scheduled, so nothing in flight is cut short.
    from.on('close', () => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        to.destroy();
      }, proxy.delayMs);
      timers.add(timer);
    });
    from.on('error', () => from.destroy());
  };

  const server = createServer((client) => {
    if (isCut) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = createConnection({ host: '127.0.0.1', port: options.target });
    sockets.add(client);
    sockets.add(upstream);
    client.on('close', () => sockets.delete(client));
    upstream.on('close', () => sockets.delete(upstream));
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('latency proxy: no address');

  const destroyAll = (): void => {
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };

  const proxy: LatencyProxy = {
    port: address.port,
    delayMs: options.delayMs ?? 0,
    get accepted() {
      return accepted;
    },
    cut() {
      isCut = true;
      destroyAll();
    },
    restore() {
      isCut = false;
    },
    close() {
      isCut = true;
      destroyAll();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
