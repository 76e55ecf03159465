/**
 * Inbound: bridges add each foreign message, already sealed for its
 * Libertaria recipient, as a durable DELIVER frame to the `inbound` queue.
 * This BullMQ worker (one per relay node; BullMQ hands each job to one of
 * them) stores it in the recipient's mailbox and announces it with the code
 * a durable SEND goes through (store-and-announce.ts: idempotent on the
 * bridge's source hint and the message id, within the bridge's share of the
 * mailbox), so it is delivered wherever the recipient is connected, or later.
 *
 * A frame that can never be stored (malformed, TTL above the relay's) fails
 * at once (UnrecoverableError) and stays in the failed set; a full mailbox
 * (or the bridge's full share of it), an unreachable Redis or a source not
 * (or no longer) registered as a bridge is retried with the job's backoff.
 */

import { INBOUND_QUEUE, type InboundJobData } from '@libertaria/bridge-kit';
import {
  type CodecOptions,
  checkRoutedFrame,
  FrameType,
  RelayError,
  routedFlags,
  routedSource,
  SendFlags,
} from '@libertaria/protocol';
import { type Job, UnrecoverableError, Worker } from 'bullmq';
import type { DurableStore } from '../durable-store.js';
import type { Logger } from '../log.js';
import type { RedisClient } from '../redis-connection.js';
import { type DurableAnnouncer, storeAndAnnounce } from '../store-and-announce.js';
import type { BridgeRegistryCache } from './registry.js';

/**
 * Mailbox errors that clear by themselves (the recipient reads, Redis comes
 * back): retried. QUEUE_SENDER_FULL too: the sender is the bridge (the
 * frame's source), whose share of the mailbox frees as the recipient reads.
 */
const RETRYABLE = new Set(['QUEUE_FULL', 'QUEUE_BYTES_FULL', 'QUEUE_SENDER_FULL', 'STORE_UNAVAILABLE']);

export interface InboundWorkerOptions {
  readonly redisUrl: string;
  /** A connection to use instead of `redisUrl` (a Redis Cluster); its maxRetriesPerRequest must be null. */
  readonly connection?: RedisClient;
  readonly prefix: string;
  readonly nodeId: string;
  readonly concurrency: number;
  readonly ratePerSecond: number;
  readonly codec: CodecOptions;
  readonly store: DurableStore;
  readonly router: DurableAnnouncer;
  readonly registry: BridgeRegistryCache;
  readonly log: Logger;
  readonly onResult: (result: string) => void;
}

export type InboundResult = { status: 'stored' | 'duplicate'; position: number };

/** Stores one inbound job's frame; exported for tests of the checks. */
export async function storeInbound(o: InboundWorkerOptions, data: InboundJobData): Promise<InboundResult> {
  if (typeof data?.frame !== 'string') throw new UnrecoverableError('BAD_FIELD: the job has no frame');
  const frame = Buffer.from(data.frame, 'base64');
  try {
    checkRoutedFrame(frame, o.codec);
  } catch (err) {
    throw new UnrecoverableError(`${(err as RelayError).code ?? 'BAD_FIELD'}: ${(err as Error).message}`);
  }
  if (frame[1] !== FrameType.DELIVER || (routedFlags(frame) & SendFlags.DURABLE) === 0) {
    throw new UnrecoverableError('BAD_FIELD: an inbound job carries a durable DELIVER frame');
  }
  const source = routedSource(frame);
  if (!o.registry.lookup(source)) {
    // The bridge may have registered a moment ago: read the registry once before refusing.
    await o.registry.reload();
    if (!o.registry.lookup(source)) {
      // Retried with the job's backoff, not failed at once: a Redis that lost its data (a restart
      // without persistence, a failover to an unsynced replica) lost the registration too, and the
      // bridge writes it again within BRIDGE_NOSTR_REGISTER_EVERY_MS. A job from a source that never
      // registers fails after its attempts, as before, only later.
      throw new Error(`BRIDGE_NOT_REGISTERED: source ${source.toString('hex')} is not a registered bridge`);
    }
  }
  const result = await storeAndAnnounce(
    o,
    frame,
    (stored) => stored,
    (err: unknown) => {
      const code = err instanceof RelayError ? err.code : 'STORE_UNAVAILABLE';
      if (RETRYABLE.has(code)) throw err;
      throw new UnrecoverableError(`${code}: ${(err as Error).message}`);
    },
  );
  return { status: result.status === 'stored' ? 'stored' : 'duplicate', position: result.position };
}

export function startInboundWorker(o: InboundWorkerOptions): Worker<InboundJobData, InboundResult> {
  const worker = new Worker<InboundJobData, InboundResult>(
    INBOUND_QUEUE,
    async (job: Job<InboundJobData>) => storeInbound(o, job.data),
    {
      // BullMQ's production guide: workers keep retrying Redis commands forever instead of failing them.
      connection: o.connection ?? {
        url: o.redisUrl,
        maxRetriesPerRequest: null,
        connectionName: `relay-inbound:${o.nodeId}`,
      },
      prefix: o.prefix,
      concurrency: o.concurrency,
      limiter: { max: o.ratePerSecond, duration: 1000 },
      name: o.nodeId,
    },
  );
  worker.on('completed', (_job, result) => o.onResult(result.status));
  worker.on('failed', (job, err) => {
    const final = err instanceof UnrecoverableError || (job && job.attemptsMade >= (job.opts.attempts ?? 1));
    o.onResult(final ? 'failed' : 'retry');
    o.log.warn('inbound federation job failed', { job: job?.id, final, err: err.message });
  });
  worker.on('error', (err) => o.log.warn('inbound federation worker error', { err }));
  return worker;
}
