/**
 * A TCP proxy on 127.0.0.1 (port 0) in front of one target, for chaos tests:
 * it cuts, delays and throttles a path without touching either end.
 *
 *   const proxy = await TcpProxy.start({ port: relay.ports.ws });
 *   proxy.url('ws')                      // ws://127.0.0.1:<proxy port>
 *   proxy.partition();                   // black hole: nothing passes either way, nothing is closed
 *   proxy.heal();                        // forward again, normal speed; what was held is delivered
 *   proxy.setDelay({ down: 10_000 });    // target → client bytes arrive 10 s late, in order
 *   proxy.setBandwidth({ up: 16_384 });  // client → target at most 16 KiB/s
 *   proxy.resetAll();                    // RST every connection now
 *   proxy.reject();                      // RST every connection, and every new one until heal()
 *
 * Why a proxy and not iptables/tc: tests run unprivileged, on loopback, next
 * to other tests; a proxy is per path and needs no root.
 *
 * What each fault means on the wire, and why it is modelled this way:
 * - Everything a socket produces (bytes, its FIN, its reset) goes through one
 *   FIFO per direction ("up" = client → target, "down" = target → client),
 *   so a delayed path delays a close exactly as much as the bytes before it,
 *   and order is preserved whatever the delay does (a release time never
 *   moves before the previous one).
 * - A partition holds the FIFOs instead of dropping bytes: TCP retransmits
 *   lost segments, so on a real network a partition that heals before the
 *   endpoints give up delivers everything late, not a corrupted stream.
 *   Dropping bytes from the middle of a stream would test something TCP
 *   never shows an application. When a FIFO holds more than
 *   `maxBufferedBytes` the proxy stops reading its source, so the sender's
 *   socket buffers fill and its writes back up, as behind a dead link.
 *   A connection opened during a partition is accepted but not connected
 *   to the target until heal (its SYN is "lost"): the target sees nothing.
 * - resetAll()/reject() are the other kind of failure: the path is known
 *   dead at once (a relay host that went away, a NAT that forgot us).
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export type Direction = 'up' | 'down';
export type ProxyMode = 'forward' | 'partitioned' | 'rejecting';

export interface TcpProxyOptions {
  /** Target port on `host`. */
  port: number;
  /** Target host; loopback only (default 127.0.0.1). */
  host?: string;
  /**
   * Bytes a direction may hold (delayed, throttled or partitioned) before the
   * proxy stops reading its source (default 4 MiB). Half of it resumes reading.
   */
  maxBufferedBytes?: number;
}

export interface ProxyStats {
  /** Connections accepted since start. */
  accepted: number;
  /** Connections open now (either side). */
  open: number;
  /** Bytes written to the target (up) and to clients (down). */
  bytesUp: number;
  bytesDown: number;
  /** Connections reset by resetAll()/reject(), or refused while rejecting. */
  resets: number;
}

const DEFAULT_MAX_BUFFERED = 4 * 1024 * 1024;
/** A throttled direction may burst this long's worth of bytes (keeps timers coarse, rates exact on average). */
const BURST_SECONDS = 0.05;

type Item = { kind: 'data'; data: Buffer; readyAt: number } | { kind: 'end' | 'reset'; readyAt: number };

/** One direction of one connection: a FIFO released by time (delay), budget (bandwidth) and mode (partition). */
class Pipe {
  private readonly queue: Item[] = [];
  private queuedBytes = 0;
  private lastReadyAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private waitingDrain = false;
  private tokens = 0;
  private tokensAt = 0;
  private finished = false;
  /** Set when the destination socket exists and is connected. */
  dst: Socket | undefined;

  constructor(
    private readonly proxy: TcpProxy,
    readonly direction: Direction,
    private readonly src: Socket,
    private readonly onReset: () => void,
    private readonly onFinished: () => void,
  ) {}

  push(item: { kind: 'data'; data: Buffer } | { kind: 'end' | 'reset' }): void {
    if (this.finished) return;
    const readyAt = Math.max(Date.now() + this.proxy.delayOf(this.direction), this.lastReadyAt);
    this.lastReadyAt = readyAt;
    this.queue.push({ ...item, readyAt });
    if (item.kind === 'data') {
      this.queuedBytes += item.data.length;
      if (this.queuedBytes > this.proxy.maxBufferedBytes && !this.src.isPaused()) this.src.pause();
    }
    this.pump();
  }

  /** Writes whatever may go now, and arranges to be called again when more may. */
  pump(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const dst = this.dst;
    if (this.finished || dst === undefined || this.waitingDrain || this.proxy.mode === 'partitioned') return;
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const now = Date.now();
      if (head.readyAt > now) return this.wake(head.readyAt - now);
      if (head.kind !== 'data') {
        this.queue.shift();
        this.finished = true;
        if (head.kind === 'end') {
          dst.end();
          this.onFinished();
        } else {
          this.onReset();
        }
        return;
      }
      let chunk = head.data;
      const rate = this.proxy.bandwidthOf(this.direction);
      if (rate !== undefined) {
        const burst = Math.max(1, Math.floor(rate * BURST_SECONDS));
        this.tokens = Math.min(burst, this.tokens + ((now - this.tokensAt) * rate) / 1000);
        this.tokensAt = now;
        const allowed = Math.floor(this.tokens);
        if (allowed < 1) return this.wake(Math.ceil(((1 - this.tokens) * 1000) / rate));
        if (chunk.length > allowed) chunk = chunk.subarray(0, allowed);
        this.tokens -= chunk.length;
      }
      if (chunk.length === head.data.length) this.queue.shift();
      else head.data = head.data.subarray(chunk.length);
      this.queuedBytes -= chunk.length;
      this.proxy.countBytes(this.direction, chunk.length);
      const flushed = dst.write(chunk);
      if (this.src.isPaused() && this.queuedBytes <= this.proxy.maxBufferedBytes / 2) this.src.resume();
      if (!flushed) {
        this.waitingDrain = true;
        dst.once('drain', () => {
          this.waitingDrain = false;
          this.pump();
        });
        return;
      }
    }
  }

  private wake(ms: number): void {
    this.timer = setTimeout(() => this.pump(), Math.max(1, ms));
  }

  /** Bandwidth or delay changed: recompute from now (a throttled pipe must not spend a stale budget). */
  retune(): void {
    this.tokens = 0;
    this.tokensAt = Date.now();
    this.pump();
  }

  stop(): void {
    this.finished = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.queue.length = 0;
  }
}

/** A client connection and its upstream twin (created at once, or at heal() if accepted during a partition). */
class Connection {
  readonly up: Pipe;
  /** Exists once the upstream socket does: its source is that socket. */
  private down: Pipe | undefined;
  private upstream: Socket | undefined;
  private closed = false;
  private ended = 0;

  constructor(
    private readonly proxy: TcpProxy,
    private readonly client: Socket,
  ) {
    this.up = new Pipe(
      proxy,
      'up',
      client,
      () => this.reset(),
      () => this.halfClosed(),
    );
    client.on('data', (d: Buffer) => this.up.push({ kind: 'data', data: d }));
    client.on('end', () => this.up.push({ kind: 'end' }));
    client.on('error', () => {});
    client.on('close', (hadError) => {
      if (hadError) this.up.push({ kind: 'reset' });
    });
  }

  connectUpstream(): void {
    if (this.closed || this.upstream !== undefined) return;
    const upstream = createConnection({
      host: this.proxy.targetHost,
      port: this.proxy.targetPort,
      allowHalfOpen: true,
    });
    upstream.setNoDelay(true);
    this.upstream = upstream;
    const down = new Pipe(
      this.proxy,
      'down',
      upstream,
      () => this.reset(),
      () => this.halfClosed(),
    );
    down.dst = this.client;
    this.down = down;
    upstream.on('connect', () => {
      this.up.dst = upstream;
      this.up.pump();
    });
    upstream.on('data', (d: Buffer) => down.push({ kind: 'data', data: d }));
    upstream.on('end', () => down.push({ kind: 'end' }));
    upstream.on('error', () => {});
    // A refused or reset upstream reaches the client as a reset, after the down delay like any other event.
    upstream.on('close', (hadError) => {
      if (hadError) down.push({ kind: 'reset' });
    });
  }

  private halfClosed(): void {
    if (++this.ended === 2) this.destroy();
  }

  /** Both ends see an RST. */
  reset(): void {
    if (this.closed) return;
    this.closed = true;
    this.up.stop();
    this.down?.stop();
    this.client.resetAndDestroy();
    this.upstream?.resetAndDestroy();
    this.proxy.forget(this);
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.up.stop();
    this.down?.stop();
    this.client.destroy();
    this.upstream?.destroy();
    this.proxy.forget(this);
  }

  retune(): void {
    this.up.retune();
    this.down?.retune();
  }
}

export class TcpProxy {
  readonly targetHost: string;
  targetPort: number;
  readonly maxBufferedBytes: number;
  mode: ProxyMode = 'forward';
  private readonly delays: Record<Direction, number> = { up: 0, down: 0 };
  private readonly rates: Record<Direction, number | undefined> = { up: undefined, down: undefined };
  private readonly connections = new Set<Connection>();
  private readonly counters: ProxyStats = { accepted: 0, open: 0, bytesUp: 0, bytesDown: 0, resets: 0 };

  private constructor(
    private readonly server: Server,
    readonly port: number,
    options: TcpProxyOptions,
  ) {
    this.targetHost = options.host ?? '127.0.0.1';
    this.targetPort = options.port;
    this.maxBufferedBytes = positive(options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED, 'maxBufferedBytes');
  }

  static async start(options: TcpProxyOptions): Promise<TcpProxy> {
    const host = options.host ?? '127.0.0.1';
    if (host !== '127.0.0.1' && host !== 'localhost' && host !== '::1') {
      throw new Error(`TcpProxy: target ${host} is not loopback; tests never leave the machine`);
    }
    let proxy: TcpProxy | undefined;
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => proxy?.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address !== 'object') throw new Error('TcpProxy: no address');
    proxy = new TcpProxy(server, address.port, options);
    return proxy;
  }

  url(scheme: 'ws' | 'tcp'): string {
    return `${scheme}://127.0.0.1:${this.port}`;
  }

  get stats(): ProxyStats {
    return { ...this.counters, open: this.connections.size };
  }

  /** New connections go to this port (e.g. a relay restarted elsewhere); open ones are left alone. */
  setTarget(port: number): void {
    this.targetPort = port;
  }

  /** Black hole both ways: nothing passes, nothing is closed; new connections are held unconnected. */
  partition(): void {
    this.mode = 'partitioned';
  }

  /** Resets every open connection and, until heal(), every new one. */
  reject(): void {
    this.mode = 'rejecting';
    this.resetAll();
  }

  /** Resets (RST) every open connection; the mode is unchanged. */
  resetAll(): void {
    for (const c of [...this.connections]) {
      this.counters.resets++;
      c.reset();
    }
  }

  /** Added one-way delay per direction, in ms; bytes already on their way keep their time. */
  setDelay(delay: Partial<Record<Direction, number>>): void {
    for (const d of ['up', 'down'] as const) {
      const ms = delay[d];
      if (ms !== undefined) this.delays[d] = nonNegative(ms, `delay.${d}`);
    }
    for (const c of this.connections) c.retune();
  }

  /** Bytes per second per direction; null lifts the limit. */
  setBandwidth(rate: Partial<Record<Direction, number | null>>): void {
    for (const d of ['up', 'down'] as const) {
      const r = rate[d];
      if (r === null) this.rates[d] = undefined;
      else if (r !== undefined) this.rates[d] = positive(r, `bandwidth.${d}`);
    }
    for (const c of this.connections) c.retune();
  }

  /** Back to plain forwarding: no partition, no rejection, no delay, no throttle. Held bytes flow. */
  heal(): void {
    this.mode = 'forward';
    this.delays.up = 0;
    this.delays.down = 0;
    this.rates.up = undefined;
    this.rates.down = undefined;
    for (const c of this.connections) {
      c.connectUpstream();
      c.retune();
    }
  }

  async close(): Promise<void> {
    this.resetAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // Used by connections and pipes.
  delayOf(direction: Direction): number {
    return this.delays[direction];
  }
  bandwidthOf(direction: Direction): number | undefined {
    return this.rates[direction];
  }
  countBytes(direction: Direction, n: number): void {
    if (direction === 'up') this.counters.bytesUp += n;
    else this.counters.bytesDown += n;
  }
  forget(connection: Connection): void {
    this.connections.delete(connection);
  }

  private accept(socket: Socket): void {
    this.counters.accepted++;
    if (this.mode === 'rejecting') {
      this.counters.resets++;
      socket.on('error', () => {});
      socket.resetAndDestroy();
      return;
    }
    socket.setNoDelay(true);
    const connection = new Connection(this, socket);
    this.connections.add(connection);
    if (this.mode === 'forward') connection.connectUpstream();
  }
}

function positive(n: number, what: string): number {
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`TcpProxy: ${what} must be a positive number, got ${n}`);
  return n;
}

function nonNegative(n: number, what: string): number {
  if (!Number.isFinite(n) || n < 0) throw new RangeError(`TcpProxy: ${what} must be 0 or more, got ${n}`);
  return n;
}
