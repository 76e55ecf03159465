/**
 * The relay's Prometheus metrics. Label children are bound once (per frame
 * type and direction, per reason) so counting on the hot path is an array
 * index and an add, not a label-hash lookup.
 */
import { FrameType, type FrameTypeName, frameTypeName } from '@libertaria/shared';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export type Direction = 'in' | 'out';
export type DropReason =
  | 'send_queue_overflow'
  | 'peer_gone'
  | 'rate_limited'
  | 'source_mismatch'
  | 'no_local_recipient';
export type AuthFailureReason = 'bad_signature' | 'timeout' | 'rate_limited' | 'protocol' | 'version';
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
  readonly durableStored: Counter<'result'>;
  readonly durableQueueDepth: Histogram;
  readonly durableStoreSeconds: Histogram;
  readonly remoteForwardSeconds: Histogram;

  private readonly frameChildren: BoundCounter[][] = [[], []];
  private readonly byteChildren: BoundCounter[][] = [[], []];
  private readonly dropChildren = new Map<DropReason, BoundCounter>();

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
    this.frames = new Counter({
      name: 'relay_frames_total',
      help: 'Frames by type and direction',
      labelNames: ['type', 'direction'],
      registers: r,
    });
    this.bytes = new Counter({
      name: 'relay_frame_bytes_total',
      help: 'Frame bytes (header included) by type and direction',
      labelNames: ['type', 'direction'],
      registers: r,
    });
    this.drops = new Counter({
      name: 'relay_drops_total',
      help: 'Frames dropped, by reason',
      labelNames: ['reason'],
      registers: r,
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
    this.durableStored = new Counter({
      name: 'relay_durable_sends_total',
      help: 'Durable sends by result (stored, duplicate, or the refusal code)',
      labelNames: ['result'],
      registers: r,
    });
    this.durableQueueDepth = new Histogram({
      name: 'relay_durable_queue_depth',
      help: "Frames in the recipient's durable queue, observed after each store",
      buckets: [0, 1, 10, 100, 1000, 10000, 100000],
      registers: r,
    });
    this.durableStoreSeconds = new Histogram({
      name: 'relay_durable_store_seconds',
      help: 'Time from receiving a durable SEND to Redis confirming it',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: r,
    });
    this.remoteForwardSeconds = new Histogram({
      name: 'relay_remote_lookup_seconds',
      help: 'Time to look up which nodes hold a recipient that is not on this node',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
      registers: r,
    });
    for (const name of Object.keys(FrameType) as FrameTypeName[]) {
      const t = FrameType[name];
      for (const [d, dir] of (['in', 'out'] as const).entries()) {
        this.frameChildren[d]![t] = this.frames.labels(name, dir);
        this.byteChildren[d]![t] = this.bytes.labels(name, dir);
      }
    }
  }

  /** Counts one frame of the given type byte; unknown types are not counted here (they are protocol errors). */
  frame(type: number, direction: Direction, size: number): void {
    const d = direction === 'in' ? 0 : 1;
    const child = this.frameChildren[d]![type];
    if (child === undefined) return;
    child.inc();
    this.byteChildren[d]![type]!.inc(size);
  }

  drop(reason: DropReason, n = 1): void {
    let child = this.dropChildren.get(reason);
    if (!child) {
      child = this.drops.labels(reason);
      this.dropChildren.set(reason, child);
    }
    child.inc(n);
  }

  typeName(type: number): string {
    return frameTypeName(type) ?? `0x${type.toString(16)}`;
  }
}
