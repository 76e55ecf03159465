/**
 * RELAY_DURABLE_WAIT_REPLICAS against real redis-servers of its own (a
 * primary and a server made its replica with REPLICAOF): an enqueue resolves
 * only once a replica holds the frame, is refused when none confirms, and is
 * never confirmed by a WAIT that a server without the frame answered; a
 * hand-off to a bridge's BullMQ queue, and a single-use id answered fresh,
 * likewise (replica-wait.ts).
 *
 * The last case is the one a CI run of redis-cluster.test.ts hit (five
 * acknowledged frames lost): the primary died between answering the enqueue
 * and reading the WAIT's pipeline, ioredis resent the whole pipeline to the
 * server that held the slot afterwards, and that server's replica confirmed
 * a write of its own. Here it is made to happen on purpose, on one server:
 * the primary is killed just as the pipeline is made, comes back empty (no
 * persistence), gets a replica, and the client resends the pipeline to it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, it } from 'node:test';
import type { BridgeRegistration } from '@libertaria/bridge-kit';
import { LibertariaError } from '@libertaria/protocol';
import { Redis, type RedisOptions } from 'ioredis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { durableFrame, killAtTheWait, SOURCE, untilKilled } from '../../../test-support/replica-wait.js';
import { DURABLE_STORE_REDIS_OPTIONS, DurableStore } from '../src/durable-store.js';
import { OutboundHandOff } from '../src/federation/handoff.js';
import { OnceStore } from '../src/once-store.js';
import { ReplicaWaiter } from '../src/replica-wait.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const deliver = durableFrame;

// These tests kill and restart a server: they need servers of their own, not TEST_REDIS_URL's.
const external = process.env.TEST_REDIS_URL !== undefined;
let primary: RedisHandle;
let replica: RedisHandle;
const clients: Redis[] = [];

function connect(port: number, options: RedisOptions = {}): Redis {
  const r = new Redis({ host: '127.0.0.1', port, ...options });
  r.on('error', () => {});
  clients.push(r);
  return r;
}

/** Makes `replica` a replica of `primary` and waits until its first sync is done (a loaded machine: 30 s). */
async function replicate(): Promise<void> {
  const admin = connect(replica.port);
  await admin.call('REPLICAOF', '127.0.0.1', String(primary.port));
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const info = await admin.info('replication');
    if (/master_link_status:up/.test(info) && /master_sync_in_progress:0/.test(info)) return;
    await sleep(50);
  }
  throw new Error('the replica did not sync within 30 s');
}

/**
 * The relay's options without the 2 s command timeout: a WAIT that should succeed waits up to 10 s here
 * (a replica's answer on a loaded test machine), where the relay allows 1.5 s.
 */
const WAIT_OPTIONS: RedisOptions = { ...DURABLE_STORE_REDIS_OPTIONS, commandTimeout: undefined };

/**
 * For the cases where the primary dies under a WAIT pipeline: as WAIT_OPTIONS, and a resend whatever the
 * number of reconnect attempts (the relay's maxRetriesPerRequest 1 resends only if the first attempt
 * succeeds: a timing, not the case these tests make).
 */
const RESEND_OPTIONS: RedisOptions = { ...WAIT_OPTIONS, maxRetriesPerRequest: null, retryStrategy: () => 100 };

/** A store's connection, ready (the relay's options refuse commands until then: no offline queue). */
async function storeConnection(port: number, options: RedisOptions = WAIT_OPTIONS): Promise<Redis> {
  const r = connect(port, options);
  await once(r, 'ready');
  return r;
}

async function detach(): Promise<void> {
  await connect(replica.port).call('REPLICAOF', 'NO', 'ONE');
}

function store(redis: Redis, waitTimeoutMs = 10_000, prefix = `w${randomBytes(3).toString('hex')}`): DurableStore {
  return new DurableStore(redis, {
    prefix,
    maxFrames: 1000,
    maxBytes: 1 << 20,
    maxTtlSeconds: 3600,
    replicas: new ReplicaWaiter(redis, 1, waitTimeoutMs),
  });
}

/** Whether the server on `port` holds the member (source ‖ id) in dest's queue. */
async function holds(s: DurableStore, port: number, dest: Uint8Array, id: Uint8Array): Promise<boolean> {
  const z = s.keys(dest)[0];
  return (await connect(port).zscore(z, Buffer.concat([SOURCE, id]))) !== null;
}

before(async () => {
  if (external) return;
  // No 5-s wait before a replica's first sync (Redis's default delay for diskless sync).
  [primary, replica] = await Promise.all([startRedis({ args: ['--repl-diskless-sync-delay', '0'] }), startRedis()]);
});
after(async () => {
  for (const c of clients) c.disconnect();
  await Promise.all([primary?.stop(), replica?.stop()]);
});

it('resolves once a replica holds the frame', { skip: external }, async () => {
  await replicate();
  const s = store(await storeConnection(primary.port));
  const dest = new Uint8Array(randomBytes(24));
  const ids = Array.from({ length: 20 }, () => new Uint8Array(randomBytes(16)));
  // One turn's frames share one pipeline: every one of them is confirmed by its WAIT.
  const results = await Promise.all(ids.map((id) => s.enqueue(dest, id, deliver(dest, id), 60)));
  assert.deepEqual(
    results.map((r) => r.status),
    ids.map(() => 'stored'),
  );
  for (const id of ids) assert.ok(await holds(s, replica.port, dest, id), 'the replica holds every frame');
  // A duplicate is confirmed too (the original is on the replica already).
  assert.equal((await s.enqueue(dest, ids[0]!, deliver(dest, ids[0]!), 60)).status, 'duplicate');
});

it('refuses with STORE_UNAVAILABLE when no replica confirms in time; the retry is a duplicate', {
  skip: external,
}, async () => {
  await detach();
  const redis = await storeConnection(primary.port);
  const prefix = `w${randomBytes(3).toString('hex')}`;
  const s = store(redis, 200, prefix);
  const dest = new Uint8Array(randomBytes(24));
  const id = new Uint8Array(randomBytes(16));
  await assert.rejects(s.enqueue(dest, id, deliver(dest, id), 60), (err: unknown) => {
    assert.ok(err instanceof LibertariaError);
    assert.equal(err.code, 'STORE_UNAVAILABLE');
    assert.match(err.message, /0 of 1 replicas confirmed it within 200 ms/);
    return true;
  });
  assert.ok(await holds(s, primary.port, dest, id), 'the primary stored it all the same');
  await replicate();
  // The retry through a store that gives the replica time to answer on a loaded machine.
  const patient = store(redis, 10_000, prefix);
  assert.equal((await patient.enqueue(dest, id, deliver(dest, id), 60)).status, 'duplicate');
  assert.ok(await holds(s, replica.port, dest, id), 'and the retry waited for the replica');
});

it('never confirms a frame the answering server does not hold: a WAIT resent to a restarted primary with a replica again', {
  skip: external,
}, async () => {
  await detach();
  const redis = await storeConnection(primary.port, RESEND_OPTIONS);
  const s = store(redis, 10_000);
  const dest = new Uint8Array(randomBytes(24));
  const id = new Uint8Array(randomBytes(16));
  // The primary dies as the store makes the WAIT's pipeline, after it stored the frame and before it
  // reads the pipeline: the pipeline is written to a dead server's socket, and resent after the reconnect.
  const killed = killAtTheWait(redis, () => primary.kill());
  const outcome = s.enqueue(dest, id, deliver(dest, id), 60).then(
    (r) => r,
    (err: unknown) => err,
  );
  await untilKilled(killed, outcome);
  await primary.restart();
  await replicate();
  const result = await outcome;
  assert.ok(
    result instanceof LibertariaError,
    `the enqueue must not be confirmed: the restarted primary and its replica do not hold the frame (got ${JSON.stringify(result)})`,
  );
  assert.equal(result.code, 'STORE_UNAVAILABLE');
  assert.match(result.message, /does not hold it/);
  assert.equal(await holds(s, primary.port, dest, id), false, 'the frame died with the killed primary');
  // The sender's retry stores it again, and this time a replica holds it before the ACK.
  assert.equal((await s.enqueue(dest, id, deliver(dest, id), 60)).status, 'stored');
  assert.ok(await holds(s, replica.port, dest, id));
});

const BRIDGE_HINT = 'b7'.repeat(24);
const bridge: BridgeRegistration = {
  network: 'nostr',
  did: 'did:key:zbridge',
  hint: BRIDGE_HINT,
  queue: 'outbound-nostr',
  attempts: 1,
  backoffMs: 1000,
  jitter: 0,
  registeredAt: 0,
};
const retention = { keepCompleted: 100, keepCompletedSeconds: 3600, keepFailed: 100, keepFailedSeconds: 3600 };
const toBridge = (id: Uint8Array): Buffer => Buffer.from(deliver(Buffer.from(BRIDGE_HINT, 'hex'), id));
const jobKey = (prefix: string, id: Uint8Array): string =>
  `${prefix}:${bridge.queue}:${Buffer.from(id).toString('hex')}`;

it('confirms a hand-off to a bridge queue once a replica holds the job', { skip: external }, async () => {
  await replicate();
  const redis = await storeConnection(primary.port);
  const prefix = `{h${randomBytes(3).toString('hex')}}`;
  const handOff = new OutboundHandOff(redis, prefix, retention, new ReplicaWaiter(redis, 1, 10_000));
  try {
    const id = new Uint8Array(randomBytes(16));
    await handOff.handOff(toBridge(id), bridge);
    assert.equal(await connect(replica.port).exists(jobKey(prefix, id)), 1, 'the replica holds the job');
  } finally {
    await handOff.close();
  }
});

it('never confirms a hand-off whose job the answering server does not hold', { skip: external }, async () => {
  await detach();
  const redis = await storeConnection(primary.port, RESEND_OPTIONS);
  const prefix = `{h${randomBytes(3).toString('hex')}}`;
  const handOff = new OutboundHandOff(redis, prefix, retention, new ReplicaWaiter(redis, 1, 10_000));
  try {
    // The primary dies as the waiter makes its pipeline (BullMQ's own pipelines, for the add, come before).
    const killed = killAtTheWait(redis, () => primary.kill());
    const id = new Uint8Array(randomBytes(16));
    const outcome = handOff.handOff(toBridge(id), bridge).then(
      () => 'confirmed',
      (err: unknown) => err,
    );
    await untilKilled(killed, outcome);
    await primary.restart();
    await replicate();
    const result = await outcome;
    assert.ok(result instanceof LibertariaError, `the hand-off must not be confirmed (got ${String(result)})`);
    assert.equal(result.code, 'STORE_UNAVAILABLE');
    assert.match(result.message, /does not hold it/);
    assert.equal(await connect(primary.port).exists(jobKey(prefix, id)), 0, 'the job died with the killed primary');
    // The sender's retry adds the job again, confirmed once the replica holds it.
    await handOff.handOff(toBridge(id), bridge);
    assert.equal(await connect(replica.port).exists(jobKey(prefix, id)), 1);
  } finally {
    await handOff.close();
  }
});

it('answers a single-use id fresh once a replica holds it, and never from a server that lost it', {
  skip: external,
}, async () => {
  await replicate();
  const prefix = `o${randomBytes(3).toString('hex')}`;
  const owner = new Uint8Array(randomBytes(24));
  const idKey = (id: Uint8Array) =>
    `${prefix}:once:{${Buffer.from(owner).toString('hex')}}:${Buffer.from(id).toString('hex')}`;
  {
    const redis = await storeConnection(primary.port);
    const once = new OnceStore(redis, {
      prefix,
      maxRetentionSeconds: 600,
      replicas: new ReplicaWaiter(redis, 1, 10_000),
    });
    const id = new Uint8Array(randomBytes(16));
    assert.equal((await once.consume(owner, id, 60)).fresh, true);
    assert.equal(await connect(replica.port).exists(idKey(id)), 1, 'the replica holds the id');
    assert.equal((await once.consume(owner, id, 60)).fresh, false);
  }
  await detach();
  const redis = await storeConnection(primary.port, RESEND_OPTIONS);
  const once = new OnceStore(redis, {
    prefix,
    maxRetentionSeconds: 600,
    replicas: new ReplicaWaiter(redis, 1, 10_000),
  });
  const killed = killAtTheWait(redis, () => primary.kill());
  const id = new Uint8Array(randomBytes(16));
  const outcome = once.consume(owner, id, 60).then(
    (a) => a,
    (err: unknown) => err,
  );
  await untilKilled(killed, outcome);
  await primary.restart();
  await replicate();
  const result = await outcome;
  assert.ok(result instanceof LibertariaError, `"fresh" must not be answered (got ${JSON.stringify(result)})`);
  assert.equal(result.code, 'STORE_UNAVAILABLE');
  assert.match(result.message, /does not hold it/);
  // The peer asks again: the first answer it gets is "fresh", and a replica holds the id by then.
  assert.equal((await once.consume(owner, id, 60)).fresh, true);
  assert.equal(await connect(replica.port).exists(idKey(id)), 1);
});
