/**
 * Single-use ids for peers (ONCE_CHECK): "have I accepted this before?",
 * answered atomically for the whole cluster by one small script per check.
 *
 * Peers use it as the replay guard (TicketStore) of 0-RTT tickets and
 * anonymous requests: two devices or processes of one DID, connected to two
 * different nodes, can never both accept the same first flight. Ids are
 * namespaced by the owner's routing hint, so nobody can burn another peer's
 * ids, and they reveal nothing (derived values or random ids).
 *
 *   key   {prefix}:once:{<owner hint hex>}:<id hex>   STRING "1", expires after the retention
 *   key   {prefix}:once-epoch:{<owner hint hex>}      STRING, 16 random bytes, no expiry
 *
 * The epoch (issue 13, item 6) names the data set that remembers an owner's
 * ids. It is made, at random, the first time the owner's ids are checked
 * and found without one, and every ONCE_RESULT carries it. If Redis loses
 * the data set (a restart without persistence, a replica promoted before it
 * ever synced, FLUSHALL) the epoch goes with the ids it vouched for and the
 * next check makes a new one: the owner's client, which remembers the old
 * epoch, then knows that ids it checked before may be forgotten and refuses
 * them for their retention (docs/relay.md#single-use-ids). Losing only the
 * last writes (appendfsync everysec, a lagging replica) keeps the epoch; the
 * persistence that covers that case is documented there too.
 *
 * The hash tag is the owner, like the durable queue and prekeys, so a Redis
 * Cluster keeps one peer's keys, epoch included, on one shard, and the
 * script may touch both.
 */
import { randomBytes } from 'node:crypto';
import { ONCE_EPOCH_SIZE, RelayError } from '@libertaria/protocol';
import type { RedisClient } from './redis-connection.js';
import { keyCheck, type ReplicaWaiter } from './replica-wait.js';
import { toStoreError } from './store-error.js';

export interface OnceStoreOptions {
  prefix: string;
  /** Longest retention a peer may ask for, in seconds. */
  maxRetentionSeconds: number;
  /**
   * RELAY_DURABLE_WAIT_REPLICAS > 0: "fresh" is answered only once replicas
   * hold the id (replica-wait.ts), so a failover cannot answer it fresh twice.
   */
  replicas?: ReplicaWaiter;
}

export interface OnceAnswer {
  /** The first time the id was checked within its retention. */
  fresh: boolean;
  /** The epoch of the owner's once-keys (ONCE_EPOCH_SIZE bytes). */
  epoch: Buffer;
}

// KEYS[1] the owner's epoch key, KEYS[2] the id key (one hash tag: one slot).
// ARGV[1] retention in seconds, ARGV[2] 16 random bytes: the epoch when none is found.
// Returns {1 fresh | 0 seen, epoch}.
const CONSUME_LUA = `
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[1], epoch)
end
if redis.call('SET', KEYS[2], '1', 'EX', ARGV[1], 'NX') then return {1, epoch} end
return {0, epoch}
`;

// Namespaced: defineCommand attaches it to a connection other modules share.
const CONSUME = 'libertariaOnceConsume';
type OnceCommands = {
  libertariaOnceConsumeBuffer(k1: string, k2: string, retention: number, epoch: Buffer): Promise<[number, Buffer]>;
};

export class OnceStore {
  readonly maxRetentionSeconds: number;
  private readonly commands: OnceCommands;

  constructor(
    redis: RedisClient,
    private readonly options: OnceStoreOptions,
  ) {
    this.maxRetentionSeconds = options.maxRetentionSeconds;
    redis.defineCommand(CONSUME, { numberOfKeys: 2, lua: CONSUME_LUA });
    this.commands = redis as unknown as OnceCommands;
  }

  /** Fresh the first time `id` is presented for `owner` within `retentionSeconds`, not after; with the owner's epoch. */
  async consume(owner: Uint8Array, id: Uint8Array, retentionSeconds: number): Promise<OnceAnswer> {
    if (!Number.isInteger(retentionSeconds) || retentionSeconds < 1 || retentionSeconds > this.maxRetentionSeconds) {
      throw new RelayError(
        'ONCE_RETENTION_TOO_LONG',
        `retention ${retentionSeconds} s outside 1..${this.maxRetentionSeconds} s (RELAY_ONCE_MAX_RETENTION_SECONDS)`,
      );
    }
    const tag = `{${Buffer.from(owner).toString('hex')}}`;
    const p = this.options.prefix;
    const key = `${p}:once:${tag}:${Buffer.from(id).toString('hex')}`;
    let reply: [number, Buffer];
    try {
      reply = await this.commands.libertariaOnceConsumeBuffer(
        `${p}:once-epoch:${tag}`,
        key,
        retentionSeconds,
        randomBytes(ONCE_EPOCH_SIZE),
      );
    } catch (err) {
      throw toStoreError(err);
    }
    const [fresh, epoch] = reply;
    if (!Buffer.isBuffer(epoch) || epoch.length !== ONCE_EPOCH_SIZE) {
      // Someone else wrote the key: refuse rather than vouch for ids under a value we did not make.
      throw new RelayError('STORE_UNAVAILABLE', 'the single-use id epoch in Redis is malformed');
    }
    // "Seen" needs no wait (the peer refuses the id either way); "fresh" does: lost in a failover,
    // the id would be answered fresh again. (A new epoch lost with it is the whole-data-set case.)
    if (fresh === 1 && this.options.replicas) {
      await this.options.replicas.wait(key, keyCheck(key, `${p}:w:${tag}`), 1);
    }
    return { fresh: fresh === 1, epoch };
  }
}
