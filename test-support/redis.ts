/**
 * A private redis-server per test suite, on a free port, in a temporary
 * directory. Tests never share state with each other or with the machine's
 * Redis: each suite starts its own and stops it in `after`.
 *
 *   const redis = await startRedis();      // { url, port, stop() }
 *   after(() => redis.stop());
 *
 * Set TEST_REDIS_URL to use an existing server instead (its keys are not
 * cleaned: use a fresh key prefix per test).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ownChild } from './children.js';

export interface RedisHandle {
  url: string;
  port: number;
  /** Stops the server (SIGTERM, then SIGKILL after 2 s) and removes its directory. */
  stop(): Promise<void>;
  /** kill -9: for chaos tests. */
  kill(): void;
  /** Starts it again on the same port and directory (AOF survives if enabled). */
  restart(): Promise<void>;
}

export interface StartRedisOptions {
  /** Turn on the append-only file (durability across restarts). */
  appendonly?: boolean;
  /** Extra redis-server arguments, e.g. ['--maxmemory', '10mb']. */
  args?: string[];
  /**
   * A cluster node: its bus port is a free port of our range too
   * (`--cluster-port`). Redis's default, the port + 10000, falls in the
   * kernel's ephemeral range, where another connection may hold it (seen:
   * "Failed listening on port … (cluster), aborting").
   */
  cluster?: boolean;
}

/** Ports handed out by this process, so two servers of one suite never get the same one. */
const taken = new Set<number>();
/**
 * Below the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range,
 * 32768-60999 here): a port the kernel picked for us could be handed to some
 * outgoing connection between our probe and the server's bind (seen as
 * EADDRINUSE when a relay restarts on its old port during a reconnect storm).
 */
const PORT_RANGE = { from: 20_000, to: 32_000 };

/** A TCP port on 127.0.0.1 that is free now and that the kernel will not hand out by itself. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = PORT_RANGE.from + Math.floor(Math.random() * (PORT_RANGE.to - PORT_RANGE.from));
    if (taken.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.unref();
      probe.once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    if (free) {
      taken.add(port);
      return port;
    }
  }
  throw new Error(`no free port in ${PORT_RANGE.from}-${PORT_RANGE.to}`);
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host: '127.0.0.1', port }, () => sock.write('PING\r\n'));
    sock.setTimeout(500, () => {
      sock.destroy();
      resolve(false);
    });
    sock.on('data', (d) => {
      sock.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
    sock.on('error', () => resolve(false));
  });
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisHandle> {
  const external = process.env.TEST_REDIS_URL;
  if (external) {
    const port = Number(new URL(external).port || 6379);
    return { url: external, port, stop: async () => {}, kill: () => {}, restart: async () => {} };
  }
  // Another test process may bind a port between our probe and redis-server's bind: then new ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOn(await freePort(), options.cluster ? await freePort() : undefined, options);
    } catch (error) {
      if (attempt >= 3 || !/Address already in use/.test((error as Error).message)) throw error;
    }
  }
}

async function startOn(port: number, busPort: number | undefined, options: StartRedisOptions): Promise<RedisHandle> {
  const dir = mkdtempSync(join(tmpdir(), 'lr-redis-'));
  let child: ChildProcess | undefined;

  const launch = async (): Promise<void> => {
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      options.appendonly ? 'yes' : 'no',
      '--appendfsync',
      'everysec',
      '--dir',
      dir,
      ...(busPort === undefined ? [] : ['--cluster-enabled', 'yes', '--cluster-port', String(busPort)]),
      ...(options.args ?? []),
    ];
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    proc.stdout?.on('data', (d) => {
      output += d;
    });
    proc.stderr?.on('data', (d) => {
      output += d;
    });
    child = proc;
    ownChild(proc);
    // Starting takes well under a second on a quiet machine; CI machines are
    // loaded 2-core ones, and a restart with appendonly replays the AOF first.
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited: ${output}`);
      if (await ping(port)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    proc.kill('SIGKILL');
    throw new Error(`redis-server did not answer on port ${port} within 30 s; its output: ${output || '(none)'}`);
  };

  const stopChild = async (): Promise<void> => {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  };

  try {
    await launch();
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      await stopChild();
      rmSync(dir, { recursive: true, force: true });
    },
    kill() {
      child?.kill('SIGKILL');
    },
    async restart() {
      await stopChild();
      await launch();
    },
  };
}
