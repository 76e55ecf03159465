/**
 * Node-only part of @libertaria/bridge-kit: the BullMQ federation worker a
 * bridge service runs around its `Bridge` (registration, outbound jobs,
 * inbound frames). Needs Redis (ioredis), BullMQ and prom-client.
 */
export { BridgeFederation, type BridgeFederationOptions, type FederationHealth } from './federation-worker.js';
export {
  RedisSealedStore,
  type RedisSealedStoreOptions,
  SEALED_STORE_LIMITS,
  type SealedRecord,
} from './redis-sealed-store.js';
