/**
 * N peers, each a real `RelayClient` (the SDK applications use), exchanging
 * durable frames at a steady pace while the chaos suite breaks things.
 *
 * Each peer's application does what a careful application does and no more:
 * - it sends durable frames to a few other peers (frame k of peer i goes to
 *   peer i + 1 + (k mod fanout)), at most `window` unACKed at a time;
 * - a NACK (STORE_UNAVAILABLE while Redis restarts, RATE_LIMITED…) means
 *   "not stored": it sends again with the same message id after a pause,
 *   which the relay treats idempotently;
 * - it acknowledges every message after recording it in the ledger, a
 *   little later (ackDelayMs), without holding up the next message.
 * Everything else (reconnecting, failing over, re-sending unACKed frames,
 * hiding duplicates, RESUME) is the SDK's job, and is what is under test.
 */

import {
  InMemorySessionStore,
  RelayClient,
  type RelayClientOptions,
  randomBytes,
  SessionManager,
} from '@libertaria/client';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import { toHex } from '@libertaria/protocol';
import { encodePayload, type Ledger } from './ledger.js';

export interface FleetOptions {
  size: number;
  /** The relay URLs peer `index` fails over across, in order. */
  relays: (index: number) => string[];
  /** Frames per second each peer's application sends. */
  ratePerPeer: number;
  /** Most unACKed sends per peer before its application waits (default 8). */
  window?: number;
  /** Payload size in bytes, at least 12 (default 64). */
  payloadBytes?: number;
  /** How many different peers each peer sends to (default 3). */
  fanout?: number;
  /** Extra client options for peer `index` (timers, reconnect schedule). */
  clientOptions?: (index: number) => Partial<RelayClientOptions>;
  /** End-to-end sealed payloads (PQXDH + Double Ratchet, in-memory session stores). Default false. */
  sealed?: boolean;
  /** Peers that connect at the same time during start (default 50). */
  connectConcurrency?: number;
  /** Pause before sending again after a NACK, ms (default 250). */
  retryDelayMs?: number;
  /**
   * The receiving application acknowledges a message this long after it got
   * it (default 1 s, longer than a reconnect takes), as one that does some
   * work first. A fault then always finds delivered-but-unacknowledged
   * frames, which the relay redelivers after the reconnect and the SDK must
   * hide (an ACK sent before the reconnect is covered by RESUME instead).
   */
  ackDelayMs?: number;
  ledger: Ledger;
}

export interface ConnectionEvent {
  at: number;
  kind: 'connected' | 'disconnected';
  nodeId?: string;
  error?: string;
}

export class Peer {
  readonly identity = Ed25519Identity.generate();
  readonly did = this.identity.did;
  client!: RelayClient;
  sessions: SessionManager | undefined;
  /** Connected at least once (its application sends only then). */
  online = false;
  /** Node of the current connection (undefined while disconnected). */
  nodeId: string | undefined;
  readonly timeline: ConnectionEvent[] = [];
  outstanding = 0;
  seq = 0;
  /** The last few errors and failed connection attempts, for failure messages. */
  errors: string[] = [];
  receiving: Promise<void> = Promise.resolve();
  constructor(readonly index: number) {}

  /** First disconnect at or after `t`, and the first connect after that disconnect. */
  reconnectAfter(t: number): { lostAt: number; backAt?: number } | undefined {
    const lost = this.timeline.find((e) => e.kind === 'disconnected' && e.at >= t);
    if (lost === undefined) return undefined;
    const back = this.timeline.find((e) => e.kind === 'connected' && e.at >= lost.at);
    return back === undefined ? { lostAt: lost.at } : { lostAt: lost.at, backAt: back.at };
  }

  note(error: string): void {
    this.errors.push(error);
    if (this.errors.length > 10) this.errors.shift();
  }

  disconnectsBetween(from: number, to: number): number {
    return this.timeline.filter((e) => e.kind === 'disconnected' && e.at >= from && e.at <= to).length;
  }
}

export class Fleet {
  readonly peers: Peer[];
  private sending = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly didIndex = new Map<string, number>();
  private readonly window: number;
  private readonly payloadBytes: number;
  private readonly fanout: number;
  private readonly retryDelayMs: number;
  /** Sends waiting to be retried after a NACK: the drain waits for them too. */
  private retrying = 0;

  constructor(private readonly options: FleetOptions) {
    if (options.size < 2) throw new RangeError('a fleet needs at least 2 peers');
    this.window = options.window ?? 8;
    this.payloadBytes = options.payloadBytes ?? 64;
    this.fanout = Math.min(options.fanout ?? 3, options.size - 1);
    this.retryDelayMs = options.retryDelayMs ?? 250;
    this.peers = Array.from({ length: options.size }, (_, i) => new Peer(i));
    for (const p of this.peers) this.didIndex.set(p.did, p.index);
  }

  get ledger(): Ledger {
    return this.options.ledger;
  }

  /**
   * Creates the clients of `peers` (default: all) and connects them,
   * `connectConcurrency` at a time; their receivers start at once. Peers not
   * connected yet are still recipients: frames to them wait in Redis.
   */
  async connect(peers: readonly Peer[] = this.peers): Promise<void> {
    for (const peer of peers) this.createClient(peer);
    const concurrency = this.options.connectConcurrency ?? 50;
    for (let i = 0; i < peers.length; i += concurrency) {
      await Promise.all(peers.slice(i, i + concurrency).map((p) => p.client.connect()));
    }
    // A sealed peer's prekeys must be on the relay before anyone opens a session to it.
    for (const p of peers) await p.sessions?.ensurePublished(p.client);
    for (const peer of peers) {
      peer.receiving = this.receive(peer);
      peer.online = true;
    }
  }

  private createClient(peer: Peer): void {
    peer.sessions = this.options.sealed
      ? new SessionManager({
          identity: peer.identity,
          store: new InMemorySessionStore(),
          provider: nodeCrypto,
          verify: verifyEd25519,
          oneTimePrekeys: 5,
        })
      : undefined;
    peer.client = new RelayClient({
      relays: this.options.relays(peer.index),
      identity: peer.identity,
      // Failed connection attempts are only logged (no event): keep their reasons for the report.
      logger: {
        debug: (message, fields) => {
          if (message === 'relay connection failed') peer.note(`${String(fields?.code)}: ${String(fields?.error)}`);
        },
      },
      ...(peer.sessions === undefined ? { sealing: false } : { sessions: peer.sessions }),
      ...this.options.clientOptions?.(peer.index),
    });
    peer.client.events.on('connected', ({ nodeId }) => {
      peer.nodeId = nodeId;
      peer.timeline.push({ at: Date.now(), kind: 'connected', nodeId });
    });
    peer.client.events.on('disconnected', ({ error }) => {
      peer.nodeId = undefined;
      peer.timeline.push({ at: Date.now(), kind: 'disconnected', ...(error ? { error: error.message } : {}) });
    });
    peer.client.events.on('error', ({ error }) => {
      peer.note(`${error.code}: ${error.message}`);
    });
  }

  private async receive(peer: Peer): Promise<void> {
    try {
      const ackDelayMs = this.options.ackDelayMs ?? 1000;
      for await (const m of peer.client.messages()) {
        this.ledger.delivered(peer.index, this.didIndex.get(m.from), toHex(m.messageId), m.payload);
        setTimeout(() => {
          m.ack().catch((error: Error) => peer.note(`ack failed: ${error.message}`));
        }, ackDelayMs);
      }
    } catch (error) {
      peer.note(`messages() ended: ${(error as Error).message}`);
    }
  }

  /** Every peer sends `ratePerPeer` frames a second (jittered) until stopTraffic(). */
  startTraffic(): void {
    this.sending = true;
    const interval = 1000 / this.options.ratePerPeer;
    for (const peer of this.peers) this.schedule(peer, interval * Math.random(), interval);
  }

  stopTraffic(): void {
    this.sending = false;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private schedule(peer: Peer, delay: number, interval: number): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.sending) return;
      if (peer.online && peer.outstanding < this.window) this.sendNext(peer);
      this.schedule(peer, interval * (0.5 + Math.random()), interval);
    }, delay);
    this.timers.add(timer);
  }

  private sendNext(peer: Peer): void {
    const seq = peer.seq++;
    const to = (peer.index + 1 + (seq % this.fanout)) % this.peers.length;
    const messageId = randomBytes(16);
    const id = toHex(messageId);
    const payload = encodePayload(peer.index, seq, this.payloadBytes);
    this.ledger.sent({ id, from: peer.index, to, seq, sentAt: Date.now() });
    peer.outstanding++;
    const target = this.peers[to]!.did;
    const attempt = (): void => {
      peer.client.send(target, payload, { messageId }).then(
        () => {
          this.ledger.acked(id);
          peer.outstanding--;
        },
        (error: { code?: string; message?: string }) => {
          const code = error.code ?? 'UNKNOWN';
          if (code === 'CLIENT_CLOSED') {
            peer.outstanding--;
            return;
          }
          // A NACK: not stored. Send again with the same id; the relay is idempotent on it.
          this.ledger.nacked(id, code);
          this.retrying++;
          setTimeout(() => {
            this.retrying--;
            attempt();
          }, this.retryDelayMs);
        },
      );
    };
    attempt();
  }

  /** Sends not ACKed yet, across the fleet. */
  outstanding(): number {
    return this.peers.reduce((n, p) => n + p.outstanding, 0);
  }

  /**
   * After stopTraffic(): waits until every send is ACKed and every ACKed
   * frame delivered, or `timeoutMs`. Resolves with how long it took, or
   * undefined if time ran out (the caller reports what is missing).
   */
  async drain(timeoutMs: number): Promise<number | undefined> {
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutMs) {
      if (this.outstanding() === 0 && this.retrying === 0 && this.ledger.pending() === 0) return Date.now() - t0;
      await new Promise((r) => setTimeout(r, 100));
    }
    return undefined;
  }

  /** Peers whose current connection is on `nodeId`. */
  on(nodeId: string): Peer[] {
    return this.peers.filter((p) => p.nodeId === nodeId);
  }

  async close(): Promise<void> {
    this.stopTraffic();
    await Promise.all(this.peers.map((p) => (p.online ? p.client.close() : undefined)));
    await Promise.all(this.peers.map((p) => p.receiving));
  }
}
