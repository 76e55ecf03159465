/**
 * BullMqMessageQueue (Fedify's MessageQueue on BullMQ) on a real, private
 * redis-server: delivery, delays, BullMQ's retries with backoff and jitter,
 * failed jobs kept, stable job ids (and the re-enqueue Fedify makes from its
 * own handler), listen ending on abort without leaking connections, two
 * listeners sharing the jobs, ordering keys, sealing, limits, and a failed
 * job shown by a real relay node's dashboard.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Temporal } from '@js-temporal/polyfill';
import { dashboardQueuesKey } from '@libertaria/bridge-kit';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { startRelay } from '../../../test-support/relay-process.js';
import {
  BullMqMessageQueue,
  type BullMqMessageQueueOptions,
  MessageTooLargeError,
} from '../src/bullmq-message-queue.js';

const KEY = randomBytes(32);
const DASHBOARD_TOKEN = 'fedify-queue-dashboard-token-for-tests-0123456789';

let redis: RedisHandle;
let client: RedisClient;
const queues: BullMqMessageQueue[] = [];
let n = 0;

function makeQueue(o: Partial<BullMqMessageQueueOptions> = {}): BullMqMessageQueue {
  const q = new BullMqMessageQueue({
    redis: { url: redis.url },
    name: `fedify-t${n++}`,
    messageKey: KEY,
    attempts: 3,
    backoffMs: 100,
    jitter: 0.5,
    ...o,
  });
  queues.push(q);
  return q;
}

/** Starts a listener; `stop()` aborts it and waits for listen() to resolve. */
function listen(q: BullMqMessageQueue, handler: (message: unknown) => Promise<void> | void) {
  const ac = new AbortController();
  const done = q.listen(handler, { signal: ac.signal });
  return {
    done,
    async stop() {
      ac.abort();
      await done;
    },
  };
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

async function connectionCount(): Promise<number> {
  const list = (await client.call('CLIENT', 'LIST')) as string;
  return list.split('\n').filter((line) => line.trim().length > 0).length;
}

before(async () => {
  redis = await startRedis();
  client = createRedisClient({ url: redis.url }, { connectionName: 'mq-test' });
});
after(async () => {
  await Promise.allSettled(queues.map((q) => q.close()));
  await client.quit();
  await redis.stop();
});

describe('BullMqMessageQueue', () => {
  it('delivers an enqueued message to a listener, sealed in Redis', async () => {
    const q = makeQueue();
    assert.equal(q.nativeRetrial, true);
    const got: unknown[] = [];
    const l = listen(q, (m) => {
      got.push(m);
    });
    const message = { id: 'd1', type: 'outbox', text: 'secret-text', nested: { a: [1, 2] } };
    await q.enqueue(message);
    await until('delivery', () => got.length === 1);
    assert.deepEqual(got[0], message);
    const raw = await client.hget(`${q.prefix}:${q.name}:m-d1`, 'data');
    assert.ok(raw?.includes('"sealed"'), 'job data holds the sealed form');
    assert.ok(!raw?.includes('secret-text'), 'not the message');
    const job = await q.queue.getJob('m-d1');
    assert.equal(job?.name, 'outbox', "the job is named by the message's type for the dashboard");
    assert.equal(job?.opts.removeOnFail && (job.opts.removeOnFail as { count: number }).count, 100_000);
    await l.stop();
  });

  it('delays a message by the given duration', async () => {
    const q = makeQueue();
    const got: number[] = [];
    const l = listen(q, () => {
      got.push(Date.now());
    });
    const t0 = Date.now();
    await q.enqueue({ id: 'late' }, { delay: Temporal.Duration.from({ milliseconds: 700 }) });
    await q.enqueue({ id: 'now' });
    assert.deepEqual(await q.getDepth().then((d) => d.delayed), 1);
    await until('both deliveries', () => got.length === 2);
    const sorted = got.sort((a, b) => a - b);
    assert.ok((sorted[0] as number) - t0 < 600, 'the undelayed one comes first');
    assert.ok((sorted[1] as number) - t0 >= 690, `the delayed one after its delay (${(sorted[1] as number) - t0} ms)`);
    assert.deepEqual(await q.getDepth(), { queued: 0, ready: 0, delayed: 0 });
    await assert.rejects(q.enqueue({ id: 'neg' }, { delay: Temporal.Duration.from({ seconds: -1 }) }), RangeError);
    await l.stop();
  });

  it('retries a failing handler with exponential backoff and jitter, then succeeds', async () => {
    const q = makeQueue({ attempts: 4, backoffMs: 200, jitter: 0.5 });
    const calls: number[] = [];
    const l = listen(q, () => {
      calls.push(Date.now());
      if (calls.length <= 2) throw new Error(`transient ${calls.length}`);
    });
    await q.enqueue({ id: 'flaky' });
    await until('the third try', () => calls.length === 3);
    const job = await until('completion', async () => {
      const j = await q.queue.getJob('m-flaky');
      return (await j?.getState()) === 'completed' ? j : undefined;
    });
    assert.deepEqual(job.opts.backoff, { type: 'exponential', delay: 200, jitter: 0.5 });
    assert.equal(job.opts.attempts, 4);
    const [a, b, c] = calls as [number, number, number];
    // Delay n is 200·2^(n-1) ms with half of it random: 100-200 ms, then 200-400 ms.
    assert.ok(b - a >= 90, `first retry after ${b - a} ms`);
    assert.ok(c - b >= 190, `second retry after ${c - b} ms`);
    assert.ok(c - b > b - a - 20 || c - b >= 200, 'the delay grows');
    await l.stop();

    // Jitter: jobs that failed together do not retry together.
    const spread = makeQueue({ attempts: 2, backoffMs: 400, jitter: 1 });
    const retries = new Map<string, number>();
    const seen = new Set<string>();
    const ls = listen(spread, (m) => {
      const id = (m as { id: string }).id;
      if (!seen.has(id)) {
        seen.add(id);
        throw new Error('first try fails');
      }
      retries.set(id, Date.now());
    });
    await spread.enqueueMany(Array.from({ length: 6 }, (_, i) => ({ id: `j${i}` })));
    await until('six retries', () => retries.size === 6);
    const times = [...retries.values()];
    assert.ok(
      Math.max(...times) - Math.min(...times) > 20,
      `retries spread over ${Math.max(...times) - Math.min(...times)} ms`,
    );
    await ls.stop();
  });

  it('keeps jobs that ran out of attempts in the failed set, the newest keepFailed of them', async () => {
    const q = makeQueue({ attempts: 2, backoffMs: 50, keepFailed: 2 });
    const l = listen(q, (m) => {
      throw new Error(`remote down for ${(m as { id: string }).id}`);
    });
    for (const id of ['f1', 'f2', 'f3']) await q.enqueue({ id });
    await until('three failures', async () => {
      const c = await q.queue.getJobCounts('failed', 'waiting', 'active', 'delayed');
      return c.failed === 2 && c.waiting === 0 && c.active === 0 && c.delayed === 0;
    });
    const failed = await q.queue.getFailed();
    assert.equal(failed.length, 2, 'only the newest two are kept');
    for (const job of failed) {
      assert.equal(job.attemptsMade, 2, 'every attempt was made');
      assert.match(job.failedReason, /^remote down for f\d$/);
    }
    await l.stop();
  });

  it('enqueues a message once per id, or per content hash without one, also with enqueueMany', async () => {
    const q = makeQueue();
    const handled: string[] = [];
    const l = listen(q, (m) => {
      handled.push(JSON.stringify(m));
    });
    await q.enqueue({ id: 'same', v: 1 });
    await q.enqueue({ id: 'same', v: 1 });
    await q.enqueueMany([{ id: 'same', v: 1 }, { id: 'other' }, { text: 'no id' }, { text: 'no id' }]);
    await q.enqueue({ text: 'no id' });
    await q.enqueue({ text: 'another' });
    await until('four messages', () => handled.length === 4);
    await until('four completed jobs', async () => (await q.queue.getJobCounts('completed')).completed === 4);
    await q.enqueue({ id: 'same', v: 1 }); // completed and kept: still a no-op
    await sleep(300);
    assert.equal(handled.length, 4, 'each message once');
    const ids = (await q.queue.getCompleted()).map((j) => j.id as string).sort();
    assert.equal(ids.length, 4);
    assert.ok(ids.includes('m-same') && ids.includes('m-other'));
    assert.equal(ids.filter((id) => /^h-[0-9a-f]{64}$/.test(id)).length, 2, 'hashed ids for messages without one');
    await l.stop();
  });

  it("a re-enqueue of the running message from its own handler is the next job, once (Fedify's Retry-After and circuit holds)", async () => {
    const q = makeQueue();
    const handled: number[] = [];
    const l = listen(q, async (m) => {
      const msg = m as { id: string; attempt: number };
      handled.push(msg.attempt);
      if (msg.attempt === 0) {
        // As Fedify does for a 429: the same message, attempt + 1. Twice, as a handler run twice would.
        await q.enqueue({ ...msg, attempt: 1 }, { delay: Temporal.Duration.from({ milliseconds: 100 }) });
        await q.enqueue({ ...msg, attempt: 1 }, { delay: Temporal.Duration.from({ milliseconds: 100 }) });
      }
    });
    await q.enqueue({ id: 'r', attempt: 0 });
    await until('the re-enqueued message', () => handled.length === 2);
    await sleep(300);
    assert.deepEqual(handled, [0, 1]);
    assert.ok(await q.queue.getJob('m-r+1'), 'the next generation has its own id');
    await l.stop();
  });

  it('listen resolves when its signal aborts, after the running job, and leaves no connection behind', async () => {
    const initial = await connectionCount();
    const q = makeQueue();
    await q.enqueue({ id: 'slow' });
    let finished = false;
    let started = false;
    const l = listen(q, async () => {
      started = true;
      await sleep(400);
      finished = true;
    });
    await until('the job to start', () => started);
    await l.stop();
    assert.equal(finished, true, 'the running job finished before listen() resolved');
    assert.equal(await (await q.queue.getJob('m-slow'))?.getState(), 'completed');
    const already = new AbortController();
    already.abort();
    await q.listen(() => undefined, { signal: already.signal }); // resolves at once
    await q.close();
    await until('the connections to close', async () => (await connectionCount()) === initial);
  });

  it('two listeners (two processes) share the jobs and run each once', async () => {
    const name = `fedify-t${n++}`;
    const one = makeQueue({ name, concurrency: 2 });
    const two = makeQueue({ name, concurrency: 2 });
    const runs = new Map<string, string[]>();
    const handler = (who: string) => async (m: unknown) => {
      const id = (m as { id: string }).id;
      runs.set(id, [...(runs.get(id) ?? []), who]);
      await sleep(25);
    };
    const l1 = listen(one, handler('one'));
    const l2 = listen(two, handler('two'));
    await one.enqueueMany(Array.from({ length: 40 }, (_, i) => ({ id: `s${i}` })));
    await until('40 messages', () => runs.size === 40);
    await sleep(300);
    assert.ok(
      [...runs.values()].every((who) => who.length === 1),
      'no message ran twice',
    );
    const byOne = [...runs.values()].filter((who) => who[0] === 'one').length;
    assert.ok(byOne > 0 && byOne < 40, `both took a share (one: ${byOne}, two: ${40 - byOne})`);
    await Promise.all([l1.stop(), l2.stop()]);
  });

  it('runs the jobs of one ordering key one at a time, in enqueue order, a retried one keeping its place', async () => {
    const q = makeQueue({ concurrency: 4, backoffMs: 150, jitter: 0, orderingPollMs: 30 });
    const finished: string[] = [];
    let running = 0;
    let overlap = false;
    let failedOnce = false;
    const l = listen(q, async (m) => {
      const { id, key } = m as { id: string; key: string };
      if (key === 'K') {
        running++;
        if (running > 1) overlap = true;
      }
      try {
        await sleep(20);
        if (id === 'k1' && !failedOnce) {
          failedOnce = true;
          throw new Error('first delivery fails');
        }
        finished.push(id);
      } finally {
        if (key === 'K') running--;
      }
    });
    const K = 'Create then Delete\nhttps://remote.example';
    await q.enqueue({ id: 'k1', key: 'K' }, { orderingKey: K });
    await q.enqueue({ id: 'k2', key: 'K' }, { orderingKey: K });
    await q.enqueue({ id: 'k3', key: 'K' }, { orderingKey: K });
    await q.enqueue({ id: 'x1', key: 'L' }, { orderingKey: 'another key' });
    await until('all four', () => finished.length === 4);
    // Handlers return a moment before BullMQ records the job completed (and the ordering list is released).
    await until('four completed jobs', async () => (await q.queue.getJobCounts('completed')).completed === 4);
    assert.deepEqual(
      finished.filter((id) => id.startsWith('k')),
      ['k1', 'k2', 'k3'],
      'in order, k2 and k3 waiting behind the retried k1',
    );
    assert.ok(finished.indexOf('x1') < finished.indexOf('k1'), 'another key does not wait');
    assert.equal(overlap, false, 'never two of one key at once');
    // BullMQ counts the finishing attempt too: k1 failed once then succeeded, the others waited for free.
    assert.equal((await q.queue.getJob('m-k1'))?.attemptsMade, 2);
    for (const id of ['k2', 'k3']) {
      assert.equal((await q.queue.getJob(`m-${id}`))?.attemptsMade, 1, `${id} waited without spending an attempt`);
    }
    const orderKeys = await client.keys(`${q.prefix}:lr-order:${q.name}:*`);
    for (const key of orderKeys) assert.equal(await client.llen(key), 0, 'the ordering lists are empty again');
    await l.stop();
  });

  it('refuses oversized messages and bad options; fails at once a job it cannot open', async () => {
    const q = makeQueue({ maxMessageBytes: 1000 });
    await assert.rejects(q.enqueue({ id: 'big', text: 'x'.repeat(1000) }), MessageTooLargeError);
    await assert.rejects(q.enqueue({ f: () => 1, n: 1n }), /not JSON-encodable/);
    const counts = await q.queue.getJobCounts();
    assert.ok(
      Object.values(counts).every((c) => c === 0),
      'nothing was added',
    );
    const base = { redis: { url: redis.url }, messageKey: KEY };
    for (const name of ['inbound', 'outbound-activitypub', 'Bad', 'a:b']) {
      assert.throws(() => new BullMqMessageQueue({ ...base, name }), TypeError, name);
    }
    assert.throws(() => new BullMqMessageQueue({ ...base, name: 'x', messageKey: randomBytes(16) }), /32 bytes/);
    assert.throws(
      () =>
        new BullMqMessageQueue({
          ...base,
          name: 'x',
          prefix: 'no-tag',
          redis: { url: redis.url, clusterNodes: '127.0.0.1:1' },
        }),
      /hash tag/,
    );
    // Sealed under another key: no attempt can ever open it, so the first failure is final.
    const name = `fedify-t${n++}`;
    const writer = makeQueue({ name });
    const reader = makeQueue({ name, messageKey: randomBytes(32) });
    let called = false;
    const l = listen(reader, () => {
      called = true;
    });
    await writer.enqueue({ id: 'wrong-key' });
    const job = await until('the job to fail', async () => {
      // getState reads after getJob: read the job again once failed, not the snapshot taken before
      // the failure was recorded (attemptsMade 0 in it: seen once in CI).
      if ((await writer.queue.getJobState('m-wrong-key')) !== 'failed') return undefined;
      return writer.queue.getJob('m-wrong-key');
    });
    assert.equal(job.attemptsMade, 1, 'not retried');
    assert.match(job.failedReason, /cannot be opened/);
    assert.equal(called, false);
    await l.stop();
  });

  it("lists itself for the relay's dashboard, which shows its failed jobs", async () => {
    const q = makeQueue({ name: 'activitypub-fedify', attempts: 1 });
    const l = listen(q, () => {
      throw new Error('inbox answered 500');
    });
    await q.enqueue({ id: 'to-dashboard', type: 'outbox', text: 'dashboard-secret' });
    await until('the failure', async () => (await q.queue.getJobCounts('failed')).failed === 1);
    await l.stop();
    assert.ok((await client.smembers(dashboardQueuesKey())).includes('activitypub-fedify'));
    const relay = await startRelay({
      redisUrl: redis.url,
      env: {
        RELAY_FEDERATION_DASHBOARD_TOKEN: DASHBOARD_TOKEN,
        RELAY_FEDERATION_DASHBOARD_PORT: '0',
        RELAY_FEDERATION_REFRESH_MS: '500',
      },
    });
    try {
      const line = await until('the federation log line', () =>
        relay.logs.find((l) => l.includes('"msg":"federation started"')),
      );
      const port = (JSON.parse(line) as { dashboard?: number }).dashboard;
      assert.ok(port);
      const auth = { authorization: `Bearer ${DASHBOARD_TOKEN}` };
      const api = await until('the dashboard to list the fedify queue', async () => {
        const r = await fetch(`http://127.0.0.1:${port}/api/queues`, { headers: auth });
        const json = (await r.json()) as { queues: { name: string; counts: Record<string, number> }[] };
        return json.queues.some((queue) => queue.name === 'activitypub-fedify') ? json : undefined;
      });
      assert.equal(api.queues.find((queue) => queue.name === 'activitypub-fedify')?.counts.failed, 1);
      assert.ok(api.queues.some((queue) => queue.name === 'inbound'));
      const failed = await fetch(`http://127.0.0.1:${port}/api/queues?activeQueue=activitypub-fedify&status=failed`, {
        headers: auth,
      });
      const page = JSON.stringify(await failed.json());
      assert.match(page, /inbox answered 500/, 'the failed reason is shown');
      assert.match(page, /m-to-dashboard/, 'the job is listed');
      assert.doesNotMatch(page, /dashboard-secret/, 'the message itself is sealed');
    } finally {
      await relay.stop();
    }
  });
});
