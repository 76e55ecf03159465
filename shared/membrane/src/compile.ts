/**
 * Compiles a validated policy (or a verified grant token) into the form the
 * relay evaluates on every send: resources indexed in a Map, member sets as
 * Sets, each capability's constraints flattened into one static list of
 * checks and one static list of counter operations with precomputed ids and
 * field names. Matching a request reads these structures only: no JSON, no
 * parsing and no allocation per call.
 */

import { type ErrorCode, toHex } from '@libertaria/protocol';
import { blake3 } from '@noble/hashes/blake3.js';
import { MembraneError } from './membrane-error.js';
import { type Constraint, type MembranePolicy, policyToJson } from './policy.js';
import { type Action, type ActionPattern, canonicalDid, parseResource, type ResourcePattern } from './resource.js';

/** A stateless check, evaluated in declared order before any counter is touched. */
export type CompiledCheck =
  | { kind: 'expiry'; atMs: number; field: string; code: ErrorCode }
  | { kind: 'notBefore'; atMs: number; field: string; code: ErrorCode }
  | { kind: 'minTrust'; score: number; field: string }
  | {
      kind: 'timeWindow';
      fromMinute: number;
      toMinute: number;
      /** Bit d set (1..7) when ISO weekday d is allowed. */
      daysMask: number;
      offsetMs: number;
      field: string;
    };

/**
 * A counter the decision consumes, atomically with every other op of the same
 * decision (ConstraintState.consume): either all are applied or none is.
 * Rate ops count 1 per request, quota ops the request's units.
 */
export interface ConsumeOp {
  readonly kind: 'rate' | 'quota';
  /** Stable across nodes and restarts; the state key is built from the scope, this id and (perPeer) the peer. */
  readonly id: string;
  readonly limit: number;
  /** Aligned window length; 0 (quota only): the whole lifetime. */
  readonly windowMs: number;
  readonly perPeer: boolean;
  /** Where the constraint was declared, for the denial (`constraints[1]`). */
  readonly field: string;
}

/** What a request matched: the static checks and ops that now apply. */
export interface CompiledGrant {
  readonly matched: true;
  /** Where the matched capability is (`capabilities[2]`, `links[1].att[0]`). */
  readonly field: string;
  readonly checks: readonly CompiledCheck[];
  readonly ops: readonly ConsumeOp[];
  readonly needsTrust: boolean;
}

/** A capability covered the request but a condition did not hold; static, one per condition. */
export interface ConditionMiss {
  readonly matched: false;
  readonly field: string;
  readonly reason: string;
}

type CompiledCondition =
  | { kind: 'member'; set: ReadonlySet<string>; miss: ConditionMiss }
  | { kind: 'amount'; max: number; miss: ConditionMiss };

interface CompiledCapability {
  readonly index: number;
  readonly pattern: ResourcePattern;
  readonly action: ActionPattern;
  readonly conditions: readonly CompiledCondition[];
  readonly grant: CompiledGrant;
}

function parseMinute(hhmm: string): number {
  return Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));
}

const MS = 1000;

/**
 * Compiles one constraint list into checks and ops. `idPrefix` keeps counter
 * ids distinct per policy version and per declaring place.
 */
export function compileConstraints(
  constraints: readonly Constraint[],
  fieldPrefix: string,
  idPrefix: string,
  checks: CompiledCheck[],
  ops: ConsumeOp[],
): void {
  constraints.forEach((c, i) => {
    const field = `${fieldPrefix}[${i}]`;
    switch (c.type) {
      case 'expiry':
        checks.push({ kind: 'expiry', atMs: c.at * MS, field, code: 'ACCESS_EXPIRED' });
        break;
      case 'notBefore':
        checks.push({ kind: 'notBefore', atMs: c.at * MS, field, code: 'ACCESS_NOT_YET_VALID' });
        break;
      case 'minTrust':
        checks.push({ kind: 'minTrust', score: c.score, field });
        break;
      case 'timeWindow': {
        let daysMask = 0;
        for (const d of c.days) daysMask |= 1 << d;
        checks.push({
          kind: 'timeWindow',
          fromMinute: parseMinute(c.from),
          toMinute: parseMinute(c.to),
          daysMask,
          offsetMs: c.utcOffsetMinutes * 60_000,
          field,
        });
        break;
      }
      case 'rate':
        ops.push({
          kind: 'rate',
          id: `${idPrefix}${i}`,
          limit: c.limit,
          windowMs: c.windowSeconds * MS,
          perPeer: c.scope === 'peer',
          field,
        });
        break;
      case 'quota':
        ops.push({
          kind: 'quota',
          id: `${idPrefix}${i}`,
          limit: c.units,
          windowMs: c.windowSeconds * MS,
          perPeer: c.scope === 'peer',
          field,
        });
        break;
      default: {
        const never: never = c;
        throw new Error(`unhandled constraint ${JSON.stringify(never)}`);
      }
    }
  });
}

/** Rate ops before quota ops: a request the rate refuses must not have spent units (all-or-nothing anyway). */
export function sortOps(ops: ConsumeOp[]): ConsumeOp[] {
  return [...ops.filter((o) => o.kind === 'rate'), ...ops.filter((o) => o.kind === 'quota')];
}

const DAY_MS = 86_400_000;

/** Whether `nowMs` lies inside a time-window check. Allocation-free. */
export function insideTimeWindow(check: Extract<CompiledCheck, { kind: 'timeWindow' }>, nowMs: number): boolean {
  const local = nowMs + check.offsetMs;
  const dayNumber = Math.floor(local / DAY_MS);
  // 1970-01-01 was a Thursday, ISO weekday 4.
  const isoDay = ((((dayNumber + 3) % 7) + 7) % 7) + 1;
  if ((check.daysMask & (1 << isoDay)) === 0) return false;
  const minute = Math.floor((local - dayNumber * DAY_MS) / 60_000);
  return check.fromMinute < check.toMinute
    ? minute >= check.fromMinute && minute < check.toMinute
    : minute >= check.fromMinute || minute < check.toMinute;
}

/** Short content id of a normalized policy: counters of an edited policy start afresh. */
export function policyId(policy: MembranePolicy): string {
  return toHex(blake3(new TextEncoder().encode(policyToJson(policy)))).slice(0, 16);
}

/**
 * Capabilities indexed for matching. Exact resources in a Map, wildcard
 * patterns in a list; both keep policy order, and the first capability in
 * that order whose resource, action and conditions all hold is the grant.
 */
export class CapabilityMatcher {
  private readonly exact = new Map<string, CompiledCapability[]>();
  private readonly prefixes: CompiledCapability[] = [];
  private static readonly EMPTY: CompiledCapability[] = [];

  constructor(capabilities: readonly CompiledCapability[]) {
    for (const cap of capabilities) {
      if (cap.pattern.kind === 'exact') {
        const list = this.exact.get(cap.pattern.uri);
        if (list) list.push(cap);
        else this.exact.set(cap.pattern.uri, [cap]);
      } else {
        this.prefixes.push(cap);
      }
    }
  }

  /**
   * The grant for a request, a ConditionMiss (the first covering capability's
   * first failing condition, when none passes), or undefined (nothing covers).
   */
  match(peer: string, resource: string, action: Action, amount: number): CompiledGrant | ConditionMiss | undefined {
    const exact = this.exact.get(resource) ?? CapabilityMatcher.EMPTY;
    const prefixes = this.prefixes;
    let miss: ConditionMiss | undefined;
    let i = 0;
    let j = 0;
    // Merge the two lists by policy index so "first in policy order" holds across both.
    while (i < exact.length || j < prefixes.length) {
      let cap: CompiledCapability;
      if (j >= prefixes.length || (i < exact.length && exact[i]!.index < prefixes[j]!.index)) cap = exact[i++]!;
      else {
        cap = prefixes[j++]!;
        const prefix = (cap.pattern as { prefix: string }).prefix;
        if (resource.length <= prefix.length || !resource.startsWith(prefix)) continue;
      }
      if (cap.action !== '*' && cap.action !== action) continue;
      const failed = firstFailingCondition(cap.conditions, peer, amount);
      if (failed === undefined) return cap.grant;
      miss ??= failed;
    }
    return miss;
  }
}

function firstFailingCondition(
  conditions: readonly CompiledCondition[],
  peer: string,
  amount: number,
): ConditionMiss | undefined {
  for (const c of conditions) {
    if (c.kind === 'member' ? !c.set.has(peer) : amount > c.max) return c.miss;
  }
  return undefined;
}

export interface CompileCapabilityInput {
  resource: string;
  action: ActionPattern;
  conditions: MembranePolicy['capabilities'][number]['conditions'];
  field: string;
  index: number;
  checks: readonly CompiledCheck[];
  ops: readonly ConsumeOp[];
}

/** Builds one matcher entry; `sets` resolves member conditions. */
export function compileCapability(
  input: CompileCapabilityInput,
  sets: ReadonlyMap<string, ReadonlySet<string>>,
): CompiledCapability {
  const conditions = input.conditions.map((c, k): CompiledCondition => {
    const field = `${input.field}.conditions[${k}]`;
    if (c.type === 'member') {
      const set = sets.get(c.set);
      if (!set) throw new Error(`compile: set ${c.set} missing after validation`);
      return { kind: 'member', set, miss: { matched: false, field, reason: `the peer is not in set "${c.set}"` } };
    }
    return {
      kind: 'amount',
      max: c.max,
      miss: { matched: false, field, reason: `the request spends more than ${c.max} units` },
    };
  });
  const ops = sortOps([...input.ops]);
  return {
    index: input.index,
    // Already validated: parsing again only builds the pattern object.
    pattern: parseResource(input.resource, input.field, { maxLength: Number.MAX_SAFE_INTEGER, allowPattern: true }),
    action: input.action,
    conditions,
    grant: {
      matched: true,
      field: input.field,
      checks: input.checks,
      ops,
      needsTrust: input.checks.some((c) => c.kind === 'minTrust'),
    },
  };
}

/** An owner's policy, ready for the hot path. */
export class CompiledPolicy {
  readonly owner: string;
  readonly policy: MembranePolicy;
  /** Content id of the normalized policy (16 hex digits); part of every counter id. */
  readonly id: string;
  private readonly matcher: CapabilityMatcher;

  /** `owner` is the DID whose resources the policy guards (either DID form). */
  constructor(owner: string, policy: MembranePolicy) {
    this.owner = canonicalDid(owner);
    policy.capabilities.forEach((cap, k) => {
      // A did: resource is "may message me": in someone else's policy it could never match, so it is a mistake.
      if (cap.resource.startsWith('did:') && cap.resource !== this.owner) {
        throw new MembraneError('POLICY_INVALID', `a did: resource must be the owner ${this.owner}`, {
          field: `capabilities[${k}].resource`,
        });
      }
    });
    this.policy = policy;
    this.id = policyId(policy);
    const sets = new Map<string, ReadonlySet<string>>();
    for (const [name, dids] of Object.entries(policy.sets)) sets.set(name, new Set(dids));
    const shared: CompiledCheck[] = [];
    const sharedOps: ConsumeOp[] = [];
    if (policy.expiry !== null) {
      shared.push({ kind: 'expiry', atMs: policy.expiry * MS, field: 'expiry', code: 'ACCESS_EXPIRED' });
    }
    compileConstraints(policy.constraints, 'constraints', `p:${this.id}:c`, shared, sharedOps);
    const caps = policy.capabilities.map((cap, k) => {
      const checks = [...shared];
      const ops = [...sharedOps];
      const field = `capabilities[${k}]`;
      compileConstraints(cap.constraints, `${field}.constraints`, `p:${this.id}:k${k}c`, checks, ops);
      return compileCapability({ ...cap, field, index: k, checks, ops }, sets);
    });
    this.matcher = new CapabilityMatcher(caps);
  }

  /** See CapabilityMatcher.match. */
  match(peer: string, resource: string, action: Action, amount: number): CompiledGrant | ConditionMiss | undefined {
    return this.matcher.match(peer, resource, action, amount);
  }
}
