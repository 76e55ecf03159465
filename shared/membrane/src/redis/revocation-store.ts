/**
 * The revocation list of grant links, shared by every node.
 *
 *   ${prefix}:mb:revoked  ZSET  cid → revoked until (ms since the epoch; +inf: for ever)
 *
 * An entry only needs to outlive the token it revokes (an expired token is
 * refused anyway), so a revocation can carry the token's expiry and is
 * purged after it: the list stays bounded by the live tokens revoked. A
 * check is one ZMSCORE for all the links of a chain.
 */

import { RelayError } from '@libertaria/protocol';
import type { RedisClient } from '@libertaria/redis';
import type { RevocationList } from '../index.js';
import { toStoreError } from './store-error.js';

const CID = /^[0-9a-f]{64}$/;

export class RedisRevocationStore implements RevocationList {
  readonly key: string;
  constructor(
    private readonly redis: RedisClient,
    prefix: string,
    private readonly now: () => number = Date.now,
  ) {
    this.key = `${prefix}:mb:revoked`;
  }

  /** Revokes a link (and so everything delegated under it) until `untilMs`, or for ever. */
  async revoke(cid: string, untilMs = Number.POSITIVE_INFINITY): Promise<void> {
    if (typeof cid !== 'string' || !CID.test(cid))
      throw new RelayError('BAD_FIELD', 'a cid is 64 lower-case hex digits');
    const score = untilMs === Number.POSITIVE_INFINITY ? '+inf' : String(Math.trunc(untilMs));
    try {
      // GT adds a new cid, and lets a later revocation of the same cid extend it, never shorten it.
      await this.redis.multi().zadd(this.key, 'GT', score, cid).zremrangebyscore(this.key, '-inf', this.now()).exec();
    } catch (err) {
      throw toStoreError(err);
    }
  }

  async firstRevoked(cids: readonly string[]): Promise<string | undefined> {
    if (cids.length === 0) return undefined;
    let scores: (string | null)[];
    try {
      scores = await this.redis.zmscore(this.key, ...cids);
    } catch (err) {
      throw toStoreError(err);
    }
    const now = this.now();
    for (let i = 0; i < cids.length; i++) {
      const s = scores[i];
      if (s !== null && s !== undefined && (s === 'inf' || Number(s) > now)) return cids[i];
    }
    return undefined;
  }

  /** Live revocations, for the admin API: at most `limit`, soonest-expiring first. */
  async list(limit = 1000): Promise<{ cid: string; untilMs: number }[]> {
    const flat = await this.redis.zrangebyscore(this.key, `(${this.now()}`, '+inf', 'WITHSCORES', 'LIMIT', 0, limit);
    const out: { cid: string; untilMs: number }[] = [];
    for (let i = 0; i < flat.length; i += 2) {
      out.push({ cid: flat[i]!, untilMs: flat[i + 1] === 'inf' ? Number.POSITIVE_INFINITY : Number(flat[i + 1]) });
    }
    return out;
  }
}
