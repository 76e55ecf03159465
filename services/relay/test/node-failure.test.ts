/**
 * kill -9 of the recipient's node in the middle of 1,000 durable frames:
 * the recipient's client fails over to another node, and the application
 * sees every frame exactly once. Real relay processes, a real Redis, the
 * real client SDK.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { RelayClient } from '@libertaria/client';
import { Ed25519Identity } from '@libertaria/identity';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const TOTAL = 1000;
let redis: RedisHandle;
let nodes: RelayHandle[] = [];

before(async () => {
  redis = await startRedis();
  nodes = await Promise.all([startRelay({ redisUrl: redis.url }), startRelay({ redisUrl: redis.url })]);
});
after(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
  await redis.stop();
});

it('delivers all 1,000 durable frames exactly once to the application across a kill -9 of the recipient node', async () => {
  const [doomed, survivor] = nodes as [RelayHandle, RelayHandle];
  const fast = { initialDelayMs: 50, maxDelayMs: 500, multiplier: 2, jitter: 0.2, maxAttempts: 0 };
  const alice = new RelayClient({
    relays: [survivor.tcpUrl],
    identity: Ed25519Identity.generate(),
    sealing: false,
    reconnect: fast,
  });
  // Bob is on the doomed node first; his list fails over to the survivor.
  const bobId = Ed25519Identity.generate();
  const bob = new RelayClient({
    relays: [doomed.wsUrl, survivor.wsUrl],
    identity: bobId,
    sealing: false,
    reconnect: fast,
  });
  await Promise.all([alice.connect(), bob.connect()]);
  const connectedTo: string[] = [];
  bob.events.on('connected', ({ url }) => connectedTo.push(String(url)));

  const seen = new Map<string, number>();
  let killedAt = -1;
  let firstAfterKillMs = -1;
  const started = Date.now();
  const received = (async () => {
    for await (const m of bob.messages()) {
      const text = new TextDecoder().decode(m.payload);
      seen.set(text, (seen.get(text) ?? 0) + 1);
      await m.ack();
      if (seen.size === 301 && killedAt > 0) firstAfterKillMs = Date.now() - killedAt;
      if (seen.size === 300 && killedAt < 0) {
        killedAt = Date.now();
        doomed.kill('SIGKILL');
      }
      if (seen.size === TOTAL) return;
    }
  })();

  // Alice sends the 1,000 durable frames in batches of 50 (each send resolves
  // only on the relay's ACK), so the kill lands while frames are still being
  // stored and delivered, not after.
  const acks: Array<{ position?: number }> = [];
  let sentBeforeKill = -1;
  for (let batch = 0; batch < TOTAL / 50; batch++) {
    if (killedAt > 0 && sentBeforeKill < 0) sentBeforeKill = acks.length;
    const ids = Array.from({ length: 50 }, (_, k) => batch * 50 + k);
    acks.push(...(await Promise.all(ids.map((i) => alice.send(bobId.did, new TextEncoder().encode(`frame-${i}`))))));
    // Let Bob's consumption keep pace, so the kill falls mid-stream.
    while (seen.size < acks.length - 200 && killedAt < 0) await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(acks.length, TOTAL);
  assert.equal(new Set(acks.map((a) => a.position)).size, TOTAL, 'every frame has its own queue position');

  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`only ${seen.size} of ${TOTAL} frames after 30 s`)), 30_000);
  });
  await Promise.race([received, timedOut]);
  clearTimeout(timer);
  const doneMs = Date.now() - killedAt;

  assert.ok(killedAt > 0, 'the node was killed');
  assert.ok(
    sentBeforeKill > 0 && sentBeforeKill < TOTAL,
    `the kill fell mid-stream (${sentBeforeKill} sent before it)`,
  );
  assert.equal(seen.size, TOTAL, 'all frames arrived');
  const twice = [...seen.entries()].filter(([, n]) => n > 1);
  assert.deepEqual(twice, [], 'no frame reached the application twice');
  assert.ok(
    connectedTo.some((u) => u.includes(String(survivor.ports.ws))),
    'bob failed over to the survivor',
  );
  console.log(
    `kill -9: ${TOTAL} frames (${sentBeforeKill} acknowledged before the kill), ${bob.stats.duplicates} redelivered duplicates hidden, ` +
      `first new frame ${firstAfterKillMs} ms and the last ${doneMs} ms after the kill, ${Date.now() - started} ms in all`,
  );
  await Promise.all([alice.close(), bob.close()]);
});
