/**
 * Every bound of the membrane in one place. Policies and tokens come from
 * peers (owners upload policies, requesters present tokens), so each size is
 * checked before the expensive work: parsing, set building, signature checks.
 */
import { MembraneError } from './membrane-error.js';

export interface MembraneLimits {
  /** Longest policy document, in UTF-8 bytes. @default 65536 */
  maxPolicyBytes: number;
  /** Most capabilities in one policy or token link. @default 256 */
  maxCapabilities: number;
  /** Most conditions on one capability. @default 8 */
  maxConditions: number;
  /** Most constraints in one list (policy, capability or token link). @default 16 */
  maxConstraints: number;
  /** Most named member sets in one policy. @default 32 */
  maxSets: number;
  /** Most DIDs in all of a policy's member sets together. @default 4096 */
  maxSetMembers: number;
  /** Longest resource URI or pattern, in characters. @default 256 */
  maxResourceLength: number;
  /** Most links in a grant token (the root counts). @default 8 */
  maxChainDepth: number;
  /** Longest encoded grant token, in bytes. @default 8192 */
  maxTokenBytes: number;
  /**
   * Furthest ahead a grant token may expire when it is presented or used, in
   * seconds (every link must carry `exp`). Bounds how long a grant the issuer
   * lost control of (a leaked token, a peer that went bad) lives without a
   * revocation. @default 31536000 (365 days)
   */
  maxGrantLifetimeSeconds: number;
}

export const DEFAULT_MEMBRANE_LIMITS: Readonly<MembraneLimits> = Object.freeze({
  maxPolicyBytes: 65_536,
  maxCapabilities: 256,
  maxConditions: 8,
  maxConstraints: 16,
  maxSets: 32,
  maxSetMembers: 4096,
  maxResourceLength: 256,
  maxChainDepth: 8,
  maxTokenBytes: 8192,
  maxGrantLifetimeSeconds: 365 * 24 * 60 * 60,
});

/** The defaults with some values replaced; each must be a positive safe integer. */
export function membraneLimits(overrides: Partial<MembraneLimits> = {}): MembraneLimits {
  const limits = { ...DEFAULT_MEMBRANE_LIMITS, ...overrides };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new MembraneError('BAD_FIELD', `must be a positive integer, got ${String(value)}`, { field: name });
    }
  }
  return limits;
}
