/**
 * @libertaria/bridge-kit: what a bridge to another network and the peers
 * that use it share: foreign identities (`nostr:npub1…`, `acct:user@host`),
 * the federated message a peer seals to a bridge, federated sessions from the
 * SDK, the Bridge interface and its errors. Browser-safe; the BullMQ
 * federation worker (`./worker`) and the contract suite (`./contract`) are
 * Node-only subpaths.
 */
export * from './errors.js';
export * from './federated-session.js';
export * from './federation.js';
export * from './foreign-identity.js';
export * from './types.js';
