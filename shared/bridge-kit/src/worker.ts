/**
 * Node-only part of @libertaria/bridge-kit: the BullMQ federation worker a
 * bridge service runs around its `Bridge` (registration, outbound jobs,
 * inbound frames), and the foreign-sender policy (owners' membrane policies
 * applied to senders on the foreign network). Needs Redis (ioredis), BullMQ
 * and prom-client.
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
