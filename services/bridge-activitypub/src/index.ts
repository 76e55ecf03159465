/**
 * @libertaria/bridge-activitypub (in progress): the building blocks of the
 * ActivityPub bridge on Fedify. So far its two Redis adapters, each tested on
 * a real Redis: Fedify's KvStore on ioredis and its MessageQueue on BullMQ.
 * The bridge itself (actors, inbox, outbox, the Bridge interface) is not
 * written yet (README.md). Loading it fills what Fedify 2.3.6 needs from
 * Node 20 (fedify-runtime.ts).
 */
import './fedify-runtime.js';

export {
  BullMqMessageQueue,
  type BullMqMessageQueueOptions,
  type FedifyJobData,
  MessageTooLargeError,
} from './bullmq-message-queue.js';
export { fedifyRuntimeReady } from './fedify-runtime.js';
export { canonicalJson } from './json-value.js';
export {
  DEFAULT_KV_PREFIX,
  DEFAULT_MAX_VALUE_BYTES,
  KvValueTooLargeError,
  RedisKvStore,
  type RedisKvStoreOptions,
} from './redis-kv-store.js';
