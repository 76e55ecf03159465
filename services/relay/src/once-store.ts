/**
 * Single-use ids for peers (ONCE_CHECK): "have I accepted this before?",
 * answered atomically for the whole cluster by one Redis SET NX.
 *
 * Peers use it as the replay guard (TicketStore) of 0-RTT tickets and
 * anonymous requests: two devices or processes of one DID, connected to two
 * different nodes, can never both accept the same first flight. Ids are
 * namespaced by the owner's routing hint, so nobody can burn another peer's
 * ids, and they reveal nothing (derived values or random ids).
 *
 *   key   {prefix}:once:{<owner hint hex>}:<id hex>   STRING "1", expires after the retention
 *
 * The hash tag is the owner, like the durable queue and prekeys, so a Redis
 * Cluster keeps one peer's keys on one shard.
 */
import { RelayError } from '@libertaria/shared';
import { toStoreError } from './durable-store.js';
import type { RedisClient } from './redis-connection.js';

export interface OnceStoreOptions {
  prefix: string;
  /** Longest retention a peer may ask for, in seconds. */
  maxRetentionSeconds: number;
}

export class OnceStore {
  readonly maxRetentionSeconds: number;

  constructor(
    private readonly redis: RedisClient,
    private readonly options: OnceStoreOptions,
  ) {
    this.maxRetentionSeconds = options.maxRetentionSeconds;
  }

  /** True the first time `id` is presented for `owner` within `retentionSeconds`, false after. */
  async consume(owner: Uint8Array, id: Uint8Array, retentionSeconds: number): Promise<boolean> {
    if (!Number.isInteger(retentionSeconds) || retentionSeconds < 1 || retentionSeconds > this.maxRetentionSeconds) {
      throw new RelayError(
        'ONCE_RETENTION_TOO_LONG',
        `retention ${retentionSeconds} s outside 1..${this.maxRetentionSeconds} s (RELAY_ONCE_MAX_RETENTION_SECONDS)`,
      );
    }
    const key = `${this.options.prefix}:once:{${Buffer.from(owner).toString('hex')}}:${Buffer.from(id).toString('hex')}`;
    let reply: string | null;
    try {
      reply = await this.redis.set(key, '1', 'EX', retentionSeconds, 'NX');
    } catch (err) {
      throw toStoreError(err);
    }
    return reply === 'OK';
  }
}
