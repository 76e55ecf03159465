/**
 * What the client tests that run against a real relay share: small byte
 * helpers, a timeout wrapper, one message iterator per client, sealing peers,
 * and a runner for the lrelay CLI (the compiled entry point, as users run it).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  type InboundMessage,
  InMemorySessionStore,
  RelayClient,
  type RelayClientEvents,
  type RelayClientOptions,
  SessionManager,
  type SessionManagerOptions,
  type SessionStore,
} from '@libertaria/client';
import { nodeCrypto } from '@libertaria/crypto/node';
import { type Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import { LRELAY_ENTRY, REPO_ROOT } from './paths.js';

export const text = (s: string): Uint8Array => new TextEncoder().encode(s);
export const str = (b: Uint8Array): string => new TextDecoder().decode(b);

/**
 * `promise`, or an error after `ms`. `seen` describes what the test had
 * observed by then (client stats, frames, a child's stderr): the error says
 * it, so a timeout on a loaded CI machine can be told from a real hang.
 */
export function within<T>(promise: Promise<T>, ms: number, what: string, seen?: () => unknown): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const saw = seen === undefined ? '' : `; saw: ${describe(seen())}`;
        reject(new Error(`timed out after ${ms} ms waiting for ${what}${saw}`));
      }, ms);
    }),
  ]);
}

function describe(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** What a client looks like when a wait on it times out. */
export function clientState(client: RelayClient): () => unknown {
  return () => ({ connected: client.connected, ...client.stats });
}

/** One iterator per client, so tests can take messages one at a time. */
const iterators = new WeakMap<RelayClient, AsyncIterator<InboundMessage>>();
export function iteratorOf(client: RelayClient): AsyncIterator<InboundMessage> {
  let it = iterators.get(client);
  if (it === undefined) {
    it = client.messages()[Symbol.asyncIterator]();
    iterators.set(client, it);
  }
  return it;
}

/** Deadline for one message: a delivery takes milliseconds, but CI runs on loaded 2-core machines. */
export async function nextMessage(client: RelayClient, ms = 20_000): Promise<InboundMessage> {
  const result = await within(iteratorOf(client).next(), ms, 'a message', clientState(client));
  assert.ok(!result.done, 'message stream ended');
  return result.value;
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `lrelay ARGS` with `input` on stdin; `done` settles within 60 s (a
 * process start plus a relay round trip, on a loaded CI machine), or rejects
 * with what the process had printed, and the process is killed.
 */
export function cli(args: string[], input = ''): { done: Promise<CliRun>; kill: () => void } {
  const child = spawn(process.execPath, [LRELAY_ENTRY, ...args], {
    cwd: REPO_ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  child.stdin.end(input);
  const done = new Promise<CliRun>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  const bounded = within(done, 60_000, `lrelay ${args.join(' ')}`, () => ({ stdout, stderr }));
  bounded.catch(() => child.kill('SIGKILL'));
  return { done: bounded, kill: () => child.kill('SIGKILL') };
}

export interface SealedPeer {
  client: RelayClient;
  sessions: SessionManager;
  errors: RelayClientEvents['error'][];
}

/**
 * A RelayClient sealing through its own SessionManager (node crypto, 5
 * one-time prekeys unless `sessions` says otherwise), connected, with its
 * prekeys published and its error events collected; pushed onto `track` so
 * the suite's after() can close it.
 */
export async function sealedPeer(args: {
  url: string;
  identity: Ed25519Identity;
  track: RelayClient[];
  store?: SessionStore;
  sessions?: Partial<SessionManagerOptions>;
  client?: Partial<RelayClientOptions>;
}): Promise<SealedPeer> {
  const sessions = new SessionManager({
    identity: args.identity,
    store: args.store ?? new InMemorySessionStore(),
    provider: nodeCrypto,
    verify: verifyEd25519,
    oneTimePrekeys: 5,
    ...args.sessions,
  });
  const client = new RelayClient({
    relays: [args.url],
    identity: args.identity,
    sessions,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    ...args.client,
  });
  const errors: RelayClientEvents['error'][] = [];
  client.events.on('error', (e) => errors.push(e));
  args.track.push(client);
  await within(client.connect(), 20_000, 'connect', clientState(client));
  await within(sessions.ensurePublished(client), 20_000, 'prekeys published', clientState(client));
  return { client, sessions, errors };
}
