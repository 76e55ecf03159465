/**
 * The proof-of-work stamp of anonymous connections (ANON_CHALLENGE / ANON_AUTH).
 *
 *   digest = SHA-256("libertaria-anon-pow/1" ‖ nonce ‖ stamp)
 *   valid  ⇔ digest starts with at least powBits zero bits
 *
 * `nonce` is the 32 random bytes of this connection's ANON_CHALLENGE, so a
 * stamp is worth exactly one connection: it cannot be computed before the
 * relay asks, nor reused on another connection or another relay. `stamp` is
 * 8 bytes the client varies (a big-endian counter here; any bytes will do).
 * The expected cost is 2^powBits hashes for the client and one for the
 * relay. See docs/protocol.md#anonymous-connections.
 *
 * Browser-safe (@noble/hashes): the anonymous requester may run in a page.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { MAX_POW_BITS, NONCE_SIZE, POW_STAMP_SIZE } from './frames.js';

const DOMAIN = new TextEncoder().encode('libertaria-anon-pow/1');
const STAMP_AT = DOMAIN.length + NONCE_SIZE;
const INPUT_SIZE = STAMP_AT + POW_STAMP_SIZE;

/** Number of leading zero bits of `digest`. */
export function leadingZeroBits(digest: Uint8Array): number {
  let bits = 0;
  for (let i = 0; i < digest.length; i++) {
    const b = digest[i]!;
    if (b === 0) {
      bits += 8;
      continue;
    }
    return bits + Math.clz32(b) - 24;
  }
  return bits;
}

function input(nonce: Uint8Array): Uint8Array {
  if (nonce.length !== NONCE_SIZE) throw new RangeError(`proof-of-work nonce must be ${NONCE_SIZE} bytes`);
  const buf = new Uint8Array(INPUT_SIZE);
  buf.set(DOMAIN, 0);
  buf.set(nonce, DOMAIN.length);
  return buf;
}

/** True if `stamp` meets `powBits` for `nonce`. One hash; what the relay runs. */
export function verifyPowStamp(nonce: Uint8Array, stamp: Uint8Array, powBits: number): boolean {
  if (stamp.length !== POW_STAMP_SIZE) return false;
  if (powBits === 0) return true;
  const buf = input(nonce);
  buf.set(stamp, STAMP_AT);
  return leadingZeroBits(sha256(buf)) >= powBits;
}

export interface SolveOptions {
  /** Give up after this many hashes (default: 64 times the expected count). */
  maxAttempts?: number;
}

/**
 * Finds a stamp for `nonce` with at least `powBits` leading zero bits; about
 * 2^powBits hashes. Synchronous: callers that must stay responsive run it
 * in a worker, or keep powBits modest (the client refuses above its own
 * maxPowBits before calling this).
 */
export function solvePowStamp(nonce: Uint8Array, powBits: number, options: SolveOptions = {}): Uint8Array {
  if (!Number.isInteger(powBits) || powBits < 0 || powBits > MAX_POW_BITS) {
    throw new RangeError(`powBits must be an integer 0..${MAX_POW_BITS}`);
  }
  const buf = input(nonce);
  const stamp = buf.subarray(STAMP_AT);
  if (powBits === 0) return stamp.slice();
  const maxAttempts = options.maxAttempts ?? 2 ** Math.min(powBits + 6, 52);
  // A counter in the low 6 bytes is plenty (2^48 attempts); the high bytes stay zero.
  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    let n = attempt;
    for (let i = POW_STAMP_SIZE - 1; i >= 2; i--) {
      stamp[i] = n & 0xff;
      n = Math.floor(n / 256);
    }
    if (leadingZeroBits(sha256(buf)) >= powBits) return stamp.slice();
  }
  throw new RangeError(`no proof-of-work stamp found in ${maxAttempts} attempts`);
}
