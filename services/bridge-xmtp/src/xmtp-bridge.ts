/**
 * The XMTP bridge: the `Bridge` of shared/bridge-kit for XMTP (V3, MLS).
 *
 * Each bridged DID is an XMTP inbox of its own (identities.ts) with one
 * installation, whose client stays open while the bridge runs: a local
 * SQLCipher database per inbox, opened again (never re-created) on every
 * start. Outbound, a private message goes to the DM between the bridged inbox
 * and the recipient (an address is resolved to its inbox first); inbound is
 * `InboundSync` (inbound.ts).
 *
 * Outbound is idempotent on the Libertaria frame id: the text is first
 * prepared in the local database (XMTP gives its message id before
 * publishing), the frame id → message id pair is written to Redis
 * (`<prefix>:xmtp:sent:<frame id>`, kept `BRIDGE_XMTP_SENT_TTL_SECONDS`), then
 * published. A retried job finds the pair and only publishes what is still
 * unpublished, so a crash between the two steps or a lost acknowledgement
 * never makes a second XMTP message.
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
} from '@libertaria/bridge-kit';
import { type Logger, silentLogger } from '@libertaria/log';
import type { RedisClient, RedisTarget } from '@libertaria/redis';
import { addressIdentity, wipeAccount, type XmtpIdentities } from './identities.js';
import { InboundSync, type SenderPolicy } from './inbound.js';
import { BridgeXmtpMetrics } from './metrics.js';
import type { XmtpClient, XmtpNetwork } from './network.js';

export interface XmtpBridgeOptions {
  readonly network: XmtpNetwork;
  readonly identities: XmtpIdentities;
  readonly redis: RedisClient;
  readonly redisTarget: RedisTarget;
  readonly prefix: string;
  readonly policy: SenderPolicy;
  readonly metrics?: BridgeXmtpMetrics;
  readonly log?: Logger;
  readonly maxTextBytes: number;
  /** How long a frame id → XMTP message id pair is kept for retried jobs, in seconds. */
  readonly sentTtlSeconds: number;
  /** Lets a DID whose installation is recorded register a new one when its database is missing (an operator's choice). */
  readonly allowNewInstallation: boolean;
  /** Interval of the network syncs of every open inbox (the stream's safety net), in milliseconds. */
  readonly syncIntervalMs: number;
  readonly readRatePerSecond: number;
  readonly syncConcurrency: number;
  readonly syncAttempts: number;
  readonly syncBackoffMs: number;
  readonly jitter: number;
  readonly pageSize: number;
  readonly rateLimitPauseMs: number;
  readonly keepFailed: number;
}

interface SentRecord {
  conversationId: string;
  messageId: string;
}

export class XmtpBridge implements Bridge {
  readonly protocol = BridgeProtocols.Xmtp;
  readonly metrics: BridgeXmtpMetrics;
  readonly inbound: InboundSync;
  private readonly log: Logger;
  private readonly clients = new Map<string, Promise<XmtpClient>>();
  private readonly open = new Map<string, XmtpClient>();
  private readonly unwatch = new Map<string, () => void>();
  private readonly failed = new Set<string>();
  private readonly dids = new Set<string>();
  private handler: BridgeInboundHandler | undefined;
  private timer: NodeJS.Timeout | undefined;
  private started = false;
  private closed = false;

  constructor(private readonly o: XmtpBridgeOptions) {
    this.metrics = o.metrics ?? new BridgeXmtpMetrics(false);
    this.log = o.log ?? silentLogger;
    this.inbound = new InboundSync({
      redis: o.redis,
      redisTarget: o.redisTarget,
      prefix: o.prefix,
      metrics: this.metrics,
      log: this.log,
      clientOf: (did) => this.clientOf(did),
      policy: o.policy,
      handler: () => this.handler,
      maxTextBytes: o.maxTextBytes,
      readRatePerSecond: o.readRatePerSecond,
      concurrency: o.syncConcurrency,
      attempts: o.syncAttempts,
      backoffMs: o.syncBackoffMs,
      jitter: o.jitter,
      pageSize: o.pageSize,
      rateLimitPauseMs: o.rateLimitPauseMs,
      keepFailed: o.keepFailed,
    });
  }

  onInbound(handler: BridgeInboundHandler): void {
    this.handler = handler;
  }

  private refreshGauges(): void {
    this.metrics.clients.labels('open').set(this.open.size);
    this.metrics.clients.labels('failed').set(this.failed.size);
    this.metrics.identities.set(this.dids.size);
  }

  /** The open client of a bridged DID, opened on first use; a failed open is tried again on the next call. */
  clientOf(did: string): Promise<XmtpClient> {
    if (this.closed) return Promise.reject(new BridgeError('BRIDGE_CLOSED', 'the XMTP bridge is closed'));
    let pending = this.clients.get(did);
    if (!pending) {
      pending = this.openClient(did);
      this.clients.set(did, pending);
      pending.catch(() => this.clients.delete(did));
    }
    return pending;
  }

  private async openClient(did: string): Promise<XmtpClient> {
    const info = await this.o.identities.get(did);
    if (!info) throw new BridgeError('BRIDGE_IDENTITY_UNKNOWN', `${did} is not bridged to XMTP`);
    const account = await this.o.identities.account(did);
    let client: XmtpClient;
    try {
      client = await this.o.network.open(account, {
        mayCreateInstallation: info.installationId === undefined || this.o.allowNewInstallation,
      });
    } catch (err) {
      this.failed.add(did);
      this.refreshGauges();
      if (err instanceof BridgeError && err.code === 'BRIDGE_STATE_MISSING') {
        this.metrics.installations.labels('missing').inc();
        this.log.error('the local XMTP database of a bridged inbox is missing: restore its volume', {
          did,
          installationId: info.installationId,
        });
      }
      throw err;
    } finally {
      wipeAccount(account);
    }
    if (this.closed) {
      await client.close();
      throw new BridgeError('BRIDGE_CLOSED', 'the XMTP bridge is closed');
    }
    const result =
      info.installationId === undefined
        ? 'created'
        : info.installationId === client.installationId
          ? 'reused'
          : 'changed';
    this.metrics.installations.labels(result).inc();
    if (result === 'changed') {
      this.log.warn('a bridged inbox opened with another installation than the one recorded', {
        did,
        recorded: info.installationId,
        opened: client.installationId,
      });
    }
    await this.o.identities.recordInstallation(did, client.installationId, client.inboxId);
    this.open.set(did, client);
    this.failed.delete(did);
    this.dids.add(did);
    this.refreshGauges();
    this.unwatch.set(
      did,
      client.watch(
        () => void this.inbound.trigger(did, false),
        (err) => {
          this.log.warn('XMTP stream failed; syncing from the network', { did, err });
          void this.inbound.trigger(did, true);
        },
      ),
    );
    this.log.info('XMTP client open', { did, inboxId: client.inboxId, installation: result });
    return client;
  }

  async bridgeIdentity(localPeer: string, _options?: { readonly name?: string }): Promise<ForeignIdentity> {
    if (this.closed) throw new BridgeError('BRIDGE_CLOSED', 'the XMTP bridge is closed');
    const info = await this.o.identities.ensure(localPeer);
    this.dids.add(localPeer);
    this.refreshGauges();
    // Opening registers the inbox on XMTP, which makes it reachable; reading starts with it.
    await this.clientOf(localPeer);
    if (this.started) await this.inbound.trigger(localPeer, true);
    return addressIdentity(info.address);
  }

  async foreignIdentityOf(localPeer: string): Promise<ForeignIdentity | undefined> {
    const info = await this.o.identities.get(localPeer);
    return info === undefined ? undefined : addressIdentity(info.address);
  }

  private sentKey(frameId: string): string {
    return `${this.o.prefix}:xmtp:sent:${frameId}`;
  }

  async send(message: BridgeOutboundMessage): Promise<BridgeSendResult> {
    try {
      const result = await this.sendNow(message);
      return result;
    } catch (err) {
      const e =
        err instanceof BridgeError
          ? err
          : new BridgeError('BRIDGE_UNAVAILABLE', `XMTP send failed: ${(err as Error).message}`, { cause: err });
      if (e.rateLimited) this.metrics.rateLimited.labels('write').inc();
      this.metrics.sends.labels(e.code).inc();
      throw e;
    }
  }

  private async sendNow(message: BridgeOutboundMessage): Promise<BridgeSendResult> {
    if (this.closed) throw new BridgeError('BRIDGE_CLOSED', 'the XMTP bridge is closed');
    if (message.type !== 'private') {
      throw new BridgeError('BRIDGE_PROTOCOL_MISMATCH', 'XMTP has no public posts: only private messages cross it');
    }
    expectIdentityType(this.protocol, message.to, 'xmtp');
    const bytes = Buffer.byteLength(message.text, 'utf8');
    if (bytes > this.o.maxTextBytes) {
      throw new BridgeError(
        'BRIDGE_MESSAGE_TOO_LARGE',
        `the text is ${bytes} bytes; the XMTP bridge takes at most ${this.o.maxTextBytes}`,
      );
    }
    if ((await this.o.identities.get(message.from)) === undefined) {
      throw new BridgeError('BRIDGE_IDENTITY_UNKNOWN', `${message.from} is not bridged to XMTP`);
    }
    const client = await this.clientOf(message.from);
    const accepted = [`xmtp:${this.o.network.name}`];
    const key = this.sentKey(message.id);
    const prior = await this.o.redis.get(key);
    if (prior !== null) {
      const sent = JSON.parse(prior) as SentRecord;
      const published = await client.isPublished(sent.messageId);
      if (published !== undefined) {
        // The same frame again (a retried job, a re-sent SEND): publish what is left, never a second message.
        if (!published) await this.publish(client, sent.conversationId);
        this.metrics.sends.labels('duplicate').inc();
        return { foreignId: sent.messageId, acceptedBy: accepted, failed: [] };
      }
      // The prepared message is gone from the local database (restored from an older copy): prepare it again.
    }
    const to = message.to;
    const peerInboxId = to.kind === 'inbox' ? to.value : await client.findInboxId(to.value);
    if (peerInboxId === undefined) {
      throw new BridgeError('BRIDGE_RECIPIENT_UNREACHABLE', `${to.uri} has no XMTP inbox`);
    }
    const prepared = await client.prepareText(peerInboxId, message.text);
    await this.o.redis.set(
      key,
      JSON.stringify({ conversationId: prepared.conversationId, messageId: prepared.messageId } satisfies SentRecord),
      'EX',
      this.o.sentTtlSeconds,
    );
    await this.publish(client, prepared.conversationId);
    this.metrics.sends.labels('ok').inc();
    return { foreignId: prepared.messageId, acceptedBy: accepted, failed: [] };
  }

  private async publish(client: XmtpClient, conversationId: string): Promise<void> {
    try {
      await client.publish(conversationId);
      this.metrics.published.labels('ok').inc();
    } catch (err) {
      this.metrics.published.labels('failed').inc();
      throw err;
    }
  }

  /** Starts reading every bridged inbox (each opens in its first sync job) and schedules the periodic network syncs. */
  async start(): Promise<void> {
    if (this.closed) throw new BridgeError('BRIDGE_CLOSED', 'the XMTP bridge is closed');
    if (this.started) return;
    this.started = true;
    await this.inbound.start();
    const accounts = await this.o.identities.all();
    for (const info of accounts) this.dids.add(info.did);
    this.refreshGauges();
    // Each inbox opens in its first sync job, not here: with the network down, start does not wait
    // on every inbox in turn, and opening is paced by the read limiter and retried with backoff.
    for (const info of accounts) await this.inbound.trigger(info.did, true);
    this.timer = setInterval(() => {
      for (const did of this.dids) void this.inbound.trigger(did, true);
    }, this.o.syncIntervalMs);
    this.timer.unref();
  }

  health(): BridgeHealth {
    const status = this.closed ? 'down' : this.failed.size === 0 ? 'ok' : 'degraded';
    return {
      protocol: this.protocol,
      status,
      upstreams: [
        {
          target: `xmtp:${this.o.network.name}`,
          state: this.closed ? 'closed' : `${this.open.size} inboxes open, ${this.failed.size} failed`,
          attempts: this.failed.size,
        },
      ],
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.inbound.close();
    for (const stop of this.unwatch.values()) stop();
    await Promise.allSettled([...this.open.values()].map((c) => c.close()));
    this.open.clear();
    this.refreshGauges();
  }
}
