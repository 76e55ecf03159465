/**
 * The relay's Prometheus metrics. Per-frame counts (frames and bytes by type
 * and direction) are plain number arrays on the hot path and are folded into
 * the Prometheus counters only when /metrics is scraped: prom-client builds a
 * label key on every inc(), which cost several percent of the fast path.
 */
import { FrameType, type FrameTypeName, frameTypeName } from '@libertaria/protocol';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { BudgetName } from './budgets.js';
import { FastHistogram } from './fast-histogram.js';
import { inboundArena } from './transport/inbound-arena.js';
import { failedFlushes, refusedSends } from './transport/write-batch.js';

export type Direction = 'in' | 'out';
export type DropReason =
  | 'send_queue_overflow'
  | 'peer_gone'
  | 'rate_limited'
  | 'source_mismatch'
  | 'no_local_recipient'
  | 'bad_remote_message'
  | 'membrane';
export type AuthFailureReason = 'bad_signature' | 'bad_stamp' | 'timeout' | 'rate_limited' | 'protocol' | 'version';
export type Transport = 'ws' | 'tcp' | 'tls';

interface BoundCounter {
  inc(n?: number): void;
}

export class RelayMetrics {
  readonly registry = new Registry();
  readonly connections: Gauge<'transport'>;
  readonly peers: Gauge;
  readonly frames: Counter<'type' | 'direction'>;
  readonly bytes: Counter<'type' | 'direction'>;
  readonly drops: Counter<'reason'>;
  readonly authFailures: Counter<'reason'>;
  readonly redisErrors: Counter<'operation'>;
  /** relay_cross_node_messages_total{path}: messages for other nodes, by the way they went. */
  readonly crossNodeMessages: { link: BoundCounter; pubsub: BoundCounter };
  readonly nodeLinks: Gauge<'direction'>;
  readonly nodeLinkFailures: Counter<'direction' | 'reason'>;
  readonly durableStored: Counter<'result'>;
  /** relay_durable_sends_total{result="stored"|"duplicate"}, counted here per frame and exported at scrape. */
  readonly durableStoredCounts = { stored: 0, duplicate: 0 };
  readonly durableQueueDepth: FastHistogram;
  readonly durableStoreSeconds: FastHistogram;
  readonly durableDeliveryAge: FastHistogram;
  readonly durableVanished: Counter;
  readonly remoteForwardSeconds: Histogram;
  readonly prekeyPublishes: Counter<'result'>;
  readonly prekeyFetches: Counter<'result'>;
  readonly prekeyLowNotices: Counter<'route'>;
  readonly anonConnections: Counter<'result'>;
  readonly anonSends: Counter<'result'>;
  readonly onceChecks: Counter<'result'>;
  readonly migrations: Counter<'result'>;
  readonly membraneDecisions: Counter<'action' | 'result'>;
  /** Bugs contained: a throw or rejection that would have escaped a handler (docs/relay.md#containment). */
  readonly internalErrors: Counter<'where'>;
  /** Set by the node: Redis memory as last sampled, and whether durable writes are refused for it. */
  redisMemory: (() => { used: number; max: number; full: boolean }) | undefined;
  /** The node's budget reserve counts (budget-reserves.ts), read at scrape time. */
  budgetReserves: (() => { local: number; reservations: number; exact: number }) | undefined;
  /** Set by the node when the membrane is on: SENDs decided from a connection's cache so far. */
  membraneCacheHits: (() => number) | undefined;
  /** Set by the node: bytes its connections' transports hold for their peers, in all and the most for one. */
  outboundBytes: (() => { total: number; max: number }) | undefined;
  /** The per-connection outbound budget (RELAY_SEND_QUEUE_BYTES), set by the node. */
  readonly outboundBudget: Gauge;
  /** Connections whose durable delivery is paused for room (kept by PeerConnection). */
  pausedDeliveries = 0;
  /** Times durable delivery paused for room. */
  deliveryPauses = 0;
  /** Set by the node: recipients' ACKs its connections hold back now (pending-acks.ts). */
  acksHeld: (() => number) | undefined;

  // [direction][type byte] → totals since start, and what was already reported.
  private readonly frameCounts = [new Float64Array(256), new Float64Array(256)];
  private readonly byteCounts = [new Float64Array(256), new Float64Array(256)];
  private readonly frameReported = [new Float64Array(256), new Float64Array(256)];
  private readonly byteReported = [new Float64Array(256), new Float64Array(256)];
  private readonly dropChildren = new Map<DropReason, BoundCounter>();
  private readonly budgetRefusals: Counter<'budget'>;
  private readonly budgetChildren = new Map<BudgetName, BoundCounter>();
  // [type byte] → frames refused over a rate budget since start, and what was already reported.
  private readonly rateLimitedCounts = new Float64Array(256);
  private readonly rateLimitedReported = new Float64Array(256);
  private rateLimitedTotal = 0;
  private rateLimitedDropsReported = 0;

  constructor(nodeId: string) {
    this.registry.setDefaultLabels({ node: nodeId });
    collectDefaultMetrics({ register: this.registry });
    const r = [this.registry];
    this.connections = new Gauge({
      name: 'relay_connections',
      help: 'Open connections',
      labelNames: ['transport'],
      registers: r,
    });
    this.peers = new Gauge({ name: 'relay_peers', help: 'Distinct authenticated peers on this node', registers: r });
    const metrics = this;
    this.frames = new Counter({
      name: 'relay_frames_total',
      help: 'Frames by type and direction',
      labelNames: ['type', 'direction'],
      registers: r,
      collect() {
        metrics.fold(this, metrics.frameCounts, metrics.frameReported);
      },
    });
    this.bytes = new Counter({
      name: 'relay_frame_bytes_total',
      help: 'Frame bytes (header included) by type and direction',
      labelNames: ['type', 'direction'],
      registers: r,
      collect() {
        metrics.fold(this, metrics.byteCounts, metrics.byteReported);
      },
    });
    let reportedFlushFailures = 0;
    new Counter({
      name: 'relay_write_failures_total',
      help: 'Batched writes that threw because the socket closed under them (their fast frames are lost)',
      registers: r,
      collect() {
        this.inc(failedFlushes - reportedFlushFailures);
        reportedFlushFailures = failedFlushes;
      },
    });
    let reportedRefused = 0;
    new Counter({
      name: 'relay_ws_sends_refused_total',
      help: 'Frames uWS refused over maxBackpressure; kept and sent after its drain (the outbound budget keeps this at 0)',
      registers: r,
      collect() {
        this.inc(refusedSends - reportedRefused);
        reportedRefused = refusedSends;
      },
    });
    let reportedSlabs = 0;
    new Counter({
      name: 'relay_inbound_slabs_allocated_total',
      help: 'Inbound WebSocket buffers (256 KiB) allocated; steady traffic reuses them, so this grows only with the peak in flight',
      registers: r,
      collect() {
        this.inc(inboundArena.stats.allocated - reportedSlabs);
        reportedSlabs = inboundArena.stats.allocated;
      },
    });
    new Gauge({
      name: 'relay_inbound_slabs',
      help: 'Inbound WebSocket buffers (256 KiB each) held: in use or waiting out their turns, and free for reuse',
      labelNames: ['state'],
      registers: r,
      collect() {
        const { inUse, free } = inboundArena.slabs();
        this.labels('in_use').set(inUse);
        this.labels('free').set(free);
      },
    });
    this.outboundBudget = new Gauge({
      name: 'relay_outbound_budget_bytes',
      help: 'Per-connection outbound memory budget (RELAY_SEND_QUEUE_BYTES)',
      registers: r,
    });
    new Gauge({
      name: 'relay_outbound_buffered_bytes',
      help: "Bytes the relay holds for its authenticated connections' outbound (queued this turn and in the socket layer)",
      registers: r,
      collect() {
        this.set(metrics.outboundBytes?.().total ?? 0);
      },
    });
    new Gauge({
      name: 'relay_outbound_buffered_bytes_max',
      help: 'The most bytes held for the outbound of one connection',
      registers: r,
      collect() {
        this.set(metrics.outboundBytes?.().max ?? 0);
      },
    });
    new Gauge({
      name: 'relay_durable_paused_connections',
      help: 'Connections whose durable delivery is paused until their transport drains (their frames wait in Redis)',
      registers: r,
      collect() {
        this.set(metrics.pausedDeliveries);
      },
    });
    new Gauge({
      name: 'relay_durable_acks_held',
      help: "Recipients' ACKs held back while their backlogs are delivered, removed from Redis once the delivery catches up (at most RELAY_DURABLE_ACK_HOLD)",
      registers: r,
      collect() {
        this.set(metrics.acksHeld?.() ?? 0);
      },
    });
    let reportedPauses = 0;
    new Counter({
      name: 'relay_durable_pauses_total',
      help: 'Times durable delivery to a connection paused because its outbound budget was full',
      registers: r,
      collect() {
        this.inc(metrics.deliveryPauses - reportedPauses);
        reportedPauses = metrics.deliveryPauses;
      },
    });
    this.drops = new Counter({
      name: 'relay_drops_total',
      help: 'Frames dropped, by reason',
      labelNames: ['reason'],
      registers: r,
      collect() {
        const delta = metrics.rateLimitedTotal - metrics.rateLimitedDropsReported;
        if (delta > 0) this.labels('rate_limited').inc(delta);
        metrics.rateLimitedDropsReported = metrics.rateLimitedTotal;
      },
    });
    new Counter({
      name: 'relay_rate_limited_total',
      help: "Frames refused over a connection's rate budget (SEND: RELAY_RATE_FRAMES_PER_SECOND; the rest: the control budget), by type",
      labelNames: ['type'],
      registers: r,
      collect() {
        for (const name of Object.keys(FrameType) as FrameTypeName[]) {
          const t = FrameType[name];
          const delta = metrics.rateLimitedCounts[t]! - metrics.rateLimitedReported[t]!;
          if (delta > 0) {
            this.labels(name).inc(delta);
            metrics.rateLimitedReported[t] = metrics.rateLimitedCounts[t]!;
          }
        }
        const other = metrics.rateLimitedOther();
        if (other > 0) this.labels('unknown').inc(other);
      },
    });
    this.authFailures = new Counter({
      name: 'relay_auth_failures_total',
      help: 'Failed handshakes, by reason',
      labelNames: ['reason'],
      registers: r,
    });
    this.redisErrors = new Counter({
      name: 'relay_redis_errors_total',
      help: 'Redis operations that failed',
      labelNames: ['operation'],
      registers: r,
    });
    const crossNode = new Counter({
      name: 'relay_cross_node_messages_total',
      help: 'Messages of frames for other nodes, by path: link (a direct node link) or pubsub (Redis)',
      labelNames: ['path'],
      registers: r,
    });
    this.crossNodeMessages = { link: crossNode.labels('link'), pubsub: crossNode.labels('pubsub') };
    this.nodeLinks = new Gauge({
      name: 'relay_node_links',
      help: 'Node links open now: out (this node sends) and in (this node receives)',
      labelNames: ['direction'],
      registers: r,
    });
    this.nodeLinkFailures = new Counter({
      name: 'relay_node_link_failures_total',
      help: 'Node links that failed, by direction and reason (dial, refused, protocol, lost, stalled, moved, bad_hello, bad_mac, timeout, full, bad_frame)',
      labelNames: ['direction', 'reason'],
      registers: r,
    });
    const storedCounts = this.durableStoredCounts;
    const exported = { stored: 0, duplicate: 0 };
    this.durableStored = new Counter({
      name: 'relay_durable_sends_total',
      help: 'Durable sends by result (stored, duplicate, or the refusal code)',
      labelNames: ['result'],
      registers: r,
      // stored and duplicate are counted per frame in plain numbers (durableStoredCounts) and added
      // here at scrape time: a labelled inc() allocates, which the durable path does per frame.
      collect() {
        for (const result of ['stored', 'duplicate'] as const) {
          const delta = storedCounts[result] - exported[result];
          if (delta > 0) this.labels(result).inc(delta);
          exported[result] = storedCounts[result];
        }
      },
    });
    // Observed once per durable frame: FastHistogram allocates nothing per observation.
    this.durableQueueDepth = new FastHistogram({
      name: 'relay_durable_queue_depth',
      help: "Frames in the recipient's durable queue, observed after each store",
      buckets: [0, 1, 10, 100, 1000, 10000, 100000],
      registers: r,
    });
    this.durableStoreSeconds = new FastHistogram({
      name: 'relay_durable_store_seconds',
      help: 'Time from receiving a durable SEND to Redis confirming it',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: r,
    });
    // Observed once per frame delivered from a queue (a drain writes 100k of them in about a second).
    this.durableDeliveryAge = new FastHistogram({
      name: 'relay_durable_delivery_age_seconds',
      help: 'How long each durable frame waited in its queue, from store to being written to the recipient (redeliveries after a reconnect count again)',
      buckets: [0.01, 0.1, 1, 10, 60, 600, 3600, 21600, 86400, 604800, 2592000],
      registers: r,
    });
    this.durableVanished = new Counter({
      name: 'relay_durable_vanished_frames_total',
      help: 'Frames a delivery read found named in a queue but gone from its hash: acknowledged or expired in between (a few are normal), or lost (a Redis whose maxmemory-policy evicts keys); delivery continues after them',
      registers: r,
    });
    this.remoteForwardSeconds = new Histogram({
      name: 'relay_remote_lookup_seconds',
      help: 'Time to look up which nodes hold a recipient that is not on this node',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
      registers: r,
    });
    this.prekeyPublishes = new Counter({
      name: 'relay_prekey_publishes_total',
      help: 'PREKEY_PUBLISH frames by result (stored, or the refusal code)',
      labelNames: ['result'],
      registers: r,
    });
    this.prekeyFetches = new Counter({
      name: 'relay_prekey_fetches_total',
      help: 'PREKEY_FETCH frames by result: both, x25519_only, kem_only, last_resort, throttled, or the refusal code',
      labelNames: ['result'],
      registers: r,
    });
    this.anonConnections = new Counter({
      name: 'relay_anon_connections_total',
      help: 'Anonymous connections by outcome: welcomed, bad_stamp, disabled, full',
      labelNames: ['result'],
      registers: r,
    });
    this.anonSends = new Counter({
      name: 'relay_anon_sends_total',
      help: 'SENDs on anonymous connections: forwarded, or refused (ANON_NOT_PERMITTED, ANON_LIMIT_REACHED)',
      labelNames: ['result'],
      registers: r,
    });
    this.membraneDecisions = new Counter({
      name: 'relay_membrane_decisions_total',
      help: 'Membrane decisions taken (not cached allows), by action (send, open) and result (OK or the denial code)',
      labelNames: ['action', 'result'],
      registers: r,
    });
    let reportedHits = 0;
    new Counter({
      name: 'relay_membrane_cache_hits_total',
      help: "SENDs allowed from a connection's cache of stateless allows, without a decision",
      registers: r,
      collect() {
        const hits = metrics.membraneCacheHits?.() ?? 0;
        this.inc(hits - reportedHits);
        reportedHits = hits;
      },
    });
    this.migrations = new Counter({
      name: 'relay_migrations_total',
      help: 'MIGRATE frames: closed_local (old path on this node), announced (to the nodes holding the peer), bad_proof',
      labelNames: ['result'],
      registers: r,
    });
    this.onceChecks = new Counter({
      name: 'relay_once_checks_total',
      help: 'ONCE_CHECK frames by result: fresh, seen, or the refusal code',
      labelNames: ['result'],
      registers: r,
    });
    this.prekeyLowNotices = new Counter({
      name: 'relay_prekey_low_notices_total',
      help: 'Low-water PREKEY_STATUS notices by route: local, remote (pub/sub), offline (owner connected nowhere)',
      labelNames: ['route'],
      registers: r,
    });
    this.budgetRefusals = new Counter({
      name: 'relay_budget_refused_total',
      help: 'Requests refused over a storage or connection budget, by budget: sender_frames, sender_bytes, address_frames, address_bytes (DURABLE_BUDGET_EXCEEDED), recipient_prekeys (RECIPIENT_UNKNOWN), redis_memory (STORE_FULL), connections_per_address (ADDRESS_CONNECTION_LIMIT)',
      labelNames: ['budget'],
      registers: r,
    });
    new Counter({
      name: 'relay_budget_charges_total',
      help: "Durable frames charged to their budgets, by how: local (from the connection's reserve, no Redis call), exact (one by one in Redis: no reserve, or the last eighth of a budget); reservations: reserves Redis granted (RELAY_DURABLE_BUDGET_RESERVE_FRAMES)",
      labelNames: ['path'],
      registers: r,
      collect() {
        const stats = metrics.budgetReserves?.();
        if (stats === undefined) return;
        this.reset();
        this.labels('local').inc(stats.local);
        this.labels('exact').inc(stats.exact);
        this.labels('reservations').inc(stats.reservations);
      },
    });
    new Gauge({
      name: 'relay_redis_used_memory_bytes',
      help: "Redis' used_memory as last sampled (INFO memory, every RELAY_REDIS_MEMORY_CHECK_MS)",
      registers: r,
      collect() {
        this.set(metrics.redisMemory?.().used ?? 0);
      },
    });
    new Gauge({
      name: 'relay_redis_maxmemory_bytes',
      help: "Redis' maxmemory as last sampled (0: no limit)",
      registers: r,
      collect() {
        this.set(metrics.redisMemory?.().max ?? 0);
      },
    });
    new Gauge({
      name: 'relay_durable_store_full',
      help: 'Whether durable SENDs are refused with STORE_FULL now (Redis over RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT of maxmemory, or answering OOM)',
      registers: r,
      collect() {
        this.set(metrics.redisMemory?.().full ? 1 : 0);
      },
    });
    this.internalErrors = new Counter({
      name: 'relay_internal_errors_total',
      help: 'Throws and rejections contained instead of escaping, by where: a connection handler (the connection is closed with INTERNAL), the admin port, or the process-level handlers (unhandled_rejection, uncaught_exception)',
      labelNames: ['where'],
      registers: r,
    });
  }

  /** Counts one frame of the given type byte (hot path: two array adds). */
  frame(type: number, direction: Direction, size: number): void {
    const d = direction === 'in' ? 0 : 1;
    this.frameCounts[d]![type]! += 1;
    this.byteCounts[d]![type]! += size;
  }

  /** Adds what was counted since the last scrape to the labelled counter. */
  private fold(counter: Counter<'type' | 'direction'>, counts: Float64Array[], reported: Float64Array[]): void {
    for (const name of Object.keys(FrameType) as FrameTypeName[]) {
      const t = FrameType[name];
      for (const [d, dir] of (['in', 'out'] as const).entries()) {
        const delta = counts[d]![t]! - reported[d]![t]!;
        if (delta > 0) {
          counter.labels(name, dir).inc(delta);
          reported[d]![t] = counts[d]![t]!;
        }
      }
    }
  }

  /**
   * A frame of this type byte refused over a rate budget: relay_rate_limited_total{type} and
   * relay_drops_total{reason="rate_limited"}, both folded in at scrape (a flood must not pay
   * prom-client's label lookup per frame).
   */
  rateLimited(type: number): void {
    this.rateLimitedCounts[type]! += 1;
    this.rateLimitedTotal++;
  }

  /** Refusals of type bytes that name no frame since the last scrape (folded as type="unknown"). */
  private rateLimitedOther(): number {
    let delta = 0;
    for (let t = 0; t < 256; t++) {
      if (frameTypeName(t) !== undefined) continue;
      delta += this.rateLimitedCounts[t]! - this.rateLimitedReported[t]!;
      this.rateLimitedReported[t] = this.rateLimitedCounts[t]!;
    }
    return delta;
  }

  drop(reason: DropReason, n = 1): void {
    let child = this.dropChildren.get(reason);
    if (!child) {
      child = this.drops.labels(reason);
      this.dropChildren.set(reason, child);
    }
    child.inc(n);
  }

  /** One refusal over a budget (label children cached: a flood refused here must stay cheap). */
  budgetRefused(budget: BudgetName): void {
    let child = this.budgetChildren.get(budget);
    if (!child) {
      child = this.budgetRefusals.labels(budget);
      this.budgetChildren.set(budget, child);
    }
    child.inc();
  }

  typeName(type: number): string {
    return frameTypeName(type) ?? `0x${type.toString(16)}`;
  }
}
