/**
 * @libertaria/shared: the wire protocol, identities, config reader and errors
 * that relay nodes, bridges, the client SDK and the CLI all build on.
 */
export * from './bridge/index.js';
export * from './client/index.js';
export { FileRelayPinStore, relayPinsFile } from './client/relay-pins-file.js';
export { FileSessionStore, stateDirForKeyFile } from './client/session-store-file.js';
export * from './config.js';
export * from './errors.js';
export * from './identity/index.js';
export { createLogger, type Logger, type LogLevel, silentLogger } from './log.js';
export * from './membrane/index.js';
export * from './protocol/frames.js';
export { leadingZeroBits, solvePowStamp, verifyPowStamp } from './protocol/pow.js';
export * from './protocol/routed-header.js';
export { fitText, truncateUtf8 } from './protocol/text.js';
export { nodeCrypto } from './session/crypto-node.js';
export * from './session/index.js';
export * from './session/prekey-bundle.js';
export * from './session/prekey-types.js';
