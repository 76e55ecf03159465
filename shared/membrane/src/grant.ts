/**
 * Grant tokens: capabilities an owner signs for another peer, delegable with
 * attenuation in the UCAN manner (docs/membrane.md#grant-tokens).
 *
 * Encoding (binary, big-endian):
 *
 *   token = "LMG" ‖ version (1 byte, = 1) ‖ link count (1 byte) ‖ link × count   root first
 *   link  = payload length (u16) ‖ payload ‖ issuer Ed25519 public key (32) ‖ signature (64)
 *
 * The payload is canonical JSON (UTF-8, no whitespace, keys in this order,
 * optional keys absent rather than null):
 *
 *   {"v":1,"iss":DID,"aud":DID,"att":[capability…],"cst":[constraint…],
 *    "nbf":secs?,"exp":secs,"nnc":32 hex,"prf":64 hex?}
 *
 * `exp` is required on every link (a grant that never expires cannot be
 * taken back by anyone but an operator), and a relay refuses a token that
 * expires further ahead than MembraneLimits.maxGrantLifetimeSeconds.
 *
 * and the decoder re-serializes what it parsed and refuses any payload that
 * is not byte-identical, so one grant has exactly one encoding. The signature
 * is Ed25519 over "libertaria-membrane-grant-v1\0" ‖ payload by the key whose
 * DID is `iss` (the domain keeps a grant signature from ever being valid as
 * a relay-auth or prekey signature). A link's content id (cid) is the hex
 * BLAKE3-256 of its payload; `prf` of link i+1 is the cid of link i, and
 * revocation names cids: revoking a link revokes everything delegated under it.
 *
 * Verification, to the root, cheapest first so a hostile token costs little:
 * framing and schema, then the chain (each link's proof and issuer), the
 * attenuation, the owner, audience and validity the caller asks for, and
 * only then the Ed25519 signatures; each link's issuer is the
 * previous link's audience; each link claims no more than the previous one
 * (its capabilities are covered, amounts no larger, validity no wider); the
 * root's issuer is the resource owner and the last audience the presenting
 * peer. Constraints accumulate down the chain, and each link's counters are
 * keyed by that link's cid, so a quota set by a delegator is shared by
 * everything delegated under it.
 */

import {
  didMatchesKey,
  type Ed25519Identity,
  PUBLIC_KEY_LENGTH,
  SIGNATURE_LENGTH,
  verifyEd25519,
} from '@libertaria/identity';
import { concatBytes, toHex } from '@libertaria/protocol';
import { blake3 } from '@noble/hashes/blake3.js';
import {
  CapabilityMatcher,
  type CompiledCheck,
  type CompiledGrant,
  type ConditionMiss,
  type ConsumeOp,
  compileCapability,
  compileConstraints,
} from './compile.js';
import type { MembraneLimits } from './limits.js';
import { MembraneError } from './membrane-error.js';
import {
  arrayOf,
  type Capability,
  type Condition,
  type Constraint,
  integer,
  MAX_TIME,
  objectOf,
  parseCapability,
  parseConstraints,
} from './policy.js';
import { type Action, canonicalDid, parseResource, patternCovers } from './resource.js';

export const GRANT_VERSION = 1;
const MAGIC = Uint8Array.of(0x4c, 0x4d, 0x47); // "LMG"
const HEADER = MAGIC.length + 2;
const LINK_OVERHEAD = 2 + PUBLIC_KEY_LENGTH + SIGNATURE_LENGTH;
export const GRANT_SIGNING_DOMAIN = 'libertaria-membrane-grant-v1\0';
const DOMAIN = new TextEncoder().encode(GRANT_SIGNING_DOMAIN);
const NONCE = /^[0-9a-f]{32}$/;
const CID = /^[0-9a-f]{64}$/;

/** A token capability: a policy capability without member conditions or constraints of its own. */
export type GrantCapability = Omit<Capability, 'constraints'>;

export interface GrantPayload {
  v: typeof GRANT_VERSION;
  iss: string;
  aud: string;
  att: GrantCapability[];
  cst: Constraint[];
  nbf?: number;
  /** Unix seconds; required (validateGrantPayload refuses a link without it). */
  exp: number;
  nnc: string;
  prf?: string;
}

export interface GrantLink {
  readonly payload: GrantPayload;
  readonly payloadBytes: Uint8Array;
  readonly cid: string;
  readonly issuerKey: Uint8Array;
  readonly signature: Uint8Array;
}

function conditionJson(c: Condition): unknown {
  return c.type === 'amount' ? { type: c.type, max: c.max } : { type: c.type, set: c.set };
}

function constraintJson(c: Constraint | GrantConstraint): unknown {
  switch (c.type) {
    case 'rate':
      return { type: c.type, limit: c.limit, windowSeconds: c.windowSeconds };
    case 'quota':
      return { type: c.type, units: c.units, windowSeconds: c.windowSeconds };
    case 'expiry':
    case 'notBefore':
      return { type: c.type, at: c.at };
    case 'minTrust':
      return { type: c.type, score: c.score };
    case 'timeWindow':
      return { type: c.type, from: c.from, to: c.to, days: c.days, utcOffsetMinutes: c.utcOffsetMinutes };
  }
}

/** The canonical payload text: fixed key order, absent optionals, no whitespace. */
export function grantPayloadJson(p: GrantPayload): string {
  const o: Record<string, unknown> = {
    v: p.v,
    iss: p.iss,
    aud: p.aud,
    att: p.att.map((c) => ({ resource: c.resource, action: c.action, conditions: c.conditions.map(conditionJson) })),
    cst: p.cst.map(constraintJson),
  };
  if (p.nbf !== undefined) o.nbf = p.nbf;
  o.exp = p.exp;
  o.nnc = p.nnc;
  if (p.prf !== undefined) o.prf = p.prf;
  return JSON.stringify(o);
}

function did(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new MembraneError('GRANT_MALFORMED', 'expected a DID string', { field });
  let canonical: string;
  try {
    canonical = canonicalDid(value);
  } catch (err) {
    throw new MembraneError('GRANT_MALFORMED', `not a DID: ${(err as Error).message}`, { field, cause: err });
  }
  if (canonical !== value) {
    throw new MembraneError('GRANT_MALFORMED', 'tokens name DIDs in their did:libertaria form', { field });
  }
  return canonical;
}

/** Validates a parsed payload (strict: the same schema rules as policies, token flavour). */
export function validateGrantPayload(value: unknown, field: string, limits: MembraneLimits): GrantPayload {
  const o = objectOf(
    'token',
    value,
    field,
    ['v', 'iss', 'aud', 'att', 'cst', 'nbf', 'exp', 'nnc', 'prf'],
    ['v', 'iss', 'aud', 'att', 'cst', 'exp', 'nnc'],
  );
  if (o.v !== GRANT_VERSION) {
    throw new MembraneError('GRANT_MALFORMED', `this membrane reads version ${GRANT_VERSION}`, { field: `${field}.v` });
  }
  const att = arrayOf('token', o.att, `${field}.att`, limits.maxCapabilities).map((c, i) =>
    parseCapability('token', c, `${field}.att[${i}]`, limits, undefined),
  );
  if (att.length === 0)
    throw new MembraneError('GRANT_MALFORMED', 'a grant grants something', { field: `${field}.att` });
  const payload: GrantPayload = {
    v: GRANT_VERSION,
    iss: did(o.iss, `${field}.iss`),
    aud: did(o.aud, `${field}.aud`),
    att: att.map((c) => ({ resource: c.resource, action: c.action, conditions: c.conditions })),
    cst: parseConstraints('token', o.cst, `${field}.cst`, limits),
    exp: integer('token', o.exp, `${field}.exp`, 0, MAX_TIME),
    nnc: '',
  };
  if (o.nbf !== undefined) payload.nbf = integer('token', o.nbf, `${field}.nbf`, 0, MAX_TIME);
  if (payload.nbf !== undefined && payload.nbf >= payload.exp) {
    throw new MembraneError('GRANT_MALFORMED', 'nbf must be before exp', { field: `${field}.exp` });
  }
  if (typeof o.nnc !== 'string' || !NONCE.test(o.nnc)) {
    throw new MembraneError('GRANT_MALFORMED', 'a nonce is 32 lower-case hex digits', { field: `${field}.nnc` });
  }
  payload.nnc = o.nnc;
  if (o.prf !== undefined) {
    if (typeof o.prf !== 'string' || !CID.test(o.prf)) {
      throw new MembraneError('GRANT_MALFORMED', 'a proof is a cid: 64 lower-case hex digits', {
        field: `${field}.prf`,
      });
    }
    payload.prf = o.prf;
  }
  return payload;
}

function cidOf(payloadBytes: Uint8Array): string {
  return toHex(blake3(payloadBytes));
}

/** Signs one link; `payload.iss` must be the signer's DID. */
export function signGrantLink(issuer: Ed25519Identity, payload: GrantPayload): GrantLink {
  const payloadBytes = new TextEncoder().encode(grantPayloadJson(payload));
  return {
    payload,
    payloadBytes,
    cid: cidOf(payloadBytes),
    issuerKey: issuer.publicKey,
    signature: issuer.sign(concatBytes([DOMAIN, payloadBytes])),
  };
}

/** The token bytes of a chain of links, root first (no checks: see verifyGrant). */
export function encodeGrant(links: readonly GrantLink[]): Uint8Array {
  if (links.length === 0 || links.length > 0xff)
    throw new MembraneError('GRANT_MALFORMED', 'a token has 1 to 255 links');
  const parts: Uint8Array[] = [MAGIC, Uint8Array.of(GRANT_VERSION, links.length)];
  for (const link of links) {
    if (link.payloadBytes.length > 0xffff)
      throw new MembraneError('GRANT_TOO_LARGE', 'a link payload is at most 65535 bytes');
    parts.push(Uint8Array.of(link.payloadBytes.length >>> 8, link.payloadBytes.length & 0xff));
    parts.push(link.payloadBytes, link.issuerKey, link.signature);
  }
  return concatBytes(parts);
}

/**
 * Parses token bytes into links without checking signatures or the chain:
 * size, depth, framing, payload schema and canonical form. Throws
 * GRANT_TOO_LARGE, GRANT_CHAIN_TOO_DEEP or GRANT_MALFORMED.
 */
export function decodeGrant(bytes: Uint8Array, limits: MembraneLimits): GrantLink[] {
  if (!(bytes instanceof Uint8Array)) throw new MembraneError('GRANT_MALFORMED', 'a token is bytes');
  if (bytes.length > limits.maxTokenBytes) {
    throw new MembraneError('GRANT_TOO_LARGE', `a token is at most ${limits.maxTokenBytes} bytes, got ${bytes.length}`);
  }
  if (bytes.length < HEADER || bytes[0] !== MAGIC[0] || bytes[1] !== MAGIC[1] || bytes[2] !== MAGIC[2]) {
    throw new MembraneError('GRANT_MALFORMED', 'not a grant token (no "LMG" header)');
  }
  if (bytes[3] !== GRANT_VERSION) {
    throw new MembraneError('GRANT_MALFORMED', `token version ${bytes[3]} is not ${GRANT_VERSION}`);
  }
  const count = bytes[4]!;
  if (count === 0) throw new MembraneError('GRANT_MALFORMED', 'a token has at least one link');
  if (count > limits.maxChainDepth) {
    throw new MembraneError('GRANT_CHAIN_TOO_DEEP', `a token has at most ${limits.maxChainDepth} links, got ${count}`);
  }
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const links: GrantLink[] = [];
  let o = HEADER;
  for (let i = 0; i < count; i++) {
    const field = `links[${i}]`;
    if (o + 2 > bytes.length) throw new MembraneError('GRANT_MALFORMED', 'the token ends inside a link', { field });
    const length = (bytes[o]! << 8) | bytes[o + 1]!;
    if (o + LINK_OVERHEAD + length > bytes.length) {
      throw new MembraneError('GRANT_MALFORMED', 'the token ends inside a link', { field });
    }
    const payloadBytes = bytes.slice(o + 2, o + 2 + length);
    const issuerKey = bytes.slice(o + 2 + length, o + 2 + length + PUBLIC_KEY_LENGTH);
    const signature = bytes.slice(o + 2 + length + PUBLIC_KEY_LENGTH, o + LINK_OVERHEAD + length);
    o += LINK_OVERHEAD + length;
    let text: string;
    let value: unknown;
    try {
      text = decoder.decode(payloadBytes);
      value = JSON.parse(text);
    } catch (err) {
      throw new MembraneError('GRANT_MALFORMED', 'the payload is not UTF-8 JSON', {
        field: `${field}.payload`,
        cause: err,
      });
    }
    const payload = validateGrantPayload(value, `${field}.payload`, limits);
    if (grantPayloadJson(payload) !== text) {
      throw new MembraneError('GRANT_MALFORMED', 'the payload is not in canonical form', { field: `${field}.payload` });
    }
    links.push({ payload, payloadBytes, cid: cidOf(payloadBytes), issuerKey, signature });
  }
  if (o !== bytes.length) throw new MembraneError('GRANT_MALFORMED', `${bytes.length - o} bytes after the last link`);
  return links;
}

/** Whether the parent link grants everything `child` (a capability of the next link) claims. */
function capabilityCovered(parent: GrantCapability, child: GrantCapability): boolean {
  if (parent.action !== '*' && parent.action !== child.action) return false;
  const opts = { maxLength: Number.MAX_SAFE_INTEGER, allowPattern: true, code: 'GRANT_MALFORMED' as const };
  if (!patternCovers(parseResource(parent.resource, 'parent', opts), parseResource(child.resource, 'child', opts))) {
    return false;
  }
  const parentMax = parent.conditions.find((c) => c.type === 'amount');
  if (parentMax === undefined) return true;
  const childMax = child.conditions.find((c) => c.type === 'amount');
  return childMax !== undefined && childMax.max <= parentMax.max;
}

function checkAttenuation(parent: GrantPayload, child: GrantPayload, field: string): void {
  child.att.forEach((cap, k) => {
    if (!parent.att.some((p) => capabilityCovered(p, cap))) {
      throw new MembraneError(
        'GRANT_OVER_ATTENUATED',
        `${cap.action} ${cap.resource} is not covered by the delegator's capabilities`,
        { field: `${field}.att[${k}]` },
      );
    }
  });
  if (child.exp > parent.exp) {
    throw new MembraneError('GRANT_OVER_ATTENUATED', `expires later than the delegator's ${parent.exp}`, {
      field: `${field}.exp`,
    });
  }
  if (parent.nbf !== undefined && (child.nbf === undefined || child.nbf < parent.nbf)) {
    throw new MembraneError('GRANT_OVER_ATTENUATED', `valid earlier than the delegator's ${parent.nbf}`, {
      field: `${field}.nbf`,
    });
  }
}

/** A token whose signatures, chain and attenuation verified; time, owner, audience and revocation are per decision. */
export class VerifiedGrant {
  readonly links: readonly GrantLink[];
  /** The root issuer: the owner of the granted resources. */
  readonly root: string;
  /** The last link's audience: the peer entitled to present the token. */
  readonly audience: string;
  /** Every link's cid, root first; any one revoked revokes the token. */
  readonly cids: readonly string[];
  /** The root's cid: the scope (Redis hash tag) of every counter of this chain. */
  readonly rootCid: string;
  /** Latest nbf and earliest exp over the chain, in ms (±Infinity when absent). */
  readonly notBeforeMs: number;
  readonly expiryMs: number;
  private readonly matcher: CapabilityMatcher;

  constructor(links: readonly GrantLink[]) {
    this.links = links;
    this.root = links[0]!.payload.iss;
    this.audience = links[links.length - 1]!.payload.aud;
    this.cids = links.map((l) => l.cid);
    this.rootCid = links[0]!.cid;
    this.notBeforeMs = Math.max(...links.map((l) => (l.payload.nbf ?? Number.NEGATIVE_INFINITY) * 1000));
    this.expiryMs = Math.min(...links.map((l) => l.payload.exp * 1000));
    const checks: CompiledCheck[] = [];
    const ops: ConsumeOp[] = [];
    links.forEach((link, i) => {
      compileConstraints(link.payload.cst, `links[${i}].cst`, `g:${link.cid}:c`, checks, ops);
    });
    const leaf = links.length - 1;
    this.matcher = new CapabilityMatcher(
      links[leaf]!.payload.att.map((cap, k) =>
        compileCapability({ ...cap, field: `links[${leaf}].att[${k}]`, index: k, checks, ops }, new Map()),
      ),
    );
  }

  /** The leaf cid: the token's id. */
  get cid(): string {
    return this.cids[this.cids.length - 1]!;
  }

  /** What the token grants for this request (see CapabilityMatcher.match). */
  match(peer: string, resource: string, action: Action, amount: number): CompiledGrant | ConditionMiss | undefined {
    return this.matcher.match(peer, resource, action, amount);
  }
}

export interface VerifyGrantOptions {
  /** The resource owner: the root issuer must be this DID (either form). */
  owner?: string;
  /** The presenting peer: the last audience must be this DID (either form). */
  audience?: string;
  /** Check validity at this instant (ms), and that the token expires at most `maxLifetimeSeconds` after it. */
  nowMs?: number;
  /** With nowMs: the furthest ahead the token may expire (MembraneLimits.maxGrantLifetimeSeconds). */
  maxLifetimeSeconds?: number;
}

/** Checks a verified token against an owner, a presenter and an instant; throws the matching GRANT_* code. */
export function checkGrantApplies(grant: VerifiedGrant, options: VerifyGrantOptions): void {
  // Plain comparison first: callers on the hot path pass canonical DIDs, and canonicalizing costs a base58 decode.
  if (options.owner !== undefined && grant.root !== options.owner && grant.root !== canonicalDid(options.owner)) {
    throw new MembraneError('GRANT_WRONG_ISSUER', `the root issuer ${grant.root} is not the owner ${options.owner}`);
  }
  if (
    options.audience !== undefined &&
    grant.audience !== options.audience &&
    grant.audience !== canonicalDid(options.audience)
  ) {
    throw new MembraneError('GRANT_WRONG_AUDIENCE', `the token is for ${grant.audience}, not ${options.audience}`);
  }
  if (options.nowMs !== undefined) {
    if (options.nowMs >= grant.expiryMs) throw new MembraneError('GRANT_EXPIRED', 'the token has expired');
    if (options.nowMs < grant.notBeforeMs) throw new MembraneError('GRANT_NOT_YET_VALID', 'the token is not valid yet');
    if (
      options.maxLifetimeSeconds !== undefined &&
      grant.expiryMs - options.nowMs > options.maxLifetimeSeconds * 1000
    ) {
      throw new MembraneError(
        'GRANT_LIFETIME_TOO_LONG',
        `the token expires more than ${options.maxLifetimeSeconds} s ahead; issue it with a nearer expiry`,
      );
    }
  }
}

/**
 * Verifies a token to its root: framing and schema (decodeGrant), every
 * signature, the chain, attenuation; then the options' owner, audience and
 * instant. Revocation is checked per decision (RevocationList).
 */
export function verifyGrant(
  bytes: Uint8Array,
  limits: MembraneLimits,
  options: VerifyGrantOptions = {},
): VerifiedGrant {
  const links = decodeGrant(bytes, limits);
  links.forEach((link, i) => {
    const field = `links[${i}].payload`;
    if (i === 0) {
      if (link.payload.prf !== undefined) {
        throw new MembraneError('GRANT_CHAIN_BROKEN', 'the root link names a proof', { field: `${field}.prf` });
      }
      return;
    }
    const parent = links[i - 1]!;
    if (link.payload.prf !== parent.cid) {
      throw new MembraneError('GRANT_CHAIN_BROKEN', 'the proof is not the previous link', { field: `${field}.prf` });
    }
    if (link.payload.iss !== parent.payload.aud) {
      throw new MembraneError('GRANT_CHAIN_BROKEN', "the issuer is not the previous link's audience", {
        field: `${field}.iss`,
      });
    }
    checkAttenuation(parent.payload, link.payload, field);
  });
  const grant = new VerifiedGrant(links);
  checkGrantApplies(grant, {
    ...options,
    ...(options.nowMs !== undefined ? { maxLifetimeSeconds: limits.maxGrantLifetimeSeconds } : {}),
  });
  // Signatures last: up to maxChainDepth Ed25519 verifications, paid only by a token that passed every cheap check.
  links.forEach((link, i) => {
    const signed = concatBytes([DOMAIN, link.payloadBytes]);
    if (!didMatchesKey(link.payload.iss, link.issuerKey) || !verifyEd25519(link.issuerKey, signed, link.signature)) {
      throw new MembraneError('GRANT_BAD_SIGNATURE', `the signature of ${link.payload.iss} does not verify`, {
        field: `links[${i}]`,
      });
    }
  });
  return grant;
}

/** A constraint as a token states it: rate and quota without `scope` (a token's counters are per link). */
export type GrantConstraint = Constraint extends infer C
  ? C extends { scope: unknown }
    ? Omit<C, 'scope'>
    : C
  : never;

export interface GrantOptions {
  /** The peer the grant is for (either DID form). */
  audience: string;
  capabilities: { resource: string; action: GrantCapability['action']; conditions?: Condition[] }[];
  constraints?: GrantConstraint[];
  /** Unix seconds. */
  notBefore?: number;
  /** Unix seconds; default DEFAULT_GRANT_LIFETIME_SECONDS from now (every grant expires). */
  expiry?: number;
}

/** The expiry of a grant issued without one: 30 days. */
export const DEFAULT_GRANT_LIFETIME_SECONDS = 30 * 24 * 60 * 60;

function randomNonce(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(16)));
}

function payloadFor(
  issuer: Ed25519Identity,
  options: GrantOptions,
  limits: MembraneLimits,
  prf?: string,
): GrantPayload {
  // Through the validator, so code-built grants obey exactly the rules decoded ones do.
  const draft: Record<string, unknown> = {
    v: GRANT_VERSION,
    iss: issuer.did,
    aud: canonicalDid(options.audience),
    att: options.capabilities.map((c) => ({ resource: c.resource, action: c.action, conditions: c.conditions ?? [] })),
    cst: (options.constraints ?? []).map(constraintJson),
    nnc: randomNonce(),
  };
  if (options.notBefore !== undefined) draft.nbf = options.notBefore;
  draft.exp = options.expiry ?? Math.floor(Date.now() / 1000) + DEFAULT_GRANT_LIFETIME_SECONDS;
  if (prf !== undefined) draft.prf = prf;
  return validateGrantPayload(draft, 'payload', limits);
}

/** A new root grant signed by the resource owner. */
export function issueGrant(owner: Ed25519Identity, options: GrantOptions, limits: MembraneLimits): Uint8Array {
  const out = encodeGrant([signGrantLink(owner, payloadFor(owner, options, limits))]);
  // Verified like any presented token, so an issuer never hands out a token relays refuse (e.g. too large).
  verifyGrant(out, limits);
  return out;
}

/**
 * Delegates a token the delegator holds (it must be the token's audience) to
 * another peer, with at most the delegator's capabilities. The result is
 * verified before it is returned, so an over-attenuated delegation throws.
 */
export function delegateGrant(
  token: Uint8Array,
  delegator: Ed25519Identity,
  options: GrantOptions,
  limits: MembraneLimits,
): Uint8Array {
  const parent = verifyGrant(token, limits, { audience: delegator.did });
  // A delegation never outlives its delegator's link: the default expiry is capped by the parent's.
  const expiry =
    options.expiry ?? Math.min(parent.expiryMs / 1000, Math.floor(Date.now() / 1000) + DEFAULT_GRANT_LIFETIME_SECONDS);
  const link = signGrantLink(delegator, payloadFor(delegator, { ...options, expiry }, limits, parent.cid));
  const out = encodeGrant([...parent.links, link]);
  verifyGrant(out, limits);
  return out;
}
