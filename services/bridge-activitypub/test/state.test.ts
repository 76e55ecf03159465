/** Followers and threads in Redis: the followers limit, removal everywhere, thread TTL. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { BridgeState } from '../src/state.js';

describe('BridgeState', () => {
  let redis: RedisHandle;
  let client: RedisClient;
  let state: BridgeState;
  const follower = (n: number) => ({
    id: `https://remote.example/users/u${n}`,
    inbox: `https://remote.example/users/u${n}/inbox`,
  });

  before(async () => {
    redis = await startRedis();
    client = createRedisClient({ url: redis.url }, {});
    state = new BridgeState(client, '{lr-bridge}');
  });
  after(async () => {
    await client.quit();
    await redis.stop();
  });

  it('keeps at most the limit of followers, even when many follow at once; a known follower is updated', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => state.addFollower('la', follower(i), 5)));
    assert.equal(results.filter(Boolean).length, 5);
    assert.equal(await state.followerCount('la'), 5);
    const kept = (await state.followers('la'))[0];
    assert.ok(kept?.id);
    assert.equal(
      await state.addFollower('la', { id: kept.id.href, inbox: 'https://remote.example/new-inbox' }, 5),
      true,
    );
    assert.equal(await state.followerCount('la'), 5);
  });

  it('drops a deleted actor from every followers list', async () => {
    const f = follower(100);
    await state.addFollower('lb', f, 10);
    await state.addFollower('lc', f, 10);
    assert.equal(await state.removeActorEverywhere(f.id), 2);
    assert.equal(await state.followerCount('lb'), 0);
    assert.equal(await state.followerCount('lc'), 0);
  });

  it('remembers the last note of a thread for its TTL, and not at all with 0', async () => {
    await state.rememberThread('did:libertaria:zA', follower(1).id, 'https://remote.example/notes/1', 1);
    assert.equal(await state.thread('did:libertaria:zA', follower(1).id), 'https://remote.example/notes/1');
    await state.rememberThread('did:libertaria:zB', follower(1).id, 'https://remote.example/notes/2', 0);
    assert.equal(await state.thread('did:libertaria:zB', follower(1).id), undefined);
    const deadline = Date.now() + 5000;
    while ((await state.thread('did:libertaria:zA', follower(1).id)) !== undefined) {
      assert.ok(Date.now() < deadline, 'the thread expires');
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});
