/** The membrane: capability policies, grant tokens and access decisions (docs/membrane.md). */
export {
  CapabilityMatcher,
  type CompiledCheck,
  type CompiledGrant,
  CompiledPolicy,
  type ConditionMiss,
  type ConsumeOp,
  insideTimeWindow,
  policyId,
} from './compile.js';
export {
  checkGrantApplies,
  decodeGrant,
  delegateGrant,
  encodeGrant,
  GRANT_SIGNING_DOMAIN,
  GRANT_VERSION,
  type GrantCapability,
  type GrantConstraint,
  type GrantLink,
  type GrantOptions,
  type GrantPayload,
  grantPayloadJson,
  issueGrant,
  signGrantLink,
  type VerifiedGrant,
  type VerifyGrantOptions,
  validateGrantPayload,
  verifyGrant,
} from './grant.js';
export type {
  AuditRecord,
  AuditSink,
  ConstraintState,
  PolicySource,
  RevocationList,
  TrustProvider,
} from './interfaces.js';
export { DEFAULT_MEMBRANE_LIMITS, type MembraneLimits, membraneLimits } from './limits.js';
export { type AccessDecision, type AccessRequest, auditRecordOf, Membrane, type MembraneOptions } from './membrane.js';
export { MembraneError } from './membrane-error.js';
export {
  counterKey,
  MemoryAuditSink,
  MemoryConstraintState,
  MemoryPolicySource,
  MemoryRevocationList,
  MemoryTrustProvider,
  windowIndex,
} from './memory.js';
export {
  type Capability,
  type Condition,
  type Constraint,
  type ConstraintScope,
  MAX_TIME,
  MAX_UNITS,
  MAX_WINDOW_SECONDS,
  type MembranePolicy,
  POLICY_VERSION,
  parsePolicy,
  policyToJson,
  validatePolicy,
} from './policy.js';
export {
  ACTIONS,
  type Action,
  type ActionPattern,
  canonicalDid,
  isAction,
  parseResource,
  patternCovers,
  patternMatches,
  RESOURCE_SCHEMES,
  type ResourcePattern,
  type ResourceScheme,
} from './resource.js';
