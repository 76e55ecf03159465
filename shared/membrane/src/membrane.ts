/**
 * checkAccess, as in the seed's Membrane:
 *
 *   1. the peer's trust score (TrustProvider), fetched only when a minTrust
 *      constraint applies: the relay calls this on every send, and most
 *      policies never ask;
 *   2. the grant: a presented token (verified to its root, cached), else the
 *      owner's compiled policy, else the relay's default;
 *   3. every constraint of the grant, stateless ones in declared order, then
 *      all counters in one atomic consume; the first that fails is reported;
 *   4. the audit record, for allowed and denied decisions alike.
 *
 * A decision is a value, not an exception: denials are the common case under
 * abuse and must stay cheap. `assertAccess` throws a MembraneError instead.
 */
import { createHash } from 'node:crypto';
import { type ErrorCode, LibertariaError } from '@libertaria/protocol';
import { type CompiledGrant, type ConditionMiss, insideTimeWindow } from './compile.js';
import { checkGrantApplies, type VerifiedGrant, verifyGrant } from './grant.js';
import type {
  AuditRecord,
  AuditSink,
  ConstraintState,
  PolicySource,
  RevocationList,
  TrustProvider,
} from './interfaces.js';
import { DEFAULT_MEMBRANE_LIMITS, type MembraneLimits } from './limits.js';
import { MembraneError } from './membrane-error.js';
import { MAX_UNITS } from './policy.js';
import { type Action, isAction } from './resource.js';

export interface AccessRequest {
  /** The requesting peer, authenticated, in did:libertaria form. */
  peer: string;
  /**
   * The resource owner whose policy applies, in did:libertaria form. The relay
   * establishes it (the recipient of a send, the operator's registry for a
   * feed); it is never taken from the requester, who would name an owner
   * without a policy.
   */
  owner: string;
  /** One exact resource (no pattern): `did:…` of the recipient, `feed://…`, … */
  resource: string;
  action: Action;
  /** Units the request spends (amount conditions, quotas); default 1. */
  amount?: number;
  /** A grant token the peer presented. */
  grant?: Uint8Array;
}

export type AccessDecision =
  | { allowed: true; via: 'policy' | 'grant' | 'default'; field: string; basis: string }
  | { allowed: false; code: ErrorCode; reason: string; field: string; via: AuditRecord['via']; basis: string };

export interface MembraneOptions {
  policies: PolicySource;
  trust: TrustProvider;
  state: ConstraintState;
  revocations: RevocationList;
  audit: AuditSink;
  /** What an owner without a policy gets: 'allow' (an open relay) or 'deny' (allow-listed owners only). */
  whenNoPolicy: 'allow' | 'deny';
  /** The score of a peer the TrustProvider does not know. @default 0 */
  unknownTrust?: number;
  limits?: MembraneLimits;
  /** Verified tokens kept (by content hash), failures included, so a token is checked once. @default 4096 */
  grantCacheSize?: number;
  /** The clock (ms); tests pass their own. @default Date.now */
  now?: () => number;
}

const REQUEST_RESOURCE =
  /^(?:did:[a-z0-9]+:[A-Za-z0-9._%-]+|(?:feed|chapter|service|federated):\/\/(?!\.\.?(?:\/|$))[A-Za-z0-9._~:@!$&'()+,;=%-]+(?:\/(?!\.\.?(?:\/|$))[A-Za-z0-9._~:@!$&'()+,;=%-]+)*)$/;

/** did:libertaria with 32 bytes in base58btc (43 or 44 digits); the membrane compares DIDs in this form. */
const CANONICAL_DID = /^did:libertaria:z[1-9A-HJ-NP-Za-km-z]{43,44}$/;

type Denial = Extract<AccessDecision, { allowed: false }>;

/** The audit record of a decision about a request: the one shape the membrane and the relay's own decisions write. */
export function auditRecordOf(
  request: Pick<AuditRecord, 'at' | 'peer' | 'owner' | 'resource' | 'action' | 'amount'>,
  decision: AccessDecision,
): AuditRecord {
  return {
    ...request,
    allowed: decision.allowed,
    code: decision.allowed ? 'OK' : decision.code,
    via: decision.via,
    field: decision.field,
    reason: decision.allowed ? '' : decision.reason,
    basis: decision.basis,
  };
}

export class Membrane {
  private readonly o: Required<Omit<MembraneOptions, 'limits'>> & { limits: MembraneLimits };
  private readonly grants = new Map<string, VerifiedGrant | MembraneError>();

  /** The bounds this membrane checks policies and tokens against. */
  get limits(): MembraneLimits {
    return this.o.limits;
  }

  constructor(options: MembraneOptions) {
    this.o = {
      unknownTrust: 0,
      grantCacheSize: 4096,
      now: Date.now,
      ...options,
      limits: options.limits ?? DEFAULT_MEMBRANE_LIMITS,
    };
    if (options.whenNoPolicy !== 'allow' && options.whenNoPolicy !== 'deny') {
      throw new MembraneError('BAD_FIELD', 'is "allow" or "deny"', { field: 'whenNoPolicy' });
    }
    if (!Number.isSafeInteger(this.o.grantCacheSize) || this.o.grantCacheSize < 0) {
      throw new MembraneError('BAD_FIELD', 'is an integer >= 0', { field: 'grantCacheSize' });
    }
  }

  /** The decision for a request, recorded in the audit trail before it is returned. */
  async checkAccess(request: AccessRequest): Promise<AccessDecision> {
    const nowMs = this.o.now();
    let decision: AccessDecision;
    try {
      decision = await this.decide(request, nowMs);
    } catch (err) {
      // A store that did not answer: fail closed, and say so.
      const code: ErrorCode = err instanceof LibertariaError ? err.code : 'STORE_UNAVAILABLE';
      decision = deny(code, err instanceof Error ? err.message : String(err), '', 'none', '');
    }
    const record = auditRecordOf(
      {
        at: nowMs,
        peer: String(request.peer),
        owner: String(request.owner),
        resource: String(request.resource),
        action: request.action,
        amount: request.amount ?? 1,
      },
      decision,
    );
    try {
      await this.o.audit.record(record);
    } catch (err) {
      // No unaudited access: if the trail cannot take the record, the request is refused.
      return deny('STORE_UNAVAILABLE', `audit trail unavailable: ${(err as Error).message}`, '', decision.via, '');
    }
    return decision;
  }

  /** checkAccess, throwing MembraneError (with the denial's code and field) when denied. */
  async assertAccess(request: AccessRequest): Promise<void> {
    const d = await this.checkAccess(request);
    if (!d.allowed) throw new MembraneError(d.code, d.reason, d.field ? { field: d.field } : undefined);
  }

  private async decide(request: AccessRequest, nowMs: number): Promise<AccessDecision> {
    const { peer, owner, resource, action } = request;
    const amount = request.amount ?? 1;
    // Cheap shape checks only (this runs on every send): the relay passes DIDs it authenticated or derived.
    if (typeof peer !== 'string' || !CANONICAL_DID.test(peer)) {
      return deny('BAD_FIELD', 'the peer is not a did:libertaria DID', 'peer', 'none', '');
    }
    if (typeof owner !== 'string' || !CANONICAL_DID.test(owner)) {
      return deny('BAD_FIELD', 'the owner is not a did:libertaria DID', 'owner', 'none', '');
    }
    if (!isAction(action)) return deny('BAD_FIELD', 'the action is not a membrane action', 'action', 'none', '');
    if (typeof resource !== 'string' || resource.length > this.o.limits.maxResourceLength) {
      return deny('BAD_FIELD', 'the resource is not a string within the length limit', 'resource', 'none', '');
    }
    if (!REQUEST_RESOURCE.test(resource)) {
      return deny('BAD_FIELD', 'the resource is not one exact resource URI', 'resource', 'none', '');
    }
    if (!Number.isSafeInteger(amount) || amount < 0 || amount > MAX_UNITS) {
      return deny('BAD_FIELD', 'the amount is an integer from 0 to 1e15', 'amount', 'none', '');
    }

    if (request.grant !== undefined) {
      const grant = this.verifiedGrant(request.grant, { owner, audience: peer });
      if (grant instanceof MembraneError) return deny(grant.code, grant.message, grant.field ?? '', 'grant', '');
      try {
        checkGrantApplies(grant, { nowMs, maxLifetimeSeconds: this.o.limits.maxGrantLifetimeSeconds });
      } catch (err) {
        const e = err as MembraneError;
        return deny(e.code, e.message, e.field ?? '', 'grant', grant.cid);
      }
      const revoked = await this.o.revocations.firstRevoked(grant.cids);
      if (revoked !== undefined) {
        return deny(
          'GRANT_REVOKED',
          `link ${revoked} is revoked`,
          `links[${grant.cids.indexOf(revoked)}]`,
          'grant',
          grant.cid,
        );
      }
      return this.evaluate(
        grant.match(peer, resource, action, amount),
        'grant',
        grant.cid,
        grant.rootCid,
        request,
        amount,
        nowMs,
      );
    }

    const policy = await this.o.policies.policyFor(owner);
    if (policy === null) {
      return this.o.whenNoPolicy === 'allow'
        ? { allowed: true, via: 'default', field: '', basis: '' }
        : deny(
            'ACCESS_NO_GRANT',
            'the owner has no policy and this relay allows listed owners only',
            '',
            'default',
            '',
          );
    }
    return this.evaluate(
      policy.match(peer, resource, action, amount),
      'policy',
      policy.id,
      owner,
      request,
      amount,
      nowMs,
    );
  }

  private async evaluate(
    match: CompiledGrant | ConditionMiss | undefined,
    via: 'policy' | 'grant',
    basis: string,
    scope: string,
    request: AccessRequest,
    amount: number,
    nowMs: number,
  ): Promise<AccessDecision> {
    if (match === undefined) {
      return deny('ACCESS_NO_GRANT', `nothing grants ${request.action} on ${request.resource}`, '', via, basis);
    }
    if (!match.matched) return deny('ACCESS_CONDITION_FAILED', match.reason, match.field, via, basis);
    let trust: number | undefined;
    if (match.needsTrust) trust = (await this.o.trust.trustScore(request.peer)) ?? this.o.unknownTrust;
    for (const check of match.checks) {
      switch (check.kind) {
        case 'expiry':
          if (nowMs >= check.atMs) return deny(check.code, 'expired', check.field, via, basis);
          break;
        case 'notBefore':
          if (nowMs < check.atMs) return deny(check.code, 'not valid yet', check.field, via, basis);
          break;
        case 'minTrust':
          if (trust! < check.score) {
            return deny('ACCESS_TRUST_TOO_LOW', `trust ${trust} is below ${check.score}`, check.field, via, basis);
          }
          break;
        case 'timeWindow':
          if (!insideTimeWindow(check, nowMs)) {
            return deny('ACCESS_OUTSIDE_TIME_WINDOW', 'outside the allowed hours', check.field, via, basis);
          }
          break;
      }
    }
    if (match.ops.length > 0) {
      const failed = await this.o.state.consume(scope, match.ops, request.peer, amount, nowMs);
      if (failed >= 0) {
        const op = match.ops[failed]!;
        return op.kind === 'rate'
          ? deny(
              'ACCESS_RATE_LIMITED',
              `more than ${op.limit} requests in ${op.windowMs / 1000} s`,
              op.field,
              via,
              basis,
            )
          : deny('ACCESS_QUOTA_EXHAUSTED', `the quota of ${op.limit} units is spent`, op.field, via, basis);
      }
    }
    return { allowed: true, via, field: match.field, basis };
  }

  /**
   * A token from the cache, or verified now and cached: structure, chain,
   * attenuation, then the owner and audience given (cheap checks before the
   * signatures, so a token for someone else costs no Ed25519 verification),
   * then the signatures. Time is not checked (checkGrantApplies with nowMs,
   * per decision). The cache key includes owner and audience, so one token
   * verified for one presenter is not taken as verified for another.
   */
  verifiedGrant(token: Uint8Array, applies: { owner?: string; audience?: string } = {}): VerifiedGrant | MembraneError {
    if (!(token instanceof Uint8Array)) return new MembraneError('GRANT_MALFORMED', 'a token is bytes');
    if (token.length > this.o.limits.maxTokenBytes) {
      // Refused before hashing: an oversized token costs nothing.
      return new MembraneError('GRANT_TOO_LARGE', `a token is at most ${this.o.limits.maxTokenBytes} bytes`);
    }
    const key = `${createHash('sha256').update(token).digest('base64')} ${applies.owner ?? ''} ${applies.audience ?? ''}`;
    const hit = this.grants.get(key);
    if (hit !== undefined) {
      // Re-inserted: Map order is insertion order, so the first key is the least recently used.
      this.grants.delete(key);
      this.grants.set(key, hit);
      return hit;
    }
    let result: VerifiedGrant | MembraneError;
    try {
      result = verifyGrant(token, this.o.limits, applies);
    } catch (err) {
      if (!(err instanceof MembraneError)) throw err;
      result = err;
    }
    if (this.o.grantCacheSize > 0) {
      if (this.grants.size >= this.o.grantCacheSize) this.grants.delete(this.grants.keys().next().value!);
      this.grants.set(key, result);
    }
    return result;
  }
}

function deny(code: ErrorCode, reason: string, field: string, via: AuditRecord['via'], basis: string): Denial {
  return { allowed: false, code, reason, field, via, basis };
}
