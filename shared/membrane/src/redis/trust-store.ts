/**
 * Trust scores per DID, set by operators: the default TrustProvider until
 * Libertaria's QVL is plugged in.
 *
 *   ${prefix}:mb:trust  HASH  did:libertaria… → score (0..1, decimal string)
 *
 * Read on a decision only when a minTrust constraint applies (one HGET).
 */

import { RelayError } from '@libertaria/protocol';
import type { RedisClient } from '@libertaria/redis';
import { canonicalDid, type TrustProvider } from '../index.js';
import { toStoreError } from './store-error.js';

export class RedisTrustStore implements TrustProvider {
  readonly key: string;
  constructor(
    private readonly redis: RedisClient,
    prefix: string,
  ) {
    this.key = `${prefix}:mb:trust`;
  }

  /** Sets a peer's score (either DID form). Throws BAD_FIELD outside 0..1. */
  async set(peer: string, score: number): Promise<void> {
    if (typeof score !== 'number' || !(score >= 0 && score <= 1)) {
      throw new RelayError('BAD_FIELD', `a trust score is a number from 0 to 1, got ${String(score)}`);
    }
    const did = canonicalDid(peer);
    await this.redis.hset(this.key, did, String(score)).catch((e) => {
      throw toStoreError(e);
    });
  }

  /** Forgets a peer: it gets the membrane's unknownTrust again. */
  async remove(peer: string): Promise<boolean> {
    const n = await this.redis.hdel(this.key, canonicalDid(peer)).catch((e) => {
      throw toStoreError(e);
    });
    return n === 1;
  }

  async trustScore(peer: string): Promise<number | undefined> {
    let raw: string | null;
    try {
      raw = await this.redis.hget(this.key, peer);
    } catch (err) {
      throw toStoreError(err);
    }
    if (raw === null) return undefined;
    const score = Number(raw);
    // A value someone wrote by hand that is not a score counts as unknown rather than as trusted.
    return score >= 0 && score <= 1 ? score : undefined;
  }
}
