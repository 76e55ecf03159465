/**
 * @libertaria/protocol: the wire format every part of the cluster speaks:
 * frames and their codec (frames.ts, whose header comment is the protocol's
 * reference), routed-header accessors, prekey-bundle encodings, proof-of-work
 * stamps, bounded text, the error code table and byte helpers. Depends on no
 * other package of ours; browser-safe.
 */
export * from './bytes.js';
export * from './errors.js';
export * from './frames.js';
export { leadingZeroBits, solvePowStamp, verifyPowStamp } from './pow.js';
export * from './prekey-bundle.js';
export * from './prekey-types.js';
export * from './routed-header.js';
export { fitText, truncateUtf8 } from './text.js';
