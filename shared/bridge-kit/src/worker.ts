/**
 * Node-only part of @libertaria/bridge-kit: the BullMQ federation worker a
 * bridge service runs around its `Bridge` (registration, outbound jobs,
 * inbound frames; scaled out over several processes with `scaleOut`), the
 * foreign-sender policy (owners' membrane policies applied to senders on the
 * foreign network), RedisSealedStore (bridge secrets sealed under a KEK in
 * Redis), and what scaled-out processes share: RedisSessionStore, leases and
 * the leader election. Needs Redis (ioredis), BullMQ and prom-client.
 */

export {
  type BridgeHttpServer,
  bridgeHealthReport,
  listenBridgeHttp,
  writeBridgeHealth,
  writeMetrics,
} from './bridge-http.js';
export {
  BridgeFederation,
  type BridgeFederationOptions,
  type FederationHealth,
  type ScaleOutOptions,
} from './federation-worker.js';
export {
  type ForeignSenderAction,
  type ForeignSenderDecision,
  ForeignSenderPolicy,
  type ForeignSenderPolicyOptions,
  foreignPeerDid,
  foreignSenderResource,
} from './foreign-sender-policy.js';
export {
  currentLease,
  type Lease,
  type LeaseEvent,
  RedisLeader,
  type RedisLeaderOptions,
  RedisLeaseLock,
  type RedisLeaseLockOptions,
} from './redis-lease.js';
export {
  RedisSealedStore,
  type RedisSealedStoreOptions,
  SEALED_STORE_LIMITS,
  type SealedRecord,
} from './redis-sealed-store.js';
export { RedisSessionStore, type RedisSessionStoreOptions } from './redis-session-store.js';
export { type ClosableService, logInboundWithoutText, runBridgeService } from './service-main.js';
