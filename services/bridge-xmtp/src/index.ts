/** @libertaria/bridge-xmtp: the XMTP side of Libertaria's federated sessions. */
export * from './config.js';
export * from './eoa.js';
export * from './http-server.js';
export * from './identities.js';
export * from './inbound.js';
export * from './log.js';
export * from './metrics.js';
export * from './network.js';
export * from './sdk-network.js';
export * from './service.js';
export * from './xmtp-bridge.js';
