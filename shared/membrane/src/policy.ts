/**
 * The membrane's policy model (docs/membrane.md), after the seed:
 *
 *   MembranePolicy { capabilities, constraints, expiry }
 *   Capability     { resource, action, conditions }
 *
 * plus what the seed leaves implicit: named member sets for the `member`
 * condition, and optional constraints per capability. The JSON form is
 * strict: unknown keys, wrong types, non-integers where integers belong and
 * anything over a limit are refused with a MembraneError whose `field` is the
 * JSON path of the bad value. Validation also normalizes: DIDs become
 * did:libertaria, omitted lists become empty, so equal policies compare and
 * serialize equal.
 *
 * Conditions decide whether a capability applies to a request (who asks,
 * how much); constraints limit a capability that applies (when, how often,
 * how much in total, how trusted). Tokens (grant.ts) reuse both schemas with
 * the restrictions noted on each kind.
 */

import type { MembraneLimits } from './limits.js';
import { MembraneError } from './membrane-error.js';
import { type ActionPattern, canonicalDid, parseAction, parseResource } from './resource.js';

export const POLICY_VERSION = 1;

export type Condition =
  /** The requesting peer is in the policy's named set (policies only: a token names its audience). */
  | { type: 'member'; set: string }
  /** The request spends at most `max` units (a request spends 1 unless it says otherwise). */
  | { type: 'amount'; max: number };

export type ConstraintScope = 'peer' | 'all';

export type Constraint =
  /** Denies from this instant on (unix seconds). */
  | { type: 'expiry'; at: number }
  /** Denies before this instant (unix seconds). */
  | { type: 'notBefore'; at: number }
  /** At most `limit` requests per aligned window of `windowSeconds`, per peer or for all peers together. */
  | { type: 'rate'; limit: number; windowSeconds: number; scope: ConstraintScope }
  /**
   * At most `units` units spent, per aligned window of `windowSeconds`, or in
   * total (windowSeconds 0); spends are atomic across every relay node.
   */
  | { type: 'quota'; units: number; windowSeconds: number; scope: ConstraintScope }
  /** The peer's trust score (TrustProvider, 0..1) is at least `score`. */
  | { type: 'minTrust'; score: number }
  /**
   * Only between `from` and `to` ("HH:MM", local time at `utcOffsetMinutes`),
   * on the ISO weekdays listed (1 = Monday … 7 = Sunday; all when omitted).
   * `from` > `to` wraps past midnight; the weekday is that of the instant checked.
   */
  | { type: 'timeWindow'; from: string; to: string; days: number[]; utcOffsetMinutes: number };

export interface Capability {
  resource: string;
  action: ActionPattern;
  conditions: Condition[];
  /** Constraints of this capability only, checked after the policy's. */
  constraints: Constraint[];
}

export interface MembranePolicy {
  version: typeof POLICY_VERSION;
  capabilities: Capability[];
  /** Constraints on every capability of the policy. */
  constraints: Constraint[];
  /** The whole policy stops granting at this instant (unix seconds); null: never. */
  expiry: number | null;
  /** Named sets of peers for `member` conditions (DIDs, normalized to did:libertaria). */
  sets: Record<string, string[]>;
}

/** Where a schema is used: a policy, or a grant token link (which is stricter). */
export type SchemaContext = 'policy' | 'token';

type Code = 'POLICY_INVALID' | 'GRANT_MALFORMED';
const codeOf = (ctx: SchemaContext): Code => (ctx === 'policy' ? 'POLICY_INVALID' : 'GRANT_MALFORMED');

/** Largest count or unit figure: exact in a double and in Redis/Lua arithmetic. */
export const MAX_UNITS = 1e15;
/** Longest window: a leap year. */
export const MAX_WINDOW_SECONDS = 366 * 86_400;
/** Latest instant (unix seconds) accepted anywhere: year 9999. */
export const MAX_TIME = 253_402_300_799;
const SET_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const HHMM = /^([01][0-9]|2[0-3]):([0-5][0-9])$/;

function fail(ctx: SchemaContext, field: string, message: string): never {
  throw new MembraneError(codeOf(ctx), message, { field });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** `value` as an object with only `allowed` keys (and all `required` ones). */
export function objectOf(
  ctx: SchemaContext,
  value: unknown,
  field: string,
  allowed: readonly string[],
  required: readonly string[],
): Record<string, unknown> {
  if (!isPlainObject(value)) fail(ctx, field, 'expected an object');
  // Top-level keys are named bare (`version`), like every other path (`capabilities[0].action`).
  const path = (key: string) => (field === '$' ? key : `${field}.${key}`);
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) fail(ctx, path(key), `unknown key (allowed: ${allowed.join(', ')})`);
  }
  for (const key of required) if (!Object.hasOwn(value, key)) fail(ctx, path(key), 'required');
  return value;
}

export function arrayOf(ctx: SchemaContext, value: unknown, field: string, max: number): unknown[] {
  if (!Array.isArray(value)) fail(ctx, field, 'expected an array');
  if (value.length > max) fail(ctx, field, `at most ${max} entries, got ${value.length}`);
  return value;
}

export function integer(ctx: SchemaContext, value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    fail(ctx, field, `expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function scopeOf(ctx: SchemaContext, value: unknown, field: string): ConstraintScope {
  if (ctx === 'token') {
    // A token's counters belong to the link that set them and are shared by everything delegated under it.
    if (value !== undefined) fail(ctx, field, 'tokens have no scope: their counters are per link');
    return 'all';
  }
  if (value === undefined) return 'peer';
  if (value !== 'peer' && value !== 'all') fail(ctx, field, `expected "peer" or "all", got ${JSON.stringify(value)}`);
  return value;
}

export function parseCondition(
  ctx: SchemaContext,
  value: unknown,
  field: string,
  sets: Record<string, string[]> | undefined,
): Condition {
  const type = isPlainObject(value) ? value.type : undefined;
  if (type === 'member') {
    if (ctx === 'token') fail(ctx, `${field}.type`, 'a token names its audience; member conditions are for policies');
    const o = objectOf(ctx, value, field, ['type', 'set'], ['set']);
    if (typeof o.set !== 'string' || !sets || !Object.hasOwn(sets, o.set)) {
      fail(ctx, `${field}.set`, `names no set of this policy: ${JSON.stringify(o.set)}`);
    }
    return { type, set: o.set };
  }
  if (type === 'amount') {
    const o = objectOf(ctx, value, field, ['type', 'max'], ['max']);
    return { type, max: integer(ctx, o.max, `${field}.max`, 0, MAX_UNITS) };
  }
  fail(ctx, `${field}.type`, `a condition type is "member" or "amount", got ${JSON.stringify(type)}`);
}

export function parseConstraint(ctx: SchemaContext, value: unknown, field: string): Constraint {
  const type = isPlainObject(value) ? value.type : undefined;
  switch (type) {
    case 'expiry':
    case 'notBefore': {
      const o = objectOf(ctx, value, field, ['type', 'at'], ['at']);
      return { type, at: integer(ctx, o.at, `${field}.at`, 0, MAX_TIME) };
    }
    case 'rate': {
      const o = objectOf(ctx, value, field, ['type', 'limit', 'windowSeconds', 'scope'], ['limit', 'windowSeconds']);
      return {
        type,
        limit: integer(ctx, o.limit, `${field}.limit`, 1, MAX_UNITS),
        windowSeconds: integer(ctx, o.windowSeconds, `${field}.windowSeconds`, 1, MAX_WINDOW_SECONDS),
        scope: scopeOf(ctx, o.scope, `${field}.scope`),
      };
    }
    case 'quota': {
      const o = objectOf(ctx, value, field, ['type', 'units', 'windowSeconds', 'scope'], ['units']);
      return {
        type,
        units: integer(ctx, o.units, `${field}.units`, 0, MAX_UNITS),
        windowSeconds:
          o.windowSeconds === undefined
            ? 0
            : integer(ctx, o.windowSeconds, `${field}.windowSeconds`, 0, MAX_WINDOW_SECONDS),
        scope: scopeOf(ctx, o.scope, `${field}.scope`),
      };
    }
    case 'minTrust': {
      const o = objectOf(ctx, value, field, ['type', 'score'], ['score']);
      if (typeof o.score !== 'number' || !Number.isFinite(o.score) || o.score < 0 || o.score > 1) {
        fail(ctx, `${field}.score`, `expected a number from 0 to 1, got ${JSON.stringify(o.score)}`);
      }
      return { type, score: o.score };
    }
    case 'timeWindow': {
      const o = objectOf(ctx, value, field, ['type', 'from', 'to', 'days', 'utcOffsetMinutes'], ['from', 'to']);
      for (const key of ['from', 'to'] as const) {
        if (typeof o[key] !== 'string' || !HHMM.test(o[key])) {
          fail(ctx, `${field}.${key}`, `expected "HH:MM" (00:00 to 23:59), got ${JSON.stringify(o[key])}`);
        }
      }
      if (o.from === o.to) fail(ctx, `${field}.to`, 'an empty window: "from" equals "to"');
      const days =
        o.days === undefined
          ? [1, 2, 3, 4, 5, 6, 7]
          : arrayOf(ctx, o.days, `${field}.days`, 7).map((d, i) => integer(ctx, d, `${field}.days[${i}]`, 1, 7));
      if (days.length === 0) fail(ctx, `${field}.days`, 'an empty list of days allows nothing; omit it for every day');
      if (new Set(days).size !== days.length) fail(ctx, `${field}.days`, 'a day is listed twice');
      return {
        type,
        from: o.from as string,
        to: o.to as string,
        days: [...days].sort((a, b) => a - b),
        utcOffsetMinutes:
          o.utcOffsetMinutes === undefined
            ? 0
            : integer(ctx, o.utcOffsetMinutes, `${field}.utcOffsetMinutes`, -840, 840),
      };
    }
    default:
      fail(
        ctx,
        `${field}.type`,
        `a constraint type is expiry, notBefore, rate, quota, minTrust or timeWindow, got ${JSON.stringify(type)}`,
      );
  }
}

export function parseConstraints(
  ctx: SchemaContext,
  value: unknown,
  field: string,
  limits: MembraneLimits,
): Constraint[] {
  if (value === undefined) return [];
  return arrayOf(ctx, value, field, limits.maxConstraints).map((c, i) => parseConstraint(ctx, c, `${field}[${i}]`));
}

export function parseCapability(
  ctx: SchemaContext,
  value: unknown,
  field: string,
  limits: MembraneLimits,
  sets: Record<string, string[]> | undefined,
): Capability {
  const allowed =
    ctx === 'policy' ? ['resource', 'action', 'conditions', 'constraints'] : ['resource', 'action', 'conditions'];
  const o = objectOf(ctx, value, field, allowed, ['resource', 'action']);
  const resource = parseResource(o.resource, `${field}.resource`, {
    maxLength: limits.maxResourceLength,
    allowPattern: true,
    code: codeOf(ctx),
  });
  const conditions =
    o.conditions === undefined
      ? []
      : arrayOf(ctx, o.conditions, `${field}.conditions`, limits.maxConditions).map((c, i) =>
          parseCondition(ctx, c, `${field}.conditions[${i}]`, sets),
        );
  if (conditions.filter((c) => c.type === 'amount').length > 1) {
    fail(ctx, `${field}.conditions`, 'at most one amount condition');
  }
  return {
    resource: resource.uri,
    action: parseAction(o.action, `${field}.action`, codeOf(ctx)),
    conditions,
    constraints: parseConstraints(ctx, o.constraints, `${field}.constraints`, limits),
  };
}

function parseSets(value: unknown, limits: MembraneLimits): Record<string, string[]> {
  const sets: Record<string, string[]> = Object.create(null);
  if (value === undefined) return sets;
  if (!isPlainObject(value)) fail('policy', 'sets', 'expected an object of named DID lists');
  const names = Object.keys(value).sort();
  if (names.length > limits.maxSets) fail('policy', 'sets', `at most ${limits.maxSets} sets, got ${names.length}`);
  let members = 0;
  for (const name of names) {
    const field = `sets.${name}`;
    if (!SET_NAME.test(name)) fail('policy', field, 'a set name is 1-64 of A-Z a-z 0-9 _ . -');
    const list = arrayOf('policy', value[name], field, limits.maxSetMembers);
    members += list.length;
    if (members > limits.maxSetMembers) {
      fail('policy', field, `all sets together hold at most ${limits.maxSetMembers} DIDs`);
    }
    const dids = list.map((did, i): string => {
      if (typeof did !== 'string') fail('policy', `${field}[${i}]`, 'expected a DID string');
      let canonical: string;
      try {
        canonical = canonicalDid(did);
      } catch (err) {
        fail('policy', `${field}[${i}]`, `not a DID: ${err instanceof Error ? err.message : String(err)}`);
      }
      return canonical;
    });
    sets[name] = [...new Set(dids)].sort();
  }
  return sets;
}

/** Validates and normalizes a parsed JSON value as a policy. Throws MembraneError POLICY_INVALID naming the field. */
export function validatePolicy(value: unknown, limits: MembraneLimits): MembranePolicy {
  const o = objectOf(
    'policy',
    value,
    '$',
    ['version', 'capabilities', 'constraints', 'expiry', 'sets'],
    ['version', 'capabilities'],
  );
  if (o.version !== POLICY_VERSION) fail('policy', 'version', `this membrane reads version ${POLICY_VERSION} only`);
  const sets = parseSets(o.sets, limits);
  const capabilities = arrayOf('policy', o.capabilities, 'capabilities', limits.maxCapabilities).map((c, i) =>
    parseCapability('policy', c, `capabilities[${i}]`, limits, sets),
  );
  return {
    version: POLICY_VERSION,
    capabilities,
    constraints: parseConstraints('policy', o.constraints, 'constraints', limits),
    expiry: o.expiry === undefined || o.expiry === null ? null : integer('policy', o.expiry, 'expiry', 0, MAX_TIME),
    sets: { ...sets },
  };
}

/** Parses a policy document (JSON text or UTF-8 bytes), bounded by `limits.maxPolicyBytes` before parsing. */
export function parsePolicy(document: string | Uint8Array, limits: MembraneLimits): MembranePolicy {
  const bytes = typeof document === 'string' ? Buffer.byteLength(document, 'utf8') : document.length;
  if (bytes > limits.maxPolicyBytes) {
    throw new MembraneError('POLICY_INVALID', `a policy is at most ${limits.maxPolicyBytes} bytes, got ${bytes}`, {
      field: '$',
    });
  }
  let value: unknown;
  try {
    const text = typeof document === 'string' ? document : new TextDecoder('utf-8', { fatal: true }).decode(document);
    value = JSON.parse(text);
  } catch (err) {
    throw new MembraneError('POLICY_INVALID', `not UTF-8 JSON: ${(err as Error).message}`, { field: '$', cause: err });
  }
  return validatePolicy(value, limits);
}

/** The normalized policy as compact JSON: validatePolicy's output serializes the same way every time. */
export function policyToJson(policy: MembranePolicy): string {
  return JSON.stringify(policy);
}
