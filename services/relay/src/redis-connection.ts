/**
 * The relay's Redis connections, made in one place (docs/redis.md): one
 * server at `REDIS_URL`, or a Redis Cluster when `REDIS_CLUSTER_NODES` lists
 * seed nodes (`host:port,host:port,…`; user, password and TLS then come from
 * `REDIS_URL`). A node opens two connections of its own: the command client
 * (stores, presence, publishing, the federation's BullMQ queues) and one
 * subscriber whose channels are dispatched by name (SharedSubscriber). On a
 * Cluster ioredis adds one connection per primary for each, and the
 * subscriber listens to the node's own channel with SSUBSCRIBE (sharded
 * pub/sub: a frame for a node crosses only the shard that owns its channel).
 *
 * Every key a script or a MULTI touches shares one hash tag (`{hintHex}`,
 * `{nodeId}`, `{scope}`, `{lr-bridge}`), so each lands in one Cluster slot;
 * commands over keys of several slots (withdraw, sweeps) go out one by one.
 */
import { EventEmitter } from 'node:events';
import { isCluster, type RedisClient, type Subscriber } from '@libertaria/redis';
import type { RedisOptions } from 'ioredis';

// The connection rules every service shares (one server or a Cluster) live in
// @libertaria/redis; the relay's own parts (the shared subscriber, sharded
// publishing) are below.
export {
  createRedisClient,
  isCluster,
  parseClusterNodes,
  type RedisClient,
  type RedisTarget,
  type Subscriber,
} from '@libertaria/redis';

/** ioredis options of a subscriber connection (SUBSCRIBE waits for the connection rather than failing). */
export const SUBSCRIBER_OPTIONS = {
  enableAutoPipelining: false,
  enableOfflineQueue: true,
  commandTimeout: undefined,
  lazyConnect: true,
} as const satisfies RedisOptions;

/**
 * One subscriber connection per node, dispatched by channel: binary channels
 * (the node's own, frames from other nodes) go to their handler as Buffers,
 * never decoded; every other message is emitted as ('message', channel,
 * text) to the Subscriber users (membrane policy invalidations, bridge
 * registry announcements). On a Cluster, binary channels use sharded
 * pub/sub (SSUBSCRIBE), the others classic pub/sub (broadcast to all nodes).
 */
export class SharedSubscriber extends EventEmitter implements Subscriber {
  private readonly binary = new Map<string, (message: Buffer) => void>();
  private connecting: Promise<void> | undefined;

  constructor(readonly connection: RedisClient) {
    super();
    const onMessage = (channel: Buffer, message: Buffer): void => {
      const name = channel.toString('latin1');
      const handler = this.binary.get(name);
      if (handler) handler(message);
      else if (this.listenerCount('message') > 0) this.emit('message', channel.toString(), message.toString());
    };
    connection.on('messageBuffer', onMessage);
    connection.on('smessageBuffer', onMessage);
    for (const event of ['ready', 'close', 'end'] as const) connection.on(event, () => this.emit(event));
  }

  get status(): string {
    return this.connection.status;
  }

  /** Connects once; later calls (from each user) wait for the same connection. */
  connect(): Promise<void> {
    if (this.connection.status === 'ready') return Promise.resolve();
    if (!this.connecting) {
      this.connecting =
        this.connection.status === 'wait'
          ? this.connection.connect()
          : new Promise<void>((resolve) => this.connection.once('ready', () => resolve()));
    }
    return this.connecting;
  }

  subscribe(...channels: string[]): Promise<unknown> {
    return this.connection.subscribe(...channels);
  }

  unsubscribe(...channels: string[]): Promise<unknown> {
    return this.connection.unsubscribe(...channels);
  }

  /** Subscribes a binary channel: sharded on a Cluster. */
  async subscribeBinary(channel: string, handler: (message: Buffer) => void): Promise<void> {
    this.binary.set(channel, handler);
    if (isCluster(this.connection)) await this.connection.ssubscribe(channel);
    else await this.connection.subscribe(channel);
  }

  quit(): Promise<unknown> {
    return this.connection.quit();
  }
}

/** Publishes on a binary channel as SharedSubscriber.subscribeBinary listens: SPUBLISH on a Cluster. */
export function publishBinary(client: RedisClient, channel: string, message: Buffer): Promise<unknown> {
  return isCluster(client) ? client.spublish(channel, message) : client.publish(channel, message);
}

/**
 * Runs single-key commands that may live in different Cluster slots: one
 * pipeline on a single server (one round trip), each on its own on a Cluster
 * (ioredis refuses a pipeline across slots), at most `chunk` in flight.
 * Rejects with the first failure once all have settled.
 */
export async function runEach(
  client: RedisClient,
  commands: ReadonlyArray<(c: RedisClient | ReturnType<RedisClient['pipeline']>) => unknown>,
  chunk = 1000,
): Promise<void> {
  if (commands.length === 0) return;
  if (!isCluster(client)) {
    const pipeline = client.pipeline();
    for (const add of commands) add(pipeline);
    const replies = await pipeline.exec();
    if (replies === null) throw new Error('Redis discarded the pipeline');
    const failed = replies.find(([err]) => err !== null);
    if (failed) throw failed[0];
    return;
  }
  for (let i = 0; i < commands.length; i += chunk) {
    const results = await Promise.allSettled(
      commands.slice(i, i + chunk).map((add) => add(client) as Promise<unknown>),
    );
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }
}
