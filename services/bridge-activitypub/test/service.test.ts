/**
 * The service as deployed: configuration from the environment, the sealed
 * actor store and membrane policies on the relay cluster's Redis, the
 * federation worker on a real relay node, the HTTP listener with /health and
 * /metrics; and `npm start -w @libertaria/bridge-activitypub` as a process.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import type { Logger } from '@libertaria/log';
import { REPO_ROOT } from '../../../test-support/paths.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { type ActivityPubBridgeService, startActivityPubBridgeService } from '../src/service.js';
import { ApServer } from './support/ap-server.js';

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('bridge-activitypub service', () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let dir: string;
  let env: Record<string, string>;
  let service: ActivityPubBridgeService;
  const logged: { level: string; msg: string }[] = [];
  const log: Logger = {
    debug: () => {},
    info: (msg) => logged.push({ level: 'info', msg }),
    warn: (msg) => logged.push({ level: 'warn', msg }),
    error: (msg) => logged.push({ level: 'error', msg }),
    enabled: () => true,
  };

  before(async () => {
    redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] });
    relay = await startRelay({ redisUrl: redis.url, env: { RELAY_FEDERATION_REFRESH_MS: '500' } });
    dir = await mkdtemp(join(tmpdir(), 'bridge-ap-service-'));
    await writeKeyFile(join(dir, 'identity.key'), Ed25519Identity.generate());
    const port = await freePort();
    env = {
      BRIDGE_AP_ORIGIN: `http://127.0.0.1:${port}`,
      BRIDGE_AP_INSECURE_TEST_MODE: 'true',
      BRIDGE_AP_HTTP_PORT: String(port),
      BRIDGE_AP_KEK: 'cd'.repeat(32),
      BRIDGE_AP_REDIS_URL: redis.url,
      BRIDGE_AP_LIBERTARIA_RELAYS: relay.wsUrl,
      BRIDGE_AP_IDENTITY_FILE: join(dir, 'identity.key'),
      BRIDGE_AP_STATE_DIR: join(dir, 'state'),
      BRIDGE_AP_LOG_LEVEL: 'warn',
    };
    service = await startActivityPubBridgeService(env, { log });
  });

  after(async () => {
    await service?.close();
    await relay?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('says loudly at start that the insecure test mode is on', () => {
    assert.ok(logged.some((l) => l.level === 'error' && /INSECURE_TEST_MODE=true.*tests only/.test(l.msg)));
  });

  it('answers /health with the bridge and the federation, and /metrics with deliveries, failures, inbound and queue depth', async () => {
    const origin = service.config.BRIDGE_AP_ORIGIN.replace(/\/$/, '');
    const health = await until('health 200', async () => {
      const r = await fetch(`${origin}/health`);
      return r.status === 200 ? ((await r.json()) as Record<string, unknown>) : undefined;
    });
    assert.equal(health.status, 'ok');
    assert.equal((health.federation as { relay: string }).relay, 'connected');

    // Some traffic: a DM to an independent server, one from it, and a refused unsigned POST.
    const remote = new ApServer(['bob']);
    await remote.start();
    try {
      const peer = Ed25519Identity.generate().did;
      const acct = await service.bridge.bridgeIdentity(peer);
      await service.bridge.send({
        type: 'private',
        id: 'ab'.repeat(16),
        from: peer,
        to: { type: 'activitypub', kind: 'acct', uri: remote.acct('bob'), user: 'bob', host: remote.host },
        text: 'hi',
      });
      const { inbox } = await remote.resolve(acct.uri);
      const unsigned = await fetch(inbox, {
        method: 'POST',
        headers: { 'content-type': 'application/activity+json' },
        body: JSON.stringify({ id: 'https://x.example/1', type: 'Create', actor: 'https://x.example/u' }),
      });
      assert.equal(unsigned.status, 401);
    } finally {
      await remote.stop();
    }
    const text = await (await fetch(`${origin}/metrics`)).text();
    assert.match(text, /^bridge_activitypub_deliveries_total\{activity="Create",result="delivered"\} 1$/m);
    assert.match(text, /^bridge_activitypub_inbox_refused_total\{reason="unsigned"\} 1$/m);
    assert.match(text, /^# TYPE bridge_activitypub_delivery_failures_total counter$/m);
    assert.match(text, /^# TYPE bridge_activitypub_inbound_total counter$/m);
    assert.match(text, /^bridge_activitypub_queue_jobs\{state="waiting"\} \d+$/m, "Fedify's queue depth");
    assert.match(text, /^bridge_federation_queue_jobs\{queue="outbound",state="waiting"\} \d+$/m);
    assert.match(text, /^bridge_activitypub_actors\{scope="all"\} 2$/m, 'the peer and the instance actor');
  });

  it('runs as `npm start -w @libertaria/bridge-activitypub`, serving the same actors from the same Redis', async () => {
    const port = await freePort();
    const child: ChildProcess = spawn('npm', ['start', '-w', '@libertaria/bridge-activitypub'], {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        ...env,
        BRIDGE_AP_HTTP_PORT: String(port),
        BRIDGE_AP_STATE_DIR: join(dir, 'state-2'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: npm runs the bridge as a grandchild, and SIGTERM must reach both.
      detached: true,
    });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => {
      output += d;
    });
    child.stderr?.on('data', (d: Buffer) => {
      output += d;
    });
    try {
      await until('the started process to be healthy', async () => {
        const r = await fetch(`http://127.0.0.1:${port}/health`);
        return r.status === 200 ? true : undefined;
      }).catch((err: Error) => {
        throw new Error(`${err.message}; output: ${output}`);
      });
      assert.match(output, /INSECURE_TEST_MODE/);
      const nodeinfo = await (await fetch(`http://127.0.0.1:${port}/nodeinfo/2.1`)).json();
      assert.equal((nodeinfo as { usage: { users: { total: number } } }).usage.users.total, 2);
    } finally {
      // 'close' comes once every process holding the pipes (npm and the bridge under it) is gone.
      const closed = new Promise((resolve) => child.once('close', resolve));
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
      await closed;
    }
  });
});
