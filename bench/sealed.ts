/**
 * The cost sealing adds to the durable path end to end (docs/benchmarks.md,
 * "Sealed vs unsealed"): one sender and one recipient RelayClient (the SDK,
 * not the generator's raw peers, since sealing lives in the SDK) on one
 * relay, durable 1 KiB payloads, the recipient acking each message as it
 * takes it, in one of three variants:
 *   - unsealed: RelayClient without sessions (the DID envelope only);
 *   - sealed-memory: a SessionManager on an InMemorySessionStore: the
 *     crypto and the record encoding, no disk;
 *   - sealed-file: a SessionManager on a FileSessionStore (what lrelay
 *     uses): each seal, open and ack also writes and fsyncs a record.
 * Run inside the load generator process (generator.ts op `sealedDurable`),
 * so both clients share one process and one core's worth of event loop,
 * exactly as in the unsealed variant.
 *
 * Closed loop: at most `window` messages sent and not yet received. Before
 * the measured window: connect, publish prekeys, one round trip each way
 * (the handshake, and the confirmation after which the sender seals plain
 * ratchet messages rather than initial ones), then `warmupMs` of traffic.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { InMemorySessionStore, RelayClient, SessionManager, type SessionStore } from '@libertaria/client';
import { FileSessionStore } from '@libertaria/client/node';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import { cpuPercent, cpuSnapshot } from './procs.js';

export type SealedVariant = 'unsealed' | 'sealed-memory' | 'sealed-file';
export const SEALED_VARIANTS: readonly SealedVariant[] = ['unsealed', 'sealed-memory', 'sealed-file'];

export interface SealedDurableArgs {
  url: string;
  variant: SealedVariant;
  payloadBytes: number;
  window: number;
  warmupMs: number;
  durationMs: number;
  pids: Record<string, number>;
}

export interface SealedDurableResult {
  variant: SealedVariant;
  rate: number;
  seconds: number;
  cpu: Record<string, number>;
  sent: number;
  delivered: number;
  /** Sent but not received within 10 s after the sender stopped. */
  lost: number;
  problems: string[];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function sealedDurable(a: SealedDurableArgs): Promise<SealedDurableResult> {
  const problems: string[] = [];
  const note = (what: string) => (error: unknown) => {
    if (problems.length < 5) problems.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
  };
  const dir = a.variant === 'sealed-file' ? await mkdtemp(join(tmpdir(), 'bench-sealed-')) : undefined;
  const store = (name: string): SessionStore =>
    dir === undefined ? new InMemorySessionStore() : new FileSessionStore(join(dir, name));
  const make = (identity: Ed25519Identity, name: string) => {
    const sessions =
      a.variant === 'unsealed'
        ? undefined
        : new SessionManager({ identity, store: store(name), provider: nodeCrypto, verify: verifyEd25519 });
    const client = new RelayClient({
      relays: [a.url],
      identity,
      maxInFlight: a.window,
      ...(sessions === undefined ? { sealing: false } : { sessions }),
    });
    client.events.on('error', ({ error }) => note('client error')(error));
    return { client, sessions };
  };
  const senderId = Ed25519Identity.generate();
  const recipientId = Ed25519Identity.generate();
  const sender = make(senderId, 'sender');
  const recipient = make(recipientId, 'recipient');
  const payload = new Uint8Array(a.payloadBytes).fill(0x61);
  try {
    await Promise.all([sender.client.connect(), recipient.client.connect()]);
    await Promise.all([
      sender.sessions?.ensurePublished(sender.client),
      recipient.sessions?.ensurePublished(recipient.client),
    ]);
    const inbox = recipient.client.messages()[Symbol.asyncIterator]();
    const back = sender.client.messages()[Symbol.asyncIterator]();
    await sender.client.send(recipientId.did, payload);
    await (await inbox.next()).value?.ack();
    await recipient.client.send(senderId.did, payload);
    await (await back.next()).value?.ack();

    let sent = 0;
    let delivered = 0;
    let running = true;
    let wake: (() => void) | undefined;
    /** Sends the relay has not ACKed yet: a message can be delivered before its ACK reaches the sender. */
    const unacked = new Set<Promise<unknown>>();
    const receiving = (async () => {
      for (;;) {
        const next = await inbox.next();
        if (next.done) return;
        await next.value.ack();
        delivered++;
        wake?.();
      }
    })().catch(note('receive'));
    const sending = (async () => {
      while (running) {
        if (sent - delivered >= a.window) {
          await new Promise<void>((r) => {
            wake = r;
          });
          wake = undefined;
          continue;
        }
        sent++;
        const pending: Promise<unknown> = sender.client
          .send(recipientId.did, payload)
          .catch(note('send'))
          .finally(() => unacked.delete(pending));
        unacked.add(pending);
        // Let the seals and writes run: send() seals before it returns to the loop.
        if (sent % 32 === 0) await new Promise((r) => setImmediate(r));
      }
    })();

    await sleep(a.warmupMs);
    const all = { ...a.pids, generator: process.pid };
    const c0 = delivered;
    const t0 = performance.now();
    const cpu0 = cpuSnapshot(all);
    await sleep(a.durationMs);
    const c1 = delivered;
    const seconds = (performance.now() - t0) / 1000;
    const cpu = cpuPercent(cpu0, cpuSnapshot(all), seconds);
    running = false;
    wake?.();
    await sending;
    const deadline = performance.now() + 10_000;
    while ((delivered < sent || unacked.size > 0) && performance.now() < deadline) await sleep(10);
    await Promise.all([sender.client.close(), recipient.client.close()]);
    await receiving;
    return {
      variant: a.variant,
      rate: (c1 - c0) / seconds,
      seconds,
      cpu,
      sent,
      delivered,
      lost: sent - delivered,
      problems,
    };
  } finally {
    await Promise.all([sender.client.close(), recipient.client.close()]);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }
}
