/**
 * Who on a foreign network may reach a bridged Libertaria peer, decided by
 * that peer's own membrane policy (docs/bridges.md#foreign-senders): the
 * same policies, counters, audit trail and cluster-wide cache the relay
 * enforces on Libertaria peers (`@libertaria/membrane/redis`), read from the
 * relay's Redis keys.
 *
 * A foreign sender is asked as:
 *
 *   owner     the bridged peer's DID (whose policy applies)
 *   resource  federated://<network>/<sender path>
 *               activitypub  federated://activitypub/<host>/<user>   (acct:user@host;
 *                            an actor URL: <host>/<the URL, percent-encoded>)
 *               nostr        federated://nostr/<npub>
 *               xmtp         federated://xmtp/<address or inbox id>
 *               custom       federated://custom:<scheme>/<opaque, percent-encoded>
 *   action    'message' → send (it sends the owner a message),
 *             'follow'  → read (it subscribes to the owner's public notes)
 *   peer      foreignPeerDid(sender): a did:libertaria derived from the
 *             sender's canonical URI, so per-peer rate and quota constraints
 *             count each foreign sender apart and the audit trail names it.
 *             Nobody holds a key for it; it authenticates nothing.
 *
 * So an owner allows the whole fediverse with `federated://activitypub/*`,
 * one instance with `federated://activitypub/example.social/*`, one account
 * exactly, and may bound each sender with `rate` constraints of scope `peer`.
 * A `member` condition lists Libertaria DIDs: it matches a foreign sender
 * only if the set holds its derived DID. Owners without a policy get
 * `whenNoPolicy`.
 */

import { formatLibertariaDid } from '@libertaria/identity';
import { canonicalDid, type Membrane, type MembraneLimits } from '@libertaria/membrane';
import { createRedisMembrane, type RedisMembrane } from '@libertaria/membrane/redis';
import { isCluster, type RedisClient, type Subscriber } from '@libertaria/redis';
import { sha256 } from '@noble/hashes/sha2.js';
import { Counter, type Registry } from 'prom-client';
import type { ForeignIdentity } from './foreign-identity.js';

/** What a foreign sender asks of a bridged peer. */
export type ForeignSenderAction = 'message' | 'follow';

export interface ForeignSenderDecision {
  readonly allowed: boolean;
  /** 'OK' when allowed, else the membrane's denial code (ACCESS_NO_GRANT, ACCESS_RATE_LIMITED, …). */
  readonly code: string;
  /** Why, for logs: the capability that granted or what denied. */
  readonly reason: string;
}

export interface ForeignSenderPolicyOptions {
  /** The relay cluster's Redis (one server or a Cluster): commands, counters, audit. */
  readonly redis: RedisClient;
  /**
   * A connection for the policy cache's invalidations (a subscribed ioredis
   * connection cannot run commands). Default: `redis.duplicate()`, closed by `close()`.
   */
  readonly subscriber?: Subscriber;
  /** The relays' key prefix (RELAY_REDIS_PREFIX, default `lr`): where owners' policies live. */
  readonly relayPrefix: string;
  /** The bridge's network as in its queue names: `activitypub`, `nostr`, `xmtp`, `custom-<scheme>`. */
  readonly network: string;
  /** Owners without a policy: 'allow' (like RELAY_MEMBRANE_DEFAULT=open) or 'deny' (allowlist). */
  readonly whenNoPolicy: 'allow' | 'deny';
  readonly limits?: MembraneLimits;
  /** Where `bridge_foreign_sender_decisions_total` is registered. */
  readonly registry?: Registry;
  readonly now?: () => number;
}

const FOREIGN_PEER_DOMAIN = 'libertaria foreign peer v1\n';
const utf8 = new TextEncoder();

/**
 * The did:libertaria a foreign sender is counted and audited as: SHA-256 of a
 * domain tag and its canonical URI, taken as a public key nobody holds.
 */
export function foreignPeerDid(sender: ForeignIdentity): string {
  return formatLibertariaDid(sha256(utf8.encode(FOREIGN_PEER_DOMAIN + sender.uri)));
}

/** Characters a membrane resource segment holds as they are (RFC 3986 unreserved and sub-delims, `:`, `@`). */
const SEGMENT_CHAR = /[A-Za-z0-9._~:@!$&'()+,;=-]/;

/** One resource path segment: those characters kept, every other byte (and a `.` or `..` segment) percent-encoded. */
function segment(value: string): string {
  let out = '';
  for (const ch of value) {
    if (SEGMENT_CHAR.test(ch)) out += ch;
    else for (const byte of utf8.encode(ch)) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out === '.' ? '%2E' : out === '..' ? '%2E%2E' : out;
}

/** The resource a foreign sender reaches an owner through (see the header). */
export function foreignSenderResource(network: string, sender: ForeignIdentity): string {
  const base = `federated://${segment(network)}`;
  switch (sender.type) {
    case 'activitypub':
      // An actor known only by its URL (inbound senders are accounts): the whole URL as one segment.
      return `${base}/${segment(sender.host)}/${segment(sender.kind === 'acct' ? sender.user : sender.uri)}`;
    case 'nostr':
      return `${base}/${sender.npub}`;
    case 'xmtp':
      return `${base}/${segment(sender.value)}`;
    case 'custom':
      return `${base}/${segment(sender.opaque)}`;
    default: {
      const never: never = sender;
      throw new TypeError(`unknown foreign identity ${JSON.stringify(never)}`);
    }
  }
}

export class ForeignSenderPolicy {
  readonly network: string;
  readonly #stores: RedisMembrane;
  readonly #membrane: Membrane;
  readonly #ownSubscriber: RedisClient | undefined;
  readonly #decisions: Counter<'network' | 'action' | 'verdict' | 'code'>;
  #closed = false;

  constructor(options: ForeignSenderPolicyOptions) {
    this.network = options.network;
    const redis = options.redis;
    this.#ownSubscriber =
      options.subscriber !== undefined
        ? undefined
        : isCluster(redis)
          ? redis.duplicate(undefined, { lazyConnect: true })
          : redis.duplicate({ lazyConnect: true });
    // A lost subscriber costs only caching (the store drops its cache and reads Redis until it is back);
    // failed commands reach decide() as STORE_UNAVAILABLE denials, so the events need no listener of their own.
    this.#ownSubscriber?.on('error', () => {});
    this.#stores = createRedisMembrane(options.redis, options.subscriber ?? (this.#ownSubscriber as Subscriber), {
      prefix: options.relayPrefix,
      whenNoPolicy: options.whenNoPolicy,
      ...(options.limits ? { limits: options.limits } : {}),
      ...(options.now ? { now: options.now } : {}),
    });
    this.#membrane = this.#stores.membrane;
    this.#decisions = new Counter({
      name: 'bridge_foreign_sender_decisions_total',
      help: "Decisions on foreign senders by the bridged peer's membrane policy, by action (message, follow), verdict (allow, deny) and code",
      labelNames: ['network', 'action', 'verdict', 'code'],
      registers: options.registry ? [options.registry] : [],
    });
  }

  /** Subscribes the policy cache to invalidations; decisions before it read Redis uncached. */
  async start(): Promise<void> {
    await this.#stores.start();
  }

  /**
   * May `sender` do `action` towards the bridged peer `owner`? Never throws:
   * a malformed owner or an unreachable Redis is a denial (fail closed) with
   * its code. Every decision is in the owner's audit trail.
   */
  async decide(owner: string, sender: ForeignIdentity, action: ForeignSenderAction): Promise<ForeignSenderDecision> {
    let decision: ForeignSenderDecision;
    let canonicalOwner: string | undefined;
    try {
      canonicalOwner = canonicalDid(owner);
    } catch (err) {
      decision = { allowed: false, code: 'INVALID_DID', reason: `the owner is not a DID: ${(err as Error).message}` };
    }
    if (canonicalOwner !== undefined) {
      const d = await this.#membrane.checkAccess({
        peer: foreignPeerDid(sender),
        owner: canonicalOwner,
        resource: foreignSenderResource(this.network, sender),
        action: action === 'message' ? 'send' : 'read',
      });
      decision = d.allowed
        ? { allowed: true, code: 'OK', reason: `${d.via}${d.field ? ` ${d.field}` : ''}` }
        : { allowed: false, code: d.code, reason: d.reason };
    }
    this.#decisions.labels(this.network, action, decision!.allowed ? 'allow' : 'deny', decision!.code).inc();
    return decision!;
  }

  /** Stops listening for invalidations and closes the subscriber this policy opened; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#stores.stop();
    if (this.#ownSubscriber) {
      const sub = this.#ownSubscriber;
      await sub.quit().catch(() => sub.disconnect());
    }
  }
}
