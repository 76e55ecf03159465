/**
 * Where frames go. Each node keeps the connections of its own peers in
 * memory, keyed by routing hint; the presence registry in Redis says which
 * nodes hold a peer; frames for peers on other nodes travel over Redis
 * pub/sub on the channel of each node that holds the recipient
 * (`<prefix>:node:<nodeId>`; sharded pub/sub on a Redis Cluster), as the
 * same DELIVER bytes. Holders named by Redis scripts are filtered against
 * the presence registry's view of live nodes first.
 *
 * With node links on (node-link.ts), those same frames go straight to
 * the other node over a TCP link, cut at RELAY_NODE_LINK_MESSAGE_BYTES (a
 * link is a stream, delivered from as it is read), and through pub/sub only
 * while no link to that node is ready or the link is backed up.
 *
 * Fast frames prefer local connections and are never stored; when the
 * recipient is connected nowhere the sender gets PEER_GONE. Durable frames
 * are announced to every node holding the recipient when Redis stored them;
 * the announcement is only a shortcut — Redis is the source of truth and
 * each connection re-reads its queue whenever it sees a gap. Frames for one
 * node in one event-loop turn travel as one pub/sub message, cut early at
 * RELAY_CROSS_NODE_MESSAGE_BYTES: the other node can deliver nothing of a
 * message before it has all of it, so smaller messages keep the two nodes
 * and Redis working at once (measured: docs/benchmarks.md).
 *
 * The same channels carry PREKEY_STATUS low-water notices to the nodes that
 * hold a prekey owner: the frame opens with the owner's hint, at the offset
 * where DELIVER has its recipient's.
 */
import {
  encodeFrame,
  FRAME_HEADER_SIZE,
  FrameType,
  HINT_SIZE,
  MIN_ROUTED_FRAME_SIZE,
  PREKEY_STATUS_BODY_SIZE,
  RoutedAt,
  readRoutedPosition,
  routedDest,
  routedFlags,
  routedMessageId,
  SendFlags,
} from '@libertaria/protocol';
import type { Logger } from './log.js';
import type { RelayMetrics } from './metrics.js';
import type { NodeLinkDialer } from './node-link.js';
import type { PeerConnection } from './peer-connection.js';
import { PerTurn } from './per-turn.js';
import type { PresenceRegistry } from './presence.js';
import { publishBinary, type RedisClient } from './redis-connection.js';
import { retainFrame } from './transport/inbound-arena.js';

/** Fast-path lookups of remote peers are cached this long (positive answers only). */
const REMOTE_CACHE_MS = 1000;
const REMOTE_CACHE_MAX = 100_000;

export function nodeChannel(prefix: string, nodeId: string): string {
  return `${prefix}:node:${nodeId}`;
}

export class Router {
  private readonly local = new Map<string, Set<PeerConnection>>();
  private readonly remoteCache = new Map<string, { nodes: string[]; expires: number }>();
  private readonly lookups = new Map<string, Promise<string[]>>();
  /** Frames for each other node waiting for the end of this turn, and their bytes. */
  private readonly outbox = new PerTurn<Map<string, { frames: Buffer[]; bytes: number }>>(
    () => new Map(),
    (outbox) => {
      for (const [node, queued] of outbox) this.flushNode(node, queued.frames);
    },
  );
  /** Direct links to other nodes (RELAY_NODE_LINKS, set by useLinks with their cut); messages take pub/sub where none is ready. */
  private dialer: NodeLinkDialer | undefined;
  /** A node's outbox leaves early once it holds this many bytes: the larger of the two paths' cuts. */
  private outboxBytes: number;

  constructor(
    private readonly redis: RedisClient,
    private readonly presence: PresenceRegistry,
    private readonly nodeId: string,
    private readonly prefix: string,
    private readonly metrics: RelayMetrics,
    private readonly log: Logger,
    /** A pub/sub message leaves once it holds this many bytes (RELAY_CROSS_NODE_MESSAGE_BYTES). */
    private readonly messageBytes: number,
  ) {
    this.outboxBytes = messageBytes;
  }

  /**
   * Sends messages for other nodes over `dialer`'s links, cut at
   * `linkMessageBytes` (RELAY_NODE_LINK_MESSAGE_BYTES) rather than at the
   * pub/sub cut: a link is a stream the other node delivers from as it
   * reads, so its cut only sets how many frames one socket write carries
   * (docs/relay.md#node-links). A message that falls back to pub/sub is
   * cut again there.
   */
  useLinks(dialer: NodeLinkDialer, linkMessageBytes: number): void {
    this.dialer = dialer;
    this.outboxBytes = Math.max(this.messageBytes, linkMessageBytes);
  }

  get links(): NodeLinkDialer | undefined {
    return this.dialer;
  }

  /** Adds an authenticated connection; the first of its peer on this node registers presence. */
  async attach(conn: PeerConnection): Promise<void> {
    let set = this.local.get(conn.hintKey);
    const first = set === undefined;
    if (!set) {
      set = new Set();
      this.local.set(conn.hintKey, set);
      this.metrics.peers.inc();
    }
    // A peer may hold several connections (paths); a new one never replaces an old one.
    set.add(conn);
    if (first) await this.presence.add(conn.hint!);
  }

  detach(conn: PeerConnection): void {
    const set = this.local.get(conn.hintKey);
    if (!set?.delete(conn)) return;
    if (set.size > 0) return;
    this.local.delete(conn.hintKey);
    this.metrics.peers.dec();
    this.presence.remove(conn.hint!).catch((err: unknown) => {
      // The lease expires on its own; a failed removal only delays that.
      this.metrics.redisErrors.labels('presence').inc();
      this.log.debug('presence removal failed', { err });
    });
  }

  isLocal(hintKey: string): boolean {
    return this.local.has(hintKey);
  }

  localHints(): Buffer[] {
    const hints: Buffer[] = [];
    for (const set of this.local.values()) {
      const first = set.values().next().value;
      if (first?.hint) hints.push(first.hint);
    }
    return hints;
  }

  connections(): PeerConnection[] {
    const all: PeerConnection[] = [];
    for (const set of this.local.values()) for (const c of set) all.push(c);
    return all;
  }

  /** Nodes other than this one that hold the peer (fresh from Redis). */
  async lookupRemote(hint: Uint8Array): Promise<string[]> {
    const started = performance.now();
    const nodes = await this.presence.lookup(hint);
    this.metrics.remoteForwardSeconds.observe((performance.now() - started) / 1000);
    return nodes.filter((n) => n !== this.nodeId);
  }

  /** Forwards a fast DELIVER (already retyped from SEND) from `sender`. */
  forwardFast(frame: Buffer, sender: PeerConnection): void {
    const key = frame.toString('latin1', RoutedAt.DEST, RoutedAt.DEST + HINT_SIZE);
    const set = this.local.get(key);
    if (set) {
      for (const conn of set) conn.deliverFast(frame);
      return;
    }
    const cached = this.remoteCache.get(key);
    if (cached && cached.expires > Date.now()) {
      this.publish(cached.nodes, frame);
      return;
    }
    // The frame waits for Redis (turns from now): copied out of a recycled inbound slab (inbound-arena.ts).
    frame = retainFrame(frame);
    // Frames arriving while a lookup for the same recipient is in flight share it.
    let lookup = this.lookups.get(key);
    if (!lookup) {
      lookup = this.lookupRemote(routedDest(frame));
      this.lookups.set(key, lookup);
      const forget = () => this.lookups.delete(key);
      lookup.then(forget, forget);
    }
    // The sender's PONGs wait for this lookup, so a PING after the SEND sees any PEER_GONE first.
    sender.beginAsync();
    lookup.then(
      (nodes) => {
        if (nodes.length === 0) {
          this.metrics.drop('peer_gone');
          sender.sendPeerGone(routedDest(frame), routedMessageId(frame));
        } else {
          if (this.remoteCache.size >= REMOTE_CACHE_MAX) this.remoteCache.clear();
          this.remoteCache.set(key, { nodes, expires: Date.now() + REMOTE_CACHE_MS });
          this.publish(nodes, frame);
        }
        sender.endAsync();
      },
      (err: unknown) => {
        this.metrics.redisErrors.labels('presence').inc();
        this.log.debug('presence lookup failed', { err });
        sender.endAsync();
      },
    );
  }

  /**
   * A durable frame was stored at `position` for the recipient it names: offer it to local
   * connections and announce it to the other nodes that held a presence lease
   * on the recipient when Redis stored it (`holders`, read in the same
   * script). A peer that attaches after that instant registered presence
   * before its RESUME, so its own queue read finds the frame.
   */
  announceDurable(frame: Buffer, position: number, holders: readonly string[]): void {
    const set = this.local.get(frame.toString('latin1', RoutedAt.DEST, RoutedAt.DEST + HINT_SIZE));
    if (set) for (const conn of set) conn.offerDurable(frame, position);
    // Most durable frames go to a recipient held by this node alone, or by no node: nothing to publish,
    // and no arrays made per frame to find that out (issue 18: they were the largest allocation per frame).
    if (!this.anyOtherNode(holders)) return;
    this.publish(
      this.presence.liveHolders(holders).filter((n) => n !== this.nodeId),
      frame,
    );
  }

  private anyOtherNode(holders: readonly string[]): boolean {
    for (let i = 0; i < holders.length; i++) if (holders[i] !== this.nodeId) return true;
    return false;
  }

  /**
   * Sends a PREKEY_STATUS notice (a whole frame, opening with its owner's
   * hint) to every connection of the owner: this node's directly, other
   * `holders` (from the presence registry) over pub/sub. Best effort, like
   * fast frames. Returns how it went, for metrics.
   */
  notifyOwner(frame: Buffer, holders: readonly string[]): 'local' | 'remote' | 'offline' {
    const set = this.local.get(frame.toString('latin1', RoutedAt.DEST, RoutedAt.DEST + HINT_SIZE));
    if (set) for (const conn of set) conn.deliverNotice(frame);
    const remote = this.presence.liveHolders(holders).filter((n) => n !== this.nodeId);
    this.publish(remote, frame);
    return set ? 'local' : remote.length > 0 ? 'remote' : 'offline';
  }

  /** Queues a frame for other nodes; frames for one node in one turn travel as one pub/sub message. */
  private publish(nodes: readonly string[], frame: Buffer): void {
    const outbox = this.outbox.open;
    for (const node of nodes) {
      let queued = outbox.get(node);
      if (queued) {
        queued.frames.push(frame);
        queued.bytes += frame.length;
      } else {
        queued = { frames: [frame], bytes: frame.length };
        outbox.set(node, queued);
      }
      if (queued.bytes >= this.outboxBytes) {
        outbox.delete(node);
        this.flushNode(node, queued.frames);
      }
    }
    if (nodes.length > 0) this.outbox.schedule();
  }

  private flushNode(node: string, frames: Buffer[]): void {
    // ioredis and the link's socket may hold the message past this turn (not yet writable): never an inbound slab's bytes.
    const message = frames.length === 1 ? retainFrame(frames[0]!) : Buffer.concat(frames);
    if (this.dialer?.send(node, message)) {
      this.metrics.crossNodeMessages.link.inc();
      return;
    }
    if (message.length <= this.messageBytes || frames.length === 1) {
      this.publishMessage(node, message);
      return;
    }
    // Cut for a link, this message falls back to pub/sub: cut again as publish() cuts, once a part reaches the pub/sub size.
    let from = 0;
    let offset = 0;
    while (from < frames.length) {
      let to = from + 1;
      let bytes = frames[from]!.length;
      while (to < frames.length && bytes < this.messageBytes) bytes += frames[to++]!.length;
      this.publishMessage(node, message.subarray(offset, offset + bytes));
      offset += bytes;
      from = to;
    }
  }

  private publishMessage(node: string, message: Buffer): void {
    this.metrics.crossNodeMessages.pubsub.inc();
    publishBinary(this.redis, nodeChannel(this.prefix, node), message).catch((err: unknown) => {
      this.metrics.redisErrors.labels('publish').inc();
      this.log.debug('publish failed', { err });
    });
  }

  /** A pub/sub message from another node: one or more whole DELIVER frames back to back. */
  onRemoteMessage(message: Buffer): void {
    let offset = 0;
    while (offset + FRAME_HEADER_SIZE <= message.length) {
      const end = offset + FRAME_HEADER_SIZE + message.readUInt32BE(offset + 2);
      if (end > message.length) break;
      this.onRemoteFrame(message.subarray(offset, end));
      offset = end;
    }
    if (offset !== message.length) this.metrics.drop('bad_remote_message');
  }

  /** A DELIVER frame (or a PREKEY_STATUS notice, or a MIGRATE notice) from another node, by pub/sub or a link. */
  onRemoteFrame(frame: Buffer): void {
    if (frame[1] === FrameType.MIGRATE && frame.length === FRAME_HEADER_SIZE + 16 + 1 + HINT_SIZE) {
      const previousId = frame.subarray(FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + 16);
      const hint = frame.subarray(FRAME_HEADER_SIZE + 17);
      for (const conn of this.local.get(hint.toString('latin1')) ?? []) {
        if (conn.id.equals(previousId)) conn.replacedBy();
      }
      return;
    }
    if (frame[1] === FrameType.PREKEY_STATUS && frame.length === FRAME_HEADER_SIZE + PREKEY_STATUS_BODY_SIZE) {
      const owner = this.local.get(frame.toString('latin1', RoutedAt.DEST, RoutedAt.DEST + HINT_SIZE));
      if (owner) for (const conn of owner) conn.deliverNotice(frame);
      else this.metrics.drop('no_local_recipient');
      return;
    }
    if (frame.length < MIN_ROUTED_FRAME_SIZE || frame[1] !== FrameType.DELIVER) {
      this.metrics.drop('bad_remote_message');
      return;
    }
    const set = this.local.get(frame.toString('latin1', RoutedAt.DEST, RoutedAt.DEST + HINT_SIZE));
    if (!set) {
      this.metrics.drop('no_local_recipient');
      return;
    }
    if ((routedFlags(frame) & SendFlags.DURABLE) !== 0) {
      const position = readRoutedPosition(frame);
      for (const conn of set) conn.offerDurable(frame, position);
    } else {
      for (const conn of set) conn.deliverFast(frame);
    }
  }

  /**
   * A peer's new connection replaces the one with `previousId`: closed here
   * if it is local, else announced to every other node holding the peer (as
   * a MIGRATE frame whose proof field carries the hint). True if closed here.
   */
  closeReplaced(hint: Buffer, previousId: Buffer, by: PeerConnection): boolean {
    for (const conn of this.local.get(hint.toString('latin1')) ?? []) {
      if (conn !== by && conn.id.equals(previousId)) {
        conn.replacedBy();
        return true;
      }
    }
    const notice = Buffer.from(encodeFrame({ type: 'MIGRATE', previousConnectionId: previousId, proof: hint }));
    this.presence
      .lookup(hint)
      .then(
        (nodes) =>
          this.publish(
            nodes.filter((n) => n !== this.nodeId),
            notice,
          ),
        (err: unknown) => {
          this.metrics.redisErrors.labels('presence').inc();
          this.log.debug('presence lookup for a migration failed', { err });
        },
      )
      .catch((err: unknown) => {
        // Nothing above should throw; if it does, it is counted, not left as an unhandled rejection.
        this.metrics.internalErrors.labels('router').inc();
        this.log.error('internal error', { where: 'router', err });
      });
    return false;
  }

  /** Bytes the local connections' transports hold for their peers: the sum and the largest (metrics). */
  outboundBytes(): { total: number; max: number } {
    let total = 0;
    let max = 0;
    for (const set of this.local.values()) {
      for (const conn of set) {
        const n = conn.transport.bufferedBytes();
        total += n;
        if (n > max) max = n;
      }
    }
    return { total, max };
  }

  /** After the pub/sub link was down, announcements may be lost: every connection re-reads its queue. */
  resyncAll(): void {
    for (const set of this.local.values()) for (const conn of set) conn.requestPump();
  }
}
