/**
 * @libertaria/bridge-activitypub: bridged Libertaria peers as ActivityPub
 * actors, on Fedify (docs/bridges.md#activitypub). Loading it fills what
 * Fedify 2.3.6 needs from Node 20 (fedify-runtime.ts).
 */
import './fedify-runtime.js';

export {
  ActivityPubBridge,
  type ActivityPubBridgeOptions,
  type ForeignSenderDecider,
  retryAfterMs,
} from './activitypub-bridge.js';
export { type Actor, ActorStore, HANDLE_PREFIX, handleOf, INSTANCE_ACTOR, type SealedStoreLike } from './actors.js';
export {
  BullMqMessageQueue,
  type BullMqMessageQueueOptions,
  type FedifyJobData,
  MessageTooLargeError,
} from './bullmq-message-queue.js';
export {
  type BridgeActivityPubConfig,
  bridgeActivityPubConfigSpec,
  describeBridgeActivityPubConfig,
  loadBridgeActivityPubConfig,
} from './config.js';
export { fedifyRuntimeReady } from './fedify-runtime.js';
export { htmlToText, textToHtml } from './html-text.js';
export { type BridgeHttpServer, startBridgeHttpServer } from './http-server.js';
export { canonicalJson } from './json-value.js';
export { BridgeActivityPubMetrics } from './metrics.js';
export {
  DEFAULT_KV_PREFIX,
  DEFAULT_MAX_VALUE_BYTES,
  KvValueTooLargeError,
  RedisKvStore,
  type RedisKvStoreOptions,
} from './redis-kv-store.js';
export { RemoteAccounts, type RemoteActor } from './remote.js';
export { type ActivityPubBridgeService, queueMessageKey, startActivityPubBridgeService } from './service.js';
