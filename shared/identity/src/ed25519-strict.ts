/**
 * The Ed25519 acceptance rules every verifier here applies before (or while)
 * checking the equation, so that the node:crypto (OpenSSL) and noble paths
 * accept exactly the same signatures (docs/identity.md#signature-rules):
 *
 * - S is canonical: S < L (the group order). OpenSSL and noble check this too.
 * - A (the public key) and R (the signature's first half) are canonical
 *   encodings: the 255-bit y is < p = 2^255 - 19.
 * - Neither A nor R is a point of small order (one of the 8 points of order
 *   1, 2, 4 or 8). With A = the identity and (R = identity, S = 0) the
 *   equation [S]B = R + [k]A holds for every message, so such a key would be
 *   "owned" by everyone (issue 12 item 7: OpenSSL accepted it, noble did not).
 *
 * The equation itself is the cofactorless one of RFC 8032 §5.1.7's strict
 * reading, [S]B = R + [k]A, which is what OpenSSL checks; crypto-noble.ts
 * checks the same rather than noble's default cofactored [8][S]B = [8]R + [8][k]A.
 *
 * No Node import: crypto-noble.ts (browser-safe) uses this too.
 */

/** p = 2^255 - 19. */
const P = (1n << 255n) - 19n;
/** L = 2^252 + 27742317777372353535851937790883648493, the prime order of the base point. */
const L = (1n << 252n) + 27742317777372353535851937790883648493n;

function littleEndian(bytes: Uint8Array, from: number, to: number): bigint {
  let n = 0n;
  for (let i = to - 1; i >= from; i--) n = (n << 8n) | BigInt(bytes[i]!);
  return n;
}

/** y of the order-8 points (their x is ±something, so y and p - y are both taken). */
const Y8 = littleEndian(
  Uint8Array.from([
    0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac,
    0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
  ]),
  0,
  32,
);
/**
 * The y coordinates of all 8 small-order points: 1 (the identity), p - 1
 * (order 2), 0 (the two of order 4) and ±Y8 (the four of order 8). Only these
 * points have these y values, so a y in this set means small order whatever
 * the sign bit says.
 */
const SMALL_ORDER_Y = new Set<bigint>([1n, P - 1n, 0n, Y8, P - Y8]);

/** A 32-byte point encoding whose y is < p and which is not one of the 8 small-order points. */
export function isStrictEd25519Point(encoding: Uint8Array, offset = 0): boolean {
  if (encoding.length < offset + 32) return false;
  const last = encoding[offset + 31]!;
  // y is the low 255 bits; the top bit is the sign of x.
  const y = (littleEndian(encoding, offset, offset + 31) | (BigInt(last & 0x7f) << 248n)) as bigint;
  return y < P && !SMALL_ORDER_Y.has(y);
}

/** S (the signature's second half, little-endian) is below the group order. */
export function isCanonicalEd25519Scalar(signature: Uint8Array): boolean {
  return signature.length === 64 && littleEndian(signature, 32, 64) < L;
}

/**
 * Whether a public key and a signature pass the rules above (lengths, A, R,
 * S); the equation is the verifier's. Never throws.
 */
export function passesEd25519StrictRules(publicKey: Uint8Array, signature: Uint8Array): boolean {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) return false;
  if (!(signature instanceof Uint8Array) || signature.length !== 64) return false;
  return isStrictEd25519Point(publicKey) && isStrictEd25519Point(signature, 0) && isCanonicalEd25519Scalar(signature);
}

/** The group order L, for the noble verifier's scalar reduction. */
export const ED25519_ORDER = L;
