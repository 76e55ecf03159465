/**
 * Byte helpers for the client. Deliberately free of Node's Buffer so the
 * browser build of the SDK needs nothing from Node.
 */

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lower-case hex of any bytes (message ids, hints). */
export function toHex(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += HEX[b];
  return out;
}

/** Constant-length comparison is not needed here: nothing compared with it is secret. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

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
