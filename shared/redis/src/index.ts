/**
 * @libertaria/redis: how every service connects to Redis (docs/redis.md), one
 * server at a URL or a Redis Cluster when seed nodes are listed
 * (`host:port,host:port,…`; user, password and TLS then come from the URL).
 * One set of rules for the relay and every bridge: per-node options, failover
 * retries while a replica takes over, slot-map refreshes. Node-only (ioredis).
 */
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';

export type RedisClient = Redis | Cluster;

/** What a connection needs to know about where Redis is. */
export interface RedisTarget {
  /** The server, or (with clusterNodes) the credentials and TLS for every Cluster node. */
  url: string;
  /** Seed nodes of a Redis Cluster, `host:port,host:port,…` (REDIS_CLUSTER_NODES). */
  clusterNodes?: string | undefined;
}

/** `host:port,host:port` → seed nodes; throws on a malformed entry. */
export function parseClusterNodes(list: string): Array<{ host: string; port: number }> {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((entry) => {
      const at = entry.lastIndexOf(':');
      const host = entry.slice(0, at).replace(/^\[(.*)\]$/, '$1');
      const port = Number(entry.slice(at + 1));
      if (at <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
        throw new Error(`REDIS_CLUSTER_NODES: "${entry}" is not host:port`);
      }
      return { host, port };
    });
}

export function isCluster(client: RedisClient): client is Cluster {
  return client.isCluster;
}

/** Credentials and TLS of the URL as per-node options. */
function urlOptions(url: string): RedisOptions {
  const u = new URL(url);
  const out: RedisOptions = {};
  if (u.username) out.username = decodeURIComponent(u.username);
  if (u.password) out.password = decodeURIComponent(u.password);
  if (u.protocol === 'rediss:') out.tls = {};
  return out;
}

/**
 * A connection to the target. `options` are per-connection ioredis options
 * (as for `new Redis`); on a Cluster they apply to each node connection, and
 * the Cluster itself gets the same offline-queue and auto-pipelining choice.
 */
export function createRedisClient(
  target: RedisTarget,
  options: RedisOptions,
  cluster: Partial<ClusterOptions> = {},
): RedisClient {
  if (target.clusterNodes === undefined || target.clusterNodes === '') return new Redis(target.url, options);
  const { enableOfflineQueue, enableAutoPipelining, lazyConnect, retryStrategy: _ignored, ...perNode } = options;
  return new Cluster(parseClusterNodes(target.clusterNodes), {
    redisOptions: { ...urlOptions(target.url), ...perNode },
    ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
    ...(enableAutoPipelining !== undefined ? { enableAutoPipelining } : {}),
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    // A primary that fails is replaced by its replica within the cluster's node timeout:
    // keep asking for the slot map meanwhile, then resend what was redirected.
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    retryDelayOnTryAgain: 100,
    slotsRefreshTimeout: 2000,
    clusterRetryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 6), 5000),
    ...cluster,
  });
}

/**
 * The part of an ioredis subscriber connection that a policy cache or a
 * registry listening for announcements uses (the relay's SharedSubscriber,
 * or a plain ioredis connection).
 */
export interface Subscriber {
  readonly status: string;
  connect(): Promise<void>;
  subscribe(...channels: string[]): Promise<unknown>;
  unsubscribe(...channels: string[]): Promise<unknown>;
  on(event: 'message', listener: (channel: string, message: string) => void): this;
  on(event: 'ready' | 'close' | 'end', listener: () => void): this;
  off(event: 'message', listener: (channel: string, message: string) => void): this;
  off(event: 'ready' | 'close' | 'end', listener: () => void): this;
  once(event: 'ready' | 'close' | 'end', listener: () => void): this;
}
