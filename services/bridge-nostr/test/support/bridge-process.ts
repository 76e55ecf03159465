/**
 * What the scale-out tests share: bridge-nostr as a real process
 * (`node services/bridge-nostr/dist/main.js`, its port read from its log),
 * and a Nostr user's view of what it received, live and as stored.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { NostrEvent } from 'nostr-tools/core';
import * as nip17 from 'nostr-tools/nip17';
import { Relay } from 'nostr-tools/relay';
import { ownChild } from '../../../../test-support/children.js';
import { repoPath } from '../../../../test-support/paths.js';
import type { NostrUser } from './nostr-client.js';

/** Deadlines for a loaded 2-core machine, on events. */
export const START_MS = 60_000;

export async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface BridgeProcess {
  readonly name: string;
  readonly child: ChildProcess;
  port: number;
  output: string;
  health(): Promise<{ federation?: { role: string; relay: string } }>;
  metric(pattern: RegExp): Promise<number>;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startBridgeProcess(name: string, env: Record<string, string>): Promise<BridgeProcess> {
  const child = spawn(process.execPath, [repoPath('services', 'bridge-nostr', 'dist', 'main.js')], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  ownChild(child);
  const handle: BridgeProcess = {
    name,
    child,
    port: 0,
    output: '',
    async health() {
      return (await (await fetch(`http://127.0.0.1:${handle.port}/health`)).json()) as {
        federation?: { role: string; relay: string };
      };
    },
    async metric(pattern) {
      const text = await (await fetch(`http://127.0.0.1:${handle.port}/metrics`)).text();
      const line = text.split('\n').find((l) => pattern.test(l));
      return line === undefined ? 0 : Number(line.split(' ').pop());
    },
    async stop() {
      child.kill('SIGTERM');
      await exited(child);
    },
    async kill() {
      child.kill('SIGKILL');
      await exited(child);
    },
  };
  const started = new Promise<void>((resolve, reject) => {
    let buffered = '';
    child.stdout?.on('data', (d: Buffer) => {
      buffered += d.toString();
      handle.output = (handle.output + d.toString()).slice(-20_000);
      for (;;) {
        const nl = buffered.indexOf('\n');
        if (nl < 0) break;
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const entry = JSON.parse(line) as { msg?: string; port?: number };
          if (entry.msg === 'bridge-nostr started' && typeof entry.port === 'number') {
            handle.port = entry.port;
            resolve();
          }
        } catch {
          // Not a log line.
        }
      }
    });
    child.stderr?.on('data', (d: Buffer) => {
      handle.output = (handle.output + d.toString()).slice(-20_000);
    });
    child.once('exit', (code, signal) =>
      reject(new Error(`${name} exited (${code ?? signal}) before it started: ${handle.output}`)),
    );
  });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    started,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${name} did not start: ${handle.output}`)), START_MS);
    }),
  ]).finally(() => clearTimeout(timer));
  return handle;
}

/** Every NIP-17 message a Nostr user receives, counted per text and per rumor id (a live subscription from the start). */
export class Inbox {
  readonly texts = new Map<string, number>();
  readonly rumors = new Set<string>();
  private relay: Relay | undefined;
  constructor(private readonly user: NostrUser) {}
  async open(url: string): Promise<void> {
    this.relay = await Relay.connect(url);
    this.relay.subscribe(
      [{ kinds: [1059], '#p': [this.user.pubkey], since: Math.floor(Date.now() / 1000) - 3 * 86400 }],
      {
        onevent: (wrap: NostrEvent) => {
          let rumor: ReturnType<typeof nip17.unwrapEvent>;
          try {
            rumor = nip17.unwrapEvent(wrap, this.user.secret);
          } catch {
            return;
          }
          if (this.rumors.has(rumor.id)) return; // the same rumor through a republished wrap: one message
          this.rumors.add(rumor.id);
          this.texts.set(rumor.content, (this.texts.get(rumor.content) ?? 0) + 1);
        },
      },
    );
  }
  close(): void {
    this.relay?.close();
  }
}

let storedQueries = 0;
/** What the Nostr relay stores for `user` (read to the end of stored events): rumors counted per text, distinct rumor ids. */
export async function storedTexts(url: string, user: NostrUser): Promise<Map<string, number>> {
  const relay = await Relay.connect(url);
  try {
    const rumors = new Map<string, string>();
    // A `since` never used before: the relay library answers a repeated filter from a one-second cache.
    const since = Math.floor(Date.now() / 1000) - 3 * 86400 - 1000 - ++storedQueries;
    await new Promise<void>((resolve) => {
      relay.subscribe([{ kinds: [1059], '#p': [user.pubkey], since }], {
        onevent: (wrap: NostrEvent) => {
          try {
            const rumor = nip17.unwrapEvent(wrap, user.secret);
            rumors.set(rumor.id, rumor.content);
          } catch {
            // Not for this user.
          }
        },
        oneose: () => resolve(),
      });
    });
    const texts = new Map<string, number>();
    for (const text of rumors.values()) texts.set(text, (texts.get(text) ?? 0) + 1);
    return texts;
  } finally {
    relay.close();
  }
}
