/** Seed-node parsing and a real connection through createRedisClient (docs/redis.md). */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createRedisClient, isCluster, parseClusterNodes } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';

describe('parseClusterNodes', () => {
  it('reads host:port lists, IPv6 in brackets, and skips blanks', () => {
    assert.deepEqual(parseClusterNodes(' a:7000, 10.0.0.2:7001 ,,[::1]:7002'), [
      { host: 'a', port: 7000 },
      { host: '10.0.0.2', port: 7001 },
      { host: '::1', port: 7002 },
    ]);
  });
  it('refuses entries that are not host:port, naming the entry', () => {
    for (const bad of ['a', ':7000', 'a:0', 'a:65536', 'a:70x', 'a:']) {
      assert.throws(() => parseClusterNodes(bad), new RegExp(`"${bad}" is not host:port`));
    }
  });
});

describe('createRedisClient', () => {
  let redis: RedisHandle;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
  });
  it('connects to one server when no seed nodes are given (empty counts as none)', async () => {
    for (const clusterNodes of [undefined, '']) {
      const client = createRedisClient({ url: redis.url, clusterNodes }, { lazyConnect: true });
      try {
        assert.equal(isCluster(client), false);
        await client.connect();
        assert.equal(await client.ping(), 'PONG');
      } finally {
        client.disconnect();
      }
    }
  });
  it('makes a Cluster client from seed nodes, with the URL giving credentials', () => {
    const client = createRedisClient(
      { url: 'redis://user:p%40ss@ignored:1', clusterNodes: '127.0.0.1:1,127.0.0.1:2' },
      { lazyConnect: true, enableOfflineQueue: false },
    );
    try {
      assert.equal(isCluster(client), true);
      const options = (client as unknown as { options: { redisOptions: { username?: string; password?: string } } })
        .options;
      assert.equal(options.redisOptions.username, 'user');
      assert.equal(options.redisOptions.password, 'p@ss');
    } finally {
      client.disconnect();
    }
  });
});
