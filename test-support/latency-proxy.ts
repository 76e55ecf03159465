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
  /**
   * Open the connection to the target only delayMs after the client's (its
   * SYN crossing the link), as a real delayed link does; by default it opens
   * at once, and the target sees a connection that stays silent for delayMs
   * (an HTTP server's idle timer, e.g. uWebSockets.js's 10 s before an
   * upgrade request, then closes it).
   */
  delayConnect?: boolean;
}

export async function startLatencyProxy(options: LatencyProxyOptions): Promise<LatencyProxy> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let isCut = false;
  let accepted = 0;

  const pipe = (from: Socket, toSocket: Socket | (() => Socket | undefined)): void => {
    const to = typeof toSocket === 'function' ? toSocket : () => toSocket;
    from.on('data', (chunk: Buffer) => {
      const send = (): void => {
        const t = to();
        if (t !== undefined && !t.destroyed) t.write(chunk);
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
        to()?.destroy();
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
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.setNoDelay(true);
    let upstream: Socket | undefined;
    const open = (): void => {
      if (client.destroyed) return;
      const u = createConnection({ host: '127.0.0.1', port: options.target });
      upstream = u;
      sockets.add(u);
      u.on('close', () => sockets.delete(u));
      u.setNoDelay(true);
      pipe(u, client);
    };
    // The client's bytes are delayed as much as the connection, and timers of equal delay fire in
    // the order they were set, so the connection exists (connecting: Node queues writes) before them.
    pipe(client, () => upstream);
    if (options.delayConnect === true && proxy.delayMs > 0) {
      const timer = setTimeout(() => {
        timers.delete(timer);
        open();
      }, proxy.delayMs);
      timers.add(timer);
    } else {
      open();
    }
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
