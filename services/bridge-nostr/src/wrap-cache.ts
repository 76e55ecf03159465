/**
 * The gift wrap (or note) made for each outbound frame, in Redis, for a
 * bridge scaled out over several processes: a job retried on another process
 * republishes the very event the first try made, which relays and clients
 * recognise by its id, instead of a second wrap of the same text. The first
 * event stored for a frame wins (`SET NX`); entries expire after `ttlSeconds`.
 *
 * Redis holds only what the Nostr relays get anyway: gift wraps are NIP-44
 * ciphertext to the recipient, notes are public.
 */
import { BridgeError } from '@libertaria/bridge-kit';
import type { RedisClient } from '@libertaria/redis';
import type { NostrEvent } from 'nostr-tools/core';
import type { WrapCache } from './nostr-bridge.js';

const FRAME_ID = /^[0-9a-f]{1,64}$/;

function unavailable(err: unknown): BridgeError {
  return new BridgeError('BRIDGE_UNAVAILABLE', `the gift-wrap cache in Redis failed: ${(err as Error)?.message}`, {
    cause: err,
    retryable: true,
  });
}

export class RedisWrapCache implements WrapCache {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly ttlSeconds: number,
  ) {}

  private key(frameId: string): string {
    if (!FRAME_ID.test(frameId)) throw new BridgeError('BAD_FIELD', 'a frame id is 1-64 lowercase hex digits');
    return `${this.prefix}:nostr-wraps:${frameId}`;
  }

  private parse(json: string | null): NostrEvent | undefined {
    if (json === null) return undefined;
    try {
      return JSON.parse(json) as NostrEvent;
    } catch {
      // Not ours (written by hand?): make a new event rather than publish garbage.
      return undefined;
    }
  }

  async get(frameId: string): Promise<NostrEvent | undefined> {
    const key = this.key(frameId);
    try {
      return this.parse(await this.redis.get(key));
    } catch (err) {
      throw unavailable(err);
    }
  }

  async putIfAbsent(frameId: string, event: NostrEvent): Promise<NostrEvent> {
    const key = this.key(frameId);
    try {
      const set = await this.redis.set(key, JSON.stringify(event), 'EX', this.ttlSeconds, 'NX');
      if (set === 'OK') return event;
      return this.parse(await this.redis.get(key)) ?? event;
    } catch (err) {
      throw unavailable(err);
    }
  }
}
