/**
 * A relay node: listeners, Redis connections, router, durable store,
 * presence heartbeat, admin port and drain. Holds nothing that must survive
 * it: queues, presence and routes live in Redis.
 */
import { randomBytes } from 'node:crypto';
import { hostname, networkInterfaces } from 'node:os';
import type { Ed25519Identity } from '@libertaria/identity';
import { createRedisMembrane, type RedisMembrane } from '@libertaria/membrane/redis';
import { MAX_TEXT_BYTES, maxBodySize } from '@libertaria/protocol';
import { listenAdmin } from './admin.js';
import { DurableBudgets, KnownRecipients, RedisMemoryGuard } from './budgets.js';
import { type RelayConfig, relayQueueSenderShare } from './config.js';
import { DurableAdmission } from './durable-admission.js';
import { DURABLE_STORE_REDIS_OPTIONS, DurableStore } from './durable-store.js';
import { RelayFederation } from './federation/index.js';
import { InFlightCount } from './in-flight-count.js';
import { createLogger, type Logger } from './log.js';
import { Enforcer } from './membrane/enforcer.js';
import { RelayMetrics } from './metrics.js';
import { LINK_KEY_SIZE, NodeLinkDialer, NodeLinkListener } from './node-link.js';
import { OnceStore } from './once-store.js';
import { outboundCeiling, PeerConnection, PUMP_FETCH_CONCURRENCY } from './peer-connection.js';
import { AckHoldBudget } from './pending-acks.js';
import { PrekeyStore } from './prekey-store.js';
import { PresenceRegistry } from './presence.js';
import { ConcurrencyLimit, ConnectionsPerAddress, HandshakeFailureLimiter, WaitingSlots } from './rate-limits.js';
import { createRedisClient, type RedisClient, SharedSubscriber, SUBSCRIBER_OPTIONS } from './redis-connection.js';
import { registerRedisMetrics } from './redis-metrics.js';
import type { RelayContext } from './relay-context.js';
import { ReplicaWaiter } from './replica-wait.js';
import { nodeChannel, Router } from './router.js';
import { TrustedProxies } from './transport/client-address.js';
import { listenTcp } from './transport/tcp.js';
import type { Listener, TransportSink } from './transport/types.js';
import { listenWebSocket } from './transport/ws.js';

export interface RelayPorts {
  ws: number;
  tcp: number | undefined;
  admin: number;
  /** Where node links are accepted (RELAY_NODE_LINKS), else undefined. */
  link: number | undefined;
}

/** Derives a node id from the host name when RELAY_NODE_ID is unset. */
export function defaultNodeId(): string {
  const host =
    hostname()
      .replace(/[^A-Za-z0-9._-]/g, '-')
      .slice(0, 48) || 'relay';
  return `${host}-${randomBytes(3).toString('hex')}`;
}

/** ioredis options for a connection of this node (see docs/durable-queue.md for why). */
function redisOptions(connectionName: string) {
  return {
    ...DURABLE_STORE_REDIS_OPTIONS,
    connectionName,
    retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 6), 5000),
  };
}

/** What a connection that failed to set up answers to its transport: nothing. */
const CLOSED_SINK: TransportSink = {
  onFrame: () => undefined,
  onProtocolError: () => undefined,
  onDrain: () => undefined,
  onClose: () => undefined,
};

export class RelayNode {
  private draining = false;
  private readonly pendingDurable = new Set<Promise<unknown>>();
  private heartbeat: NodeJS.Timeout | undefined;
  private listeners: Listener[] = [];
  private adminClose: (() => Promise<void>) | undefined;
  private redisErrorLogged = 0;
  /** The readiness write is a script flagged allow-oom (Redis ≥ 7), like presence leases. */
  private healthWriteAllowOom = false;
  ports: RelayPorts = { ws: 0, tcp: undefined, admin: 0, link: undefined };
  private linkListener: NodeLinkListener | undefined;

  private constructor(
    readonly config: RelayConfig,
    readonly nodeId: string,
    readonly log: Logger,
    readonly metrics: RelayMetrics,
    private readonly redis: RedisClient,
    private readonly subscriber: SharedSubscriber,
    private readonly presence: PresenceRegistry,
    readonly router: Router,
    private readonly ctx: RelayContext,
    /** The membrane's stores (policy invalidations come through the node's subscriber); undefined when disabled. */
    readonly membrane: { rm: RedisMembrane } | undefined,
    private readonly federation: RelayFederation | undefined,
    private readonly memoryGuard: RedisMemoryGuard,
  ) {}

  /** `identity`: the node's key (identity-key.ts loads it from the configuration). */
  static async start(config: RelayConfig, identity: Ed25519Identity, logger?: Logger): Promise<RelayNode> {
    const nodeId = config.RELAY_NODE_ID ?? defaultNodeId();
    const log = logger ?? createLogger(config.RELAY_LOG_LEVEL, { node: nodeId });
    const metrics = new RelayMetrics(nodeId);
    const prefix = config.RELAY_REDIS_PREFIX;
    const target = { url: config.REDIS_URL, clusterNodes: config.REDIS_CLUSTER_NODES };
    const redis = createRedisClient(target, redisOptions(`relay:${nodeId}`));
    // One subscriber for every channel the node listens to (its own frames,
    // policy invalidations, bridge announcements), dispatched by channel. It
    // keeps its offline queue (SUBSCRIBE must wait for the connection, not
    // fail) and connects only once the command connection is ready (see
    // connectRedis), so it never races a Redis that is starting.
    const subscriber = new SharedSubscriber(
      createRedisClient(
        target,
        { ...redisOptions(`relay-sub:${nodeId}`), ...SUBSCRIBER_OPTIONS },
        { shardedSubscribers: true },
      ),
    );
    const presence = new PresenceRegistry(redis, { prefix, nodeId, leaseMs: config.RELAY_PRESENCE_TTL_MS });
    // One waiter for every write confirmed to a peer: one WAIT per primary and turn, whatever the kind.
    const replicas =
      config.RELAY_DURABLE_WAIT_REPLICAS > 0
        ? new ReplicaWaiter(redis, config.RELAY_DURABLE_WAIT_REPLICAS, config.RELAY_DURABLE_WAIT_TIMEOUT_MS)
        : undefined;
    const store = new DurableStore(redis, {
      prefix,
      ...(replicas ? { replicas } : {}),
      maxFrames: config.RELAY_QUEUE_MAX_FRAMES,
      ...(config.RELAY_QUEUE_ACKED_IDS !== undefined ? { maxAcked: config.RELAY_QUEUE_ACKED_IDS } : {}),
      maxBytes: config.RELAY_QUEUE_MAX_BYTES,
      maxTtlSeconds: config.RELAY_QUEUE_TTL_SECONDS,
      ...relayQueueSenderShare(config),
      framesPath: config.RELAY_DURABLE_FRAMES_PATH,
    });
    const prekeys = new PrekeyStore(redis, {
      prefix,
      maxOneTime: config.RELAY_PREKEY_MAX_ONE_TIME,
      lowWater: config.RELAY_PREKEY_LOW_WATER,
      targetFetchesPerMinute: config.RELAY_PREKEY_TARGET_FETCHES_PER_MINUTE,
      ttlSeconds: config.RELAY_PREKEY_TTL_SECONDS,
    });
    const router = new Router(redis, presence, nodeId, prefix, metrics, log, config.RELAY_CROSS_NODE_MESSAGE_BYTES);
    metrics.outboundBytes = () => router.outboundBytes();
    metrics.outboundBudget.set(config.RELAY_SEND_QUEUE_BYTES);
    const ackHold = new AckHoldBudget(config.RELAY_DURABLE_ACK_HOLD);
    metrics.acksHeld = () => ackHold.held;
    registerRedisMetrics(metrics.registry, redis);
    const once = new OnceStore(redis, {
      prefix,
      maxRetentionSeconds: config.RELAY_ONCE_MAX_RETENTION_SECONDS,
      ...(replicas ? { replicas } : {}),
    });
    const authLimiter = new HandshakeFailureLimiter({
      perPeer: config.RELAY_AUTH_FAILURES_PER_MINUTE,
      perAddress: config.RELAY_AUTH_FAILURES_PER_ADDRESS_PER_MINUTE,
    });
    let membrane: { rm: RedisMembrane } | undefined;
    let enforcer: Enforcer | undefined;
    if (config.RELAY_MEMBRANE_ENABLED) {
      const whenNoPolicy = config.RELAY_MEMBRANE_DEFAULT === 'open' ? 'allow' : 'deny';
      const rm = createRedisMembrane(redis, subscriber, {
        prefix,
        whenNoPolicy,
        policyCacheEntries: config.RELAY_MEMBRANE_POLICY_CACHE_ENTRIES,
        policyCacheMaxAgeMs: config.RELAY_MEMBRANE_CACHE_MAX_AGE_MS,
        auditMaxEntries: config.RELAY_MEMBRANE_AUDIT_MAX_ENTRIES,
      });
      membrane = { rm };
      enforcer = new Enforcer(rm, {
        whenNoPolicy,
        connectionCacheEntries: config.RELAY_MEMBRANE_CONNECTION_CACHE_ENTRIES,
        cacheMaxAgeMs: config.RELAY_MEMBRANE_CACHE_MAX_AGE_MS,
        ownerCacheEntries: config.RELAY_MEMBRANE_POLICY_CACHE_ENTRIES,
        pendingSends: config.RELAY_MEMBRANE_PENDING_SENDS,
        grantsPerConnection: config.RELAY_MEMBRANE_GRANTS_PER_CONNECTION,
        onDecision: (action, result) => metrics.membraneDecisions.labels(action, result).inc(),
        isStoredDuplicate: (dest, source, messageId) => store.isStored(dest, source, messageId),
        // The federation starts after the enforcer; sends are decided only once both run.
        federatedNetwork: (hint) => federationRef?.bridgeFor(hint)?.network,
      });
      const stats = enforcer.stats;
      metrics.membraneCacheHits = () => stats.cacheHits;
    }
    let federationRef: RelayFederation | undefined;
    const federation = config.RELAY_FEDERATION_ENABLED
      ? await RelayFederation.start(config, {
          nodeId,
          redis,
          subscriber,
          store,
          router,
          ...(replicas ? { replicas } : {}),
          log,
          registry: metrics.registry,
          codec: { maxPayload: config.RELAY_MAX_PAYLOAD_BYTES },
        })
      : undefined;
    federationRef = federation;
    const memoryGuard = new RedisMemoryGuard(redis, {
      percent: config.RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT,
      intervalMs: config.RELAY_REDIS_MEMORY_CHECK_MS,
      onError: () => metrics.redisErrors.labels('memory_info').inc(),
    });
    metrics.redisMemory = () => ({ used: memoryGuard.used, max: memoryGuard.max, full: memoryGuard.full });
    const admission = new DurableAdmission({
      guard: memoryGuard,
      budgets: new DurableBudgets(redis, {
        prefix,
        senderFrames: config.RELAY_DURABLE_FRAMES_PER_SENDER_PER_HOUR,
        senderBytes: config.RELAY_DURABLE_BYTES_PER_SENDER_PER_HOUR,
        addressFrames: config.RELAY_DURABLE_FRAMES_PER_ADDRESS_PER_HOUR,
        addressBytes: config.RELAY_DURABLE_BYTES_PER_ADDRESS_PER_HOUR,
      }),
      recipients: config.RELAY_DURABLE_REQUIRE_PREKEYS
        ? new KnownRecipients({ lookup: (hint) => prekeys.hasPublished(hint) })
        : undefined,
      reserveFrames: config.RELAY_DURABLE_BUDGET_RESERVE_FRAMES,
    });
    metrics.budgetReserves = () => admission.reserves?.stats ?? { local: 0, reservations: 0, exact: 0 };
    let node: RelayNode | undefined;
    const ctx: RelayContext = {
      config,
      nodeId,
      identity,
      log,
      metrics,
      router,
      store,
      prekeys,
      once,
      membrane: enforcer,
      authLimiter,
      anonSlots: new ConcurrencyLimit(config.RELAY_ANON_MAX_CONNECTIONS),
      connectionsPerAddress: new ConnectionsPerAddress(config.RELAY_CONNECTIONS_PER_ADDRESS),
      admission,
      fetchSlots: new WaitingSlots(PUMP_FETCH_CONCURRENCY),
      ackHold,
      ...(federation ? { federation } : {}),
      isDraining: () => node?.draining ?? false,
      trackDurableWrite: (work) => node?.track(work),
      durableWrites: new InFlightCount(),
    };
    node = new RelayNode(
      config,
      nodeId,
      log,
      metrics,
      redis,
      subscriber,
      presence,
      router,
      ctx,
      membrane,
      federation,
      memoryGuard,
    );
    // Links are listed in the node's presence entry, which connectRedis writes first.
    if (config.RELAY_NODE_LINKS) await node.startLinks();
    await node.connectRedis(prefix);
    await memoryGuard.start();
    // Decisions work before this resolves (uncached); it resolves once policy invalidations are heard.
    await membrane?.rm.start();
    await node.listen();
    node.startHeartbeat();
    return node;
  }

  /**
   * Accepts node links (their frames go to the router as pub/sub messages'
   * do) and dials other nodes' links for the router's cross-node messages
   * (node-link.ts, docs/relay.md#node-links).
   */
  private async startLinks(): Promise<void> {
    const c = this.config;
    const key = randomBytes(LINK_KEY_SIZE);
    const host = nodeLinkHost(c);
    const events = {
      failure: (side: 'in' | 'out', reason: string) => this.metrics.nodeLinkFailures.labels(side, reason).inc(),
      links: (side: 'in' | 'out', count: number) => this.metrics.nodeLinks.labels(side).set(count),
    };
    this.linkListener = new NodeLinkListener({
      nodeId: this.nodeId,
      key,
      host,
      port: c.RELAY_NODE_LINK_PORT,
      maxInbound: c.RELAY_NODE_LINK_MAX_INBOUND,
      handshakeTimeoutMs: c.RELAY_NODE_LINK_HANDSHAKE_TIMEOUT_MS,
      maxPayload: c.RELAY_MAX_PAYLOAD_BYTES,
      log: this.log,
      events,
      onFrame: (frame) => {
        try {
          this.router.onRemoteFrame(frame);
        } catch (err) {
          this.internalError('node_link_frame', err);
        }
      },
      // Announcements it carried may be lost, as after a pub/sub reconnect: queues are re-read.
      onLost: () => this.router.resyncAll(),
    });
    const port = await this.linkListener.start().catch((err: unknown) => {
      throw new Error(
        `cannot accept node links on ${host}:${c.RELAY_NODE_LINK_PORT} (${err instanceof Error ? err.message : String(err)}): set RELAY_NODE_LINK_HOST or RELAY_NODE_LINK_PORT, or RELAY_NODE_LINKS=false`,
      );
    });
    this.ports.link = port;
    this.presence.setLink({ host, port, key: key.toString('base64url') });
    const dialer = new NodeLinkDialer({
      nodeId: this.nodeId,
      handshakeTimeoutMs: c.RELAY_NODE_LINK_HANDSHAKE_TIMEOUT_MS,
      bufferBytes: c.RELAY_NODE_LINK_BUFFER_BYTES,
      addressOf: (nodeId) => this.presence.linkOf(nodeId),
      // A restarted node lists a new address; without this, the old one is dialed until the next heartbeat.
      onDialFailure: () => {
        this.presence.refresh().catch(() => this.metrics.redisErrors.labels('presence').inc());
      },
      log: this.log,
      events,
    });
    this.router.useLinks(dialer, c.RELAY_NODE_LINK_MESSAGE_BYTES);
    this.log.info('accepting node links', { host, port });
  }

  /** A throw or rejection contained outside any connection: counted and logged, the node carries on. */
  internalError(where: string, err: unknown): void {
    this.metrics.internalErrors.labels(where).inc();
    this.log.error('internal error', { where, err });
  }

  private track(work: Promise<unknown>): void {
    this.pendingDurable.add(work);
    const done = (): void => {
      this.pendingDurable.delete(work);
    };
    // Both ways: a derived promise of a rejected `work` would otherwise be an unhandled rejection.
    work.then(done, done);
  }

  private async connectRedis(prefix: string): Promise<void> {
    const onError = (which: string) => (err: Error) => {
      this.metrics.redisErrors.labels(`connection_${which}`).inc();
      // Reconnect attempts repeat the same error; log the first few, then every hundredth.
      if (this.redisErrorLogged++ < 5 || this.redisErrorLogged % 100 === 0) {
        this.log.warn('redis connection error', { which, err });
      }
    };
    this.redis.on('error', onError('command'));
    // Without an offline queue, commands before 'ready' would fail: serve only once Redis answers.
    if (this.redis.status !== 'ready') {
      this.log.info('waiting for redis', { url: redactUrl(this.config.REDIS_URL) });
      await new Promise<void>((resolve) => this.redis.once('ready', () => resolve()));
    }
    this.subscriber.connection.on('error', onError('subscriber'));
    let subscribedOnce = false;
    this.subscriber.on('ready', () => {
      // ioredis re-subscribes by itself; announcements sent meanwhile are lost, so re-read queues.
      if (subscribedOnce) this.router.resyncAll();
    });
    await this.checkEvictionPolicy();
    await this.subscriber.connect();
    await this.subscriber.subscribeBinary(nodeChannel(prefix, this.nodeId), (message) => {
      try {
        this.router.onRemoteMessage(message);
      } catch (err) {
        // A throw here would land in ioredis's parser; this message is lost, the link stays.
        this.internalError('remote_message', err);
      }
    });
    await this.checkAllowOom();
    // Which way durable frames reach Redis (docs/durable-queue.md#enqueue), asked now so the log says it.
    await this.ctx.store.whichFramesPath().then(
      (path) => this.log.info('durable frames path', { path }),
      (err: unknown) =>
        this.log.warn('durable frames path not known yet: asked again at the first durable frame', { err }),
    );
    subscribedOnce = true;
    // Listed (and a previous process of this node id swept) before any peer is served.
    await this.presence.announceNode(this.publicUrls());
  }

  /**
   * Redis 7 lets a script declare `allow-oom`: presence leases (and the
   * readiness write) then keep working when Redis is at maxmemory, so a full
   * Redis refuses durable frames (STORE_FULL) but not handshakes. Older Redis
   * has no such flag: there only the memory reserve
   * (RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT) keeps room for presence.
   */
  private async checkAllowOom(): Promise<void> {
    try {
      const info = await this.redis.info('server');
      const major = Number(/^redis_version:(\d+)\./m.exec(info)?.[1] ?? 0);
      if (major >= 7) {
        this.presence.enableAllowOom();
        this.redis.defineCommand(HEALTH_WRITE, { numberOfKeys: 1, lua: HEALTH_WRITE_LUA });
        this.healthWriteAllowOom = true;
      } else {
        this.log.warn('redis older than 7: presence cannot be written once redis is at maxmemory', { major });
      }
    } catch (err) {
      this.log.warn('cannot read the redis version; presence uses scripts without allow-oom', { err });
    }
  }

  /** Evicting queue keys would silently lose acknowledged frames: say so loudly. */
  private async checkEvictionPolicy(): Promise<void> {
    try {
      const reply = (await this.redis.config('GET', 'maxmemory-policy')) as string[];
      const policy = reply[1];
      if (policy !== undefined && policy !== 'noeviction') {
        this.log.warn('redis maxmemory-policy is not noeviction: durable frames may be evicted under memory pressure', {
          policy,
        });
      }
    } catch {
      // Managed Redis often forbids CONFIG; nothing to check then.
    }
  }

  private async listen(): Promise<void> {
    const c = this.config;
    const maxBody = maxBodySize(c.RELAY_MAX_PAYLOAD_BYTES);
    const accept = (transport: ConstructorParameters<typeof PeerConnection>[1]): TransportSink => {
      try {
        return new PeerConnection(this.ctx, transport);
      } catch (err) {
        // A bug while setting a connection up: drop that socket, not the listener's callback (or the process).
        this.internalError('accept', err);
        transport.destroy();
        return CLOSED_SINK;
      }
    };
    // uWS idle timeouts have a 4 s granularity; peers are told to send something every heartbeat.
    const idleSeconds = Math.max(8, Math.ceil((3 * c.RELAY_HEARTBEAT_MS) / 4000) * 4);
    const ws = await listenWebSocket(
      {
        host: c.RELAY_HOST,
        port: c.RELAY_WS_PORT,
        maxBody,
        maxMessageBytes: Math.min(16 * 1024 * 1024, Math.max(1024 * 1024, 16 * (maxBody + 6))),
        // Above the most a connection may hold (outboundCeiling) plus uWS's
        // per-message headers: uWS never has to refuse a send.
        maxBackpressure: outboundCeiling(c) + 1024 * 1024,
        idleTimeoutSeconds: idleSeconds,
        trustedProxies: c.RELAY_TRUSTED_PROXIES ? new TrustedProxies(c.RELAY_TRUSTED_PROXIES) : undefined,
        poisonRecycled: c.RELAY_DEBUG_POISON_RECYCLED,
      },
      accept,
    );
    this.listeners.push(ws);
    this.ports.ws = ws.port;
    if (c.RELAY_TCP_ENABLED) {
      const tls =
        c.RELAY_TLS_CERT_FILE && c.RELAY_TLS_KEY_FILE
          ? { certFile: c.RELAY_TLS_CERT_FILE, keyFile: c.RELAY_TLS_KEY_FILE }
          : undefined;
      const tcp = await listenTcp(
        {
          host: c.RELAY_HOST,
          port: c.RELAY_TCP_PORT,
          maxPayload: c.RELAY_MAX_PAYLOAD_BYTES,
          tls,
          idleTimeoutMs: idleSeconds * 1000,
        },
        accept,
      );
      this.listeners.push(tcp);
      this.ports.tcp = tcp.port;
    }
    const audit = this.membrane?.rm.audit;
    const rm = this.membrane?.rm;
    const admin = await listenAdmin(c.RELAY_HOST, c.RELAY_ADMIN_PORT, {
      identity: { did: this.ctx.identity.did, didKey: this.ctx.identity.didKey },
      registry: this.metrics.registry,
      readiness: () => this.readiness(),
      onInternalError: (err) => this.internalError('admin', err),
      ...(audit !== undefined && c.RELAY_ADMIN_TOKEN !== undefined
        ? { membraneAudit: { token: c.RELAY_ADMIN_TOKEN, query: (q) => audit.query(q) } }
        : {}),
      ...(rm !== undefined && c.RELAY_ADMIN_TOKEN !== undefined
        ? {
            membraneAdmin: {
              token: c.RELAY_ADMIN_TOKEN,
              setTrust: (did, score) => rm.trust.set(did, score),
              removeTrust: (did) => rm.trust.remove(did),
              revoke: (cid, untilMs) => rm.revocations.revoke(cid, untilMs),
            },
          }
        : {}),
    });
    this.ports.admin = admin.port;
    this.adminClose = () => new Promise((resolve) => admin.server.close(() => resolve()));
  }

  /** RELAY_PUBLIC_URLS, each carrying this node's DID as its fragment (unless it names one) so a client pins the node it is sent to. */
  private publicUrls(): string[] {
    const did = this.ctx.identity.did;
    return (this.config.RELAY_PUBLIC_URLS?.split(',') ?? []).map((u) => (u.includes('#') ? u : `${u}#${did}`));
  }

  /** The node's relay identity (its DID signs every CHALLENGE). */
  get did(): string {
    return this.ctx.identity.did;
  }

  private startHeartbeat(): void {
    const beat = async (): Promise<void> => {
      try {
        // One pipeline on one key (renew this node's lease, read the others'), whatever the number of peers.
        await this.presence.renew();
        this.router.links?.prune((nodeId) => this.presence.isLive(nodeId));
      } catch (err) {
        this.metrics.redisErrors.labels('heartbeat').inc();
        this.log.warn('heartbeat failed', { err });
      }
    };
    void beat();
    this.heartbeat = setInterval(() => void beat(), this.config.RELAY_HEARTBEAT_MS);
  }

  /** Null when ready; otherwise why not. Checks that Redis accepts a write, not only that a socket is open. */
  async readiness(): Promise<string | null> {
    if (this.draining) return 'draining';
    if (this.redis.status !== 'ready') return `redis ${this.redis.status}`;
    try {
      const key = `${this.config.RELAY_REDIS_PREFIX}:health:${this.nodeId}`;
      // Ready means this node can register presence: at maxmemory that is still true (allow-oom),
      // and durable SENDs get STORE_FULL rather than the whole node being taken out of service.
      const write = this.healthWriteAllowOom
        ? (this.redis as unknown as HealthCommands)[HEALTH_WRITE](key, 10_000)
        : this.redis.set(key, '1', 'PX', 10_000);
      const reply = await withTimeout(write, 1000);
      return reply === 'OK' ? null : `redis answered ${String(reply)}`;
    } catch (err) {
      return `redis write failed: ${err instanceof Error ? err.message : String(err)}`;
    }
  }

  /**
   * SIGTERM: stop being ready and accepting, tell every peer where to go
   * (GOAWAY with the other live nodes' URLs), wait up to half of
   * RELAY_DRAIN_TIMEOUT_MS for peers to leave, let durable writes in flight
   * finish, close the remaining connections, withdraw presence. The caller
   * bounds the total time (RELAY_DRAIN_TIMEOUT_MS).
   */
  async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    this.log.info('draining', {
      connections: this.router.connections().length,
      pending: this.pendingDurable.size + this.ctx.durableWrites.size,
    });
    for (const l of this.listeners) l.stopAccepting();
    let hint = '';
    try {
      const others = (await withTimeout(this.presence.liveNodes(), 1000)).filter((n) => n.nodeId !== this.nodeId);
      // Whole URLs only, as many as GOAWAY's text field holds (MAX_TEXT_BYTES UTF-8 bytes).
      for (const url of others.flatMap((n) => n.publicUrls)) {
        const next = hint === '' ? url : `${hint},${url}`;
        if (Buffer.byteLength(next) > MAX_TEXT_BYTES) break;
        hint = next;
      }
    } catch {
      // Without the registry the hint stays empty: "any relay you know".
    }
    for (const conn of this.router.connections()) {
      // Spread reconnects over half a second so survivors don't take the whole storm at once.
      conn.goAway(Math.floor(Math.random() * 500), hint, 'draining');
    }
    // Give peers up to half the drain budget to leave by themselves (they got
    // GOAWAY); frames they send meanwhile are still served.
    const graceEnds = Date.now() + this.config.RELAY_DRAIN_TIMEOUT_MS / 2;
    while (this.router.connections().length > 0 && Date.now() < graceEnds) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await Promise.allSettled([...this.pendingDurable, this.ctx.durableWrites.idle()]);
    const hints = this.router.localHints();
    for (const conn of this.router.connections()) conn.close();
    await Promise.allSettled([...this.pendingDurable, this.ctx.durableWrites.idle()]);
    clearInterval(this.heartbeat);
    this.memoryGuard.stop();
    // Unused budget reserves go back, so this node's senders are not charged for frames never stored.
    await withTimeout(this.ctx.admission.close(), 1000).catch((err: unknown) =>
      this.log.warn('budget reserves not given back; they count until their window ends', { err }),
    );
    try {
      await withTimeout(this.presence.withdraw(hints), 1000);
    } catch (err) {
      this.log.warn('presence withdraw failed; leases will expire', { err });
    }
    this.router.links?.close();
    this.linkListener?.close();
    await this.adminClose?.();
    this.ctx.membrane?.stop();
    await this.membrane?.rm.stop().catch(() => {});
    if (this.federation) {
      // Closing BullMQ waits for Redis; a drain while Redis is down must not hang on it.
      await withTimeout(this.federation.close(), 2000).catch((err: unknown) =>
        this.log.warn('federation did not close in time', { err }),
      );
    }
    await Promise.allSettled([this.redis.quit(), this.subscriber.quit()]);
    this.log.info('drained');
  }
}

/** The readiness write as a script that Redis runs at maxmemory too (the presence lease's flag). */
const HEALTH_WRITE = 'libertariaHealthWrite';
const HEALTH_WRITE_LUA = `#!lua flags=allow-oom
return redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
`;
type HealthCommands = { [HEALTH_WRITE]: (key: string, ms: number) => Promise<unknown> };

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/**
 * The address node links are accepted on and announced at: RELAY_NODE_LINK_HOST,
 * else RELAY_HOST when it names one address, else the first non-internal IPv4
 * address (what other pods or containers reach), else loopback.
 */
export function nodeLinkHost(config: Pick<RelayConfig, 'RELAY_NODE_LINK_HOST' | 'RELAY_HOST'>): string {
  if (config.RELAY_NODE_LINK_HOST !== undefined) return config.RELAY_NODE_LINK_HOST;
  if (config.RELAY_HOST !== '0.0.0.0' && config.RELAY_HOST !== '::') return config.RELAY_HOST;
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

/** A Redis URL without its password, for logs. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'invalid URL';
  }
}
