/**
 * For the tests of RELAY_DURABLE_WAIT_REPLICAS (services/relay/src/replica-wait.ts):
 * a durable DELIVER frame, and a primary killed at the one moment that
 * matters, when the replica waiter builds its WAIT pipeline (after the
 * write it waits for was answered, before the server reads the pipeline).
 */
import assert from 'node:assert/strict';
import { encodeFrame, SendFlags } from '@libertaria/protocol';
import type { Redis } from 'ioredis';

/** The sender of durableFrame's frames. */
export const SOURCE = new Uint8Array(24).fill(0x51);

/** The DELIVER frame a relay stores for `dest` (durable, position 0). */
export function durableFrame(dest: Uint8Array, id: Uint8Array): Uint8Array {
  return encodeFrame({
    type: 'DELIVER',
    dest,
    source: SOURCE,
    sessionId: new Uint8Array(16).fill(0x5e),
    messageId: id,
    flags: SendFlags.DURABLE,
    ttl: 0,
    position: 0,
    payload: new Uint8Array([0x68, 0x69]),
  });
}

/**
 * Calls `kill` (a SIGKILL of the primary) as the replica waiter makes its
 * next pipeline on `redis` (told by the call stack: other code, BullMQ's
 * included, makes pipelines too). The pipeline is then written to a dead
 * server's socket, and ioredis resends it after the reconnect or failover.
 * Returns whether it happened.
 */
export function killAtTheWait(redis: Redis | { pipeline: Redis['pipeline'] }, kill: () => void): () => boolean {
  const pipeline = redis.pipeline.bind(redis);
  let killed = false;
  redis.pipeline = ((...args: Parameters<typeof pipeline>) => {
    if (!killed && new Error().stack?.includes('replica-wait')) {
      killed = true;
      kill();
    }
    return pipeline(...args);
  }) as typeof redis.pipeline;
  return () => killed;
}

/**
 * Waits until `killed()` (the write was answered and the wait began) or
 * `outcome` settled first (then the case was never reached: an assertion
 * fails, naming the outcome). 30 s: a loaded machine.
 */
export async function untilKilled(killed: () => boolean, outcome: Promise<unknown>): Promise<void> {
  const deadline = Date.now() + 30_000;
  const settled = outcome.then(
    () => true,
    () => true,
  );
  while (!killed() && Date.now() < deadline) {
    if (await Promise.race([settled, new Promise<false>((r) => setTimeout(() => r(false), 5))])) break;
  }
  assert.ok(killed(), `no WAIT pipeline was made (outcome: ${String(await Promise.race([outcome, 'pending']))})`);
}
