/**
 * The Nostr bridge scaled out (docs/bridges.md#running-several-processes),
 * with real parts: a private redis-server, a relay node process, a real
 * Nostr relay (@nostr-relay/core) and an independent Nostr user (nostr-tools),
 * and two bridge-nostr **processes** (`node services/bridge-nostr/dist/main.js`)
 * with BRIDGE_NOSTR_SCALE_OUT=true and no key file or state directory: the
 * same bridge DID, keys, sessions and gift-wrap cache, all in Redis.
 *
 * 1. Both serve at once: messages both ways for several peers; every message
 *    arrives exactly once (counted per text on both sides, and per job in
 *    the queues), and both processes ran outbound jobs.
 * 2. A process is killed (SIGKILL) while it holds outbound jobs whose
 *    events the Nostr relay has not answered yet: another process runs them
 *    again after BullMQ's stall check and republishes the very same events
 *    (the wrap cache in Redis), so the Nostr user still gets each once.
 * 3. The leader is killed (SIGKILL) in the middle of traffic both ways and a
 *    new process is started with the same environment (nothing local): every
 *    message still arrives exactly once.
 * 4. The survivor of step 3 is stopped: the restarted process alone (leader
 *    now) carries messages both ways on the existing sessions.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ForeignIdentity, federatedMessageOf, nostrIdentity, openFederatedSession } from '@libertaria/bridge-kit';
import { RedisSealedStore } from '@libertaria/bridge-kit/worker';
import { Ed25519Identity } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { createRedisClient, type RedisClient } from '@libertaria/redis';
import { Queue } from 'bullmq';
import { finalizeEvent } from 'nostr-tools/pure';
import { peer } from '../../../test-support/federation-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { NOSTR_KEYS_NAMESPACE } from '../src/redis-key-store.js';
import {
  type BridgeProcess,
  Inbox,
  START_MS,
  startBridgeProcess,
  storedTexts,
  until,
} from './support/bridge-process.js';
import { NostrUser } from './support/nostr-client.js';
import { type NostrRelayHandle, startNostrRelay } from './support/nostr-relay.js';

/** Deadline for a message on a loaded 2-core machine (a killed process's jobs come back after the stall check). */
const MESSAGE_MS = 120_000;

describe('bridge-nostr scaled out: two processes, one identity, state in Redis', { timeout: 600_000 }, () => {
  let redis: RedisHandle;
  let nostr: NostrRelayHandle;
  let relay: RelayHandle;
  let state: RedisClient;
  let dir: string;
  let env: Record<string, string>;
  const kek = randomBytes(32);
  const bridgeIdentity = Ed25519Identity.generate();
  const processes: BridgeProcess[] = [];
  let user: NostrUser;
  let inbox: Inbox;
  type Peer = Awaited<ReturnType<typeof peer>> & {
    npub: ForeignIdentity;
    session: ReturnType<typeof openFederatedSession>;
    received: Map<string, number>;
  };
  const peers: Peer[] = [];
  let outboundSent = 0;
  let inboundSent = 0;

  before(async () => {
    redis = await startRedis();
    nostr = await startNostrRelay();
    user = new NostrUser([nostr.url]);
    inbox = new Inbox(user);
    relay = await startRelay({ redisUrl: redis.url, env: { RELAY_FEDERATION_REFRESH_MS: '500' } });
    dir = await mkdtemp(join(tmpdir(), 'bridge-nostr-scale-'));
    // The bridge's own identity is configuration (a Secret in Kubernetes), not state: the only file the processes read.
    await writeKeyFile(join(dir, 'bridge.json'), bridgeIdentity);
    env = {
      BRIDGE_NOSTR_RELAYS: nostr.url,
      BRIDGE_NOSTR_KEK: kek.toString('hex'),
      BRIDGE_NOSTR_HTTP_PORT: '0',
      BRIDGE_NOSTR_REDIS_URL: redis.url,
      BRIDGE_NOSTR_LIBERTARIA_RELAYS: relay.wsUrl,
      BRIDGE_NOSTR_IDENTITY_FILE: join(dir, 'bridge.json'),
      BRIDGE_NOSTR_SCALE_OUT: 'true',
      BRIDGE_NOSTR_LEADER_TTL_MS: '1500',
      BRIDGE_NOSTR_SESSION_LOCK_TTL_MS: '2000',
      BRIDGE_NOSTR_OUTBOUND_BACKOFF_MS: '300',
      BRIDGE_NOSTR_INBOUND_BACKOFF_MS: '300',
      BRIDGE_NOSTR_IDENTITY_REFRESH_MS: '1000',
      // A killed process's jobs come back within about two job locks; a held publish waits for the test, not a timeout.
      BRIDGE_NOSTR_JOB_LOCK_MS: '3000',
      BRIDGE_NOSTR_PUBLISH_TIMEOUT_MS: '60000',
      BRIDGE_NOSTR_LOG_LEVEL: 'info',
    };
    processes.push(await startBridgeProcess('bridge-a', env), await startBridgeProcess('bridge-b', env));
    state = createRedisClient({ url: redis.url }, {});
    await until('the relay to know the bridge', async () => {
      const text = await (await fetch(`${relay.adminUrl}/metrics`)).text();
      return /^relay_federation_bridges\{[^}]*\} 1$/m.test(text) ? true : undefined;
    });
    await until('one leader connected to the relay', async () => {
      const roles = await Promise.all(processes.map(async (p) => (await p.health()).federation));
      const leaders = roles.filter((r) => r?.role === 'leader' && r.relay === 'connected');
      return leaders.length === 1 && roles.some((r) => r?.role === 'follower') ? true : undefined;
    });
    await inbox.open(nostr.url);
  });

  after(async () => {
    inbox?.close();
    for (const p of peers) await p.client.close();
    for (const p of processes) await p.stop();
    await state?.quit();
    await relay?.stop();
    await nostr?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Reads a peer's inbox in the background, counting every federated message by text. */
  function listen(p: Peer): void {
    void (async () => {
      for (;;) {
        const m = await p.next(600_000).catch(() => undefined);
        if (m === undefined) return;
        const f = federatedMessageOf(m, [bridgeIdentity.did]);
        if (f) p.received.set(f.text, (p.received.get(f.text) ?? 0) + 1);
        await m.ack();
      }
    })();
  }

  async function newPeer(): Promise<Peer> {
    const base = await peer(relay.wsUrl);
    const session = openFederatedSession(base.client, { remote: user.identity.uri, bridge: bridgeIdentity.did });
    const p: Peer = { ...base, session, npub: user.identity, received: new Map() };
    listen(p);
    // The first message bridges the peer (its npub is made then, by whichever process runs the job).
    await session.send(`hello from ${base.identity.did.slice(-6)}`);
    outboundSent++;
    const store = await RedisSealedStore.open({ redis: state, kek, namespace: NOSTR_KEYS_NAMESPACE });
    const pubkey = await until('the peer to be bridged', async () => (await store.get(base.identity.did))?.meta.pubkey);
    p.npub = nostrIdentity(String(pubkey));
    peers.push(p);
    return p;
  }

  async function sendBothWays(label: string, perPeer: number, during?: () => Promise<void>): Promise<void> {
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < perPeer; i++) {
      for (const [n, p] of peers.entries()) {
        sends.push(p.session.send(`${label} out ${n}.${i}`));
        sends.push(user.sendPrivate(p.npub, `${label} in ${n}.${i}`));
        outboundSent++;
        inboundSent++;
      }
      if (i === Math.floor(perPeer / 2) && during) await during();
    }
    await Promise.all(sends);
  }

  /**
   * Turns taken in conversation: each message waits for the previous one to
   * arrive, so every reply moves the Double Ratchet a DH step, on whichever
   * process opens or seals it. Stale session copies across processes show up
   * here as messages that no longer open.
   */
  async function converse(label: string, rounds: number): Promise<void> {
    const wait = (what: string, done: () => boolean) =>
      until(what, async () => (done() ? true : undefined), MESSAGE_MS).catch(async (err: Error) => {
        throw new Error(`${err.message}; ${await report()}`);
      });
    await Promise.all(
      peers.map(async (p, n) => {
        for (let r = 0; r < rounds; r++) {
          const out = `${label} out ${n}.${r}`;
          await p.session.send(out);
          outboundSent++;
          await wait(`${out} at the Nostr user`, () => inbox.texts.has(out));
          const text = `${label} in ${n}.${r}`;
          await user.sendPrivate(p.npub, text);
          inboundSent++;
          await wait(`${text} at the peer`, () => p.received.has(text));
        }
      }),
    );
  }

  async function queueCounts(name: string): Promise<Record<string, number>> {
    const q = new Queue(name, { connection: { url: redis.url }, prefix: '{lr-bridge}' });
    try {
      return await q.getJobCounts('completed', 'failed', 'waiting', 'active', 'delayed');
    } finally {
      await q.close();
    }
  }

  async function report(): Promise<string> {
    return JSON.stringify({
      outbound: await queueCounts('outbound-nostr'),
      seal: await queueCounts('seal-nostr'),
      inbound: await queueCounts('inbound'),
      texts: inbox.texts.size,
      received: peers.map((p) => p.received.size),
    });
  }

  /** Every message sent so far arrived, and exactly once: at the Nostr user, at the peers, and as jobs. */
  async function checkExactlyOnce(label: string): Promise<void> {
    await until(
      `${label}: ${outboundSent} messages at the Nostr user and ${inboundSent} at the peers`,
      async () => {
        const atPeers = peers.reduce((n, p) => n + p.received.size, 0);
        return inbox.texts.size >= outboundSent && atPeers >= inboundSent ? true : undefined;
      },
      MESSAGE_MS,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}; ${await report()}`);
    });
    const duplicatedOut = [...inbox.texts].filter(([, n]) => n !== 1);
    assert.deepEqual(duplicatedOut, [], 'each outbound message reached the Nostr user once');
    assert.equal(inbox.texts.size, outboundSent);
    for (const p of peers)
      assert.deepEqual(
        [...p.received].filter(([, n]) => n !== 1),
        [],
      );
    const counts = await until(
      'every job to complete',
      async () => {
        const [out, inb] = await Promise.all([queueCounts('outbound-nostr'), queueCounts('inbound')]);
        return out.completed === outboundSent && inb.completed === inboundSent ? { out, inb } : undefined;
      },
      MESSAGE_MS,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}; ${await report()}`);
    });
    // One outbound job per frame, one inbound job per Nostr message: no message was queued twice.
    assert.equal(counts.out.failed, 0);
    assert.equal(counts.inb.failed, 0);
  }

  it('two processes serve the same identities at once: both ways, each message once, both run jobs', async () => {
    for (let i = 0; i < 3; i++) await newPeer();
    await sendBothWays('phase 1', 6);
    await converse('phase 1 talk', 4);
    // A public note mentioning every peer: one foreign message, one mention (one job) per bridged peer.
    const note = finalizeEvent(
      {
        kind: 1,
        created_at: Math.floor(Date.now() / 1000),
        tags: peers.map((p) => ['p', (p.npub as Extract<ForeignIdentity, { type: 'nostr' }>).pubkeyHex]),
        content: 'phase 1 note mentioning everyone',
      },
      user.secret,
    );
    await user.publishEverywhere(note);
    inboundSent += peers.length;
    await checkExactlyOnce('phase 1');
    for (const p of peers) assert.equal(p.received.get('phase 1 note mentioning everyone'), 1);
    const [a, b] = processes as [BridgeProcess, BridgeProcess];
    const okA = await a.metric(/^bridge_federation_jobs_total\{queue="outbound",result="ok"\}/);
    const okB = await b.metric(/^bridge_federation_jobs_total\{queue="outbound",result="ok"\}/);
    console.log(`# phase 1: ${outboundSent} out, ${inboundSent} in; outbound jobs by process: ${okA} + ${okB}`);
    assert.equal(okA + okB, outboundSent);
    assert.ok(okA > 0 && okB > 0, `both processes ran outbound jobs (${okA}, ${okB})`);
    // Every seal and open went through a per-peer lease, on both processes.
    const leases = await Promise.all(
      [a, b].map((p) => p.metric(/^bridge_federation_session_locks_total\{result="(acquired|waited)"\}/)),
    );
    assert.ok(
      leases.every((n) => n > 0),
      `leases taken: ${leases}`,
    );
    const leaders = await Promise.all([a, b].map((p) => p.metric(/^bridge_federation_leader /)));
    assert.deepEqual(leaders.sort(), [0, 1], 'one leader, by the metric too');
    // Nothing was written locally: the processes got no state directory, and the key file setting is unset.
    assert.deepEqual((await readdir(dir)).sort(), ['bridge.json']);
    // And Redis holds no message text in clear: not in the queues' job data, not in the session records.
    const leaks: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await state.scan(cursor, 'COUNT', 500);
      cursor = next;
      for (const key of keys) {
        const type = await state.type(key);
        const values =
          type === 'string'
            ? [(await state.getBuffer(key)) as Buffer]
            : type === 'hash'
              ? Object.values(await state.hgetallBuffer(key))
              : [];
        if (values.some((v) => v.includes('phase 1 out') || v.includes('phase 1 in'))) leaks.push(key);
      }
    } while (cursor !== '0');
    assert.deepEqual(leaks, [], 'no key holds a message text');
  });

  it('a process killed with outbound jobs in hand: another runs them, each event published once', async () => {
    const queue = new Queue('outbound-nostr', { connection: { url: redis.url }, prefix: '{lr-bridge}' });
    const release = nostr.holdEvents();
    let released = false;
    try {
      const doomed = processes.find((p) => p.name === 'bridge-b') as BridgeProcess;
      const doomedName = `${hostname()}-${doomed.child.pid}`;
      for (const [n, p] of peers.entries()) {
        for (let i = 0; i < 2; i++) {
          await p.session.send(`phase kill-in-hand out ${n}.${i}`);
          outboundSent++;
        }
      }
      const expected = peers.length * 2;
      // Every job taken, its event sent and held by the Nostr relay, some of them by the doomed process.
      const inHand = await until('every job in hand, some by the doomed process', async () => {
        const active = await queue.getJobs(['active']);
        const mine = active.filter((j) => j.processedBy === doomedName).length;
        return active.length === expected && mine > 0 && nostr.held() >= expected ? mine : undefined;
      });
      await doomed.kill();
      processes.splice(processes.indexOf(doomed), 1);
      release();
      released = true;
      processes.push(await startBridgeProcess('bridge-c', env));
      await checkExactlyOnce('kill-in-hand');
      const stalled = await Promise.all(
        processes.map((p) => p.metric(/^bridge_federation_jobs_total\{queue="outbound",result="stalled"\}/)),
      );
      console.log(
        `# kill-in-hand: the killed process held ${inHand} jobs; run again after the stall check: ${stalled}`,
      );
      assert.ok(stalled.reduce((x, y) => x + y, 0) >= inHand, 'its jobs were handed back by the stall check');
      // Every job has completed (each publish answered), so the relay's store is final: one message per text,
      // although the killed process's events and the retries' both reached the relay.
      const stored = await storedTexts(nostr.url, user);
      const mine = [...stored].filter(([text]) => text.startsWith('phase kill-in-hand'));
      assert.deepEqual(
        mine.filter(([, n]) => n !== 1),
        [],
        'the retried jobs republished the same events',
      );
      assert.equal(mine.length, peers.length * 2);
    } finally {
      if (!released) release();
      await queue.close();
    }
  });

  it('the leader killed mid-traffic: a new process (no local state) joins, every message arrives once', async () => {
    const roles = await Promise.all(processes.map(async (p) => (await p.health()).federation?.role));
    const leader = processes[roles.indexOf('leader')] as BridgeProcess;
    const survivor = processes[roles.indexOf('follower')] as BridgeProcess;
    let killedAt = 0;
    await sendBothWays('phase 2', 6, async () => {
      await leader.kill();
      killedAt = Date.now();
      processes.splice(processes.indexOf(leader), 1);
    });
    const restarted = await startBridgeProcess('bridge-restarted', env);
    processes.push(restarted);
    // Either live process may win the lease: the survivor when its campaign comes first, the new
    // process when it starts campaigning before the dead leader's lease has expired. Both are right.
    const newLeader = await until('a live process to lead', async () => {
      for (const p of [survivor, restarted]) if ((await p.health()).federation?.role === 'leader') return p;
      return undefined;
    });
    console.log(`# phase 2: ${newLeader.name} leads ${Date.now() - killedAt} ms after the kill`);
    await converse('phase 2 talk', 3);
    await checkExactlyOnce('phase 2');
    const stalled = await Promise.all(
      [survivor, restarted].map((p) =>
        p.metric(/^bridge_federation_jobs_total\{queue="(outbound|seal)",result="stalled"\}/),
      ),
    );
    console.log(`# phase 2: stalled jobs run again by the live processes, since they started: ${stalled.join(' + ')}`);
  });

  it('the restarted process alone resumes: leader, same keys and sessions, both ways', async () => {
    const survivor = processes.find((p) => p.name !== 'bridge-restarted') as BridgeProcess;
    const restarted = processes.find((p) => p.name === 'bridge-restarted') as BridgeProcess;
    await survivor.stop();
    processes.splice(processes.indexOf(survivor), 1);
    await until(
      'the restarted process to lead',
      async () => ((await restarted.health()).federation?.relay === 'connected' ? true : undefined),
      START_MS,
    );
    await sendBothWays('phase 3', 2);
    await converse('phase 3 talk', 2);
    await checkExactlyOnce('phase 3');
  });
});
