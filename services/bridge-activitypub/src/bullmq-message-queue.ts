/**
 * Fedify's `MessageQueue` on BullMQ (the version the relay cluster pins),
 * under the federation's key prefix (`{lr-bridge}` by default: one Redis
 * Cluster slot for BullMQ's multi-key scripts, docs/redis.md).
 *
 * - **Retries are BullMQ's** (`nativeRetrial = true`: Fedify throws a failed
 *   delivery or inbox task back instead of enqueueing a retry of its own):
 *   `attempts` tries with exponential backoff from `backoffMs`, `jitter` of
 *   each delay drawn at random. A job out of attempts stays in the failed set
 *   (`keepFailed` newest kept), where the relay's dashboard shows it: the
 *   queue's name is added to `<prefix>:dashboard-queues`, which the
 *   dashboard reads beside the bridge registry.
 * - **Job ids are stable**: `m-<id>` when the message carries an `id` (every
 *   Fedify message does: a UUID), else `h-<hash>` of its canonical JSON
 *   (HMAC-SHA-256 under `messageKey` when there is one). Enqueueing the same
 *   message again while its job is kept (waiting, delayed, active, failed, or
 *   among the `keepCompleted` newest completed) adds nothing. One exception,
 *   on purpose: Fedify re-enqueues *the message it is handling* (same id,
 *   `attempt` + 1) when a remote answers 429/503 with Retry-After or its
 *   circuit breaker holds a host. Such an enqueue, made from inside the
 *   handler of that very job, gets the next generation id `<base>+<n>`
 *   instead of being dropped as a duplicate of the running job; it is still
 *   deterministic, so a handler run twice (a stalled job) adds it once.
 * - **Job data is sealed** under `messageKey` (AES-256-GCM, the queue name
 *   and job id as associated data): Fedify's outbox messages carry the
 *   sending actor's private keys (JWK) and the activity in clear, and the
 *   dashboard shows job data. `messageKey: null` stores messages in clear
 *   (tests; a warning is logged).
 * - **orderingKey** (Fedify 2): jobs of one key run one at a time, in the
 *   order they were enqueued, across every listener and process. Each key
 *   has a Redis list of its unfinished job ids (same prefix, same slot); a
 *   job that is not at the head goes back to the delayed set for
 *   `orderingPollMs` without spending an attempt. A job leaves the list when
 *   it completes or fails for good (and a head whose job is finished, or
 *   gone for more than 5 s, e.g. removed from the dashboard, is dropped by
 *   whoever finds it). A job being retried with backoff keeps its place:
 *   later jobs of the key wait for it.
 * - **listen** starts a BullMQ Worker (`concurrency` jobs at once) on its own
 *   connection (`maxRetriesPerRequest: null`, as BullMQ wants for workers)
 *   and resolves once the signal aborts (or `close()`), after the worker has
 *   finished its running jobs and its connections are closed. Several
 *   listeners, in one process or many, share the jobs; BullMQ's lock makes
 *   one of them run each job.
 * - The producer connection fails fast (no offline queue): an enqueue while
 *   Redis is down throws, so Fedify answers the remote server with an error
 *   and the remote retries, rather than Fedify accepting an activity it
 *   could not queue.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import type {
  MessageQueue,
  MessageQueueDepth,
  MessageQueueEnqueueOptions,
  MessageQueueListenOptions,
} from '@fedify/fedify';
import { dashboardQueuesKey, FEDERATION_PREFIX, isServiceQueueName } from '@libertaria/bridge-kit';
import { type Logger, silentLogger } from '@libertaria/log';
import { createRedisClient, type RedisClient, type RedisTarget } from '@libertaria/redis';
import { DelayedError, type Job, type JobsOptions, Queue, UnrecoverableError, Worker } from 'bullmq';
import { canonicalJson, utf8Length } from './json-value.js';

export interface BullMqMessageQueueOptions {
  /** Where Redis is (a server, or a Cluster with `clusterNodes`); the queue opens its own connections. */
  readonly redis: RedisTarget;
  /** The BullMQ queue name, as the dashboard shows it (isServiceQueueName: e.g. `activitypub-fedify`). */
  readonly name: string;
  /** Key prefix (default `{lr-bridge}`); on a Cluster it must carry a `{…}` hash tag. */
  readonly prefix?: string;
  /** 32-byte key sealing every message in job data (AES-256-GCM), or null to store messages in clear. */
  readonly messageKey: Uint8Array | null;
  /** Tries per job, the first included (default 8). */
  readonly attempts?: number;
  /** First retry delay in ms; it doubles per attempt (default 1000). */
  readonly backoffMs?: number;
  /** Share of each retry delay drawn at random, 0 to 1 (default 0.5). */
  readonly jitter?: number;
  /** Completed jobs kept, newest first: the window in which an enqueue of the same message is a no-op (default 10000). */
  readonly keepCompleted?: number;
  /** Failed jobs kept for operators (default 100000). */
  readonly keepFailed?: number;
  /** Jobs one listener runs at once (default 4). */
  readonly concurrency?: number;
  /** Largest message, in bytes of its JSON (default 1 MiB). */
  readonly maxMessageBytes?: number;
  /** How long a job waiting for an earlier job of its ordering key sleeps, in ms (default 250). */
  readonly orderingPollMs?: number;
  readonly log?: Logger;
}

/** What a job holds. `sealed` is base64 of IV ‖ ciphertext ‖ tag; `message` is there when not sealed. */
export interface FedifyJobData {
  readonly v: 1;
  /** Generation: 0 for an enqueue from outside, n + 1 when the handler of generation n re-enqueues its message. */
  readonly gen: number;
  /** The ordering key, hashed (the key itself names remote hosts). */
  readonly order?: string;
  readonly sealed?: string;
  readonly message?: unknown;
}

/** A message whose JSON is over `maxMessageBytes`; nothing was enqueued. */
export class MessageTooLargeError extends RangeError {
  constructor(
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(`message is ${bytes} bytes of JSON, over the queue's limit of ${limit} bytes`);
    this.name = 'MessageTooLargeError';
  }
}

/** The job being handled, so that an enqueue from its handler can be told apart from a duplicate. */
const handling = new AsyncLocalStorage<{ readonly queue: object; readonly base: string; readonly gen: number }>();

const MESSAGE_ID = /^[A-Za-z0-9._~-]{1,128}$/;
/** A head of an ordering list whose job has been missing this long is dropped (its enqueue failed, or an operator removed it). */
const ORPHAN_GRACE_MS = 5000;

/** KEYS[1] the ordering list; ARGV[1] a job id: appended unless already there. */
const ORDER_PUSH_LUA = `
if redis.call('LPOS', KEYS[1], ARGV[1]) == false then redis.call('RPUSH', KEYS[1], ARGV[1]) end
return 1
`;
/** KEYS[1] the ordering list; ARGV[1] a job id: popped if it is the head. */
const ORDER_POP_HEAD_LUA = `
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) return 1 end
return 0
`;
type OrderClient = {
  lrFedifyOrderPush(key: string, jobId: string): Promise<number>;
  lrFedifyOrderPopHead(key: string, jobId: string): Promise<number>;
};

function positiveInt(name: string, value: number, min = 1): number {
  if (!Number.isSafeInteger(value) || value < min)
    throw new TypeError(`BullMqMessageQueue: ${name} must be an integer ≥ ${min}`);
  return value;
}

async function endConnection(client: RedisClient): Promise<void> {
  if (client.status === 'end') return;
  if (client.status === 'wait') {
    client.disconnect();
    return;
  }
  await client.quit().catch(() => client.disconnect());
}

export class BullMqMessageQueue implements MessageQueue {
  /** Fedify leaves retries to BullMQ: failures are thrown back to the worker. */
  readonly nativeRetrial = true;
  readonly name: string;
  readonly prefix: string;
  /** The producer side (also what tests and operators inspect). */
  readonly queue: Queue<FedifyJobData>;
  private readonly redis: RedisClient;
  private readonly key: Buffer | null;
  private readonly log: Logger;
  private readonly jobOptions: JobsOptions;
  private readonly concurrency: number;
  private readonly maxMessageBytes: number;
  private readonly orderingPollMs: number;
  private announced: Promise<void> | undefined;
  private readonly listeners = new Set<{ stop(): void; done: Promise<void> }>();
  private readonly missingHeads = new Map<string, number>();
  private closed = false;

  constructor(private readonly o: BullMqMessageQueueOptions) {
    this.name = o.name;
    this.prefix = o.prefix ?? FEDERATION_PREFIX;
    if (!isServiceQueueName(this.name)) {
      throw new TypeError(
        `BullMqMessageQueue: queue name ${JSON.stringify(this.name)} must be lowercase letters, digits and '-', and not a federation queue's`,
      );
    }
    if (o.redis.clusterNodes && !/\{[^{}]+\}/.test(this.prefix)) {
      throw new TypeError(
        `BullMqMessageQueue: on a Redis Cluster the prefix must carry a {…} hash tag (got ${this.prefix})`,
      );
    }
    if (o.messageKey !== null && o.messageKey.length !== 32) {
      throw new TypeError('BullMqMessageQueue: messageKey must be 32 bytes (or null for messages in clear)');
    }
    const jitter = o.jitter ?? 0.5;
    if (!(jitter >= 0 && jitter <= 1)) throw new TypeError('BullMqMessageQueue: jitter must be between 0 and 1');
    this.key = o.messageKey === null ? null : Buffer.from(o.messageKey);
    this.log = o.log ?? silentLogger;
    this.concurrency = positiveInt('concurrency', o.concurrency ?? 4);
    this.maxMessageBytes = positiveInt('maxMessageBytes', o.maxMessageBytes ?? 1024 * 1024);
    this.orderingPollMs = positiveInt('orderingPollMs', o.orderingPollMs ?? 250);
    this.jobOptions = {
      attempts: positiveInt('attempts', o.attempts ?? 8),
      backoff: { type: 'exponential', delay: positiveInt('backoffMs', o.backoffMs ?? 1000), jitter },
      removeOnComplete: { count: positiveInt('keepCompleted', o.keepCompleted ?? 10_000, 0) },
      removeOnFail: { count: positiveInt('keepFailed', o.keepFailed ?? 100_000, 0) },
    };
    if (this.key === null) {
      this.log.warn(
        'fedify queue stores messages in clear: actor private keys and activities are readable in Redis and on the dashboard',
        {
          queue: this.name,
        },
      );
    }
    this.redis = createRedisClient(o.redis, {
      connectionName: `${this.name}-producer`,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      lazyConnect: true,
    });
    this.redis.on('error', (err) => this.log.debug('fedify queue redis error', { queue: this.name, err }));
    this.redis.defineCommand('lrFedifyOrderPush', { numberOfKeys: 1, lua: ORDER_PUSH_LUA });
    this.redis.defineCommand('lrFedifyOrderPopHead', { numberOfKeys: 1, lua: ORDER_POP_HEAD_LUA });
    this.queue = new Queue<FedifyJobData>(this.name, { connection: this.redis, prefix: this.prefix });
    this.queue.on('error', (err) => this.log.debug('fedify queue error', { queue: this.name, err }));
  }

  async enqueue(message: unknown, options?: MessageQueueEnqueueOptions): Promise<void> {
    await this.enqueueMany([message], options);
  }

  async enqueueMany(messages: readonly unknown[], options?: MessageQueueEnqueueOptions): Promise<void> {
    if (this.closed) throw new Error(`BullMqMessageQueue ${this.name} is closed`);
    if (messages.length === 0) return;
    const delay = this.delayMs(options);
    const order = options?.orderingKey == null ? undefined : this.hash(`order\n${options.orderingKey}`).slice(0, 32);
    const jobs = messages.map((message) => this.job(message, delay, order));
    const client = await this.client();
    await this.announce();
    if (order !== undefined) {
      for (const job of jobs) await (client as unknown as OrderClient).lrFedifyOrderPush(this.orderKey(order), job.id);
    }
    if (jobs.length === 1) {
      const [job] = jobs as [(typeof jobs)[0]];
      await this.queue.add(job.name, job.data, job.opts);
    } else {
      await this.queue.addBulk(jobs.map((j) => ({ name: j.name, data: j.data, opts: j.opts })));
    }
  }

  async listen(
    handler: (message: unknown) => Promise<void> | void,
    options: MessageQueueListenOptions = {},
  ): Promise<void> {
    const signal = options.signal;
    if (signal?.aborted || this.closed) return;
    // Not awaited: a Redis that is down must not keep the listener from ending on abort.
    this.announce().catch((err: unknown) =>
      this.log.warn('fedify queue: could not list the queue for the dashboard', { queue: this.name, err }),
    );
    const connection = createRedisClient(this.o.redis, {
      connectionName: `${this.name}-worker`,
      maxRetriesPerRequest: null,
    });
    connection.on('error', (err) => this.log.debug('fedify worker redis error', { queue: this.name, err }));
    const worker = new Worker<FedifyJobData>(this.name, (job, token) => this.process(job, token, handler), {
      connection,
      prefix: this.prefix,
      concurrency: this.concurrency,
    });
    worker.on('error', (err) => this.log.warn('fedify worker error', { queue: this.name, err }));
    worker.on('failed', (job, err) => {
      const final =
        err instanceof UnrecoverableError || (job !== undefined && job.attemptsMade >= (job.opts.attempts ?? 1));
      this.log.warn('fedify job failed', {
        queue: this.name,
        job: job?.id,
        attempt: job?.attemptsMade,
        final,
        err: err.message,
      });
    });
    let stop: () => void = () => undefined;
    const stopped = new Promise<void>((resolve) => {
      stop = resolve;
    });
    signal?.addEventListener('abort', stop, { once: true });
    const done = (async () => {
      await stopped;
      signal?.removeEventListener('abort', stop);
      // Lets running jobs finish, then closes the worker's blocking connection.
      await worker
        .close()
        .catch((err: unknown) => this.log.warn('fedify worker close failed', { queue: this.name, err }));
      await endConnection(connection);
    })();
    const entry = { stop, done };
    this.listeners.add(entry);
    try {
      await done;
    } finally {
      this.listeners.delete(entry);
    }
  }

  /** Messages waiting (not those being handled): ready ones and delayed ones (retries, delays, ordering waits). */
  async getDepth(): Promise<MessageQueueDepth> {
    const c = await this.queue.getJobCounts('waiting', 'prioritized', 'delayed');
    const ready = (c.waiting ?? 0) + (c.prioritized ?? 0);
    const delayed = c.delayed ?? 0;
    return { queued: ready + delayed, ready, delayed };
  }

  /** Ends every listener (running jobs finish first), then the producer. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const listeners = [...this.listeners];
    for (const l of listeners) l.stop();
    await Promise.allSettled(listeners.map((l) => l.done));
    await this.queue.close().catch(() => undefined);
    await endConnection(this.redis);
  }

  // ---- jobs

  private job(message: unknown, delay: number, order: string | undefined) {
    const json = canonicalJson(message);
    if (json === undefined) throw new TypeError('BullMqMessageQueue: a message must be JSON-encodable');
    const bytes = utf8Length(json);
    if (bytes > this.maxMessageBytes) throw new MessageTooLargeError(bytes, this.maxMessageBytes);
    const givenId = (message as { id?: unknown } | null)?.id;
    const base = typeof givenId === 'string' && MESSAGE_ID.test(givenId) ? `m-${givenId}` : `h-${this.hash(json)}`;
    const current = handling.getStore();
    const gen = current !== undefined && current.queue === this && current.base === base ? current.gen + 1 : 0;
    const id = gen === 0 ? base : `${base}+${gen}`;
    const type = (message as { type?: unknown } | null)?.type;
    const data: FedifyJobData = {
      v: 1,
      gen,
      ...(order === undefined ? {} : { order }),
      ...(this.key === null ? { message: JSON.parse(json) } : { sealed: this.seal(json, id) }),
    };
    const opts: JobsOptions = { ...this.jobOptions, jobId: id, ...(delay > 0 ? { delay } : {}) };
    return { id, name: typeof type === 'string' && /^[a-z]{1,20}$/.test(type) ? type : 'message', data, opts };
  }

  private delayMs(options: MessageQueueEnqueueOptions | undefined): number {
    const delay = options?.delay as { total(o: { unit: 'millisecond' }): number } | undefined | null;
    if (delay == null) return 0;
    const ms = delay.total({ unit: 'millisecond' });
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError('BullMqMessageQueue: delay must not be negative');
    return Math.ceil(ms);
  }

  private async process(
    job: Job<FedifyJobData>,
    token: string | undefined,
    handler: (message: unknown) => Promise<void> | void,
  ): Promise<void> {
    const id = job.id as string;
    const data = job.data;
    const message = this.open(data, id);
    if (data.order !== undefined && !(await this.mayRun(data.order, id))) {
      await job.moveToDelayed(Date.now() + this.orderingPollMs, token);
      throw new DelayedError();
    }
    const plus = id.lastIndexOf('+');
    const base = plus < 0 ? id : id.slice(0, plus);
    try {
      await handling.run({ queue: this, base, gen: data.gen }, () => handler(message));
    } catch (error) {
      const final = error instanceof UnrecoverableError || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      if (final && data.order !== undefined) await this.release(data.order, id);
      throw error instanceof Error ? error : new Error(String(error));
    }
    if (data.order !== undefined) await this.release(data.order, id);
  }

  // ---- ordering keys

  private orderKey(order: string): string {
    return `${this.prefix}:lr-order:${this.name}:${order}`;
  }

  /** True when the job may run now: it is the oldest unfinished job of its ordering key (or not listed). */
  private async mayRun(order: string, id: string): Promise<boolean> {
    const client = await this.client();
    const key = this.orderKey(order);
    for (let round = 0; round < 100; round++) {
      const head = await client.lindex(key, 0);
      if (head === null || head === id) return true;
      if ((await client.lpos(key, id)) === null) return true; // not listed (its push was lost): do not hold it
      const state = await this.queue.getJobState(head);
      const gone = state === 'unknown' && this.missingFor(head) >= ORPHAN_GRACE_MS;
      if (state !== 'completed' && state !== 'failed' && !gone) return false;
      await (client as unknown as OrderClient).lrFedifyOrderPopHead(key, head);
      this.missingHeads.delete(head);
    }
    return false;
  }

  /** How long a head job has been seen missing (its enqueue may still be on its way). */
  private missingFor(id: string): number {
    const now = Date.now();
    const since = this.missingHeads.get(id);
    if (since !== undefined) return now - since;
    if (this.missingHeads.size > 1000) this.missingHeads.clear();
    this.missingHeads.set(id, now);
    return 0;
  }

  private async release(order: string, id: string): Promise<void> {
    const client = await this.client();
    await client.lrem(this.orderKey(order), 0, id);
  }

  // ---- sealing and ids

  private hash(text: string): string {
    return (this.key === null ? createHash('sha256') : createHmac('sha256', this.key)).update(text).digest('hex');
  }

  private seal(json: string, id: string): string {
    const key = this.key as Buffer;
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(Buffer.from(`${this.name}\n${id}`));
    const body = Buffer.concat([cipher.update(json, 'utf8'), cipher.final()]);
    return Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64');
  }

  private open(data: FedifyJobData, id: string): unknown {
    if (data.sealed === undefined) {
      if (this.key !== null && data.message !== undefined) {
        throw new UnrecoverableError('job holds a message in clear but this queue seals its messages');
      }
      return data.message;
    }
    if (this.key === null) throw new UnrecoverableError('job holds a sealed message but this queue has no messageKey');
    try {
      const raw = Buffer.from(data.sealed, 'base64');
      const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, 12));
      decipher.setAAD(Buffer.from(`${this.name}\n${id}`));
      decipher.setAuthTag(raw.subarray(raw.length - 16));
      const json = Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()]).toString(
        'utf8',
      );
      return JSON.parse(json);
    } catch {
      throw new UnrecoverableError('sealed message cannot be opened (another messageKey, or altered)');
    }
  }

  // ---- connections

  /** The producer connection once ready (BullMQ's Queue connects it and shares it with us). */
  private async client(): Promise<RedisClient> {
    await this.queue.waitUntilReady();
    return this.redis;
  }

  /** Lists the queue for the relay's dashboard once per process (again after a failure). */
  private announce(): Promise<void> {
    this.announced ??= this.client()
      .then((client) => client.sadd(dashboardQueuesKey(this.prefix), this.name))
      .then(() => undefined)
      .catch((err: unknown) => {
        this.announced = undefined;
        throw err;
      });
    return this.announced;
  }
}
