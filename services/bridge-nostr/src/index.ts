/** @libertaria/bridge-nostr: the Nostr side of Libertaria's federated sessions. */
export * from './config.js';
export * from './dedupe.js';
export * from './http-server.js';
export * from './inbound.js';
export * from './key-store.js';
export * from './log.js';
export * from './metrics.js';
export * from './nip05.js';
export * from './nip17.js';
export * from './nip59.js';
export * from './nostr-bridge.js';
export * from './relay-connection.js';
export * from './service.js';
