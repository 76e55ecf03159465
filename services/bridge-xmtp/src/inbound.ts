/**
 * Inbound: XMTP messages of bridged inboxes → the federation's inbound queue.
 *
 * Reading is a BullMQ queue of its own, `xmtp-sync` (under the federation
 * prefix), so XMTP's read rate limit is a BullMQ limiter
 * (`BRIDGE_XMTP_READ_RATE` jobs per second) and a failed read is retried
 * with backoff. A job names one bridged DID and whether to sync from the
 * network first:
 *
 *   network  `syncAll` from XMTP (new DMs, then their messages) and read: at
 *            start, every `BRIDGE_XMTP_SYNC_INTERVAL_MS`, and after a stream error;
 *   local    read what the client's stream already stored (the stream wakes it).
 *
 * Reading walks each DM from its cursor (per DM, in Redis:
 * `<prefix>:xmtp:cursor:<did>`, DM id → the last network timestamp handled
 * and the ids handled at it), oldest first, a page at a time. The cursor moves
 * past a message only once it was handed over or deliberately skipped: a
 * restart resumes where it stood, with no gap, and a message handed over
 * again after a crash between the hand-over and the cursor write is dropped
 * by the inbound queue (its job id is derived from the XMTP message id).
 *
 * A DID has one job at a time (BullMQ deduplication on the DID with
 * `keepLastIfActive`): a wake-up while its job waits joins that job; one
 * while it runs is kept by BullMQ and queued when the job ends, so nothing
 * stored after a read started waits for the periodic sync.
 */
import {
  BridgeError,
  type BridgeInboundHandler,
  type BridgeInboundMessage,
  dashboardQueuesKey,
  type ForeignIdentity,
  parseForeignIdentity,
} from '@libertaria/bridge-kit';
import type { ForeignSenderPolicy } from '@libertaria/bridge-kit/worker';
import type { Logger } from '@libertaria/log';
import { LibertariaError } from '@libertaria/protocol';
import { createRedisClient, type RedisClient, type RedisTarget } from '@libertaria/redis';
import { type Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { BridgeXmtpMetrics, SkipReason } from './metrics.js';
import {
  advanceCursor,
  decodeCursor,
  encodeCursor,
  type XmtpClient,
  type XmtpCursor,
  type XmtpDm,
  type XmtpMessage,
} from './network.js';

export const SYNC_QUEUE = 'xmtp-sync';

const XMTP_ID = /^[0-9a-fA-F]{1,128}$/;

/** What consent needs of bridge-kit's ForeignSenderPolicy. */
export type SenderPolicy = Pick<ForeignSenderPolicy, 'decide'>;

export interface SyncJobData {
  readonly did: string;
  readonly network: boolean;
}

export interface InboundSyncOptions {
  readonly redis: RedisClient;
  readonly redisTarget: RedisTarget;
  readonly prefix: string;
  readonly metrics: BridgeXmtpMetrics;
  readonly log: Logger;
  /** The open client of a bridged DID (opened on demand). */
  readonly clientOf: (did: string) => Promise<XmtpClient>;
  readonly policy: SenderPolicy;
  readonly handler: () => BridgeInboundHandler | undefined;
  readonly maxTextBytes: number;
  /** Most sync jobs per second (XMTP's read limit), shared by the bridge's workers. */
  readonly readRatePerSecond: number;
  readonly concurrency: number;
  readonly attempts: number;
  readonly backoffMs: number;
  readonly jitter: number;
  /** Messages read per page of a DM. */
  readonly pageSize: number;
  /** Pause of the sync queue when XMTP rate-limits a read without saying how long. */
  readonly rateLimitPauseMs: number;
  readonly keepFailed: number;
}

/** The text a Libertaria peer gets for an XMTP message, or why it gets none. */
export function inboundText(
  message: XmtpMessage,
  maxTextBytes: number,
): { text: string; type: 'text' | 'reply' | 'reaction' | 'fallback' } | { skip: SkipReason } {
  let out: { text: string; type: 'text' | 'reply' | 'reaction' | 'fallback' };
  const c = message.content;
  switch (c.type) {
    case 'text':
      out = { text: c.text, type: 'text' };
      break;
    case 'reply':
      out = { text: c.text, type: 'reply' };
      break;
    case 'reaction':
      if (c.action === 'removed') return { skip: 'reaction_removed' };
      out = { text: `reacted ${c.emoji}`, type: 'reaction' };
      break;
    case 'other':
      if (c.fallback === undefined || c.fallback === '') return { skip: 'unsupported' };
      out = { text: c.fallback, type: 'fallback' };
      break;
    default: {
      const never: never = c;
      throw new TypeError(`unknown content ${JSON.stringify(never)}`);
    }
  }
  if (Buffer.byteLength(out.text, 'utf8') > maxTextBytes) return { skip: 'too_large' };
  return out;
}

export class InboundSync {
  readonly queue: Queue<SyncJobData>;
  private worker: Worker<SyncJobData> | undefined;
  private workerConnection: RedisClient | undefined;
  /** DIDs asked for a network sync since their last one (a job's data keeps only the latest request). */
  private readonly wantNetwork = new Set<string>();
  private closed = false;

  constructor(private readonly o: InboundSyncOptions) {
    this.queue = new Queue(SYNC_QUEUE, { connection: o.redis, prefix: o.prefix });
  }

  private cursorKey(did: string): string {
    return `${this.o.prefix}:xmtp:cursor:${did}`;
  }

  async start(): Promise<void> {
    // Listed for the relay's Bull Board dashboard, beside the federation's queues.
    await this.o.redis.sadd(dashboardQueuesKey(this.o.prefix), SYNC_QUEUE);
    this.workerConnection = createRedisClient(
      this.o.redisTarget,
      // BullMQ's production guide: a worker's connection retries forever rather than failing its blocking commands.
      { maxRetriesPerRequest: null, connectionName: 'bridge-xmtp-sync' },
    );
    this.workerConnection.on('error', (err) => this.o.log.debug('sync worker redis error', { err }));
    this.worker = new Worker<SyncJobData>(SYNC_QUEUE, (job) => this.process(job), {
      connection: this.workerConnection,
      prefix: this.o.prefix,
      concurrency: this.o.concurrency,
      limiter: { max: this.o.readRatePerSecond, duration: 1000 },
    });
    this.worker.on('failed', (job, err) => {
      const kind = job?.data.network ? 'network' : 'local';
      const isFinal =
        err instanceof UnrecoverableError || (job !== undefined && job.attemptsMade >= (job.opts.attempts ?? 1));
      this.o.metrics.syncs.labels(kind, isFinal ? 'failed' : 'retry').inc();
      this.o.log.warn('sync job failed', { did: job?.data.did, final: isFinal, err: err.message });
    });
    this.worker.on('completed', (job) =>
      this.o.metrics.syncs.labels(job.data.network ? 'network' : 'local', 'ok').inc(),
    );
    this.worker.on('error', (err) => this.o.log.warn('sync worker error', { err }));
  }

  /** Asks for a read of `did`'s inbox; `network` syncs from XMTP first. Never throws (logged). */
  async trigger(did: string, network: boolean): Promise<void> {
    if (this.closed) return;
    if (network) this.wantNetwork.add(did);
    try {
      await this.queue.add(
        network ? 'network' : 'local',
        { did, network },
        {
          // One job per DID at a time (two would race on its cursors): while one waits, a new
          // request joins it; while one runs, BullMQ keeps the request and queues it when the
          // running job ends, so a message stored after the read started is read by the next job.
          deduplication: { id: did, keepLastIfActive: true },
          attempts: this.o.attempts,
          backoff: { type: 'exponential', delay: this.o.backoffMs, jitter: this.o.jitter },
          removeOnComplete: true,
          removeOnFail: { count: this.o.keepFailed },
        },
      );
    } catch (err) {
      this.o.log.warn('could not queue an XMTP sync', { did, err });
    }
  }

  async process(job: Job<SyncJobData>): Promise<{ delivered: number }> {
    const { did, network } = job.data;
    try {
      const client = await this.o.clientOf(did);
      if (network || this.wantNetwork.has(did)) {
        await client.sync();
        this.wantNetwork.delete(did);
      }
      let delivered = 0;
      for (const dm of await client.listDms()) delivered += await this.drain(did, client, dm);
      return { delivered };
    } catch (err) {
      if (err instanceof BridgeError && err.rateLimited && this.worker) {
        this.o.metrics.rateLimited.labels('read').inc();
        this.o.metrics.syncs.labels(network ? 'network' : 'local', 'rate_limited').inc();
        await this.worker.rateLimit(err.retryAfterMs ?? this.o.rateLimitPauseMs);
        throw Worker.RateLimitError();
      }
      if (err instanceof BridgeError && !err.retryable) throw new UnrecoverableError(`${err.code}: ${err.message}`);
      throw err;
    }
  }

  private async loadCursor(did: string, conversationId: string): Promise<XmtpCursor | undefined> {
    const text = await this.o.redis.hget(this.cursorKey(did), conversationId);
    if (text === null) return undefined;
    try {
      return decodeCursor(text);
    } catch {
      // Reading from the start would hand over the whole conversation again: stop and say so.
      throw new BridgeError('BRIDGE_KEY_STORE', `the XMTP cursor of ${did} in ${conversationId} is corrupt`, {
        retryable: false,
      });
    }
  }

  /** Hands over what is new in one DM; returns how many messages were handed over. */
  private async drain(did: string, client: XmtpClient, dm: XmtpDm): Promise<number> {
    let cursor = await this.loadCursor(did, dm.id);
    let consent = dm.consent;
    let delivered = 0;
    for (;;) {
      const page = await client.messagesAfter(dm.id, cursor, this.o.pageSize);
      for (const message of page.messages) {
        const skip = await this.handle(did, client, dm, message, consent);
        if (skip === undefined || skip === 'consented') {
          delivered++;
          if (skip === 'consented') consent = 'allowed';
        } else {
          this.o.metrics.skipped.labels(skip).inc();
        }
        cursor = advanceCursor(cursor, message);
        await this.o.redis.hset(this.cursorKey(did), dm.id, encodeCursor(cursor));
      }
      if (!page.more || page.messages.length === 0) return delivered;
    }
  }

  private async handle(
    did: string,
    client: XmtpClient,
    dm: XmtpDm,
    message: XmtpMessage,
    consent: XmtpDm['consent'],
  ): Promise<SkipReason | 'consented' | undefined> {
    if (message.senderInboxId === client.inboxId) return 'own';
    // XMTP ids are hex; anything else could not be carried (nor deduplicated) and would block the DM.
    if (!XMTP_ID.test(message.id)) return 'malformed';
    if (consent === 'denied') return 'denied';
    const content = inboundText(message, this.o.maxTextBytes);
    if ('skip' in content) return content.skip;
    let from: ForeignIdentity;
    try {
      // What the network says is input like any other: a sender that is no inbox id is dropped.
      from = parseForeignIdentity(`xmtp:${message.senderInboxId}`);
    } catch {
      return 'malformed';
    }
    if (from.type !== 'xmtp' || from.kind !== 'inbox') return 'malformed';
    let consented = false;
    if (consent === 'unknown') {
      const decision = await this.o.policy.decide(did, from, 'message');
      this.o.metrics.consent.labels(decision.allowed ? 'allowed' : 'refused').inc();
      if (!decision.allowed) {
        this.o.log.info('unknown XMTP sender refused by the owner policy', {
          to: did,
          from: from.uri,
          code: decision.code,
          reason: decision.reason,
        });
        return 'refused';
      }
      await client.setConsent(dm.id, 'allowed');
      consented = true;
    }
    const inbound: BridgeInboundMessage = {
      type: 'private',
      id: message.id,
      to: did,
      from,
      text: content.text,
      sentAt: Number(message.sentAtNs / 1_000_000_000n),
    };
    const handler = this.o.handler();
    if (!handler) throw new BridgeError('BRIDGE_UNAVAILABLE', 'no inbound handler is set yet');
    try {
      await handler(inbound);
    } catch (err) {
      this.o.metrics.handlerFailures.inc();
      // A message the federated format refuses will never pass: skipped, not retried for ever.
      if (err instanceof LibertariaError && err.code === 'FEDERATED_ENVELOPE_INVALID') return 'malformed';
      // Retryable whatever it was: the cursor stays before this message, the job's backoff applies.
      throw new BridgeError('BRIDGE_UNAVAILABLE', `the inbound hand-over failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
    this.o.metrics.inbound.labels(content.type).inc();
    return consented ? 'consented' : undefined;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.worker?.close();
    await this.queue.close().catch(() => undefined);
    await this.workerConnection?.quit().catch(() => undefined);
  }
}
