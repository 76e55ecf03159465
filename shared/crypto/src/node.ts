/** Node-only part of @libertaria/crypto: the node:crypto provider (OpenSSL; about 20x the pure-JS one on hot paths). */
export { nodeCrypto } from './crypto-node.js';
