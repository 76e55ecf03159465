/**
 * Federation on a real local Redis Cluster (6 redis-servers, 3 primaries and
 * 3 replicas: test-support/redis-cluster.ts): two relay node processes and
 * the Nostr bridge all on REDIS_CLUSTER_NODES, BullMQ's queues under the
 * `{lr-bridge}` hash tag. Peers on either node and a Nostr user exchange
 * messages both ways; then the primary holding the federation's slot is
 * killed (SIGKILL), a replica takes over, and messages keep flowing both
 * ways through the same relays, bridge and workers (issue 17).
 *
 * What a failover may lose of BullMQ's own bookkeeping is Redis's replication
 * window (docs/redis.md); this test checks that the federation carries on,
 * not that no job written in the last milliseconds before the kill is lost.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { openFederatedSession } from '@libertaria/bridge-kit';
import { BridgeFederation } from '@libertaria/bridge-kit/worker';
import { InMemorySessionStore, type RelayClient } from '@libertaria/client';
import { Ed25519Identity } from '@libertaria/identity';
import { federationReport, peer } from '../../../test-support/federation-peer.js';
import { type RedisClusterHandle, startRedisCluster } from '../../../test-support/redis-cluster.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { silentLogger } from '../src/log.js';
import type { NostrBridge } from '../src/nostr-bridge.js';
import { makeBridge } from './support/bridge.js';
import { NostrUser } from './support/nostr-client.js';
import { type NostrRelayHandle, startNostrRelay } from './support/nostr-relay.js';

/** Deadlines for a loaded 2-core machine, on events, never fixed sleeps. */
const MESSAGE_MS = 45_000;
/** How long the test waits for an automatic failover before it forces one (CLUSTER FAILOVER TAKEOVER). */
const FORCE_FAILOVER_AFTER_MS = 15_000;

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('federation on a Redis Cluster: two relays, the Nostr bridge, a primary killed', { timeout: 240_000 }, () => {
  let cluster: RedisClusterHandle;
  let nostr: NostrRelayHandle;
  const relays: RelayHandle[] = [];
  let bridge: NostrBridge;
  let federation: BridgeFederation;
  const bridgeIdentity = Ed25519Identity.generate();
  const clients: RelayClient[] = [];

  before(async () => {
    cluster = await startRedisCluster();
    nostr = await startNostrRelay();
    const redisUrl = `redis://127.0.0.1:${cluster.servers[0]!.port}`;
    const env = {
      REDIS_CLUSTER_NODES: cluster.nodes,
      RELAY_FEDERATION_REFRESH_MS: '500',
      RELAY_HEARTBEAT_MS: '1000',
      RELAY_PRESENCE_TTL_MS: '5000',
    };
    relays.push(...(await Promise.all([startRelay({ redisUrl, env }), startRelay({ redisUrl, env })])));
    ({ bridge } = await makeBridge([nostr.url], { publishTimeoutMs: 5000, lookupTimeoutMs: 2000 }));
    await bridge.start();
    federation = new BridgeFederation({
      bridge,
      identity: bridgeIdentity,
      sessionStore: new InMemorySessionStore(),
      relays: [relays[0]!.wsUrl, relays[1]!.wsUrl],
      redisUrl,
      redisClusterNodes: cluster.nodes,
      concurrency: 4,
      ratePerSecond: 100,
      rateLimitPauseMs: 600,
      attempts: 8,
      backoffMs: 300,
      jitter: 0.5,
      inboundAttempts: 8,
      inboundBackoffMs: 300,
      keepCompleted: 1000,
      keepFailed: 1000,
      inboundTtlSeconds: 0,
      log: silentLogger,
    });
    await federation.start();
    for (const relay of relays) {
      await until('the relay to know the bridge', async () => {
        const text = await (await fetch(`${relay.adminUrl}/metrics`)).text();
        return /^relay_federation_bridges\{[^}]*\} 1$/m.test(text) ? true : undefined;
      });
    }
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await federation?.close();
    await bridge?.close();
    await Promise.all(relays.map((r) => r.stop(5000)));
    await nostr?.stop();
    await cluster?.stop();
  });

  const report = (): Promise<string> => federationReport(federation);

  /** A peer on `relayUrl` and a Nostr user exchange one message each way; returns the peer. */
  async function roundTrip(relayUrl: string, label: string) {
    const alice = await peer(relayUrl);
    clients.push(alice.client);
    const user = new NostrUser([nostr.url]);
    const aliceNpub = await bridge.bridgeIdentity(alice.identity.did);
    const session = openFederatedSession(alice.client, { remote: user.identity.uri, bridge: bridgeIdentity.did });
    const reading = user.nextRumor(aliceNpub, MESSAGE_MS);
    await session.send(`${label}: to the user`);
    assert.equal((await reading).content, `${label}: to the user`);
    await user.sendPrivate(aliceNpub, `${label}: to the peer`);
    const m = await alice.next(MESSAGE_MS).catch(async (error: Error) => {
      throw new Error(`${label}: ${error.message}; federation: ${await report()}`);
    });
    await m.ack();
    return { alice, text: new TextDecoder().decode(m.payload), from: m.from };
  }

  it('peers on both nodes and a Nostr user exchange messages both ways', async () => {
    for (const [i, relay] of relays.entries()) {
      const { text } = await roundTrip(relay.wsUrl, `node ${i}`);
      assert.match(text, new RegExp(`node ${i}: to the peer`));
    }
  });

  it('carries on after the primary holding the federation slot is killed and a replica takes over', async () => {
    const slotKey = '{lr-bridge}:outbound-nostr';
    const doomed = await cluster.primaryFor(slotKey);
    const killedAt = Date.now();
    doomed.kill();
    let forced = false;
    const promoted = await until(
      'a replica to take over the federation slot',
      async () => {
        const now = await cluster.primaryFor(slotKey);
        if (now.port !== doomed.port) return now;
        // As in the relay's cluster test: normally 2-3 s here; if it does not come, an operator's takeover, said aloud.
        if (!forced && Date.now() - killedAt > FORCE_FAILOVER_AFTER_MS) {
          forced = true;
          console.log(`# no automatic failover within ${FORCE_FAILOVER_AFTER_MS} ms: CLUSTER FAILOVER TAKEOVER`);
          await cluster.takeOver(doomed.port);
        }
        return undefined;
      },
      90_000,
    );
    const failoverMs = Date.now() - killedAt;
    assert.notEqual(promoted.port, doomed.port);
    for (const [i, relay] of relays.entries()) {
      const { text } = await roundTrip(relay.wsUrl, `after failover, node ${i}`);
      assert.match(text, new RegExp(`after failover, node ${i}: to the peer`));
    }
    console.log(`# federation on Redis Cluster: failover after ${failoverMs} ms; both ways on both nodes afterwards`);
  });
});
