/**
 * The relay on a real local Redis Cluster (6 redis-servers: 3 primaries, 3
 * replicas; test-support/redis-cluster.ts). Two relay nodes (with federation,
 * so BullMQ runs on the Cluster too) take durable traffic for recipients
 * spread over the slots; the primary holding some of the recipients' queues
 * is killed with SIGKILL mid-stream, its replica takes over, and the killed
 * server comes back as a replica. Then every recipient reads its queue.
 *
 * - RELAY_DURABLE_WAIT_REPLICAS=1: no acknowledged frame is lost.
 * - without it: the frames acknowledged but lost are counted and printed
 *   (the loss window docs/redis.md reports); not asserted, it is a race.
 * Cross-node delivery (sharded pub/sub) is checked on the way.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { RelayClient } from '@libertaria/client';
import { Ed25519Identity, hintFromDid, hintToHex } from '@libertaria/identity';
import { type RedisClusterHandle, startRedisCluster } from '../../../test-support/redis-cluster.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const TOTAL = Number(process.env.TEST_CLUSTER_FRAMES ?? 1200);
const RECIPIENTS = 6;
const IN_FLIGHT = 40;
const fast = { initialDelayMs: 50, maxDelayMs: 500, multiplier: 2, jitter: 0.2, maxAttempts: 0 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: RedisClusterHandle;
const relays: RelayHandle[] = [];

before(async () => {
  cluster = await startRedisCluster();
});
after(async () => {
  await Promise.all(relays.map((r) => r.stop(5000)));
  await cluster?.stop();
});

async function startRelays(prefix: string, waitReplicas: number): Promise<[RelayHandle, RelayHandle]> {
  const env = {
    REDIS_CLUSTER_NODES: cluster.nodes,
    RELAY_REDIS_PREFIX: prefix,
    RELAY_DURABLE_WAIT_REPLICAS: String(waitReplicas),
    RELAY_HEARTBEAT_MS: '1000',
    RELAY_PRESENCE_TTL_MS: '5000',
    // Cross-node frames through sharded pub/sub, the path this test checks (node links would skip it).
    RELAY_NODE_LINKS: 'false',
  };
  const redisUrl = `redis://127.0.0.1:${cluster.servers[0]!.port}`;
  const pair = await Promise.all([startRelay({ redisUrl, env }), startRelay({ redisUrl, env })]);
  relays.push(...pair);
  return pair as [RelayHandle, RelayHandle];
}

interface Outcome {
  acked: number;
  ackedBeforeKill: number;
  received: number;
  lost: string[];
  duplicatesSeen: number;
  failoverMs: number;
  nacks: number;
}

/** How long the test waits for an automatic failover before it forces one (CLUSTER FAILOVER TAKEOVER). */
const FORCE_FAILOVER_AFTER_MS = 15_000;

/** Sends TOTAL durable frames through both relays, kills the primary of recipient 0's queue mid-stream, reads everything back. */
async function scenario(
  prefix: string,
  waitReplicas: number,
  avoidPort: number | undefined,
): Promise<Outcome & { killedPort: number }> {
  const [a, b] = await startRelays(prefix, waitReplicas);
  // Recipient 0's queue lives on a primary not killed before.
  let recipients: Ed25519Identity[] = [];
  let doomedPort = -1;
  for (let attempt = 0; attempt < 50 && doomedPort < 0; attempt++) {
    recipients = Array.from({ length: RECIPIENTS }, () => Ed25519Identity.generate());
    const key = `${prefix}:q:{${hintToHex(hintFromDid(recipients[0]!.did))}}:z`;
    const primary = await cluster.primaryFor(key);
    if (primary.port !== avoidPort) doomedPort = primary.port;
  }
  const doomed = cluster.servers.find((s) => s.port === doomedPort)!;
  const alice = new RelayClient({
    relays: [a.tcpUrl],
    identity: Ed25519Identity.generate(),
    sealing: false,
    reconnect: fast,
  });
  const carol = new RelayClient({
    relays: [b.wsUrl],
    identity: Ed25519Identity.generate(),
    sealing: false,
    reconnect: fast,
  });
  await Promise.all([alice.connect(), carol.connect()]);

  const acked = new Set<string>();
  let ackedBeforeKill = -1;
  let nacks = 0;
  let killedAt = 0;
  let failoverMs = -1;
  const deadline = Date.now() + 45_000;
  const sendOne = async (i: number): Promise<void> => {
    const sender = i % 2 === 0 ? alice : carol;
    const to = recipients[i % RECIPIENTS]!.did;
    const text = `${prefix}-${i}`;
    const messageId = new Uint8Array(16);
    new DataView(messageId.buffer).setUint32(12, i + 1);
    while (Date.now() < deadline) {
      try {
        await sender.send(to, new TextEncoder().encode(text), { messageId });
        acked.add(text);
        return;
      } catch {
        nacks++;
        await sleep(100);
      }
    }
  };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < TOTAL) {
      const i = next++;
      if (i === Math.floor(TOTAL * 0.4) && killedAt === 0) {
        ackedBeforeKill = acked.size;
        killedAt = Date.now();
        doomed.kill();
        // The killed server comes back (as a replica of its successor) once the failover happened.
        void (async () => {
          const key = `${prefix}:q:{${hintToHex(hintFromDid(recipients[0]!.did))}}:z`;
          let forced = false;
          while (Date.now() < deadline) {
            const now = await cluster.primaryFor(key).catch(() => undefined);
            if (now && now.port !== doomedPort) {
              failoverMs = Date.now() - killedAt;
              break;
            }
            // Automatic failover normally takes 2-3 s here. Once it did not come within 45 s: the replica had
            // never synced (test-support/redis-cluster.ts now waits for that). Should it not come, an
            // operator's takeover stands in for it, said aloud.
            if (!forced && Date.now() - killedAt > FORCE_FAILOVER_AFTER_MS) {
              forced = true;
              const port = await cluster.takeOver(doomedPort).catch((err: Error) => err.message);
              console.log(
                `${prefix}: no automatic failover within ${FORCE_FAILOVER_AFTER_MS} ms; CLUSTER FAILOVER TAKEOVER at ${port}`,
              );
            }
            await sleep(100);
          }
          await doomed.restart();
        })();
      }
      await sendOne(i);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  await cluster.waitHealthy();

  // Every recipient reads its queue through relay B (and one through A: cross-node announcements).
  const received = new Map<string, number>();
  let duplicatesSeen = 0;
  await Promise.all(
    recipients.map(async (identity, r) => {
      const bob = new RelayClient({ relays: [r === 0 ? a.wsUrl : b.wsUrl], identity, sealing: false, reconnect: fast });
      await bob.connect();
      const expected = [...acked].filter((t) => Number(t.split('-').pop()) % RECIPIENTS === r).length;
      let mine = 0;
      let lastAt = Date.now();
      const reading = (async () => {
        for await (const m of bob.messages()) {
          const text = new TextDecoder().decode(m.payload);
          received.set(text, (received.get(text) ?? 0) + 1);
          if (received.get(text)! > 1) duplicatesSeen++;
          mine++;
          lastAt = Date.now();
          await m.ack();
        }
      })();
      // Until it has everything acknowledged for it, or 3 s pass without a frame.
      while (mine < expected && Date.now() - lastAt < 3000) await sleep(50);
      duplicatesSeen += bob.stats.duplicates;
      await bob.close();
      await reading.catch(() => {});
    }),
  );
  await Promise.all([alice.close(), carol.close()]);
  const lost = [...acked].filter((t) => !received.has(t));
  return {
    acked: acked.size,
    ackedBeforeKill,
    received: received.size,
    lost,
    duplicatesSeen,
    failoverMs,
    nacks,
    killedPort: doomedPort,
  };
}

it('runs on a Redis Cluster through a primary failover: WAIT loses nothing acknowledged, and without WAIT the loss is measured', async () => {
  const plain = await scenario('nowait', 0, undefined);
  console.log(
    `without WAIT: ${plain.acked} of ${TOTAL} acknowledged (${plain.ackedBeforeKill} before the kill), ` +
      `${plain.lost.length} acknowledged frames lost, failover after ${plain.failoverMs} ms, ${plain.nacks} NACKs retried`,
  );
  const waited = await scenario('wait', 1, plain.killedPort);
  console.log(
    `RELAY_DURABLE_WAIT_REPLICAS=1: ${waited.acked} of ${TOTAL} acknowledged (${waited.ackedBeforeKill} before the kill), ` +
      `${waited.lost.length} acknowledged frames lost, failover after ${waited.failoverMs} ms, ${waited.nacks} NACKs retried`,
  );
  assert.ok(plain.ackedBeforeKill > 0 && waited.ackedBeforeKill > 0, 'the kill fell mid-stream');
  assert.ok(plain.failoverMs > 0 && waited.failoverMs > 0, 'a replica took over');
  assert.deepEqual(waited.lost, [], 'with WAIT, every acknowledged frame was delivered');
  assert.ok(waited.acked >= TOTAL * 0.9, `most frames were acknowledged with WAIT (${waited.acked})`);
  assert.ok(plain.received >= plain.acked - plain.lost.length);
});
