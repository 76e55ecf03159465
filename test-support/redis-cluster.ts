/**
 * A real local Redis Cluster for a test file: six redis-server processes
 * (private ports and directories, killed with the test process, see
 * children.ts), three primaries with one replica each, made by
 * `redis-cli --cluster create`. A primary is declared failed after
 * `nodeTimeoutMs` and its replica takes over; full coverage is not required,
 * so the other shards keep serving meanwhile.
 *
 *   const cluster = await startRedisCluster();
 *   // cluster.nodes: "127.0.0.1:p1,…" (REDIS_CLUSTER_NODES); cluster.primaryFor(key)
 *   after(() => cluster.stop());
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import calculateSlot from 'cluster-key-slot';
import { Redis } from 'ioredis';
import { type RedisHandle, startRedis } from './redis.js';

const run = promisify(execFile);

export interface RedisClusterHandle {
  servers: RedisHandle[];
  /** Seed list for REDIS_CLUSTER_NODES. */
  nodes: string;
  /** The server that is primary for `key`'s slot now. */
  primaryFor(key: string): Promise<RedisHandle>;
  /**
   * Makes the replica of the (dead) primary on `port` take over its slots at
   * once (CLUSTER FAILOVER TAKEOVER): for a test whose automatic failover did
   * not come in time on a loaded machine. Returns the replica's port.
   */
  takeOver(port: number): Promise<number>;
  /** Waits until every live node reports cluster_state:ok and `port` (if given) is a primary no more or again a replica. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

async function info(port: number, section: string): Promise<string> {
  const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 1000 });
  r.on('error', () => {});
  try {
    await r.connect();
    if (section === 'nodes') return (await r.call('CLUSTER', 'NODES')) as string;
    if (section === 'replication') return await r.info('replication');
    return await r.cluster('INFO');
  } finally {
    r.disconnect();
  }
}

/**
 * Until every replica's link to its primary is up and its first sync done:
 * before that a replica holds nothing, and a failover to it loses the whole
 * slot range, which is not the replication lag a test means to measure.
 */
async function waitReplicasSynced(servers: RedisHandle[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const states = await Promise.all(
      servers.map((s) =>
        info(s.port, 'replication').then(
          (i) =>
            /role:slave/.test(i)
              ? /master_link_status:up/.test(i) && /master_sync_in_progress:0/.test(i)
                ? 'up'
                : 'syncing'
              : 'primary',
          () => 'down',
        ),
      ),
    );
    last = states.join(',');
    if (states.filter((st) => st === 'up').length === servers.length / 2) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`replicas not in sync within ${timeoutMs} ms: ${last}`);
}

export async function startRedisCluster(options: { nodeTimeoutMs?: number } = {}): Promise<RedisClusterHandle> {
  const nodeTimeout = String(options.nodeTimeoutMs ?? 1000);
  const started = await Promise.allSettled(
    Array.from({ length: 6 }, () =>
      startRedis({
        cluster: true,
        args: [
          '--cluster-config-file',
          'nodes.conf',
          '--cluster-node-timeout',
          nodeTimeout,
          '--cluster-require-full-coverage',
          'no',
          '--cluster-allow-reads-when-down',
          'no',
          // A replica whose link to its primary lagged (a loaded test machine) may still take over.
          '--cluster-replica-validity-factor',
          '0',
          // Redis waits 5 s by default before a diskless full sync, for more replicas to join: a
          // primary killed in those first seconds left an empty replica to take over (issue 17).
          '--repl-diskless-sync-delay',
          '0',
        ],
      }),
    ),
  );
  const servers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    // The ones that did start must not outlive the failure: their pipes would keep the test process alive.
    await Promise.all(servers.map((s) => s.stop()));
    throw failed.reason;
  }
  const stop = async (): Promise<void> => {
    await Promise.all(servers.map((s) => s.stop()));
  };
  try {
    const addresses = servers.map((s) => `127.0.0.1:${s.port}`);
    await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '1', '--cluster-yes'], {
      timeout: 60_000,
    });
    const handle: RedisClusterHandle = {
      servers,
      nodes: addresses.join(','),
      async primaryFor(key: string) {
        const slot = calculateSlot(key);
        for (const s of servers) {
          let nodes: string;
          try {
            nodes = await info(s.port, 'nodes');
          } catch {
            continue;
          }
          for (const line of nodes.split('\n')) {
            const [, addr, flags, , , , , state, ...ranges] = line.split(' ');
            if (!flags?.includes('master') || flags.includes('fail') || state !== 'connected') continue;
            for (const range of ranges) {
              const [from, to] = range.split('-').map(Number);
              if (from !== undefined && slot >= from && slot <= (to ?? from)) {
                const port = Number(addr?.split('@')[0]?.split(':')[1]);
                const server = servers.find((x) => x.port === port);
                if (server) return server;
              }
            }
          }
          break;
        }
        throw new Error(`no primary found for ${key} (slot ${slot})`);
      },
      async takeOver(port: number) {
        for (const s of servers) {
          if (s.port === port) continue;
          let nodes: string;
          try {
            nodes = await info(s.port, 'nodes');
          } catch {
            continue;
          }
          const lines = nodes.split('\n').map((l) => l.split(' '));
          const dead = lines.find((f) => Number(f[1]?.split('@')[0]?.split(':')[1]) === port)?.[0];
          const replica = lines.find((f) => f[2]?.includes('slave') && f[3] === dead);
          const replicaPort = Number(replica?.[1]?.split('@')[0]?.split(':')[1]);
          if (dead === undefined || !Number.isInteger(replicaPort)) continue;
          const r = new Redis({ port: replicaPort, host: '127.0.0.1', maxRetriesPerRequest: 0, connectTimeout: 1000 });
          r.on('error', () => {});
          try {
            await r.call('CLUSTER', 'FAILOVER', 'TAKEOVER');
          } finally {
            r.disconnect();
          }
          return replicaPort;
        }
        throw new Error(`no replica found for the primary on port ${port}`);
      },
      async waitHealthy(timeoutMs = 30_000) {
        const deadline = Date.now() + timeoutMs;
        let last = '';
        while (Date.now() < deadline) {
          const states = await Promise.all(
            servers.map((s) =>
              info(s.port, 'info').then(
                (i) => /cluster_state:(\w+)/.exec(i)?.[1] ?? '?',
                () => 'down',
              ),
            ),
          );
          last = states.join(',');
          if (states.every((st) => st === 'ok' || st === 'down') && states.includes('ok')) return;
          await new Promise((r) => setTimeout(r, 200));
        }
        throw new Error(`cluster not healthy within ${timeoutMs} ms: states ${last}`);
      },
      stop,
    };
    await handle.waitHealthy();
    await waitReplicasSynced(servers);
    return handle;
  } catch (err) {
    await stop();
    throw err;
  }
}
