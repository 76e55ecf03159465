/**
 * Federation on a relay node (docs/bridges.md#federation): the bridge
 * registry, the hand-off of durable SENDs to bridges' outbound queues, and
 * the worker that stores bridged messages from the inbound queue.
 * PeerConnection sees only `bridgeFor` and `handOff` (RelayContext.federation).
 */
import type { BridgeRegistration } from '@libertaria/bridge-kit';
import type { CodecOptions } from '@libertaria/protocol';
import type { Worker } from 'bullmq';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { RelayConfig } from '../config.js';
import type { DurableStore } from '../durable-store.js';
import type { Logger } from '../log.js';
import { createRedisClient, isCluster, type RedisClient, type SharedSubscriber } from '../redis-connection.js';
import type { ReplicaWaiter } from '../replica-wait.js';
import type { DurableAnnouncer } from '../store-and-announce.js';
import { type Dashboard, startDashboard } from './dashboard.js';
import { OutboundHandOff } from './handoff.js';
import { type InboundResult, startInboundWorker } from './inbound-worker.js';
import { BridgeRegistryCache } from './registry.js';

/** What a connection needs: is this destination a bridge, and hand a frame to it. */
export interface FederationHook {
  bridgeFor(dest: Uint8Array): BridgeRegistration | undefined;
  /** The bridge serving a network, for BRIDGE_QUERY. */
  bridgeForNetwork(network: string): BridgeRegistration | undefined;
  /** Resolves once the bridge's queue holds the frame (then ACK); rejects when it could not be added (then NACK). */
  handOff(frame: Buffer, bridge: BridgeRegistration): Promise<void>;
}

export interface FederationDeps {
  readonly nodeId: string;
  /** The node's command connection (fails fast: an ACK must not wait on a reconnect); shared, not closed here. */
  readonly redis: RedisClient;
  /** The node's subscriber (bridge announcements); shared, not closed here. */
  readonly subscriber: SharedSubscriber;
  readonly store: DurableStore;
  /** RELAY_DURABLE_WAIT_REPLICAS > 0: the node's replica waiter; a hand-off is ACKed once replicas hold its job. */
  readonly replicas?: ReplicaWaiter;
  /** The node's router; federation only announces what the inbound worker stored. */
  readonly router: DurableAnnouncer;
  readonly log: Logger;
  readonly registry: Registry;
  readonly codec: CodecOptions;
}

export class RelayFederation implements FederationHook {
  private constructor(
    /** The inbound worker's own connection on a Redis Cluster (closed here); undefined on one server. */
    private readonly workerConnection: RedisClient | undefined,
    readonly bridges: BridgeRegistryCache,
    private readonly outbound: OutboundHandOff,
    private readonly inbound: Worker<unknown, InboundResult>,
    private readonly handOffs: Counter<'network' | 'result'>,
    private readonly log: Logger,
    readonly dashboard: Dashboard | undefined,
  ) {}

  static async start(config: RelayConfig, deps: FederationDeps): Promise<RelayFederation> {
    const prefix = config.RELAY_FEDERATION_PREFIX;
    // The node's own connections: BullMQ queues share the command client, the registry the subscriber.
    const { redis, subscriber } = deps;
    if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve));
    await subscriber.connect();
    const bridges = new BridgeRegistryCache(redis, subscriber, prefix, config.RELAY_FEDERATION_REFRESH_MS, deps.log);
    await bridges.start();
    const handOffs = new Counter({
      name: 'relay_federation_handoffs_total',
      help: 'Durable SENDs to a bridge added to its outbound queue (result ok) or refused (result = error code).',
      labelNames: ['network', 'result'] as const,
      registers: [deps.registry],
    });
    new Gauge({
      name: 'relay_federation_bridges',
      help: 'Bridges in the registry as this node last read it.',
      registers: [deps.registry],
      collect() {
        this.set(bridges.size);
      },
    });
    const inboundJobs = new Counter({
      name: 'relay_federation_inbound_total',
      help: 'Inbound federation jobs handled by this node: stored, duplicate, retry, failed.',
      labelNames: ['result'] as const,
      registers: [deps.registry],
    });
    const retention = {
      keepCompleted: config.RELAY_FEDERATION_KEEP_COMPLETED,
      keepCompletedSeconds: config.RELAY_FEDERATION_KEEP_COMPLETED_SECONDS,
      keepFailed: config.RELAY_FEDERATION_KEEP_FAILED,
      keepFailedSeconds: config.RELAY_FEDERATION_KEEP_FAILED_SECONDS,
    };
    const outbound = new OutboundHandOff(redis, prefix, retention, deps.replicas);
    // BullMQ's workers retry Redis commands forever (maxRetriesPerRequest null): a connection of their own.
    const workerConnection = isCluster(redis)
      ? createRedisClient(
          { url: config.REDIS_URL, clusterNodes: config.REDIS_CLUSTER_NODES },
          { maxRetriesPerRequest: null, connectionName: `relay-inbound:${deps.nodeId}` },
        )
      : undefined;
    workerConnection?.on('error', () => {}); // BullMQ logs its own
    const inbound = startInboundWorker({
      redisUrl: config.REDIS_URL,
      ...(workerConnection ? { connection: workerConnection } : {}),
      prefix,
      nodeId: deps.nodeId,
      concurrency: config.RELAY_FEDERATION_INBOUND_CONCURRENCY,
      ratePerSecond: config.RELAY_FEDERATION_INBOUND_RATE,
      codec: deps.codec,
      store: deps.store,
      router: deps.router,
      registry: bridges,
      log: deps.log,
      onResult: (result) => inboundJobs.labels(result).inc(),
    }) as Worker<unknown, InboundResult>;
    const token = config.RELAY_FEDERATION_DASHBOARD_TOKEN;
    const dashboard =
      token === undefined
        ? undefined
        : await startDashboard({
            redis,
            prefix,
            token,
            host: config.RELAY_HOST,
            port: config.RELAY_FEDERATION_DASHBOARD_PORT,
            refreshMs: config.RELAY_FEDERATION_REFRESH_MS,
          });
    deps.log.info('federation started', { prefix, bridges: bridges.size, dashboard: dashboard?.port ?? null });
    return new RelayFederation(workerConnection, bridges, outbound, inbound, handOffs, deps.log, dashboard);
  }

  /** The bridge serving `network`, for peers that address foreign identities (BRIDGE_QUERY). */
  bridgeForNetwork(network: string): BridgeRegistration | undefined {
    return this.bridges.forNetwork(network);
  }

  bridgeFor(dest: Uint8Array): BridgeRegistration | undefined {
    return this.bridges.lookup(dest);
  }

  async handOff(frame: Buffer, bridge: BridgeRegistration): Promise<void> {
    try {
      await this.outbound.handOff(frame, bridge);
      this.handOffs.labels(bridge.network, 'ok').inc();
    } catch (err) {
      this.handOffs.labels(bridge.network, 'STORE_UNAVAILABLE').inc();
      this.log.warn('federation hand-off failed', { network: bridge.network, err });
      throw err;
    }
  }

  async close(): Promise<void> {
    this.bridges.close();
    await this.dashboard?.close();
    await Promise.allSettled([this.inbound.close(), this.outbound.close()]);
    await this.workerConnection?.quit().catch(() => {});
  }
}
