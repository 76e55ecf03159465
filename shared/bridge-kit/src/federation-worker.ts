/**
 * A bridge inside the relay cluster (docs/bridges.md#federation): the BullMQ
 * federation worker every bridge service runs around its `Bridge`
 * (`@libertaria/bridge-kit/worker`, Node-only). Nothing here is specific to
 * one network.
 *
 * - The bridge is a Libertaria peer: it connects to the relays with its own
 *   identity (a RelayClient with a SessionManager), publishes its prekeys so
 *   peers can seal to it, and fetches peers' prekeys to seal to them.
 * - It registers in Redis (hash `<prefix>:bridges`, then a pub/sub notice) so
 *   relay nodes hand durable SENDs addressed to it to its outbound queue.
 * - Outbound worker: opens each frame with its SessionManager, reads the
 *   federated message and calls `bridge.send`. A BridgeError that is not
 *   `retryable` (and any frame that cannot be opened or read) fails the job
 *   at once (UnrecoverableError); the rest is retried with the job's
 *   exponential backoff and jitter. Failed jobs stay visible in the queue.
 * - Inbound: each foreign message is sealed to its Libertaria recipient and
 *   added to the `inbound` queue as a durable DELIVER frame (job id derived
 *   from the foreign id: idempotent); a relay node's worker stores it.
 * - Scaled out (`scaleOut`, docs/bridges.md#running-several-processes):
 *   several processes share the bridge's DID. Sessions live in Redis
 *   (RedisSessionStore, a fenced lease per peer); one leader, elected by a
 *   lease, holds the relay connection (the relay keeps one connection per
 *   DID), publishes prekeys, drains the mailbox and seals inbound messages
 *   from the `seal-<network>` queue that every process feeds; every process
 *   runs outbound jobs.
 */

import { hostname } from 'node:os';
import {
  checkEnvelopeSender,
  decodeEnvelope,
  encodeEnvelope,
  RelayClient,
  SessionManager,
  type SessionStore,
} from '@libertaria/client';
import { nodeCrypto } from '@libertaria/crypto/node';
import { type Ed25519Identity, hintFromDid, hintToHex, verifyEd25519 } from '@libertaria/identity';
import type { Logger } from '@libertaria/log';
import { decodeFrame, encodeFrame, LibertariaError, SendFlags, toHex } from '@libertaria/protocol';
import { createRedisClient, type RedisClient, type RedisTarget } from '@libertaria/redis';
import { type Job, type JobsOptions, Queue, UnrecoverableError, Worker, type WorkerOptions } from 'bullmq';
import { Counter, Gauge, type Registry } from 'prom-client';
import { BridgeError } from './errors.js';
import {
  type BridgeRegistration,
  bridgesChannel,
  bridgesKey,
  decodeFederatedMessage,
  encodeFederatedMessage,
  FEDERATION_PREFIX,
  federatedMessageId,
  federationNetworkName,
  INBOUND_QUEUE,
  type InboundJobData,
  inboundJobId,
  type OutboundJobData,
  outboundQueueName,
} from './federation.js';
import { parseForeignIdentity } from './foreign-identity.js';
import { RedisLeader } from './redis-lease.js';
import { RedisSessionStore } from './redis-session-store.js';
import {
  bridgeStateKey,
  openSealJobData,
  type SealJobData,
  sealJobData,
  sealQueueKey,
  sealQueueName,
} from './seal-queue.js';
import { type Bridge, type BridgeInboundMessage, type BridgeOutboundMessage, bridgeProtocolName } from './types.js';

/** Several processes of one bridge (docs/bridges.md#running-several-processes). */
export interface ScaleOutOptions {
  /** Leader lease: a killed leader is replaced within about this, in milliseconds. */
  readonly leaderTtlMs: number;
  /** Per-peer session lease (renewed while held), in milliseconds. */
  readonly lockTtlMs: number;
  /** Longest wait for a peer's session lease before the job is retried, in milliseconds. */
  readonly lockWaitMs: number;
}

export interface BridgeFederationOptions {
  readonly bridge: Bridge;
  readonly identity: Ed25519Identity;
  /**
   * Where the bridge's sessions and prekeys live (FileSessionStore for one
   * process). Ignored with `scaleOut`: sessions are then in Redis.
   */
  readonly sessionStore?: SessionStore;
  /** Run as one of several processes of this bridge; absent: the only one. */
  readonly scaleOut?: ScaleOutOptions;
  /** Libertaria relay URLs the bridge connects to as a peer. */
  readonly relays: readonly string[];
  readonly redisUrl: string;
  /** REDIS_CLUSTER_NODES: run on a Redis Cluster (redisUrl then gives credentials and TLS). */
  readonly redisClusterNodes?: string | undefined;
  readonly prefix?: string;
  /** Outbound jobs processed at once by this bridge. */
  readonly concurrency: number;
  /**
   * BullMQ's job lock (lockDuration, and the stall check's interval): a job
   * whose process died is run again by another worker after at most about
   * twice this; a job whose process stalls longer than this (event loop
   * blocked) may run twice, which the idempotent steps absorb. Default 30 s.
   */
  readonly jobLockMs?: number;
  /** Most outbound jobs per second towards the foreign network (BullMQ limiter, shared by the bridge's workers). */
  readonly ratePerSecond: number;
  /**
   * When the bridge reports the foreign network rate-limits it (a BridgeError
   * with `rateLimited`, e.g. Nostr's `rate-limited:`, HTTP 429) without a
   * `retryAfterMs` of its own, the whole outbound queue pauses this long and
   * the job goes back to waiting without spending an attempt (BullMQ manual
   * rate limit).
   */
  readonly rateLimitPauseMs: number;
  /** Outbound retry policy, published in the registration; relay nodes apply it when they add jobs. */
  readonly attempts: number;
  readonly backoffMs: number;
  readonly jitter: number;
  /** Inbound jobs: tries, first backoff, and retention. */
  readonly inboundAttempts: number;
  readonly inboundBackoffMs: number;
  readonly keepCompleted: number;
  readonly keepFailed: number;
  /** TTL of inbound frames in the recipient's mailbox, in seconds (0: the relay's maximum). */
  readonly inboundTtlSeconds: number;
  /**
   * The registration is written again this often (default 10 s) and whenever
   * the Redis connection is ready again: a Redis that lost it knows the
   * bridge again within this time.
   */
  readonly registerEveryMs?: number;
  readonly log: Logger;
  readonly registry?: Registry;
}

export interface FederationHealth {
  /** single: the only process; leader / follower: scaled out (a follower holds no relay connection, by design). */
  readonly role: 'single' | 'leader' | 'follower';
  readonly relay: 'connected' | 'disconnected' | 'standby';
  readonly redis: string;
  readonly worker: 'running' | 'stopped';
  readonly redisEvictionPolicy: string;
  readonly outbound: Record<string, number>;
  readonly inbound: Record<string, number>;
}

/** Thrown for a job that must not be retried: its message says the code first. */
function final(code: string, message: string): UnrecoverableError {
  return new UnrecoverableError(`${code}: ${message}`);
}

export class BridgeFederation {
  readonly network: string;
  readonly hint: string;
  readonly sessions: SessionManager;
  #client: RelayClient;
  /** Scaled out: the leader election, the queue every process feeds and the leader's worker on it. */
  private leader: RedisLeader | undefined;
  readonly sealQueue: Queue<SealJobData> | undefined;
  private sealWorker: Worker<SealJobData> | undefined;
  private readonly sealKey: Buffer | undefined;
  private leaderChange: Promise<void> = Promise.resolve();
  private readonly leaderGauge: Gauge;
  private readonly leaderChanges: Counter<'to'>;
  private readonly prefix: string;
  private readonly redis: RedisClient;
  private workerConnection: RedisClient | undefined;
  private get redisTarget(): RedisTarget {
    return { url: this.o.redisUrl, clusterNodes: this.o.redisClusterNodes };
  }
  readonly outboundQueue: Queue<OutboundJobData>;
  readonly inboundQueue: Queue<InboundJobData>;
  private worker: Worker<OutboundJobData> | undefined;
  private evictionPolicy = 'unknown';
  private readonly jobs: Counter<'queue' | 'result'>;
  private closed = false;
  private registerTimer: NodeJS.Timeout | undefined;
  private mailboxLoop: Promise<void> | undefined;

  constructor(private readonly o: BridgeFederationOptions) {
    this.network = federationNetworkName(bridgeProtocolName(o.bridge.protocol));
    this.hint = hintToHex(hintFromDid(o.identity.did));
    this.prefix = o.prefix ?? FEDERATION_PREFIX;
    // Producer connection: fails fast while Redis is down, so the foreign side sees an error and resends.
    this.redis = createRedisClient(this.redisTarget, {
      connectionName: `bridge-${this.network}`,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      lazyConnect: true,
    });
    this.redis.on('error', (err) => o.log.debug('federation redis error', { err }));
    const registers = o.registry ? [o.registry] : [];
    this.leaderGauge = new Gauge({
      name: 'bridge_federation_leader',
      help: 'Whether this process holds the bridge relay connection: 1 for the leader of a scaled-out bridge or a single process, 0 for a follower',
      registers,
    });
    this.leaderChanges = new Counter({
      name: 'bridge_federation_leader_changes_total',
      help: 'Times this process became leader (to="leader") or stepped down (to="follower") in a scaled-out bridge',
      labelNames: ['to'],
      registers,
    });
    const locks = new Counter({
      name: 'bridge_federation_session_locks_total',
      help: 'Per-peer session leases of a scaled-out bridge: acquired, waited (acquired after waiting), busy (gave up: the job is retried), lost (expired while held), error (Redis)',
      labelNames: ['result'],
      registers,
    });
    if (o.scaleOut) {
      const redisStore = new RedisSessionStore({
        redis: this.redis,
        prefix: this.prefix,
        scope: this.hint,
        lockTtlMs: o.scaleOut.lockTtlMs,
        lockWaitMs: o.scaleOut.lockWaitMs,
        onLockEvent: (event) => locks.labels(event).inc(),
        // Ratchet keys and opened messages' text: sealed, the cluster's Redis must not read them.
        sealKey: bridgeStateKey(o.identity, 'libertaria session-store v1', this.network),
      });
      this.sessions = new SessionManager({
        identity: o.identity,
        store: redisStore,
        provider: nodeCrypto,
        verify: verifyEd25519,
        shared: true,
        lock: redisStore.lock,
      });
      this.sealKey = sealQueueKey(o.identity, this.network);
      this.sealQueue = new Queue(sealQueueName(this.network), { connection: this.redis, prefix: this.prefix });
    } else {
      const store = o.sessionStore;
      if (store === undefined) throw new BridgeError('CONFIG_INVALID', 'BridgeFederation: a sessionStore or scaleOut');
      this.sessions = new SessionManager({ identity: o.identity, store, provider: nodeCrypto, verify: verifyEd25519 });
    }
    this.#client = this.newClient();
    this.outboundQueue = new Queue(outboundQueueName(this.network), {
      connection: this.redis,
      prefix: this.prefix,
    });
    this.inboundQueue = new Queue(INBOUND_QUEUE, {
      connection: this.redis,
      prefix: this.prefix,
    });
    this.jobs = new Counter({
      name: 'bridge_federation_jobs_total',
      help: 'Federation jobs by queue (outbound, inbound) and result: ok, retry, failed (kept in the failed set), duplicate (inbound already queued)',
      labelNames: ['queue', 'result'],
      registers,
    });
    const self = this;
    new Gauge({
      name: 'bridge_federation_queue_jobs',
      help: "Jobs in the bridge's outbound queue and in the inbound queue, by state (read from Redis at scrape)",
      labelNames: ['queue', 'state'],
      registers,
      async collect() {
        try {
          const [out, inb] = await Promise.all([self.outboundQueue.getJobCounts(), self.inboundQueue.getJobCounts()]);
          for (const [state, n] of Object.entries(out)) this.labels('outbound', state).set(n);
          for (const [state, n] of Object.entries(inb)) this.labels('inbound', state).set(n);
        } catch {
          // Redis down: the gauge keeps its last values; /health says so.
        }
      },
    });
  }

  /** The relay connection (scaled out: the current leader term's; a follower's is never connected). */
  get client(): RelayClient {
    return this.#client;
  }

  private newClient(): RelayClient {
    return new RelayClient({ relays: [...this.o.relays], identity: this.o.identity, sessions: this.sessions });
  }

  /** Whether this process holds the relay connection: always when it is the only one. */
  get isLeader(): boolean {
    return this.leader === undefined ? !this.closed : this.leader.isLeader;
  }

  /** Options every worker of this process shares: its name (`processedBy` of its jobs: which process ran what) and lock. */
  private workerOptions(): Pick<WorkerOptions, 'name' | 'lockDuration' | 'stalledInterval'> {
    const lock = this.o.jobLockMs ?? 30_000;
    return { name: `${hostname()}-${process.pid}`, lockDuration: lock, stalledInterval: lock };
  }

  get registration(): BridgeRegistration {
    return {
      network: this.network,
      did: this.o.identity.did,
      hint: this.hint,
      queue: outboundQueueName(this.network),
      attempts: this.o.attempts,
      backoffMs: this.o.backoffMs,
      jitter: this.o.jitter,
      registeredAt: Date.now(),
    };
  }

  /** Connects to Redis and the relays, publishes prekeys, registers, and starts the outbound worker. */
  async start(): Promise<void> {
    // BullMQ's Queue may have started connecting the shared connection already.
    if (this.redis.status === 'wait') await this.redis.connect();
    else if (this.redis.status !== 'ready') await new Promise((resolve) => this.redis.once('ready', resolve));
    await this.checkEvictionPolicy();
    // Registered first: frames sent from now on wait in the queue until the worker below runs.
    await this.register();
    // Again, so that a Redis that lost its data (no persistence, a failover to an unsynced replica)
    // knows the bridge again: until then relays refuse its inbound jobs as BRIDGE_NOT_REGISTERED.
    const again = (): void => {
      if (this.closed) return;
      this.register().catch((err: unknown) => this.o.log.warn('bridge registration failed', { err }));
    };
    this.registerTimer = setInterval(again, this.o.registerEveryMs ?? 10_000);
    this.registerTimer.unref();
    this.redis.on('ready', again);
    if (this.o.scaleOut) {
      // The relay connection is the leader's: campaigned for once the workers below exist.
      this.o.bridge.onInbound((message) => this.queueForSealing(message));
    } else {
      await this.client.connect();
      await this.sessions.ensurePublished(this.client);
      this.o.bridge.onInbound((message) => this.deliverInbound(message));
      this.mailboxLoop = this.drainMailbox(this.client);
      this.leaderGauge.set(1);
    }
    // On a Cluster the worker gets a connection made here (BullMQ then leaves closing it to us).
    if (this.o.redisClusterNodes) {
      this.workerConnection = createRedisClient(this.redisTarget, {
        maxRetriesPerRequest: null,
        connectionName: `bridge-${this.network}-worker`,
      });
      this.workerConnection.on('error', (err) => this.o.log.debug('federation worker redis error', { err }));
    }
    this.worker = new Worker<OutboundJobData>(outboundQueueName(this.network), (job) => this.processOutbound(job), {
      // BullMQ's production guide: a worker's connection retries forever rather than failing its blocking commands.
      connection: this.workerConnection ?? {
        url: this.o.redisUrl,
        maxRetriesPerRequest: null,
        connectionName: `bridge-${this.network}-worker`,
      },
      prefix: this.prefix,
      concurrency: this.o.concurrency,
      limiter: { max: this.o.ratePerSecond, duration: 1000 },
      ...this.workerOptions(),
    });
    this.worker.on('completed', () => this.jobs.labels('outbound', 'ok').inc());
    this.worker.on('failed', (job, err) => {
      const isFinal =
        err instanceof UnrecoverableError || (job !== undefined && job.attemptsMade >= (job.opts.attempts ?? 1));
      this.jobs.labels('outbound', isFinal ? 'failed' : 'retry').inc();
      this.o.log.warn('outbound job failed', {
        job: job?.id,
        final: isFinal,
        attempt: job?.attemptsMade,
        err: err.message,
      });
      // Out of attempts on a retryable error: the opened text is kept (bounded per peer by the
      // SessionManager) so an operator's retry from the dashboard can still send it.
      if (err instanceof UnrecoverableError && job) void this.forget(job);
    });
    this.worker.on('error', (err) => this.o.log.warn('outbound worker error', { err }));
    // A job whose worker died (a process killed mid-job) is handed back by BullMQ's stall check: counted, it is retried.
    this.worker.on('stalled', (jobId) => {
      this.jobs.labels('outbound', 'stalled').inc();
      this.o.log.warn('an outbound job stalled (its worker died?); BullMQ runs it again', { job: jobId });
    });
    if (this.o.scaleOut) {
      this.leader = new RedisLeader({
        redis: this.redis,
        key: `${this.prefix}:leader:${this.network}`,
        ttlMs: this.o.scaleOut.leaderTtlMs,
        onChange: (leader) => this.onLeaderChange(leader),
        onError: (err) => this.o.log.debug('leader lease', { err }),
      });
      await this.leader.start();
    }
    this.o.log.info('federation started', { network: this.network, did: this.o.identity.did, hint: this.hint });
  }

  /** BullMQ cannot work if Redis evicts keys: warn loudly (managed Redis may forbid CONFIG; then unknown). */
  private async checkEvictionPolicy(): Promise<void> {
    try {
      const reply = (await this.redis.config('GET', 'maxmemory-policy')) as string[];
      this.evictionPolicy = reply[1] ?? 'unknown';
    } catch {
      this.evictionPolicy = 'unknown';
    }
    if (this.evictionPolicy !== 'noeviction') {
      this.o.log.warn('redis maxmemory-policy is not noeviction: BullMQ jobs may be evicted', {
        policy: this.evictionPolicy,
      });
    }
  }

  /** Writes the registration and announces it; relay nodes read it at once. Kept when the bridge stops, so frames queue up meanwhile. */
  async register(): Promise<void> {
    await this.redis.hset(bridgesKey(this.prefix), this.hint, JSON.stringify(this.registration));
    await this.redis.publish(bridgesChannel(this.prefix), this.hint);
  }

  /** Removes the registration: relay nodes then store frames to this DID in its mailbox like any peer's. */
  async deregister(): Promise<void> {
    await this.redis.hdel(bridgesKey(this.prefix), this.hint);
    await this.redis.publish(bridgesChannel(this.prefix), this.hint);
  }

  private async forget(job: Job<OutboundJobData>): Promise<void> {
    try {
      const frame = decodeFrame(Buffer.from(job.data.frame, 'base64'));
      if (frame.type !== 'DELIVER') return;
      const { senderDid } = decodeEnvelope(frame.payload);
      await this.sessions.acknowledge(senderDid, frame.messageId);
    } catch {
      // Nothing was kept for a frame that never opened.
    }
  }

  /** One outbound job: open, read, send. Returns what the foreign side reported. */
  async processOutbound(job: Job<OutboundJobData>): Promise<{ foreignId: string; acceptedBy: readonly string[] }> {
    let frame: ReturnType<typeof decodeFrame>;
    try {
      frame = decodeFrame(Buffer.from(String(job.data?.frame), 'base64'));
    } catch (err) {
      throw final('BAD_FIELD', `the job's frame does not decode: ${(err as Error).message}`);
    }
    if (frame.type !== 'DELIVER')
      throw final('BAD_FIELD', `an outbound job carries a DELIVER frame, not ${frame.type}`);
    if (hintToHex(frame.dest) !== this.hint) throw final('BAD_FIELD', 'the frame is not addressed to this bridge');
    let from: string;
    let plaintext: Uint8Array;
    try {
      const envelope = decodeEnvelope(frame.payload);
      checkEnvelopeSender(envelope, frame.source);
      from = envelope.senderDid;
      // With the message id the opened text is kept until acknowledged, so a retried job opens again.
      plaintext = await this.sessions.open(from, frame.sessionId, envelope.body, frame.messageId);
    } catch (err) {
      // Redis unreachable, a busy or lost session lease (scaled out): the frame may open on a later try.
      if (err instanceof BridgeError && err.retryable) throw err;
      const code = err instanceof LibertariaError ? err.code : 'DECRYPT_FAILED';
      throw final(code, `the frame does not open: ${(err as Error).message}`);
    }
    let result: Awaited<ReturnType<BridgeFederation['sendFederated']>>;
    try {
      result = await this.sendFederated(from, toHex(frame.messageId), plaintext);
    } catch (err) {
      if (this.worker && err instanceof BridgeError && err.rateLimited) {
        // The remote asked us to slow down: pause the queue, keep the attempt.
        const pauseMs = err.retryAfterMs ?? this.o.rateLimitPauseMs;
        this.jobs.labels('outbound', 'rate_limited').inc();
        this.o.log.warn('the foreign network rate-limits the bridge; pausing the outbound queue', { pauseMs });
        await this.worker.rateLimit(pauseMs);
        throw Worker.RateLimitError();
      }
      throw err;
    }
    await this.sessions.acknowledge(from, frame.messageId);
    return result;
  }

  private async sendFederated(from: string, id: string, plaintext: Uint8Array) {
    let message: BridgeOutboundMessage;
    try {
      const decoded = decodeFederatedMessage(plaintext);
      switch (decoded.type) {
        case 'send-dm':
          message = {
            type: 'private',
            id,
            from,
            to: parseForeignIdentity(decoded.to),
            text: decoded.text,
            ...(decoded.session === undefined ? {} : { sessionId: decoded.session }),
          };
          break;
        case 'send-note':
          message = { type: 'public', id, from, text: decoded.text };
          break;
        case 'received':
          throw new LibertariaError('FEDERATED_ENVELOPE_INVALID', 'a peer cannot send a received message');
        default: {
          const never: never = decoded;
          throw new LibertariaError('FEDERATED_ENVELOPE_INVALID', `unknown type ${JSON.stringify(never)}`);
        }
      }
      // Writing through the bridge is the peer's consent to be bridged: its foreign identity is made on first use.
      if ((await this.o.bridge.foreignIdentityOf(from)) === undefined) await this.o.bridge.bridgeIdentity(from);
      const sent = await this.o.bridge.send(message);
      this.o.log.info('outbound sent', { from, id, foreignId: sent.foreignId, acceptedBy: sent.acceptedBy.length });
      return { foreignId: sent.foreignId, acceptedBy: sent.acceptedBy };
    } catch (err) {
      if (err instanceof BridgeError && err.retryable) throw err;
      if (err instanceof LibertariaError) throw final(err.code, err.message);
      throw err;
    }
  }

  /** Seals a foreign message to its recipient and queues it for a relay node to store. */
  async deliverInbound(message: BridgeInboundMessage): Promise<void> {
    const jobId = inboundJobId(this.network, message.id, message.to);
    if (await this.inboundQueue.getJob(jobId)) {
      // Already queued or stored (seen on another relay, or again after a restart): sealing again would waste a ratchet step.
      this.jobs.labels('inbound', 'duplicate').inc();
      return;
    }
    await this.sealAndQueue(jobId, message, this.client);
  }

  private async sealAndQueue(jobId: string, message: BridgeInboundMessage, client: RelayClient): Promise<void> {
    const payload = encodeFederatedMessage({
      type: 'received',
      kind: message.type === 'private' ? 'dm' : 'mention',
      from: message.from.uri,
      text: message.text,
      sentAt: message.sentAt,
      id: message.id,
    });
    const { body, sessionId } = await this.sessions.seal(client, message.to, payload);
    const frame = encodeFrame({
      type: 'DELIVER',
      dest: hintFromDid(message.to),
      source: hintFromDid(this.o.identity.did),
      sessionId,
      messageId: federatedMessageId(this.network, message.id),
      flags: SendFlags.DURABLE,
      ttl: this.o.inboundTtlSeconds,
      position: 0,
      payload: encodeEnvelope(this.o.identity.did, body),
    });
    const options: JobsOptions = {
      jobId,
      attempts: this.o.inboundAttempts,
      backoff: { type: 'exponential', delay: this.o.inboundBackoffMs, jitter: this.o.jitter },
      removeOnComplete: { count: this.o.keepCompleted },
      removeOnFail: { count: this.o.keepFailed },
    };
    await this.inboundQueue.add('deliver', { frame: Buffer.from(frame).toString('base64') }, options);
    this.jobs.labels('inbound', 'ok').inc();
    this.o.log.info('inbound queued', { to: message.to, from: message.from.uri, id: message.id, job: jobId });
  }

  /**
   * Scaled out, any process: the foreign message goes to the `seal-<network>`
   * queue (data sealed, job id = the inbound job id), where the leader seals
   * it. Every process reading the foreign network sees the same message: the
   * job id makes it one job, and once it is in Redis no process dying can
   * lose it (BullMQ hands a stalled job to the next leader's worker).
   */
  async queueForSealing(message: BridgeInboundMessage): Promise<void> {
    const queue = this.sealQueue as Queue<SealJobData>;
    const jobId = inboundJobId(this.network, message.id, message.to);
    if ((await this.inboundQueue.getJob(jobId)) || (await queue.getJob(jobId))) {
      this.jobs.labels('inbound', 'duplicate').inc();
      return;
    }
    await queue.add('seal', sealJobData(this.sealKey as Buffer, queue.name, jobId, message), {
      jobId,
      attempts: this.o.inboundAttempts,
      backoff: { type: 'exponential', delay: this.o.inboundBackoffMs, jitter: this.o.jitter },
      removeOnComplete: { count: this.o.keepCompleted },
      removeOnFail: { count: this.o.keepFailed },
    });
    this.jobs.labels('seal', 'queued').inc();
  }

  /** The leader's seal job: open the data, seal to the recipient, queue the DELIVER (once: idempotent on the job id). */
  private async processSeal(job: Job<SealJobData>, client: RelayClient): Promise<void> {
    const jobId = String(job.id);
    let message: BridgeInboundMessage;
    try {
      message = openSealJobData(this.sealKey as Buffer, job.queueName, jobId, job.data);
    } catch (err) {
      throw final((err as LibertariaError).code ?? 'FEDERATED_ENVELOPE_INVALID', (err as Error).message);
    }
    if (await this.inboundQueue.getJob(jobId)) {
      // Sealed and queued by an earlier try (or the single-process path): nothing more to do.
      this.jobs.labels('inbound', 'duplicate').inc();
      return;
    }
    await this.sealAndQueue(jobId, message, client);
  }

  /** Scaled out: the leader takes the relay connection, the mailbox and the seal queue; a follower gives them up. */
  private onLeaderChange(leader: boolean): Promise<void> {
    this.leaderGauge.set(leader ? 1 : 0);
    this.leaderChanges.labels(leader ? 'leader' : 'follower').inc();
    this.leaderChange = this.leaderChange.then(() => (leader ? this.lead() : this.follow()));
    return this.leaderChange;
  }

  private async lead(): Promise<void> {
    if (this.closed) return;
    this.o.log.info('this process leads the bridge: it takes the relay connection', { network: this.network });
    const client = this.newClient();
    this.#client = client;
    const worker = new Worker<SealJobData>(sealQueueName(this.network), (job) => this.processSeal(job, client), {
      connection: this.workerConnection ?? {
        url: this.o.redisUrl,
        maxRetriesPerRequest: null,
        connectionName: `bridge-${this.network}-seal`,
      },
      prefix: this.prefix,
      concurrency: this.o.concurrency,
      autorun: false,
      ...this.workerOptions(),
    });
    worker.on('failed', (job, err) => {
      const isFinal =
        err instanceof UnrecoverableError || (job !== undefined && job.attemptsMade >= (job.opts.attempts ?? 1));
      this.jobs.labels('seal', isFinal ? 'failed' : 'retry').inc();
      this.o.log.warn('seal job failed', { job: job?.id, final: isFinal, err: err.message });
    });
    worker.on('completed', () => this.jobs.labels('seal', 'ok').inc());
    worker.on('stalled', (jobId) => {
      this.jobs.labels('seal', 'stalled').inc();
      this.o.log.warn('a seal job stalled (the previous leader died?); BullMQ runs it again', { job: jobId });
    });
    worker.on('error', (err) => this.o.log.warn('seal worker error', { err }));
    this.sealWorker = worker;
    // Not awaited: while the relays are unreachable the client keeps trying, and a lost lease must be able
    // to close it at once (follow() runs after this returns). Seals wait for it inside fetchPrekeys, or retry.
    client.connect().catch((err: unknown) => {
      if (!this.closed && this.sealWorker === worker)
        this.o.log.error('the leader cannot connect to the relays', { err });
    });
    this.mailboxLoop = this.drainMailbox(client);
    void worker.run().catch((err: unknown) => this.o.log.warn('seal worker stopped', { err }));
  }

  private async follow(): Promise<void> {
    const worker = this.sealWorker;
    this.sealWorker = undefined;
    if (worker === undefined) return;
    this.o.log.warn('this process no longer leads the bridge: it gives up the relay connection', {
      network: this.network,
    });
    await worker.close();
    await this.#client.close();
    await this.mailboxLoop;
    this.mailboxLoop = undefined;
  }

  /**
   * Frames that reached the bridge's own mailbox instead of its queue (sent
   * while no relay node knew the registration, or with federation off on a
   * node): sent at once, without the queue's retries, then acknowledged.
   */
  private async drainMailbox(client: RelayClient): Promise<void> {
    try {
      for await (const m of client.messages()) {
        try {
          await this.sendFederated(m.from, toHex(m.messageId), m.payload);
        } catch (err) {
          this.jobs.labels('mailbox', 'failed').inc();
          this.o.log.warn('a message from the mailbox could not be sent', {
            from: m.from,
            err: (err as Error).message,
          });
        }
        await m.ack();
      }
    } catch (err) {
      if (!this.closed) this.o.log.error('mailbox loop ended', { err });
    }
  }

  async health(): Promise<FederationHealth> {
    const counts = async (q: Queue) => {
      try {
        return await q.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed');
      } catch {
        return {};
      }
    };
    const [outbound, inbound] = await Promise.all([counts(this.outboundQueue), counts(this.inboundQueue)]);
    const role = this.leader === undefined ? 'single' : this.leader.isLeader ? 'leader' : 'follower';
    return {
      role,
      relay: role === 'follower' ? 'standby' : this.client.connected ? 'connected' : 'disconnected',
      redis: this.redis.status,
      worker: this.worker?.isRunning() ? 'running' : 'stopped',
      redisEvictionPolicy: this.evictionPolicy,
      outbound,
      inbound,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.registerTimer);
    await this.worker?.close();
    // Scaled out: step down (closing the seal worker and the relay connection) and free the lease for another process.
    await this.leader?.stop();
    await this.leaderChange;
    await this.client.close();
    await this.mailboxLoop;
    await Promise.allSettled([this.outboundQueue.close(), this.inboundQueue.close(), this.sealQueue?.close()]);
    await this.redis.quit().catch(() => undefined);
    await this.workerConnection?.quit().catch(() => undefined);
  }
}
