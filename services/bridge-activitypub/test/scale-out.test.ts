/**
 * Two bridge-activitypub **processes** behind one domain
 * (docs/bridges.md#several-processes-behind-one-domain), with real parts: a
 * private redis-server, a relay node process, the independent ActivityPub
 * server, and two `node services/bridge-activitypub/dist/main.js` with
 * BRIDGE_AP_SCALE_OUT=true and no state directory, behind a round-robin HTTP
 * front whose address is their one origin: the same bridge DID, actors,
 * keys, sessions, followers and queues, all in Redis.
 *
 * 1. Both serve at once: several peers and the server's account exchange
 *    direct messages both ways; every message arrives exactly once, and
 *    the front sent requests to both processes.
 * 2. The leader (the process holding the relay connection) is killed
 *    (SIGKILL): the other takes the lead and carries on, both ways.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { federatedMessageOf, openFederatedSession } from '@libertaria/bridge-kit';
import { Ed25519Identity } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { ownChild } from '../../../test-support/children.js';
import { peer } from '../../../test-support/federation-peer.js';
import { repoPath } from '../../../test-support/paths.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { handleOf } from '../src/actors.js';
import { ApServer, noteText } from './support/ap-server.js';

/** Deadlines for a loaded 2-core machine; a killed leader is replaced within its lease. */
const MESSAGE_MS = 90_000;
const START_MS = 60_000;

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface BridgeProcess {
  readonly child: ChildProcess;
  readonly port: number;
  output: string;
  kill(signal: NodeJS.Signals): Promise<void>;
}

async function startBridgeProcess(name: string, env: Record<string, string>, port: number): Promise<BridgeProcess> {
  const child = spawn(process.execPath, [repoPath('services', 'bridge-activitypub', 'dist', 'main.js')], {
    env: { PATH: process.env.PATH ?? '', ...env, BRIDGE_AP_HTTP_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  ownChild(child);
  const handle: BridgeProcess = {
    child,
    port,
    output: '',
    async kill(signal) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill(signal);
      await exited;
    },
  };
  const keep = (d: Buffer): void => {
    handle.output = (handle.output + d.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  await until(
    `${name} to be healthy`,
    async () => ((await fetch(`http://127.0.0.1:${port}/health`)).status === 200 ? true : undefined),
    START_MS,
  ).catch((err: Error) => {
    throw new Error(`${err.message}: ${handle.output}`);
  });
  return handle;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** An HTTP front sending each request to the next live backend in turn, counting per backend. */
async function roundRobin(ports: number[]) {
  const hits = ports.map(() => 0);
  const down = new Set<number>();
  let next = 0;
  const server: Server = createServer((req, res) => {
    let i = next++ % ports.length;
    if (down.has(i)) i = (i + 1) % ports.length;
    hits[i] = (hits[i] ?? 0) + 1;
    const upstream = request(
      { host: '127.0.0.1', port: ports[i], method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, hits, down, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('bridge-activitypub scaled out: two processes behind one domain', () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let remote: ApServer;
  let dir: string;
  let front: Awaited<ReturnType<typeof roundRobin>>;
  const processes: BridgeProcess[] = [];
  const bridgeIdentity = Ed25519Identity.generate();

  before(async () => {
    redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] });
    relay = await startRelay({ redisUrl: redis.url, env: { RELAY_FEDERATION_REFRESH_MS: '500' } });
    remote = new ApServer(['bob']);
    await remote.start();
    dir = await mkdtemp(join(tmpdir(), 'bridge-ap-scale-'));
    const keyFile = join(dir, 'identity.key');
    await writeKeyFile(keyFile, bridgeIdentity);
    const ports = [await freePort(), await freePort()];
    front = await roundRobin(ports);
    const env = {
      BRIDGE_AP_ORIGIN: front.origin,
      BRIDGE_AP_INSECURE_TEST_MODE: 'true',
      BRIDGE_AP_KEK: 'ef'.repeat(32),
      BRIDGE_AP_REDIS_URL: redis.url,
      BRIDGE_AP_LIBERTARIA_RELAYS: relay.wsUrl,
      BRIDGE_AP_IDENTITY_FILE: keyFile,
      BRIDGE_AP_SCALE_OUT: 'true',
      BRIDGE_AP_LEADER_TTL_MS: '3000',
      BRIDGE_AP_OUTBOUND_BACKOFF_MS: '300',
      BRIDGE_AP_QUEUE_BACKOFF_MS: '300',
      BRIDGE_AP_LOG_LEVEL: 'warn',
    };
    processes.push(await startBridgeProcess('bridge A', env, ports[0] as number));
    processes.push(await startBridgeProcess('bridge B', env, ports[1] as number));
    await until('the relay to know the bridge', async () => {
      const text = await (await fetch(`${relay.adminUrl}/metrics`)).text();
      return /^relay_federation_bridges\{[^}]*\} 1$/m.test(text) ? true : undefined;
    });
  });

  after(async () => {
    for (const p of processes) await p.kill('SIGTERM');
    if (front) {
      front.server.closeAllConnections();
      await new Promise<void>((resolve) => front.server.close(() => resolve()));
    }
    await remote?.stop();
    await relay?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Peers exchange `n` messages each way with bob; every one arrives exactly once. */
  async function exchange(label: string, peers: Awaited<ReturnType<typeof peer>>[], n: number): Promise<void> {
    const texts: string[] = [];
    for (const [p, who] of peers.map((q, i) => [q, i] as const)) {
      const session = openFederatedSession(p.client, {
        remote: remote.acct('bob'),
        bridge: bridgeIdentity.did,
      });
      for (let i = 0; i < n; i++) {
        const text = `${label} out ${who}.${i}`;
        texts.push(text);
        await session.send(text);
      }
    }
    const deadline = Date.now() + MESSAGE_MS;
    const dmTexts = () =>
      remote.received
        .filter((r) => r.activity.type === 'Create')
        .map((r) => noteText(String((r.activity.object as { content?: unknown }).content ?? '')));
    while (texts.some((t) => !dmTexts().includes(t)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const t of texts) assert.equal(dmTexts().filter((x) => x === t).length, 1, `${t} at bob once`);

    for (const [who, p] of peers.entries()) {
      const acct = accountOf(p.identity.did);
      const own = await remote.resolve(acct);
      const back: string[] = [];
      for (let i = 0; i < n; i++) {
        const text = `${label} back ${who}.${i}`;
        back.push(text);
        assert.equal(await remote.deliver('bob', own.inbox, remote.note('bob', { id: own.id, acct }, text)), 202);
      }
      const got: string[] = [];
      while (got.length < back.length) {
        const m = federatedMessageOf(await p.next(MESSAGE_MS), [bridgeIdentity.did]);
        if (m) got.push(m.text);
      }
      assert.deepEqual([...got].sort(), [...back].sort(), `peer ${who} got each answer once`);
    }
  }

  /** The acct: of a peer's actor (the handle rule is public). */
  function accountOf(did: string): string {
    return `acct:${handleOf(did)}@${new URL(front.origin).host}`;
  }

  it('both processes serve at once: messages both ways, each exactly once', async () => {
    const peers = [await peer(relay.wsUrl), await peer(relay.wsUrl)];
    try {
      await exchange('both', peers, 3);
      assert.ok(
        front.hits.every((h) => h > 0),
        `the front reached both processes (${front.hits})`,
      );
    } finally {
      for (const p of peers) await p.client.close();
    }
  });

  it('the leader killed (SIGKILL): the other process takes over and carries messages both ways', async () => {
    const roles = await Promise.all(
      processes.map(async (p) => {
        const health = (await (await fetch(`http://127.0.0.1:${p.port}/health`)).json()) as {
          federation?: { role?: string };
        };
        return health.federation?.role;
      }),
    );
    assert.deepEqual([...roles].sort(), ['follower', 'leader'], `one leader, one follower (${roles})`);
    const leader = roles.indexOf('leader');
    await (processes[leader] as BridgeProcess).kill('SIGKILL');
    front.down.add(leader);
    const survivor = processes[1 - leader] as BridgeProcess;
    const peers = [await peer(relay.wsUrl)];
    try {
      await exchange('after-kill', peers, 2);
      const health = (await (await fetch(`http://127.0.0.1:${survivor.port}/health`)).json()) as {
        federation?: { role?: string };
      };
      assert.equal(health.federation?.role, 'leader', 'the survivor leads');
    } finally {
      for (const p of peers) await p.client.close();
    }
  });
});
