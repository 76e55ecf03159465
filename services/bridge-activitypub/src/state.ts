/**
 * What the bridge keeps about the fediverse side, in Redis so every process
 * behind one domain shares it (all under the federation prefix's hash tag):
 *
 *   <prefix>:ap:followers:<handle>      hash  follower actor id → {"inbox","sharedInbox"?}
 *   <prefix>:ap:following:<sha256(id)>  set   handles a remote actor follows (to drop it everywhere on Delete)
 *   <prefix>:ap:thread:<did>:<sha256(id)>  string  the last note that actor sent that peer (TTL)
 *
 * The bridge keeps no copy of any message: the outbox collection is empty.
 */
import { createHash } from 'node:crypto';
import type { Recipient } from '@fedify/fedify/vocab';
import type { RedisClient } from '@libertaria/redis';

export interface Follower {
  readonly id: string;
  readonly inbox: string;
  readonly sharedInbox?: string;
}

/** KEYS[1] followers hash; ARGV[1] actor id, ARGV[2] its JSON, ARGV[3] the limit. 1: stored, 0: full. */
const ADD_FOLLOWER_LUA = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
`;

function digest(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 32);
}

export class BridgeState {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
  ) {}

  private followersKey(handle: string): string {
    return `${this.prefix}:ap:followers:${handle}`;
  }
  private followingKey(actorId: string): string {
    return `${this.prefix}:ap:following:${digest(actorId)}`;
  }
  private threadKey(did: string, actorId: string): string {
    return `${this.prefix}:ap:thread:${did}:${digest(actorId)}`;
  }

  /** Adds a follower unless the actor already has `max` (checked and written in one script); false when full. */
  async addFollower(handle: string, follower: Follower, max: number): Promise<boolean> {
    const value = JSON.stringify({
      inbox: follower.inbox,
      ...(follower.sharedInbox ? { sharedInbox: follower.sharedInbox } : {}),
    });
    const added = await this.redis.eval(ADD_FOLLOWER_LUA, 1, this.followersKey(handle), follower.id, value, max);
    if (added !== 1) return false;
    await this.redis.sadd(this.followingKey(follower.id), handle);
    return true;
  }

  async removeFollower(handle: string, actorId: string): Promise<boolean> {
    const removed = await this.redis.hdel(this.followersKey(handle), actorId);
    await this.redis.srem(this.followingKey(actorId), handle);
    return removed > 0;
  }

  /** Drops a deleted actor from every bridged actor's followers; the number of actors it followed. */
  async removeActorEverywhere(actorId: string): Promise<number> {
    const handles = await this.redis.smembers(this.followingKey(actorId));
    for (const handle of handles) await this.redis.hdel(this.followersKey(handle), actorId);
    await this.redis.del(this.followingKey(actorId));
    return handles.length;
  }

  async followerCount(handle: string): Promise<number> {
    return this.redis.hlen(this.followersKey(handle));
  }

  /** The followers as Fedify recipients (for the collection and for sending to `followers`). */
  async followers(handle: string): Promise<Recipient[]> {
    const entries = await this.redis.hgetall(this.followersKey(handle));
    return Object.entries(entries).map(([id, json]) => {
      const { inbox, sharedInbox } = JSON.parse(json) as { inbox: string; sharedInbox?: string };
      return {
        id: new URL(id),
        inboxId: new URL(inbox),
        endpoints: sharedInbox ? { sharedInbox: new URL(sharedInbox) } : null,
      };
    });
  }

  async rememberThread(did: string, actorId: string, noteId: string, ttlSeconds: number): Promise<void> {
    if (ttlSeconds > 0) await this.redis.set(this.threadKey(did, actorId), noteId, 'EX', ttlSeconds);
  }

  async thread(did: string, actorId: string): Promise<string | undefined> {
    return (await this.redis.get(this.threadKey(did, actorId))) ?? undefined;
  }
}
