/**
 * Starts a real relay node as a child process (the built
 * services/relay/dist/main.js, as operators run it), on free ports, and waits
 * for its "listening" log line.
 *
 *   const relay = await startRelay({ redisUrl: redis.url });
 *   // relay.wsUrl, relay.tcpUrl, relay.adminUrl, relay.nodeId
 *   await relay.stop();        // SIGTERM: drain, wait for exit
 *   relay.kill('SIGKILL');     // chaos
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Ed25519Identity } from '@libertaria/identity';
import { ownChild } from './children.js';
import { repoPath } from './paths.js';

const MAIN = repoPath('services/relay/dist/main.js');
/** Node options every relay runs with, as operators run it (services/relay/node-flags.json says why). */
export const RELAY_NODE_FLAGS: readonly string[] = JSON.parse(
  readFileSync(repoPath('services/relay/node-flags.json'), 'utf8'),
).flags;

export interface RelayHandle {
  nodeId: string;
  /** The node's relay identity DID (what CHALLENGE proves; clients may pin it). */
  did: string;
  wsUrl: string;
  tcpUrl: string;
  adminUrl: string;
  ports: { ws: number; tcp: number; admin: number };
  /** Every log line so far (JSON strings), for assertions and debugging. */
  logs: string[];
  process: ChildProcess;
  kill(signal?: NodeJS.Signals): void;
  /** SIGTERM, then resolves with the exit code (SIGKILL after `timeoutMs`). */
  stop(timeoutMs?: number): Promise<number | null>;
  exited: Promise<number | null>;
}

export interface StartRelayOptions {
  redisUrl: string;
  nodeId?: string;
  env?: Record<string, string>;
  /** Print the relay's output to this process's stderr (debugging). */
  echo?: boolean;
  /**
   * The node's identity key. Default: a fresh one per node (unless `env`
   * sets RELAY_IDENTITY_KEY or RELAY_IDENTITY_KEY_FILE); give the same one to
   * several nodes for a cluster sharing an operator key.
   */
  identity?: Ed25519Identity;
  /** Options for node itself, before the script (profiling flags such as `--cpu-prof` are refused in NODE_OPTIONS). */
  nodeArgs?: readonly string[];
}

/** RELAY_IDENTITY_KEY for an identity: its seed, base64url. */
export function relayKeyEnv(identity: Ed25519Identity): string {
  return Buffer.from(identity.exportSeed()).toString('base64url');
}

let counter = 0;

export async function startRelay(options: StartRelayOptions): Promise<RelayHandle> {
  const nodeId = options.nodeId ?? `test-${process.pid}-${++counter}`;
  const keyGiven = options.env?.RELAY_IDENTITY_KEY !== undefined || options.env?.RELAY_IDENTITY_KEY_FILE !== undefined;
  const identity = keyGiven ? undefined : (options.identity ?? Ed25519Identity.generate());
  const env: Record<string, string> = {
    ...(identity !== undefined ? { RELAY_IDENTITY_KEY: relayKeyEnv(identity) } : {}),
    PATH: process.env.PATH ?? '',
    REDIS_URL: options.redisUrl,
    RELAY_NODE_ID: nodeId,
    RELAY_HOST: '127.0.0.1',
    RELAY_WS_PORT: '0',
    RELAY_TCP_PORT: '0',
    RELAY_ADMIN_PORT: '0',
    RELAY_LOG_LEVEL: process.env.TEST_RELAY_LOG_LEVEL ?? 'info',
    // Tests run relays with recycled inbound buffers poisoned: a frame kept without a copy shows (inbound-arena.ts).
    RELAY_DEBUG_POISON_RECYCLED: 'true',
    ...options.env,
  };
  const child = spawn(process.execPath, [...RELAY_NODE_FLAGS, ...(options.nodeArgs ?? []), MAIN], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  ownChild(child);
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let pending = '';
  const listening = new Promise<{ ws: number; tcp: number; admin: number; did: string }>((resolve, reject) => {
    const onLine = (line: string) => {
      logs.push(line);
      if (options.echo) process.stderr.write(`[${nodeId}] ${line}\n`);
      if (line.includes('"msg":"listening"')) {
        const parsed = JSON.parse(line) as { ws: number; tcp: number; admin: number; did: string };
        resolve({ ws: parsed.ws, tcp: parsed.tcp, admin: parsed.admin, did: parsed.did });
      }
    };
    child.stdout?.on('data', (d: Buffer) => {
      pending += d.toString();
      let i = pending.indexOf('\n');
      while (i >= 0) {
        onLine(pending.slice(0, i));
        pending = pending.slice(i + 1);
        i = pending.indexOf('\n');
      }
    });
    child.stderr?.on('data', (d: Buffer) => {
      logs.push(d.toString());
      if (options.echo) process.stderr.write(`[${nodeId}!] ${d}`);
    });
    void exited.then((code) => reject(new Error(`relay exited with ${code} before listening:\n${logs.join('\n')}`)));
    setTimeout(() => reject(new Error(`relay did not listen within 30 s:\n${logs.join('\n')}`)), 30_000).unref();
  });
  const { did, ...ports } = await listening;
  return {
    nodeId,
    did,
    ports,
    wsUrl: `ws://127.0.0.1:${ports.ws}`,
    tcpUrl: `tcp://127.0.0.1:${ports.tcp}`,
    adminUrl: `http://127.0.0.1:${ports.admin}`,
    logs,
    process: child,
    exited,
    kill: (signal = 'SIGKILL') => {
      child.kill(signal);
    },
    stop: async (timeoutMs = 15_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
