/**
 * The scaled-out Nostr bridge on a real local Redis Cluster (6 redis-servers,
 * test-support/redis-cluster.ts): two bridge-nostr processes with
 * BRIDGE_NOSTR_SCALE_OUT=true and REDIS_CLUSTER_NODES, a relay node on the
 * cluster, a real Nostr relay and an independent Nostr user. Every key the
 * scale-out adds (sealed keys, sessions, leases, the leader, the seal queue,
 * the wrap cache) lives under the `{lr-bridge}` hash tag, so each script
 * touches one slot: messages cross both ways, in bursts and in turns, each
 * once, and both processes run jobs.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { federatedMessageOf, nostrIdentity, openFederatedSession } from '@libertaria/bridge-kit';
import { RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { Ed25519Identity } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { peer } from '../../../test-support/federation-peer.js';
import { type RedisClusterHandle, startRedisCluster } from '../../../test-support/redis-cluster.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { NOSTR_KEYS_NAMESPACE } from '../src/redis-key-store.js';
import { type BridgeProcess, Inbox, startBridgeProcess, until } from './support/bridge-process.js';
import { NostrUser } from './support/nostr-client.js';
import { type NostrRelayHandle, startNostrRelay } from './support/nostr-relay.js';

const MESSAGE_MS = 60_000;

describe('bridge-nostr scaled out on a Redis Cluster: two processes', { timeout: 240_000 }, () => {
  let cluster: RedisClusterHandle;
  let nostr: NostrRelayHandle;
  let relay: RelayHandle;
  let state: RedisClient;
  let dir: string;
  const kek = randomBytes(32);
  const bridgeIdentity = Ed25519Identity.generate();
  const processes: BridgeProcess[] = [];
  const clients: { close(): Promise<void> }[] = [];
  let user: NostrUser;
  let inbox: Inbox;

  before(async () => {
    cluster = await startRedisCluster();
    nostr = await startNostrRelay();
    user = new NostrUser([nostr.url]);
    inbox = new Inbox(user);
    const redisUrl = `redis://127.0.0.1:${cluster.servers[0]?.port}`;
    relay = await startRelay({
      redisUrl,
      env: { REDIS_CLUSTER_NODES: cluster.nodes, RELAY_FEDERATION_REFRESH_MS: '500' },
    });
    dir = await mkdtemp(join(tmpdir(), 'bridge-nostr-scale-cluster-'));
    await writeKeyFile(join(dir, 'bridge.json'), bridgeIdentity);
    const env = {
      BRIDGE_NOSTR_RELAYS: nostr.url,
      BRIDGE_NOSTR_KEK: kek.toString('hex'),
      BRIDGE_NOSTR_HTTP_PORT: '0',
      BRIDGE_NOSTR_REDIS_URL: redisUrl,
      REDIS_CLUSTER_NODES: cluster.nodes,
      BRIDGE_NOSTR_LIBERTARIA_RELAYS: relay.wsUrl,
      BRIDGE_NOSTR_IDENTITY_FILE: join(dir, 'bridge.json'),
      BRIDGE_NOSTR_SCALE_OUT: 'true',
      BRIDGE_NOSTR_LEADER_TTL_MS: '1500',
      BRIDGE_NOSTR_OUTBOUND_BACKOFF_MS: '300',
      BRIDGE_NOSTR_INBOUND_BACKOFF_MS: '300',
      BRIDGE_NOSTR_IDENTITY_REFRESH_MS: '1000',
    };
    processes.push(await startBridgeProcess('bridge-a', env), await startBridgeProcess('bridge-b', env));
    state = createRedisClient({ url: redisUrl, clusterNodes: cluster.nodes }, {});
    await until('the relay to know the bridge', async () => {
      const text = await (await fetch(`${relay.adminUrl}/metrics`)).text();
      return /^relay_federation_bridges\{[^}]*\} 1$/m.test(text) ? true : undefined;
    });
    await until('one leader connected to the relay', async () => {
      const roles = await Promise.all(processes.map(async (p) => (await p.health()).federation));
      return roles.filter((r) => r?.role === 'leader' && r.relay === 'connected').length === 1 ? true : undefined;
    });
    await inbox.open(nostr.url);
  });

  after(async () => {
    inbox?.close();
    for (const c of clients) await c.close();
    for (const p of processes) await p.stop();
    await state?.quit();
    await relay?.stop();
    await nostr?.stop();
    await cluster?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('messages both ways, in bursts and in turns, each once; both processes run jobs', async () => {
    const store = await RedisSealedStore.open({ redis: state, kek, namespace: NOSTR_KEYS_NAMESPACE });
    const peers: {
      session: ReturnType<typeof openFederatedSession>;
      received: Map<string, number>;
      npub: ReturnType<typeof nostrIdentity>;
    }[] = [];
    let outboundSent = 0;
    let inboundSent = 0;
    for (let n = 0; n < 2; n++) {
      const p = await peer(relay.wsUrl);
      clients.push(p.client);
      const session = openFederatedSession(p.client, { remote: user.identity.uri, bridge: bridgeIdentity.did });
      const received = new Map<string, number>();
      void (async () => {
        for (;;) {
          const m = await p.next(600_000).catch(() => undefined);
          if (m === undefined) return;
          const f = federatedMessageOf(m, [bridgeIdentity.did]);
          if (f) received.set(f.text, (received.get(f.text) ?? 0) + 1);
          await m.ack();
        }
      })();
      await session.send(`cluster hello ${n}`);
      outboundSent++;
      const pubkey = await until('the peer to be bridged', async () => (await store.get(p.identity.did))?.meta.pubkey);
      peers.push({ session, received, npub: nostrIdentity(String(pubkey)) });
    }
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < 5; i++) {
      for (const [n, p] of peers.entries()) {
        sends.push(p.session.send(`cluster out ${n}.${i}`), user.sendPrivate(p.npub, `cluster in ${n}.${i}`));
        outboundSent++;
        inboundSent++;
      }
    }
    await Promise.all(sends);
    await Promise.all(
      peers.map(async (p, n) => {
        for (let r = 0; r < 3; r++) {
          await p.session.send(`cluster talk out ${n}.${r}`);
          outboundSent++;
          await until(
            'the message at the Nostr user',
            async () => inbox.texts.has(`cluster talk out ${n}.${r}`) || undefined,
            MESSAGE_MS,
          );
          await user.sendPrivate(p.npub, `cluster talk in ${n}.${r}`);
          inboundSent++;
          await until(
            'the message at the peer',
            async () => p.received.has(`cluster talk in ${n}.${r}`) || undefined,
            MESSAGE_MS,
          );
        }
      }),
    );
    await until(
      'every message',
      async () =>
        inbox.texts.size >= outboundSent && peers.reduce((x, p) => x + p.received.size, 0) >= inboundSent
          ? true
          : undefined,
      MESSAGE_MS,
    );
    assert.deepEqual(
      [...inbox.texts].filter(([, c]) => c !== 1),
      [],
    );
    for (const p of peers)
      assert.deepEqual(
        [...p.received].filter(([, c]) => c !== 1),
        [],
      );
    const ok = await until('every outbound job to complete', async () => {
      const counts = await Promise.all(
        processes.map((p) => p.metric(/^bridge_federation_jobs_total\{queue="outbound",result="ok"\}/)),
      );
      return counts.reduce((x, y) => x + y, 0) === outboundSent ? counts : undefined;
    });
    console.log(
      `# on a Redis Cluster: ${outboundSent} out, ${inboundSent} in; outbound jobs by process: ${ok.join(' + ')}`,
    );
    assert.ok(
      ok.every((n) => n > 0),
      'both processes ran outbound jobs',
    );
  });
});
