/**
 * RELAY_DURABLE_WAIT_REPLICAS on a real local Redis Cluster (3 primaries,
 * 3 replicas: test-support/redis-cluster.ts), made to meet the case a CI run
 * of redis-cluster.test.ts met by chance: a frame stored on a primary that
 * dies before its replica has it, and the store's WAIT pipeline, resent by
 * ioredis to the replica once it took over, answered there after the killed
 * server rejoined as its replica. That WAIT says 1 for a frame that is gone;
 * the confirm script in the pipeline (durable-store.ts) says it is not there.
 *
 * How the frame misses the replica: the primary's default user gets a
 * password the replica does not know (connections made before keep working),
 * then CLIENT KILL TYPE replica cuts the replication link, which the replica
 * cannot make again (it reconnects within milliseconds otherwise). The
 * restarted server forgets the password (ACL changes live in memory only).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, it } from 'node:test';
import { LibertariaError } from '@libertaria/protocol';
import { createRedisClient } from '@libertaria/redis';
import { Redis } from 'ioredis';
import { type RedisClusterHandle, startRedisCluster } from '../../../test-support/redis-cluster.js';
import { durableFrame, killAtTheWait, SOURCE, untilKilled } from '../../../test-support/replica-wait.js';
import { DURABLE_STORE_REDIS_OPTIONS, DurableStore } from '../src/durable-store.js';
import { ReplicaWaiter } from '../src/replica-wait.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const deliver = durableFrame;

let cluster: RedisClusterHandle;
const admins: Redis[] = [];

function admin(port: number): Redis {
  const r = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, connectTimeout: 2000 });
  r.on('error', () => {});
  admins.push(r);
  return r;
}

before(async () => {
  cluster = await startRedisCluster();
});
after(async () => {
  for (const r of admins) r.disconnect();
  await cluster?.stop();
});

it('never confirms a frame lost with its primary: the WAIT resent to the replica that took over finds it missing', async () => {
  // The relay's options, except: no command timeout (the resent WAIT waits for the rejoined server's
  // sync) and room for ioredis to keep resending through the failover (200 ms apart).
  const redis = createRedisClient(
    { url: `redis://127.0.0.1:${cluster.servers[0]!.port}`, clusterNodes: cluster.nodes },
    { ...DURABLE_STORE_REDIS_OPTIONS, commandTimeout: undefined },
    { maxRedirections: 300 },
  );
  redis.on('error', () => {});
  await once(redis, 'ready');
  try {
    const s = new DurableStore(redis, {
      prefix: 'wc',
      maxFrames: 1000,
      maxBytes: 1 << 20,
      maxTtlSeconds: 3600,
      replicas: new ReplicaWaiter(redis, 1, 10_000),
    });
    const dest = new Uint8Array(randomBytes(24));
    const z = s.keys(dest)[0];
    const primary = await cluster.primaryFor(z);
    const holds = async (port: number, id: Uint8Array): Promise<boolean> =>
      (await admin(port).zscore(z, Buffer.concat([SOURCE, id]))) !== null;

    // With the link up, a frame is confirmed once the replica holds it.
    const first = new Uint8Array(randomBytes(16));
    assert.equal((await s.enqueue(dest, first, deliver(dest, first), 60)).status, 'stored');

    // The primary dies as the store makes the WAIT's pipeline (the enqueue was answered first).
    const killed = killAtTheWait(redis, () => primary.kill());
    const id = new Uint8Array(randomBytes(16));
    const control = admin(primary.port);
    await control.call('ACL', 'SETUSER', 'default', `>${randomBytes(12).toString('hex')}`);
    assert.equal(await control.call('CLIENT', 'KILL', 'TYPE', 'replica'), 1, 'the replication link was cut');
    const outcome = s.enqueue(dest, id, deliver(dest, id), 60).then(
      (r) => r,
      (err: unknown) => err,
    );
    await untilKilled(killed, outcome);
    const deadline = Date.now() + 60_000;

    // The replica takes over (forced if no automatic failover comes, as in redis-cluster.test.ts), then
    // the killed server comes back as its replica: from then on a WAIT there answers 1.
    let successor = primary;
    let forced = false;
    const killedAt = Date.now();
    while (Date.now() < deadline) {
      successor = await cluster.primaryFor(z).catch(() => primary);
      if (successor.port !== primary.port) break;
      if (!forced && Date.now() - killedAt > 15_000) {
        forced = true;
        console.log(
          `no automatic failover within 15 s; CLUSTER FAILOVER TAKEOVER at ${await cluster.takeOver(primary.port)}`,
        );
      }
      await sleep(100);
    }
    assert.notEqual(successor.port, primary.port, 'a replica took over');
    await primary.restart();
    await cluster.waitHealthy();

    const result = await outcome;
    assert.equal(await holds(successor.port, id), false, 'the frame died with the killed primary');
    assert.ok(
      result instanceof LibertariaError,
      `the enqueue must not be confirmed: the replica that took over does not hold the frame (got ${JSON.stringify(result)})`,
    );
    assert.equal(result.code, 'STORE_UNAVAILABLE');
    assert.match(result.message, /does not hold it/);

    // The sender's retry is stored on the new primary, and confirmed once the rejoined server holds it too.
    assert.equal((await s.enqueue(dest, id, deliver(dest, id), 60)).status, 'stored');
    assert.ok(await holds(successor.port, id));
    assert.ok(await holds(successor.port, first), 'the frame confirmed before the kill survived it');
  } finally {
    redis.disconnect();
  }
});
