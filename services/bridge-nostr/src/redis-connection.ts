/**
 * The bridge's Redis connections, made in one place: the server at
 * BRIDGE_NOSTR_REDIS_URL, or a Redis Cluster when REDIS_CLUSTER_NODES lists
 * seed nodes (`host:port,…`; user, password and TLS then come from the URL).
 * BullMQ needs its prefix hash-tagged on a Cluster (`{lr-bridge}`, the
 * default) so each of its scripts stays in one slot. Same rules as the
 * relay's services/relay/src/redis-connection.ts (docs/redis.md).
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis';

export type RedisClient = Redis | Cluster;

export interface RedisTarget {
  url: string;
  clusterNodes?: string | undefined;
}

export function parseClusterNodes(list: string): Array<{ host: string; port: number }> {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((entry) => {
      const at = entry.lastIndexOf(':');
      const port = Number(entry.slice(at + 1));
      if (at <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
        throw new Error(`REDIS_CLUSTER_NODES: "${entry}" is not host:port`);
      }
      return { host: entry.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port };
    });
}

/** A connection to the target; on a Cluster `options` apply to each node's connection. */
export function createRedisClient(target: RedisTarget, options: RedisOptions): RedisClient {
  if (!target.clusterNodes) return new Redis(target.url, options);
  const u = new URL(target.url);
  const { enableOfflineQueue, lazyConnect, ...perNode } = options;
  return new Cluster(parseClusterNodes(target.clusterNodes), {
    redisOptions: {
      ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
      ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
      ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
      ...perNode,
    },
    ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    clusterRetryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 6), 5000),
  });
}
