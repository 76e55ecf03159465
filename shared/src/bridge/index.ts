/** Bridges to other networks: foreign identities, federated sessions and the Bridge interface. */
export * from './errors.js';
export * from './federation.js';
export * from './foreign-identity.js';
export * from './types.js';
