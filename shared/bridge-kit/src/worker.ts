/**
 * Node-only part of @libertaria/bridge-kit: the BullMQ federation worker a
 * bridge service runs around its `Bridge` (registration, outbound jobs,
 * inbound frames), and the foreign-sender policy (owners' membrane policies
 * applied to senders on the foreign network), and RedisSealedStore (bridge
 * secrets sealed under a KEK in Redis). Needs Redis (ioredis), BullMQ and
 * prom-client.
 */
export { BridgeFederation, type BridgeFederationOptions, type FederationHealth } from './federation-worker.js';
export {
  type ForeignSenderAction,
  type ForeignSenderDecision,
  ForeignSenderPolicy,
  type ForeignSenderPolicyOptions,
  foreignPeerDid,
  foreignSenderResource,
} from './foreign-sender-policy.js';
export {
  RedisSealedStore,
  type RedisSealedStoreOptions,
  SEALED_STORE_LIMITS,
  type SealedRecord,
} from './redis-sealed-store.js';
