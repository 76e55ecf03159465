#!/usr/bin/env node
// `npm start`: runs one relay node configured by the environment
// (docs/configuration.md). Unless RELAY_IDENTITY_KEY_FILE or
// RELAY_IDENTITY_KEY is set, the node's identity key is data/relay-identity.key
// (created on the first run, mode 0600), and its DID is printed with the URLs
// clients pin it by (docs/relay.md#relay-identity). If no Redis answers at
// REDIS_URL and redis-server is on the PATH, starts a private one (in-memory,
// no persistence) for this run and says so; otherwise explains how to get Redis.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const main = join(root, 'services/relay/dist/main.js');
/** Node options every relay runs with, and why: services/relay/node-flags.json. */
const nodeFlags = JSON.parse(readFileSync(join(root, 'services/relay/node-flags.json'), 'utf8')).flags;
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

function ping(host, port) {
  return new Promise((resolve) => {
    const sock = createConnection({ host, port }, () => sock.write('PING\r\n'));
    sock.setTimeout(1000, () => {
      sock.destroy();
      resolve(false);
    });
    // An answer of any kind (+PONG, or -NOAUTH when a password is needed) means a Redis is there.
    sock.on('data', (d) => {
      sock.destroy();
      resolve(/^[+-]/.test(d.toString()));
    });
    sock.on('error', () => resolve(false));
  });
}

async function ensureRedis() {
  let url;
  try {
    url = new URL(redisUrl);
  } catch {
    console.error(`start: REDIS_URL=${JSON.stringify(redisUrl)} is not a URL`);
    process.exit(2);
  }
  const host = url.hostname || '127.0.0.1';
  const port = Number(url.port || 6379);
  if (await ping(host, port)) return undefined;
  const local = ['127.0.0.1', 'localhost', '::1'].includes(host);
  const found = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
  if (!local || !found) {
    console.error(
      `start: no Redis answers at ${redisUrl}.\n` +
        '  Start one (e.g. `apt-get install redis-server && redis-server --daemonize yes`),\n' +
        '  or point REDIS_URL at yours (redis://[user:password@]host:port).',
    );
    process.exit(1);
  }
  const dir = mkdtempSync(join(tmpdir(), 'lrelay-redis-'));
  console.error(
    `start: no Redis at ${redisUrl}; starting a private redis-server on ${host}:${port} (in memory, data in ${dir})`,
  );
  const redis = spawn(
    'redis-server',
    ['--bind', host, '--port', String(port), '--save', '', '--appendonly', 'no', '--dir', dir],
    {
      stdio: 'ignore',
      // Its own process group: Ctrl-C reaches the relay, which drains while
      // Redis is still up; this script stops Redis once the relay has exited.
      detached: true,
    },
  );
  for (let i = 0; i < 100; i++) {
    if (await ping(host, port)) return redis;
    await new Promise((r) => setTimeout(r, 100));
  }
  console.error('start: the private redis-server did not come up');
  redis.kill('SIGKILL');
  process.exit(1);
}

if (!existsSync(main)) {
  console.error('start: services/relay/dist/main.js is missing; run `npm run build` (npm ci builds it too)');
  process.exit(1);
}
/** The node's identity key: the configured one, or data/relay-identity.key (made now if missing). */
async function ensureIdentity() {
  if (process.env.RELAY_IDENTITY_KEY_FILE || process.env.RELAY_IDENTITY_KEY) return {};
  const { Ed25519Identity } = await import('@libertaria/identity');
  const { readKeyFile, writeKeyFile } = await import('@libertaria/identity/node');
  const file = join(root, 'data', 'relay-identity.key');
  let identity;
  if (existsSync(file)) {
    identity = await readKeyFile(file);
  } else {
    mkdirSync(join(root, 'data'), { recursive: true, mode: 0o700 });
    identity = Ed25519Identity.generate();
    await writeKeyFile(file, identity);
    console.error(`start: created the relay identity key ${file} (keep it: clients pin its DID)`);
  }
  const host = process.env.RELAY_HOST && process.env.RELAY_HOST !== '0.0.0.0' ? process.env.RELAY_HOST : '127.0.0.1';
  const ws = process.env.RELAY_WS_PORT ?? '8080';
  const tcp = process.env.RELAY_TCP_PORT ?? '8081';
  console.error(
    `start: relay identity ${identity.did}\n` +
      `  clients pin it with ws://${host}:${ws}#${identity.did}\n` +
      `                   or tcp://${host}:${tcp}#${identity.did}`,
  );
  return { RELAY_IDENTITY_KEY_FILE: file };
}

const identityEnv = await ensureIdentity();
const redis = await ensureRedis();
const relay = spawn(process.execPath, [...nodeFlags, main], {
  stdio: 'inherit',
  env: { ...process.env, ...identityEnv },
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => relay.kill(sig));
relay.on('exit', (code, signal) => {
  redis?.kill('SIGTERM');
  process.exit(code ?? (signal ? 1 : 0));
});
