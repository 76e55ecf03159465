/**
 * Outbound: a durable SEND whose destination is a registered bridge is added
 * to that bridge's BullMQ queue instead of a mailbox. The job id is the
 * frame's message id, so a SEND written again (after a reconnect) finds the
 * job already there and adds nothing, as long as the job is kept
 * (RELAY_FEDERATION_KEEP_COMPLETED / _FAILED). The sender is ACKed only once
 * BullMQ has the job in Redis, and with RELAY_DURABLE_WAIT_REPLICAS once that
 * many replicas hold it (replica-wait.ts), as for a frame stored in a queue.
 *
 * The producer connection fails fast (no offline queue): while Redis is down
 * the SEND is NACKed with STORE_UNAVAILABLE and the client writes it again,
 * instead of an ACK waiting on a reconnect.
 */
import type { BridgeRegistration } from '@libertaria/bridge-kit';
import { FrameType, routedDest, routedMessageId, toHex } from '@libertaria/protocol';
import { type JobsOptions, Queue } from 'bullmq';
import type { RedisClient } from '../redis-connection.js';
import { keyCheck, type ReplicaWaiter } from '../replica-wait.js';

export interface Retention {
  readonly keepCompleted: number;
  readonly keepCompletedSeconds: number;
  readonly keepFailed: number;
  readonly keepFailedSeconds: number;
}

export class OutboundHandOff {
  private readonly queues = new Map<string, Queue>();

  constructor(
    private readonly connection: RedisClient,
    private readonly prefix: string,
    private readonly retention: Retention,
    /** RELAY_DURABLE_WAIT_REPLICAS > 0: a job is confirmed once replicas hold it. */
    private readonly replicas?: ReplicaWaiter,
  ) {}

  private queue(name: string): Queue {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new Queue(name, { connection: this.connection, prefix: this.prefix });
      // Its errors are the node's command connection's, logged there (relay-node.ts); without a listener
      // BullMQ would print each one raw on stderr.
      queue.on('error', () => {});
      this.queues.set(name, queue);
    }
    return queue;
  }

  /** Adds the DELIVER frame (sealed to the bridge) as a job; resolves once Redis holds it. */
  async handOff(frame: Buffer, bridge: BridgeRegistration): Promise<void> {
    if (frame[1] !== FrameType.DELIVER) throw new Error('handOff takes a DELIVER frame');
    const dest = routedDest(frame).toString('hex');
    if (dest !== bridge.hint) throw new Error('the frame is not addressed to this bridge');
    const jobId = toHex(routedMessageId(frame));
    const options: JobsOptions = {
      jobId,
      attempts: bridge.attempts,
      backoff: { type: 'exponential', delay: bridge.backoffMs, jitter: bridge.jitter },
      removeOnComplete: { count: this.retention.keepCompleted, age: this.retention.keepCompletedSeconds },
      removeOnFail: { count: this.retention.keepFailed, age: this.retention.keepFailedSeconds },
    };
    const queue = this.queue(bridge.queue);
    await queue.add('frame', { frame: frame.toString('base64') }, options);
    if (this.replicas) {
      // The job's hash, under the queue's prefix (its hash tag on a Cluster), like the routing write beside it.
      const job = queue.toKey(jobId);
      await this.replicas.wait(job, keyCheck(job, `${this.prefix}:w`), 1);
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
  }
}
