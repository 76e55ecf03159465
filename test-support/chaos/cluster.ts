/**
 * A relay cluster for chaos runs: one private Redis with the append-only file
 * on, and N relay node processes on it, each of which can be killed with
 * SIGKILL and started again on the same ports, so peers' URL lists stay
 * valid (as with a fixed DNS name or a Kubernetes Service).
 *
 * Node ports are picked free below the kernel's ephemeral range
 * (/proc/sys/net/ipv4/ip_local_port_range, 32768–60999 here; freePort() in
 * test-support/redis.ts), not with port 0: a port 0 listener gets an ephemeral port, and while hundreds of peers
 * reconnect after a kill, one of their outgoing connections can take the freed
 * port within milliseconds, so the restarted node cannot listen ("cannot
 * listen for WebSocket"; seen in the first runs of this suite). Outgoing
 * connections never use ports below that range. TIME_WAIT sockets left by
 * the killed process do not block the restart (checked with 100 peers).
 */
import { freePort, type RedisHandle, startRedis } from '../redis.js';
import { type RelayHandle, startRelay } from '../relay-process.js';

/**
 * `always`: Redis fsyncs the AOF before it answers a write, so every frame a
 * relay ACKed is on disk (survives a machine crash). `everysec`: the write
 * reaches the kernel before the answer too (Redis writes the AOF buffer before
 * replying), so a killed redis-server loses nothing either, but a machine crash
 * or power loss can lose up to about the last second (two in the worst case)
 * of ACKed frames. A chaos run kills the process, not the machine, so both pass
 * here; the scenario reports which one ran.
 */
export type AppendFsync = 'always' | 'everysec';

export interface ClusterOptions {
  nodes: number;
  appendfsync?: AppendFsync;
  /** Extra RELAY_* variables for every node. */
  relayEnv?: Record<string, string>;
  /** Print relay output (debugging). */
  echo?: boolean;
}

/**
 * Relay settings every chaos cluster uses, and why:
 * - every peer here connects from 127.0.0.1, so the per-address handshake
 *   failure limit (meant for one abusive host) would throttle the whole
 *   fleet after a kill storm; real peers come from many addresses.
 */
export const CHAOS_RELAY_ENV: Readonly<Record<string, string>> = {
  RELAY_AUTH_FAILURES_PER_MINUTE: '100000',
  RELAY_AUTH_FAILURES_PER_ADDRESS_PER_MINUTE: '1000000',
};

export interface NodeSlot {
  /** Index in the cluster (stable across restarts). */
  readonly index: number;
  /** The running process, or the last one if killed. */
  readonly handle: RelayHandle;
  /** The node's ports, the same across restarts. */
  readonly ports: { ws: number; tcp: number; admin: number };
  readonly wsUrl: string;
  readonly tcpUrl: string;
  /** Node id of the current process (a restart gets a new one, like a new pod). */
  get nodeId(): string;
  get alive(): boolean;
  /** kill -9. */
  kill(): void;
  /** Starts a new process on the same ports. */
  restart(): Promise<void>;
  /** Stops the process (SIGTERM). */
  stop(): Promise<void>;
}

export interface Cluster {
  redis: RedisHandle;
  nodes: NodeSlot[];
  appendfsync: AppendFsync;
  /**
   * kill -9 redis-server, then start it again on the same port and directory
   * (it reloads the AOF). Resolves with the time it was unreachable, in ms.
   */
  restartRedis(downMs?: number): Promise<number>;
  stop(): Promise<void>;
}

export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const appendfsync = options.appendfsync ?? 'always';
  const redis = await startRedis({ appendonly: true, args: ['--appendfsync', appendfsync] });
  const env = { ...CHAOS_RELAY_ENV, ...options.relayEnv };
  const nodes: NodeSlot[] = [];
  try {
    for (let i = 0; i < options.nodes; i++) {
      const ports = { ws: await freePort(), tcp: await freePort(), admin: await freePort() };
      nodes.push(makeSlot(i, ports, redis.url, env, options.echo ?? false));
    }
    await Promise.all(nodes.map((n) => n.restart()));
  } catch (error) {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.stop();
    throw error;
  }
  return {
    redis,
    nodes,
    appendfsync,
    async restartRedis(downMs = 0) {
      const t0 = Date.now();
      redis.kill();
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      await redis.restart();
      return Date.now() - t0;
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.stop()));
      await redis.stop();
    },
  };
}

/** A node slot; its first process is started by the first restart(). */
function makeSlot(
  index: number,
  ports: { ws: number; tcp: number; admin: number },
  redisUrl: string,
  env: Record<string, string>,
  echo: boolean,
): NodeSlot {
  let generation = -1;
  let handle: RelayHandle | undefined;
  const slot: NodeSlot = {
    index,
    get handle() {
      if (handle === undefined) throw new Error(`node ${index} was never started`);
      return handle;
    },
    ports,
    wsUrl: `ws://127.0.0.1:${ports.ws}`,
    tcpUrl: `tcp://127.0.0.1:${ports.tcp}`,
    get nodeId() {
      return slot.handle.nodeId;
    },
    get alive() {
      return handle !== undefined && handle.process.exitCode === null && handle.process.signalCode === null;
    },
    kill() {
      handle?.kill('SIGKILL');
    },
    async restart() {
      if (handle !== undefined && slot.alive) {
        handle.kill('SIGKILL');
        await handle.exited;
      }
      generation++;
      handle = await startRelay({
        redisUrl,
        nodeId: `chaos-${process.pid}-n${index}-g${generation}`,
        echo,
        env: {
          ...env,
          RELAY_WS_PORT: String(ports.ws),
          RELAY_TCP_PORT: String(ports.tcp),
          RELAY_ADMIN_PORT: String(ports.admin),
        },
      });
    },
    async stop() {
      await handle?.stop(3000);
    },
  };
  return slot;
}
