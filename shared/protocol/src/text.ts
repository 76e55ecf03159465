/**
 * Text fields on the wire are bounded in UTF-8 bytes (MAX_TEXT_BYTES for the
 * reasons in ERROR, NACK and GOAWAY), and the encoder refuses anything longer.
 * Reasons are often built from untrusted input (a peer's policy JSON, a DID,
 * an error message quoting either), so whoever writes one cuts it with
 * fitText first: JavaScript string length counts UTF-16 code units, not bytes,
 * and a non-ASCII character takes up to 4 bytes.
 */
import { MAX_TEXT_BYTES } from './frames.js';

const encoder = new TextEncoder();
const ELLIPSIS = '...';

/** UTF-8 length of one code point (a lone surrogate encodes as U+FFFD, 3 bytes). */
function codePointBytes(cp: number): number {
  if (cp < 0x80) return 1;
  if (cp < 0x800) return 2;
  if (cp < 0x10000) return 3;
  return 4;
}

/**
 * `text` cut to at most `maxBytes` UTF-8 bytes, on a code-point boundary
 * (never half a surrogate pair), ending in "..." when something was cut.
 * Text that already fits is returned unchanged. Never throws for
 * `maxBytes >= 0`; below 3 bytes the ellipsis is left out.
 */
export function truncateUtf8(text: string, maxBytes: number): string {
  const budget = Math.max(0, Math.floor(maxBytes));
  // Fast path: every code unit is at most 3 bytes, so short strings always fit.
  if (text.length * 3 <= budget || encoder.encode(text).length <= budget) return text;
  const suffix = budget >= ELLIPSIS.length ? ELLIPSIS : '';
  const room = budget - suffix.length;
  let used = 0;
  let end = 0;
  for (const ch of text) {
    const n = codePointBytes(ch.codePointAt(0)!);
    if (used + n > room) break;
    used += n;
    end += ch.length;
  }
  return text.slice(0, end) + suffix;
}

/** A reason for ERROR, NACK or GOAWAY: `text` cut to MAX_TEXT_BYTES UTF-8 bytes. */
export function fitText(text: string, maxBytes: number = MAX_TEXT_BYTES): string {
  return truncateUtf8(text, maxBytes);
}
