/**
 * The membrane in the relay's send path (docs/membrane.md#enforcement-in-the-relay).
 *
 * Every SEND (fast and durable) is a request {peer: the connection's DID,
 * resource: `did:<recipient>`, action `send`}; every PREKEY_FETCH (opening a
 * session) the same with action `open`. The relay knows a recipient by its
 * routing hint only: the owner's DID comes from the hint index the policy
 * store keeps (`mb:owners`), or from the root issuer of a grant the sender
 * presented for that recipient. A recipient with neither has no policy, and
 * gets the relay's default (RELAY_MEMBRANE_DEFAULT).
 *
 * Cost. The common case must not touch Redis: each connection caches, per
 * recipient, an allow decision that depends on nothing but the policy (no
 * rate or quota counter, no trust score, no time window; expiry bounds the
 * entry), valid while the node's policy generation is unchanged (every
 * policy change anywhere in the cluster bumps it, through the policy store's
 * pub/sub) and for at most RELAY_MEMBRANE_CACHE_MAX_AGE_MS. A hit decides
 * synchronously. Everything else (a first send, counters, grants, denials)
 * goes through checkAccess: the counters' Lua script and the audit XADD,
 * pipelined on the node's connection.
 *
 * Order. A connection's SENDs keep their order whatever their decisions
 * cost: once one waits for a decision, every later SEND of the connection
 * queues behind it (cache hits included), and the queue is released in
 * arrival order. Decisions themselves start at once and run concurrently
 * (Redis answers them in order on the node's one connection); only their
 * results are applied in order. The queue is bounded (RELAY_MEMBRANE_PENDING_SENDS).
 * Queued sends count as the connection's async work, so PING stays a barrier:
 * the PONG follows every ACK or NACK owed for earlier SENDs.
 */

import { hintFromDid } from '@libertaria/identity';
import { type AccessDecision, auditRecordOf, type CompiledPolicy } from '@libertaria/membrane';
import type { RedisMembrane } from '@libertaria/membrane/redis';
import {
  type ErrorCode,
  fitText,
  HINT_SIZE,
  RoutedAt,
  routedDest,
  routedMessageId,
  routedSource,
  SendFlags,
} from '@libertaria/protocol';
import { retainFrame } from '../transport/inbound-arena.js';

/** A durable frame already stored: not a new request, so it passes undecided (the store answers `duplicate`). */
const STORED_ALREADY: Verdict = { allowed: true, cacheUntil: 0 };

/** What the enforcer needs from a peer connection. */
export interface SendHost {
  /** The authenticated DID in did:libertaria form; '' on an anonymous connection. */
  readonly membraneDid: string;
  isOpen(): boolean;
  /** Lets an allowed SEND continue (forward it, or store it if durable). */
  passSend(frame: Buffer, flags: number): void;
  /** NACKs a refused SEND with the denial's code. */
  refuseSend(frame: Buffer, code: ErrorCode, message: string): void;
  beginAsync(): void;
  endAsync(): void;
  /** A throw that would escape a handler: the host counts it and closes its connection (INTERNAL). */
  internalError(where: string, err: unknown): void;
}

/** An allowed decision, or a denial with what to tell the sender. */
export type Verdict = { allowed: true; cacheUntil: number } | { allowed: false; code: ErrorCode; message: string };

export interface EnforcerOptions {
  whenNoPolicy: 'allow' | 'deny';
  /** Recipients per connection whose stateless allow is cached. */
  connectionCacheEntries: number;
  /** Oldest a cached decision or owner lookup may be (ms). */
  cacheMaxAgeMs: number;
  /** Hint -> owner entries kept per node. */
  ownerCacheEntries: number;
  /** SENDs one connection may have waiting for a decision. */
  pendingSends: number;
  /** Grant tokens one connection may hold. */
  grantsPerConnection: number;
  now?: () => number;
  /**
   * Whether a durable frame (recipient hint, sender hint, message id) is
   * already in the recipient's queue or was acknowledged from it: a sender's
   * retry of a stored frame is then not decided (nor charged) again. Without
   * it every copy is a new request. Per sender, as the queue's idempotency:
   * another sender's frame with the same id is a new request.
   */
  isStoredDuplicate?: (dest: Uint8Array, source: Uint8Array, messageId: Uint8Array) => Promise<boolean>;
  /**
   * The network of the bridge whose routing hint this is (the federation
   * registry), if any: a send to a bridge is decided on `federated://<network>`
   * in the bridge owner's policy, not on the bridge's DID.
   */
  federatedNetwork?: (hint: Uint8Array) => string | undefined;
  /** Told of every decision taken (not of cached allows): the action and 'OK' or the denial code. */
  onDecision?: (action: 'send' | 'open', result: string) => void;
}

interface OwnerEntry {
  owner: string | null;
  at: number;
}

/** A grant a connection presented, kept by the hint of its root issuer (the recipient it opens). */
export interface HeldGrant {
  token: Uint8Array;
  issuer: string;
  cid: string;
  expiresAtMs: number;
}

/** Counts for metrics and the benchmark. */
export interface EnforcerStats {
  cacheHits: number;
  decisions: number;
  denials: number;
}

const ANONYMOUS = 'anonymous';

/** The node's half: owner lookups, the policy generation, and the decisions themselves. */
export class Enforcer {
  /** Bumped by every policy change this node hears of; cached allows from an older generation are void. */
  generation = 0;
  readonly stats: EnforcerStats = { cacheHits: 0, decisions: 0, denials: 0 };
  readonly now: () => number;
  private readonly owners = new Map<string, OwnerEntry>();
  /** Owner lookups in flight, shared by concurrent decisions for one recipient. */
  private readonly ownerLookups = new Map<string, Promise<string | null>>();
  private readonly listener = (owner: string | undefined): void => {
    this.generation++;
    // A lookup under way may answer for the old state: later decisions must not join it.
    this.ownerLookups.clear();
    if (owner === undefined) this.owners.clear();
    else this.owners.delete(Buffer.from(hintFromDid(owner)).toString('latin1'));
  };

  constructor(
    readonly rm: RedisMembrane,
    readonly options: EnforcerOptions,
  ) {
    this.now = options.now ?? Date.now;
    rm.policies.changeListeners.add(this.listener);
  }

  stop(): void {
    this.rm.policies.changeListeners.delete(this.listener);
  }

  /** The per-connection gate (created at the connection's first SEND or membrane request). */
  gate(host: SendHost): ConnectionGate {
    return new ConnectionGate(this, host);
  }

  /** The owner DID behind a recipient hint, or null when no owner with that hint ever stored a policy. */
  private ownerOf(hintKey: string): string | null | Promise<string | null> {
    const hit = this.owners.get(hintKey);
    if (hit !== undefined && this.now() - hit.at <= this.options.cacheMaxAgeMs) return hit.owner;
    const generation = this.generation;
    const pending = this.ownerLookups.get(hintKey);
    if (pending !== undefined) return pending;
    const lookup = this.rm.policies.ownerOfHint(Buffer.from(hintKey, 'latin1')).then((owner) => {
      // A change heard meanwhile may be this owner's first policy: do not cache a stale "none".
      if (generation === this.generation && this.options.ownerCacheEntries > 0) {
        if (this.owners.size >= this.options.ownerCacheEntries) this.owners.delete(this.owners.keys().next().value!);
        this.owners.set(hintKey, { owner, at: this.now() });
      }
      return owner;
    });
    this.ownerLookups.set(hintKey, lookup);
    const forget = (): void => {
      if (this.ownerLookups.get(hintKey) === lookup) this.ownerLookups.delete(hintKey);
    };
    lookup.then(forget, forget);
    return lookup;
  }

  /**
   * The decision for `peer` (did:libertaria, or '' anonymous) to `action` the
   * recipient behind `hintKey`, with the grant the peer holds for it if any.
   * Never rejects: a store failure is a STORE_UNAVAILABLE denial.
   */
  async decide(peer: string, hintKey: string, action: 'send' | 'open', grant: HeldGrant | undefined): Promise<Verdict> {
    this.stats.decisions++;
    const generation = this.generation;
    const startedAt = this.now();
    let verdict: Verdict;
    try {
      verdict = await this.decideInner(peer, hintKey, action, grant, startedAt);
    } catch (err) {
      verdict = { allowed: false, code: 'STORE_UNAVAILABLE', message: `membrane: ${(err as Error).message}` };
    }
    this.options.onDecision?.(action, verdict.allowed ? 'OK' : verdict.code);
    if (!verdict.allowed) this.stats.denials++;
    // A decision that straddled a policy change may rest on the old policy: use it once, never cache it.
    else if (generation !== this.generation) verdict = { allowed: true, cacheUntil: 0 };
    return verdict;
  }

  private async decideInner(
    peer: string,
    hintKey: string,
    action: 'send' | 'open',
    grant: HeldGrant | undefined,
    nowMs: number,
  ): Promise<Verdict> {
    const owner = grant !== undefined && peer !== '' ? grant.issuer : await this.ownerOf(hintKey);
    if (owner === null || peer === '') {
      const policy = owner === null ? null : await this.rm.policies.policyFor(owner);
      if (owner === null || policy === null) return this.byDefault(peer, owner, hintKey, action, nowMs);
      // An anonymous peer has no DID for a policy to name or count: owners with a policy refuse it.
      return this.recordDirect(peer, owner, hintKey, action, nowMs, {
        allowed: false,
        code: 'ACCESS_NO_GRANT',
        reason: 'anonymous peers cannot reach an owner that has a policy',
        field: '',
        via: 'policy',
        basis: policy.id,
      });
    }
    const network = action === 'send' ? this.options.federatedNetwork?.(Buffer.from(hintKey, 'latin1')) : undefined;
    const decision = await this.rm.membrane.checkAccess({
      peer,
      owner,
      resource: network === undefined ? owner : `federated://${network}`,
      action,
      ...(grant !== undefined ? { grant: grant.token } : {}),
    });
    if (!decision.allowed) return denial(decision);
    let cacheUntil = 0;
    if (action === 'send' && decision.via !== 'grant') {
      // Grants are never cached: revocation is checked on every decision.
      const policy = decision.via === 'policy' ? await this.rm.policies.policyFor(owner) : null;
      cacheUntil =
        decision.via === 'default'
          ? nowMs + this.options.cacheMaxAgeMs
          : policy === null
            ? 0
            : statelessUntil(policy, peer, owner, nowMs + this.options.cacheMaxAgeMs);
    }
    return { allowed: true, cacheUntil };
  }

  /** No policy: the relay's default, audited like every decision. */
  private async byDefault(
    peer: string,
    owner: string | null,
    hintKey: string,
    action: 'send' | 'open',
    nowMs: number,
  ): Promise<Verdict> {
    const allowed = this.options.whenNoPolicy === 'allow';
    const verdict = await this.recordDirect(
      peer,
      owner,
      hintKey,
      action,
      nowMs,
      allowed
        ? { allowed: true, via: 'default', field: '', basis: '' }
        : {
            allowed: false,
            code: 'ACCESS_NO_GRANT',
            reason: 'the recipient has no policy and this relay allows listed owners only',
            field: '',
            via: 'default',
            basis: '',
          },
    );
    return verdict.allowed && action === 'send'
      ? { allowed: true, cacheUntil: nowMs + this.options.cacheMaxAgeMs }
      : verdict;
  }

  /** A decision taken here rather than by checkAccess (no owner DID known, or an anonymous peer), audited the same way. */
  private async recordDirect(
    peer: string,
    owner: string | null,
    hintKey: string,
    action: 'send' | 'open',
    nowMs: number,
    decision: AccessDecision,
  ): Promise<Verdict> {
    const record = auditRecordOf(
      {
        at: nowMs,
        peer: peer === '' ? ANONYMOUS : peer,
        owner: owner ?? '',
        // The recipient's DID is unknown without an owner entry: the audit names its hint.
        resource: owner ?? `hint:${Buffer.from(hintKey, 'latin1').toString('hex')}`,
        action,
        amount: 1,
      },
      decision,
    );
    try {
      await this.rm.audit.record(record);
    } catch (err) {
      return {
        allowed: false,
        code: 'STORE_UNAVAILABLE',
        message: `audit trail unavailable: ${(err as Error).message}`,
      };
    }
    return decision.allowed ? { allowed: true, cacheUntil: 0 } : denial(decision);
  }
}

/** Whether the frame's destination hint equals `hint` (24 bytes). */
function sameDest(frame: Buffer, hint: Buffer): boolean {
  for (let i = 0; i < HINT_SIZE; i++) if (frame[RoutedAt.DEST + i] !== hint[i]) return false;
  return true;
}

function denial(d: Extract<AccessDecision, { allowed: false }>): Verdict {
  const where = d.field === '' ? '' : ` (${d.field})`;
  const message = `${d.reason}${where}`;
  return { allowed: false, code: d.code, message: fitText(message) };
}

/**
 * Until when an allow of `peer` sending to `owner` under this policy stays
 * true without asking Redis: 0 when it consumes a counter or depends on a
 * trust score or the time of day; else the earliest expiry, capped at `cap`.
 */
function statelessUntil(policy: CompiledPolicy, peer: string, owner: string, cap: number): number {
  const match = policy.match(peer, owner, 'send', 1);
  if (match === undefined || !match.matched || match.ops.length > 0 || match.needsTrust) return 0;
  let until = cap;
  for (const check of match.checks) {
    if (check.kind === 'timeWindow' || check.kind === 'minTrust') return 0;
    if (check.kind === 'expiry' && check.atMs < until) until = check.atMs;
  }
  return until;
}

interface Pending {
  frame: Buffer;
  flags: number;
  verdict: Verdict | Promise<Verdict>;
}

interface CachedAllow {
  generation: number;
  until: number;
}

/** One connection's half: its cache of allows, its ordered queue of SENDs waiting for decisions, its grants. */
export class ConnectionGate {
  /** Grants presented on this connection, by the latin1 hint of their root issuer. */
  readonly grants = new Map<string, HeldGrant>();
  private readonly allows = new Map<string, CachedAllow>();
  /** The last recipient admitted from the cache (its hint in lastDest), checked before the map. */
  private last: CachedAllow | undefined;
  private readonly lastDest = Buffer.alloc(HINT_SIZE);
  private readonly queue: Pending[] = [];
  /** Send decisions in flight, by recipient. */
  private readonly deciding = new Map<string, Promise<Verdict>>();
  private draining = false;

  constructor(
    private readonly enforcer: Enforcer,
    private readonly host: SendHost,
  ) {}

  /**
   * A SEND that passed the relay's own checks. true: allowed now, the caller
   * forwards it. false: the gate owns it and will pass or refuse it, in order.
   */
  admit(frame: Buffer, flags: number): boolean {
    if (this.queue.length === 0) {
      // Most connections talk to one recipient at a time: compare with the last allowed one byte by
      // byte (cheaper than building the map key), then the map.
      const last = this.last;
      if (
        last !== undefined &&
        last.generation === this.enforcer.generation &&
        sameDest(frame, this.lastDest) &&
        this.enforcer.now() < last.until
      ) {
        this.enforcer.stats.cacheHits++;
        return true;
      }
    }
    const key = frame.toString('latin1', RoutedAt.DEST, RoutedAt.DEST + HINT_SIZE);
    if (this.queue.length === 0) {
      const hit = this.allows.get(key);
      if (hit !== undefined) {
        if (hit.generation === this.enforcer.generation && this.enforcer.now() < hit.until) {
          this.enforcer.stats.cacheHits++;
          this.last = hit;
          frame.copy(this.lastDest, 0, RoutedAt.DEST, RoutedAt.DEST + HINT_SIZE);
          return true;
        }
        this.allows.delete(key);
      }
    }
    if (this.queue.length >= this.enforcer.options.pendingSends) {
      this.host.refuseSend(frame, 'RATE_LIMITED', 'too many sends waiting for access decisions');
      return false;
    }
    // Held for a decision (maybe a Redis call): copied out of a recycled inbound slab (inbound-arena.ts).
    frame = retainFrame(frame);
    this.host.beginAsync();
    const hit = this.queue.length > 0 ? this.cachedAllow(key) : undefined;
    let verdict: Verdict | Promise<Verdict> | undefined = hit;
    if (verdict === undefined) {
      // A decision for this recipient already under way: wait for it, and reuse it if it may be cached,
      // so a burst behind a first decision costs one decision, not one per frame.
      const prior = this.deciding.get(key);
      verdict =
        prior === undefined
          ? this.decideFrame(key, frame, flags)
          : prior.then(() => this.cachedAllow(key) ?? this.decideFrame(key, frame, flags));
    }
    this.queue.push({ frame, flags, verdict });
    if (!this.draining) this.drain().catch((err: unknown) => this.host.internalError('membrane', err));
    return false;
  }

  /** The decision for opening a session with the recipient behind `hint` (PREKEY_FETCH). */
  decideOpen(hint: Uint8Array): Promise<Verdict> {
    const key = Buffer.from(hint.buffer, hint.byteOffset, hint.byteLength).toString('latin1');
    return this.enforcer.decide(this.host.membraneDid, key, 'open', this.grants.get(key));
  }

  /** Keeps (or replaces) a verified grant for its issuer; false when the connection holds its maximum. */
  holdGrant(issuerHintKey: string, grant: HeldGrant): boolean {
    if (!this.grants.has(issuerHintKey) && this.grants.size >= this.enforcer.options.grantsPerConnection) {
      for (const [k, g] of this.grants)
        if (g.expiresAtMs !== 0 && g.expiresAtMs <= this.enforcer.now()) this.grants.delete(k);
      if (this.grants.size >= this.enforcer.options.grantsPerConnection) return false;
    }
    this.grants.set(issuerHintKey, grant);
    // The grant decides from now on: forget an allow cached from the policy.
    this.allows.delete(issuerHintKey);
    this.last = undefined;
    return true;
  }

  /** Forgets a grant (refused after all), unless another replaced it meanwhile. */
  dropGrant(issuerHintKey: string, grant: HeldGrant): void {
    if (this.grants.get(issuerHintKey) === grant) this.grants.delete(issuerHintKey);
  }

  private cachedAllow(key: string): Verdict | undefined {
    const hit = this.allows.get(key);
    if (hit === undefined || hit.generation !== this.enforcer.generation || this.enforcer.now() >= hit.until) {
      return undefined;
    }
    this.enforcer.stats.cacheHits++;
    return { allowed: true, cacheUntil: hit.until };
  }

  /** A decision for this frame; a durable retry of a frame already stored passes without one. */
  private decideFrame(key: string, frame: Buffer, flags: number): Promise<Verdict> {
    const isStored = this.enforcer.options.isStoredDuplicate;
    if ((flags & SendFlags.DURABLE) === 0 || isStored === undefined) return this.decideSend(key);
    return isStored(routedDest(frame), routedSource(frame), routedMessageId(frame)).then(
      (stored) => (stored ? STORED_ALREADY : this.decideSend(key)),
      () => this.decideSend(key),
    );
  }

  private decideSend(key: string): Promise<Verdict> {
    const p = this.enforcer
      .decide(this.host.membraneDid, key, 'send', this.grants.get(key))
      .then((v) => this.remember(key, v));
    this.deciding.set(key, p);
    const forget = (): void => {
      if (this.deciding.get(key) === p) this.deciding.delete(key);
    };
    // Both ways, so no derived promise is left to reject unhandled (the verdict's consumer handles p).
    p.then(forget, forget);
    return p;
  }

  private remember(key: string, v: Verdict): Verdict {
    if (v.allowed && v.cacheUntil > this.enforcer.now() && this.enforcer.options.connectionCacheEntries > 0) {
      if (this.allows.size >= this.enforcer.options.connectionCacheEntries) {
        this.allows.delete(this.allows.keys().next().value!);
      }
      this.allows.set(key, { generation: this.enforcer.generation, until: v.cacheUntil });
    }
    return v;
  }

  /** Applies queued decisions in arrival order. */
  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const head = this.queue[0]!;
        const v = await head.verdict;
        this.queue.shift();
        try {
          if (!this.host.isOpen()) continue;
          if (v.allowed) this.host.passSend(head.frame, head.flags);
          else this.host.refuseSend(head.frame, v.code, v.message);
        } finally {
          this.host.endAsync();
        }
      }
    } finally {
      this.draining = false;
    }
  }
}
