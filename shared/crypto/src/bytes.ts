/**
 * Byte helpers for the session layer. Free of Node's Buffer and of any Node
 * import: the ratchet and PQXDH core run in browsers too.
 */
import { concatBytes as joinBytes, ProtocolError } from '@libertaria/protocol';

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export { constantTimeEqual, toHex } from '@libertaria/protocol';

/** Variadic form of the shared concatBytes, as the session codecs call it. */
export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  return joinBytes(parts);
}

export function u32be(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value >>> 0);
  return out;
}

export function utf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

/**
 * Overwrites secrets with zeros. Best effort only: a JavaScript engine may
 * have copied the bytes (GC moves, JIT spills, strings), and node:crypto keeps
 * its own copies inside OpenSSL. It still shortens the life of the copies we
 * control, and makes use-after-wipe bugs fail loudly (all-zero keys).
 */
export function wipe(...arrays: (Uint8Array | undefined)[]): void {
  for (const a of arrays) a?.fill(0);
}

/** Curve25519's p = 2^255 − 19, little-endian: the bound for canonical u-coordinates. */
function isCanonicalX25519(u: Uint8Array): boolean {
  if (u[31]! & 0x80) return false; // the top bit is ignored by X25519, so a flipped copy would be accepted silently
  // u < p unless u is in [2^255 − 19, 2^255 − 1]: bytes 1..30 all 0xff, byte 31 = 0x7f, byte 0 ≥ 0xed.
  if (u[31] !== 0x7f || u[0]! < 0xed) return true;
  for (let i = 1; i < 31; i++) if (u[i] !== 0xff) return true;
  return false;
}

/**
 * Whether 32 bytes are the canonical encoding of an X25519 public key (top bit
 * clear, value below p). X25519 itself accepts non-canonical encodings and maps
 * them to the same point, so without this check a bit flip in a key could go
 * unnoticed; every decoder in the session layer refuses them.
 */
export function isCanonicalX25519PublicKey(key: Uint8Array): boolean {
  return key.length === 32 && isCanonicalX25519(key);
}

/**
 * A strict reader over one message. Every failure is a ProtocolError with a
 * codec code; read byte fields are copies, so decoded messages never alias
 * the caller's buffer (the ratchet keeps some of them).
 */
export class ByteReader {
  private at = 0;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string,
  ) {}

  get remaining(): number {
    return this.bytes.length - this.at;
  }

  private need(n: number, field: string): void {
    if (this.remaining < n) {
      throw new ProtocolError('TRUNCATED', `${this.what}: input ends inside ${field} (${n} bytes needed)`);
    }
  }

  u8(field: string): number {
    this.need(1, field);
    return this.bytes[this.at++]!;
  }

  u32(field: string): number {
    this.need(4, field);
    const b = this.bytes;
    const v = ((b[this.at]! << 24) | (b[this.at + 1]! << 16) | (b[this.at + 2]! << 8) | b[this.at + 3]!) >>> 0;
    this.at += 4;
    return v;
  }

  /** u64 kept below 2^53 so it is an exact JavaScript number. */
  u64(field: string): number {
    const hi = this.u32(field);
    const lo = this.u32(field);
    if (hi > 0x1fffff) throw new ProtocolError('BAD_FIELD', `${this.what}: ${field} exceeds 2^53 - 1`);
    return hi * 2 ** 32 + lo;
  }

  bytesN(n: number, field: string): Uint8Array {
    this.need(n, field);
    const out = this.bytes.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }

  x25519Key(field: string): Uint8Array {
    const key = this.bytesN(32, field);
    if (!isCanonicalX25519PublicKey(key)) {
      throw new ProtocolError('BAD_FIELD', `${this.what}: ${field} is not a canonical X25519 public key`);
    }
    return key;
  }

  /** u8 length + UTF-8 text, well-formed and non-empty. */
  shortText(field: string): string {
    const n = this.u8(field);
    if (n === 0) throw new ProtocolError('BAD_LENGTH', `${this.what}: ${field} is empty`);
    const raw = this.bytesN(n, field);
    try {
      return utf8Decoder.decode(raw);
    } catch {
      throw new ProtocolError('BAD_FIELD', `${this.what}: ${field} is not UTF-8`);
    }
  }

  rest(): Uint8Array {
    return this.bytesN(this.remaining, 'rest');
  }

  end(): void {
    if (this.remaining !== 0) {
      throw new ProtocolError('TRAILING_BYTES', `${this.what}: ${this.remaining} bytes after the last field`);
    }
  }
}

/** The writing counterpart of ByteReader: sizes are known up front, so one allocation. */
export class ByteWriter {
  private at = 0;
  readonly bytes: Uint8Array;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
  }

  u8(v: number): this {
    this.bytes[this.at++] = v;
    return this;
  }

  u32(v: number): this {
    new DataView(this.bytes.buffer, this.bytes.byteOffset).setUint32(this.at, v >>> 0);
    this.at += 4;
    return this;
  }

  u64(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`u64 field out of range: ${v}`);
    this.u32(Math.floor(v / 2 ** 32));
    return this.u32(v % 2 ** 32);
  }

  raw(b: Uint8Array): this {
    this.bytes.set(b, this.at);
    this.at += b.length;
    return this;
  }

  shortText(text: string): this {
    const b = utf8(text);
    if (b.length < 1 || b.length > 255) throw new RangeError('short text must be 1..255 UTF-8 bytes');
    return this.u8(b.length).raw(b);
  }

  /** Asserts the precomputed size was right: a mismatch is a bug in the encoder. */
  done(): Uint8Array {
    if (this.at !== this.bytes.length)
      throw new Error(`encoder size mismatch: wrote ${this.at} of ${this.bytes.length}`);
    return this.bytes;
  }
}
