/** WebFinger lookups of remote accounts: private addresses refused outside the test mode, redirects bounded. */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type ForeignIdentity, parseForeignIdentity } from '@libertaria/bridge-kit';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { RemoteAccountError, RemoteAccounts } from '../src/remote.js';

describe('RemoteAccounts.webfinger', () => {
  let redis: RedisHandle;
  let client: RedisClient;
  let server: Server;
  let host: string;
  let hits = 0;

  before(async () => {
    redis = await startRedis();
    client = createRedisClient({ url: redis.url }, {});
    // Redirects every WebFinger request to itself: a loop.
    server = createServer((req, res) => {
      hits++;
      res.writeHead(302, { location: `${req.url}&again=${hits}` }).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await client.quit();
    await redis.stop();
  });

  const accounts = (insecure: boolean) =>
    new RemoteAccounts({
      redis: client,
      prefix: '{lr-bridge}',
      insecure,
      timeoutMs: 5000,
      maxBytes: 65536,
      cacheSeconds: 60,
      userAgent: 'test',
    });
  const acct = () => parseForeignIdentity(`acct:bob@${host}`) as ForeignIdentity & { type: 'activitypub' };

  it('refuses loopback and private hosts outside the insecure test mode, before any request', async () => {
    const before = hits;
    for (const target of [
      acct(),
      parseForeignIdentity('acct:bob@10.1.2.3') as ForeignIdentity & { type: 'activitypub' },
    ]) {
      await assert.rejects(
        accounts(false).webfinger(target),
        (err: unknown) => err instanceof RemoteAccountError && err.reason === 'private_address' && !err.retryable,
      );
    }
    assert.equal(hits, before, 'nothing was fetched');
  });

  it('follows at most 3 redirects', async () => {
    const before = hits;
    await assert.rejects(
      accounts(true).webfinger(acct()),
      (err: unknown) => err instanceof RemoteAccountError && err.reason === 'too_many_redirects',
    );
    assert.equal(hits - before, 4, 'the first request and 3 redirects');
  });
});
