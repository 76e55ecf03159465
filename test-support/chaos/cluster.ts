/**
 * A relay cluster for chaos runs: one private Redis with the append-only file
 * on, and N relay node processes on it, each of which can be killed with
 * SIGKILL and started again. Peers reach each node through a stable front
 * address (a TcpProxy per node and transport, the role a Kubernetes Service or
 * a load balancer plays), so their URL lists stay valid across restarts.
 *
 * Why not restart the node on its old ports: its ports came from the
 * kernel's ephemeral range (port 0), and while hundreds of peers reconnect
 * after a kill, one of their outgoing connections can take the freed port
 * within milliseconds; the new process then cannot listen
 * ("cannot listen for WebSocket"). Seen in the first runs of this suite.
 *
 *   const cluster = await startCluster({ nodes: 3, appendfsync: 'always' });
 *   cluster.nodes[0].kill();            // kill -9
 *   await cluster.nodes[0].restart();   // same ports, a new node id
 *   await cluster.restartRedis();       // kill -9 redis-server, start it again from its AOF
 *   await cluster.stop();
 */
import { type RedisHandle, startRedis } from '../redis.js';
import { type RelayHandle, startRelay } from '../relay-process.js';
import { TcpProxy } from '../tcp-proxy.js';

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
};

export interface NodeSlot {
  /** Index in the cluster (stable across restarts). */
  readonly index: number;
  /** The running process, or the last one if killed. */
  handle: RelayHandle;
  /** The stable front ports peers use (the process's own ports change on restart). */
  readonly ports: { ws: number; tcp: number };
  readonly wsUrl: string;
  readonly tcpUrl: string;
  /** Node id of the current process (a restart gets a new one, like a new pod). */
  get nodeId(): string;
  get alive(): boolean;
  /** kill -9. */
  kill(): void;
  /** Starts a new process behind the same front ports. */
  restart(): Promise<void>;
  /** Stops the process (SIGTERM) and the front proxies. */
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
    const handles = await Promise.all(
      Array.from({ length: options.nodes }, (_, i) =>
        startRelay({ redisUrl: redis.url, nodeId: `chaos-${process.pid}-n${i}`, env, echo: options.echo ?? false }),
      ),
    );
    for (const [i, h] of handles.entries()) nodes.push(await makeSlot(i, h, redis.url, env, options.echo ?? false));
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

async function makeSlot(
  index: number,
  first: RelayHandle,
  redisUrl: string,
  env: Record<string, string>,
  echo: boolean,
): Promise<NodeSlot> {
  let generation = 0;
  const front = {
    ws: await TcpProxy.start({ port: first.ports.ws }),
    tcp: await TcpProxy.start({ port: first.ports.tcp }),
  };
  const slot: NodeSlot = {
    index,
    handle: first,
    ports: { ws: front.ws.port, tcp: front.tcp.port },
    wsUrl: front.ws.url('ws'),
    tcpUrl: front.tcp.url('tcp'),
    get nodeId() {
      return slot.handle.nodeId;
    },
    get alive() {
      return slot.handle.process.exitCode === null && slot.handle.process.signalCode === null;
    },
    kill() {
      slot.handle.kill('SIGKILL');
    },
    async restart() {
      if (slot.alive) {
        slot.handle.kill('SIGKILL');
        await slot.handle.exited;
      }
      generation++;
      slot.handle = await startRelay({ redisUrl, nodeId: `chaos-${process.pid}-n${index}-g${generation}`, echo, env });
      front.ws.setTarget(slot.handle.ports.ws);
      front.tcp.setTarget(slot.handle.ports.tcp);
    },
    async stop() {
      await slot.handle.stop(3000);
      await front.ws.close();
      await front.tcp.close();
    },
  };
  return slot;
}
