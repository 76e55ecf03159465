/**
 * The Nostr bridge: the `Bridge` of shared/bridge-kit for Nostr.
 *
 * Outbound private messages are NIP-17: a kind-14 rumor signed by nobody,
 * sealed (kind 13) with the bridged identity's key and gift-wrapped (kind
 * 1059) for the recipient, published to the recipient's kind-10050 inbox
 * relays when it lists some, else to the configured relays. Public notes are
 * kind 1, signed by the bridged key, on the configured relays.
 *
 * Inbound, the configured relays are subscribed for gift wraps and notes that
 * `p`-tag any bridged key (chunked, so no filter grows past a relay's limits);
 * `InboundProcessor` opens, checks and deduplicates them.
 *
 * Every method takes its inputs explicitly and keeps no per-call state beyond
 * the bounded caches below, so a BullMQ worker can call `send` per job: the
 * job id is the frame id, and a retried job republishes the very same gift
 * wrap (cached by frame id), which relays and clients recognise by event id.
 */

import {
  type Bridge,
  BridgeError,
  type BridgeHealth,
  type BridgeInboundHandler,
  type BridgeOutboundMessage,
  BridgeProtocols,
  type BridgeSendResult,
  expectIdentityType,
  type ForeignIdentity,
  nostrIdentity,
} from '@libertaria/bridge-kit';
import { parseDid } from '@libertaria/identity';
import type { EventTemplate, NostrEvent } from 'nostr-tools/core';
import { finalizeEvent, verifyEvent } from 'nostr-tools/pure';
import { RecentIds } from './dedupe.js';
import { InboundProcessor, KIND_TEXT_NOTE } from './inbound.js';
import type { BridgedIdentity, NostrKeys } from './key-store.js';
import { type Logger, silentLogger } from './log.js';
import { BridgeNostrMetrics } from './metrics.js';
import { inboxRelays, KIND_DM_RELAYS, privateMessageRumor } from './nip17.js';
import { giftWrap, KIND_GIFT_WRAP } from './nip59.js';
import { normalizeRelayUrl, RelayConnection, type Signer } from './relay-connection.js';

/** Pubkeys per subscription filter: relays cap filter sizes, so many identities use several REQs. */
const PUBKEYS_PER_FILTER = 256;

export interface NostrBridgeOptions {
  readonly relays: readonly string[];
  readonly keys: NostrKeys;
  readonly metrics?: BridgeNostrMetrics;
  readonly log?: Logger;
  readonly maxTextBytes: number;
  readonly maxMessageBytes: number;
  readonly maxInboxRelays: number;
  readonly publishTimeoutMs: number;
  readonly lookupTimeoutMs: number;
  readonly reconnectInitialMs: number;
  readonly reconnectMaxMs: number;
  readonly pingIntervalMs: number;
  /** Tries of the inbound handler per message, and the first delay between them (doubling). */
  readonly handlerAttempts: number;
  readonly handlerRetryDelayMs: number;
  /** Most bridged keys that answer one NIP-42 AUTH challenge. */
  readonly maxAuthKeys: number;
  readonly dedupeCapacity: number;
  readonly lookbackSeconds: number;
  /**
   * Where the event made for an outbound frame is kept (default: in this
   * process, bounded by dedupeCapacity). Scaled out: Redis, so a retry on
   * any process republishes the same event (RedisWrapCache).
   */
  readonly wrapCache?: WrapCache;
}

/** Events made for outbound frames, by frame id: the first one stored wins, so retries publish the same event. */
export interface WrapCache {
  get(frameId: string): Promise<NostrEvent | undefined>;
  /** Stores `event` unless one is there; returns the one that is there afterwards. */
  putIfAbsent(frameId: string, event: NostrEvent): Promise<NostrEvent>;
}

export class NostrBridge implements Bridge {
  readonly protocol = BridgeProtocols.Nostr;
  readonly metrics: BridgeNostrMetrics;
  private readonly log: Logger;
  private readonly relays: string[];
  private readonly connections = new Map<string, RelayConnection>();
  private readonly inbound: InboundProcessor;
  private readonly seen: RecentIds;
  /** Gift wraps by frame id, so a retried send republishes the same event instead of a second message. */
  private readonly sentWraps = new Map<string, NostrEvent>();
  private handler: BridgeInboundHandler | undefined;
  private started = false;
  private closed = false;

  constructor(private readonly o: NostrBridgeOptions) {
    if (o.relays.length === 0) throw new BridgeError('CONFIG_INVALID', 'the Nostr bridge needs at least one relay');
    this.relays = [...new Set(o.relays.map(normalizeRelayUrl))];
    this.metrics = o.metrics ?? new BridgeNostrMetrics(false);
    this.log = o.log ?? silentLogger;
    this.seen = new RecentIds(o.dedupeCapacity);
    this.metrics.identities.set(o.keys.size);
    // Identities bridged by another process of this bridge: subscribe to their keys too.
    o.keys.onAdded?.(() => {
      this.metrics.identities.set(o.keys.size);
      this.resubscribe();
    });
    this.inbound = new InboundProcessor({
      keys: o.keys,
      seen: this.seen,
      metrics: this.metrics,
      log: this.log,
      maxTextBytes: o.maxTextBytes,
      handler: () => this.handler,
      handlerAttempts: o.handlerAttempts,
      handlerRetryDelayMs: o.handlerRetryDelayMs,
    });
  }

  /** The configured relays, normalized. */
  get relayUrls(): readonly string[] {
    return this.relays;
  }

  onInbound(handler: BridgeInboundHandler): void {
    this.handler = handler;
  }

  private connection(url: string, persistent: boolean): RelayConnection {
    const label = persistent ? url : 'inbox';
    return new RelayConnection({
      url,
      persistent,
      reconnect: {
        initialDelayMs: this.o.reconnectInitialMs,
        maxDelayMs: this.o.reconnectMaxMs,
        multiplier: 2,
        jitter: 0.2,
      },
      timeoutMs: this.o.publishTimeoutMs,
      pingIntervalMs: persistent ? this.o.pingIntervalMs : 0,
      maxMessageBytes: this.o.maxMessageBytes,
      authSigners: () => this.signers(),
      onEvent: (relay, _sub, event) => {
        this.inbound.handle(relay, event).catch((err) => this.log.error('inbound processing failed', { relay, err }));
      },
      onMalformed: (relay, reason) => {
        this.metrics.malformed.labels(reason).inc();
        this.log.debug('malformed relay message', { relay, reason });
      },
      onStateChange: (relay, from, to, attempts) => {
        if (!persistent) return;
        if (to === 'open') {
          this.metrics.connects.labels(label, 'open').inc();
          this.metrics.relayUp.labels(label).set(1);
          this.log.info('relay connected', { relay });
        } else if (from === 'open' || (from === 'connecting' && to === 'backoff')) {
          this.metrics.relayUp.labels(label).set(0);
          if (from === 'connecting') this.metrics.connects.labels(label, 'failed').inc();
          if (to === 'backoff') this.log.warn('relay unreachable; retrying with backoff', { relay, attempts });
        }
      },
      onAuth: (relay, ok, message) => {
        this.metrics.auth.labels(label, ok ? 'accepted' : 'refused').inc();
        if (!ok) this.log.warn('relay refused AUTH', { relay, message });
      },
      onNotice: (relay, message) => this.log.info('relay notice', { relay, message }),
    });
  }

  /**
   * One signer per bridged key, up to `maxAuthKeys` (the first bridged): a
   * relay may serve gift wraps only to their authenticated recipient, but
   * answering one challenge with thousands of AUTH events is not reasonable.
   */
  private signers(): Signer[] {
    const identities: BridgedIdentity[] = [];
    for (const identity of this.o.keys.all()) {
      if (identities.length >= this.o.maxAuthKeys) break;
      identities.push(identity);
    }
    return identities.map((identity) => ({
      pubkey: identity.pubkey,
      sign: (template: EventTemplate) =>
        this.o.keys.withSecretKey(identity.did, (secret) => finalizeEvent(template, secret)),
    }));
  }

  async start(): Promise<void> {
    if (this.closed) throw new BridgeError('BRIDGE_CLOSED', 'the Nostr bridge is closed');
    if (this.started) return;
    this.started = true;
    for (const url of this.relays) {
      const conn = this.connection(url, true);
      this.connections.set(url, conn);
      this.metrics.relayUp.labels(url).set(0);
      conn.start();
    }
    this.resubscribe();
  }

  /** (Re)sends the inbound subscriptions for every bridged key; same ids replace the previous REQs. */
  private resubscribe(): void {
    if (!this.started || this.closed) return;
    const pubkeys = [...this.o.keys.all()].map((i) => i.pubkey);
    const since = Math.floor(Date.now() / 1000) - this.o.lookbackSeconds;
    const chunks = Math.ceil(pubkeys.length / PUBKEYS_PER_FILTER);
    for (const conn of this.connections.values()) {
      for (let i = 0; i < chunks; i++) {
        const p = pubkeys.slice(i * PUBKEYS_PER_FILTER, (i + 1) * PUBKEYS_PER_FILTER);
        conn.subscribe(`bridge-${i}`, [
          { kinds: [KIND_GIFT_WRAP], '#p': p, since },
          { kinds: [KIND_TEXT_NOTE], '#p': p, since },
        ]);
      }
    }
  }

  async bridgeIdentity(localPeer: string, options: { readonly name?: string } = {}): Promise<ForeignIdentity> {
    this.ensureOpen();
    parseDid(localPeer);
    const known = this.o.keys.get(localPeer);
    const identity = await this.o.keys.bridge(localPeer, options.name);
    if (!known) {
      this.metrics.identities.set(this.o.keys.size);
      this.resubscribe();
    }
    return nostrIdentity(identity.pubkey);
  }

  async foreignIdentityOf(localPeer: string): Promise<ForeignIdentity | undefined> {
    const identity = this.o.keys.get(localPeer);
    return identity && nostrIdentity(identity.pubkey);
  }

  private ensureOpen(): void {
    if (this.closed) throw new BridgeError('BRIDGE_CLOSED', 'the Nostr bridge is closed');
  }

  async send(message: BridgeOutboundMessage): Promise<BridgeSendResult> {
    try {
      const result = await this.sendNow(message);
      this.metrics.sends.labels(message.type, 'ok').inc();
      return result;
    } catch (err) {
      const code = err instanceof BridgeError ? err.code : 'INTERNAL';
      this.metrics.sends.labels(message.type, code).inc();
      throw err;
    }
  }

  private async sendNow(message: BridgeOutboundMessage): Promise<BridgeSendResult> {
    this.ensureOpen();
    if (message.type === 'private') expectIdentityType(this.protocol, message.to, 'nostr');
    const from = this.o.keys.get(message.from);
    if (!from) throw new BridgeError('BRIDGE_IDENTITY_UNKNOWN', `${message.from} is not bridged to Nostr`);
    const bytes = Buffer.byteLength(message.text, 'utf8');
    if (bytes > this.o.maxTextBytes) {
      throw new BridgeError(
        'BRIDGE_MESSAGE_TOO_LARGE',
        `the text is ${bytes} bytes; the bridge takes at most ${this.o.maxTextBytes}`,
      );
    }
    switch (message.type) {
      case 'private': {
        const to = message.to as Extract<ForeignIdentity, { type: 'nostr' }>;
        let wrap = await this.cached(message.id);
        if (!wrap) {
          const rumor = privateMessageRumor(from.pubkey, to.pubkeyHex, message.text);
          try {
            wrap = await this.o.keys.withSecretKey(from.did, (secret) => giftWrap(rumor, secret, to.pubkeyHex));
          } catch (err) {
            // NIP-44 refuses plaintexts over 65535 bytes: JSON escaping can grow a text under the limit past it.
            if (err instanceof BridgeError) throw err;
            throw new BridgeError('BRIDGE_MESSAGE_TOO_LARGE', 'the sealed message exceeds what NIP-44 can carry', {
              cause: err,
            });
          }
          wrap = await this.remember(message.id, wrap);
        }
        const inbox = await this.lookupInboxRelays(to.pubkeyHex);
        return this.publish(wrap, inbox.length > 0 ? inbox : this.relays);
      }
      case 'public': {
        let note = await this.cached(message.id);
        if (!note) {
          const template = {
            kind: KIND_TEXT_NOTE,
            created_at: Math.floor(Date.now() / 1000),
            tags: [],
            content: message.text,
          };
          note = await this.o.keys.withSecretKey(from.did, (secret) => finalizeEvent(template, secret));
          note = await this.remember(message.id, note);
        }
        return this.publish(note, this.relays);
      }
      default: {
        const never: never = message;
        throw new BridgeError(
          'BAD_FIELD',
          `unknown outbound message type ${JSON.stringify((never as { type: unknown }).type)}`,
        );
      }
    }
  }

  private async cached(frameId: string): Promise<NostrEvent | undefined> {
    if (this.o.wrapCache) return this.o.wrapCache.get(frameId);
    return this.sentWraps.get(frameId);
  }

  /** Keeps the event made for a frame; returns the one to publish (another process's, if it stored one first). */
  private async remember(frameId: string, event: NostrEvent): Promise<NostrEvent> {
    if (this.o.wrapCache) return this.o.wrapCache.putIfAbsent(frameId, event);
    this.sentWraps.set(frameId, event);
    if (this.sentWraps.size > this.o.dedupeCapacity)
      this.sentWraps.delete(this.sentWraps.keys().next().value as string);
    return event;
  }

  /** The recipient's kind-10050 inbox relays, asked of every configured relay at once. */
  async lookupInboxRelays(pubkey: string): Promise<string[]> {
    const filters = [{ kinds: [KIND_DM_RELAYS], authors: [pubkey], limit: 1 }];
    const answers = await Promise.all(
      [...this.connections.values()].map((conn) => conn.query(filters, this.o.lookupTimeoutMs)),
    );
    const events = answers.flat().filter((e): e is NostrEvent => this.isVerified(e));
    const relays = inboxRelays(events, pubkey, this.o.maxInboxRelays);
    this.metrics.inboxLookups.labels(relays.length > 0 ? 'found' : 'none').inc();
    return relays;
  }

  private isVerified(e: unknown): boolean {
    try {
      return typeof e === 'object' && e !== null && verifyEvent(e as NostrEvent);
    } catch {
      return false;
    }
  }

  /** Publishes to every target at once; throws BRIDGE_UNAVAILABLE (retryable) when none accepted. */
  private async publish(event: NostrEvent, targets: readonly string[]): Promise<BridgeSendResult> {
    const outcomes = await Promise.all(
      targets.map(async (url) => {
        const persistent = this.connections.get(url);
        const conn = persistent ?? this.connection(url, false);
        try {
          return { url, outcome: await conn.publish(event) };
        } finally {
          if (!persistent) conn.close();
        }
      }),
    );
    const acceptedBy: string[] = [];
    const failed: { target: string; reason: string }[] = [];
    for (const { url, outcome } of outcomes) {
      const label = this.connections.has(url) ? url : 'inbox';
      // NIP-01: "duplicate:" is an OK true, or false from some relays: either way the relay holds the event.
      if (outcome.ok || outcome.message.startsWith('duplicate:')) {
        acceptedBy.push(url);
        this.metrics.published.labels(label, 'accepted').inc();
      } else {
        failed.push({ target: url, reason: outcome.message.slice(0, 300) });
        this.metrics.published.labels(label, outcome.message.startsWith('error:') ? 'failed' : 'refused').inc();
      }
    }
    if (failed.length > 0) this.log.warn('relays did not take an event', { event: event.id, failed });
    if (this.closed) throw new BridgeError('BRIDGE_CLOSED', 'the Nostr bridge was closed during the send');
    if (acceptedBy.length === 0) {
      const reasons = failed.map((f) => `${f.target}: ${f.reason}`).join('; ');
      // NIP-01's machine-readable "slow down": the federation worker pauses the queue instead of retrying.
      const rateLimited = failed.some((f) => f.reason.startsWith('rate-limited:'));
      throw new BridgeError('BRIDGE_UNAVAILABLE', `no relay accepted event ${event.id} (${reasons})`, { rateLimited });
    }
    return { foreignId: event.id, acceptedBy, failed };
  }

  health(): BridgeHealth {
    const upstreams = [...this.connections.values()].map((c) => ({
      target: c.url,
      state: c.state,
      attempts: c.attempts,
    }));
    const open = upstreams.filter((u) => u.state === 'open').length;
    const status = this.closed || open === 0 ? 'down' : open === upstreams.length ? 'ok' : 'degraded';
    return { protocol: this.protocol, status, upstreams };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const conn of this.connections.values()) conn.close();
    for (const url of this.connections.keys()) this.metrics.relayUp.labels(url).set(0);
  }
}
