/**
 * Byte helpers for the client. Deliberately free of Node's Buffer so the
 * browser build of the SDK needs nothing from Node.
 */

// Nothing the client compares is secret, so the early-exit comparison serves.
export { bytesEqual, toHex } from '@libertaria/protocol';

/**
 * Random bytes from the Web Crypto API, which both Node 20 and browsers expose
 * as globalThis.crypto; message ids only need to be unique, not secret, but a
 * CSPRNG makes collisions between independent senders negligible.
 */
export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  globalThis.crypto.getRandomValues(out);
  return out;
}

/**
 * A copy as a plain Uint8Array. Not `.slice()`: on a Node Buffer (what the
 * TCP transport and callers may hand in) slice() returns a view, not a copy.
 */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}
