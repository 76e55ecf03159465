/**
 * The ActivityPub bridge (docs/bridges.md#activitypub): bridged Libertaria
 * peers as fediverse actors, on Fedify (`federation.ts` builds the Fedify
 * side; `inbox.ts` handles what arrives).
 *
 * Outbound, a private message is a Mastodon-style direct message: a
 * `Create(Note)` addressed to the recipient's actor only, with a `Mention`
 * tag for it, replying (`inReplyTo`) to the last note that account sent the
 * peer, delivered by the bridge at once to the recipient's inbox, signed
 * (HTTP Signatures, RSA; an Ed25519 Object Integrity Proof). It runs inside
 * the federation's BullMQ outbound job, whose retries carry it: a failure
 * that may clear (the remote down, 5xx, 401 while the remote cannot fetch our
 * key yet) is a retryable BridgeError, 404 and 410 end the job
 * (`retryable: false`), and 429 is `rateLimited` with the remote's
 * `Retry-After` (capped), which pauses the bridge's outbound queue without
 * spending an attempt. A public message is a `Note` to the public and the
 * actor's followers, fanned out through Fedify's queue (BullMQ as well).
 */
import type { Context, Federation } from '@fedify/fedify';
import { SendActivityError } from '@fedify/fedify';
import { Create, Mention, Note, PUBLIC_COLLECTION } from '@fedify/fedify/vocab';
import { Temporal } from '@js-temporal/polyfill';
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
import type { Logger } from '@libertaria/log';
import type { RedisClient, RedisTarget } from '@libertaria/redis';
import type { Actor, ActorStore } from './actors.js';
import { BullMqMessageQueue } from './bullmq-message-queue.js';
import { createBridgeFederation } from './federation.js';
import { textToHtml } from './html-text.js';
import { type BridgeActivityPubMetrics, failureReason } from './metrics.js';
import { RemoteAccountError, RemoteAccounts } from './remote.js';
import { BridgeState } from './state.js';

/** What the bridge asks before it takes a foreign sender's message or follow (the bridge kit's ForeignSenderPolicy). */
export interface ForeignSenderDecider {
  decide(
    owner: string,
    sender: ForeignIdentity,
    action: 'message' | 'follow',
  ): Promise<{ readonly allowed: boolean; readonly reason: string }>;
}

export interface ActivityPubBridgeOptions {
  /** Public origin, `https://host[:port]`. */
  readonly origin: string;
  /** A client from @libertaria/redis: followers, threads, Fedify's cache, account cache. */
  readonly redis: RedisClient;
  /** Where Redis is, for the Fedify queue's own connections. */
  readonly redisTarget: RedisTarget;
  /** The federation prefix (`{lr-bridge}`). */
  readonly prefix: string;
  readonly actors: ActorStore;
  readonly policy: ForeignSenderDecider;
  /** 32 bytes sealing Fedify's queued messages (they carry private keys). */
  readonly messageKey: Uint8Array;
  /** TESTS ONLY: plain HTTP and private addresses (logged loudly by the service). */
  readonly insecure: boolean;
  readonly maxTextBytes: number;
  readonly maxFollowers: number;
  readonly fetchTimeoutMs: number;
  readonly maxFetchBytes: number;
  readonly accountCacheSeconds: number;
  readonly threadSeconds: number;
  readonly signatureWindowSeconds: number;
  readonly maxRetryAfterMs: number;
  readonly queueAttempts: number;
  readonly queueBackoffMs: number;
  readonly queueJitter: number;
  readonly queueConcurrency: number;
  readonly keepCompleted: number;
  readonly keepFailed: number;
  readonly metrics: BridgeActivityPubMetrics;
  readonly log: Logger;
}

export const USER_AGENT = 'LibertariaBridge/0.1 (ActivityPub; +https://github.com/libertaria)';

function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/** Seconds a 429's Retry-After asks for, in ms (delta seconds or an HTTP date), or undefined. */
export function retryAfterMs(headers: Headers | undefined, nowMs = Date.now()): number | undefined {
  const value = headers?.get('retry-after')?.trim();
  if (!value) return undefined;
  if (/^\d{1,9}$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

export class ActivityPubBridge implements Bridge {
  readonly protocol = BridgeProtocols.ActivityPub;
  readonly federation: Federation<void>;
  readonly queue: BullMqMessageQueue;
  readonly accounts: RemoteAccounts;
  readonly state: BridgeState;
  private handler: BridgeInboundHandler | undefined;
  private started = false;
  private closed = false;
  private readonly stopQueue = new AbortController();
  private queueRunning: Promise<void> | undefined;
  private readonly pending = new Set<AbortController>();

  constructor(readonly o: ActivityPubBridgeOptions) {
    this.queue = new BullMqMessageQueue({
      redis: o.redisTarget,
      name: 'activitypub-fedify',
      prefix: o.prefix,
      messageKey: o.messageKey,
      attempts: o.queueAttempts,
      backoffMs: o.queueBackoffMs,
      jitter: o.queueJitter,
      concurrency: o.queueConcurrency,
      keepCompleted: o.keepCompleted,
      keepFailed: o.keepFailed,
      log: o.log,
    });
    this.accounts = new RemoteAccounts({
      redis: o.redis,
      prefix: o.prefix,
      insecure: o.insecure,
      timeoutMs: o.fetchTimeoutMs,
      maxBytes: o.maxFetchBytes,
      cacheSeconds: o.accountCacheSeconds,
      userAgent: USER_AGENT,
    });
    this.state = new BridgeState(o.redis, o.prefix);
    this.federation = createBridgeFederation(this, this.queue);
    o.metrics.gauge(
      'bridge_activitypub_actors',
      'Bridged actors held in the sealed store (the instance actor included)',
      async () => ({ all: await o.actors.count() }),
      'scope',
    );
    o.metrics.gauge(
      'bridge_activitypub_queue_jobs',
      "Jobs in Fedify's BullMQ queue (inbox activities, Accept/Reject, notes to followers), by state",
      async () => {
        const counts = await this.queue.queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed');
        return counts as Record<string, number>;
      },
    );
  }

  /** The inbound handler; activities for bridged peers wait (and are retried by the queue) until it is set. */
  get inboundHandler(): BridgeInboundHandler | undefined {
    return this.handler;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  onInbound(handler: BridgeInboundHandler): void {
    this.handler = handler;
  }

  /** Serves one HTTP request (WebFinger, actors, inboxes, collections, NodeInfo). */
  fetch(request: Request): Promise<Response> {
    return this.federation.fetch(request, {
      contextData: undefined,
      onNotFound: () => new Response('Not Found', { status: 404 }),
      onNotAcceptable: () => new Response('Not Acceptable', { status: 406 }),
    });
  }

  context(): Context<void> {
    return this.federation.createContext(new URL(this.o.origin), undefined);
  }

  async start(): Promise<void> {
    if (this.closed) throw new BridgeError('BRIDGE_CLOSED', 'the ActivityPub bridge is closed');
    if (this.started) return;
    this.started = true;
    await this.o.actors.instance();
    this.queueRunning = this.federation.startQueue(undefined, { signal: this.stopQueue.signal });
    this.queueRunning.catch((err: unknown) => this.o.log.error('fedify queue stopped', { err }));
  }

  async bridgeIdentity(localPeer: string, options?: { readonly name?: string }): Promise<ForeignIdentity> {
    const actor = await this.o.actors.bridge(localPeer, options?.name);
    return this.identityOf(actor);
  }

  async foreignIdentityOf(localPeer: string): Promise<ForeignIdentity | undefined> {
    const actor = await this.o.actors.byDid(localPeer);
    return actor ? this.identityOf(actor) : undefined;
  }

  identityOf(actor: Actor): ForeignIdentity {
    const host = new URL(this.o.origin).host;
    return { type: 'activitypub', kind: 'acct', uri: `acct:${actor.handle}@${host}`, user: actor.handle, host };
  }

  /** `<origin>/users/<handle>`. */
  actorUri(actor: Actor): URL {
    return this.context().getActorUri(actor.handle);
  }

  async send(message: BridgeOutboundMessage): Promise<BridgeSendResult> {
    try {
      const result = await this.sendChecked(message);
      this.o.metrics.sends.labels(message.type, 'ok').inc();
      return result;
    } catch (err) {
      this.o.metrics.sends.labels(message.type, err instanceof BridgeError ? err.code : 'INTERNAL').inc();
      throw err;
    }
  }

  private async sendChecked(message: BridgeOutboundMessage): Promise<BridgeSendResult> {
    if (this.closed) throw new BridgeError('BRIDGE_CLOSED', 'the ActivityPub bridge is closed');
    if (message.type === 'private') expectIdentityType(this.protocol, message.to, 'activitypub');
    if (utf8Bytes(message.text) > this.o.maxTextBytes) {
      throw new BridgeError(
        'BRIDGE_MESSAGE_TOO_LARGE',
        `the text is ${utf8Bytes(message.text)} bytes; the bridge takes at most ${this.o.maxTextBytes}`,
      );
    }
    if (!/^[0-9a-f]{1,64}$/.test(message.id)) throw new BridgeError('BAD_FIELD', 'a message id is 1 to 64 hex digits');
    const actor = await this.o.actors.byDid(message.from);
    if (!actor) throw new BridgeError('BRIDGE_IDENTITY_UNKNOWN', `${message.from} is not bridged to ActivityPub`);
    const ctx = this.context();
    const me = ctx.getActorUri(actor.handle);
    const noteId = new URL(`${this.o.origin}/notes/${message.id}`);
    if (message.type === 'public') {
      const followers = ctx.getFollowersUri(actor.handle);
      const note = new Note({
        id: noteId,
        attribution: me,
        to: PUBLIC_COLLECTION,
        cc: followers,
        content: textToHtml(message.text),
        published: Temporal.Now.instant(),
      });
      const create = new Create({
        id: new URL(`${noteId.href}#create`),
        actor: me,
        to: PUBLIC_COLLECTION,
        cc: followers,
        object: note,
      });
      await this.guard(() =>
        ctx.sendActivity({ identifier: actor.handle }, 'followers', create, { preferSharedInbox: true }),
      );
      this.o.metrics.deliveries.labels('Create', 'queued').inc();
      return { foreignId: noteId.href, acceptedBy: [followers.href], failed: [] };
    }
    const to = message.to as ForeignIdentity & { type: 'activitypub' };
    let remote: Awaited<ReturnType<RemoteAccounts['resolve']>>;
    try {
      remote = await this.guard(() =>
        to.kind === 'acct'
          ? this.accounts.resolve(ctx, to, actor.handle)
          : this.accounts.resolveActor(ctx, to, actor.handle),
      );
      this.o.metrics.lookups.labels('ok').inc();
    } catch (err) {
      const reason = err instanceof RemoteAccountError ? err.reason : 'unavailable';
      this.o.metrics.lookups.labels(reason).inc();
      if (err instanceof RemoteAccountError) this.o.metrics.deliveryFailures.labels('unresolvable').inc();
      throw err;
    }
    const recipient = new URL(remote.id);
    const inReplyTo = this.o.threadSeconds > 0 ? await this.state.thread(message.from, remote.id) : undefined;
    const note = new Note({
      id: noteId,
      attribution: me,
      to: recipient,
      tags: [new Mention({ href: recipient, name: mentionName(remote.acct) })],
      content: textToHtml(message.text),
      published: Temporal.Now.instant(),
      ...(inReplyTo ? { replyTarget: new URL(inReplyTo) } : {}),
    });
    const create = new Create({ id: new URL(`${noteId.href}#create`), actor: me, to: recipient, object: note });
    try {
      await this.guard(() =>
        ctx.sendActivity(
          { identifier: actor.handle },
          { id: recipient, inboxId: new URL(remote.inbox), endpoints: null },
          create,
          { immediate: true },
        ),
      );
    } catch (err) {
      throw this.deliveryError(err, remote.inbox);
    }
    this.o.metrics.deliveries.labels('Create', 'delivered').inc();
    return { foreignId: noteId.href, acceptedBy: [remote.inbox], failed: [] };
  }

  /** Runs `work` unless the bridge closes first (then BRIDGE_CLOSED). */
  private async guard<T>(work: () => Promise<T>): Promise<T> {
    const abort = new AbortController();
    this.pending.add(abort);
    try {
      return await Promise.race([
        work(),
        new Promise<never>((_, reject) =>
          abort.signal.addEventListener('abort', () =>
            reject(new BridgeError('BRIDGE_CLOSED', 'the ActivityPub bridge was closed during the send')),
          ),
        ),
      ]);
    } finally {
      this.pending.delete(abort);
    }
  }

  /** A failed delivery as the BridgeError the federation worker acts on. */
  private deliveryError(err: unknown, inbox: string): BridgeError {
    if (err instanceof BridgeError) return err;
    const status = err instanceof SendActivityError ? err.statusCode : undefined;
    const reason = failureReason(status);
    this.o.metrics.deliveries.labels('Create', 'failed').inc();
    this.o.metrics.deliveryFailures.labels(reason).inc();
    const what = `delivery to ${inbox} failed: ${status === undefined ? (err as Error).message : `HTTP ${status}`}`;
    if (status === 404 || status === 410) {
      // The account or its inbox is gone: trying again cannot help.
      return new BridgeError('BRIDGE_UNAVAILABLE', `${what} (final)`, { retryable: false, cause: err });
    }
    if (status === 429) {
      const asked = retryAfterMs(err instanceof SendActivityError ? err.responseHeaders : undefined);
      return new BridgeError('BRIDGE_UNAVAILABLE', what, {
        rateLimited: true,
        cause: err,
        ...(asked === undefined ? {} : { retryAfterMs: Math.min(asked, this.o.maxRetryAfterMs) }),
      });
    }
    // 400, 403, 413, 422: the remote refuses this activity; sending it again changes nothing.
    const final = status !== undefined && status >= 400 && status < 500 && status !== 401 && status !== 408;
    return new BridgeError('BRIDGE_UNAVAILABLE', final ? `${what} (final)` : what, { retryable: !final, cause: err });
  }

  health(): BridgeHealth {
    const state = this.closed ? 'closed' : this.started ? 'listening' : 'idle';
    return {
      protocol: this.protocol,
      status: this.closed || !this.started ? 'down' : 'ok',
      upstreams: [{ target: 'fedify-queue', state, attempts: 0 }],
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const abort of this.pending) abort.abort();
    this.stopQueue.abort();
    await this.queueRunning?.catch(() => undefined);
    await this.queue.close();
  }
}

/** How a mention names its account: `@user@host` for `acct:user@host`, the actor URL when it has no account. */
function mentionName(acct: string): string {
  return acct.startsWith('acct:') ? `@${acct.slice('acct:'.length)}` : acct;
}
