/** The membrane's Redis-backed stores (docs/membrane.md#redis). Enforcement is wired by the relay. */
export { type AuditEntry, type AuditLogOptions, type AuditPage, type AuditQuery, RedisAuditLog } from './audit-log.js';
export { RedisConstraintState } from './constraint-state.js';
export { type PolicyStoreOptions, RedisPolicyStore } from './policy-store.js';
export { createRedisMembrane, type RedisMembrane, type RedisMembraneOptions } from './redis-membrane.js';
export { RedisRevocationStore } from './revocation-store.js';
export { RedisTrustStore } from './trust-store.js';
