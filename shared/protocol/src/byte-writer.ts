import { writeU32 } from './bytes.js';

/**
 * Big-endian writes into a buffer allocated once at its exact size (the
 * encoders compute sizes up front). The frame codec and the prekey encodings
 * extend it with their own fields; internal to this package.
 */
export class ByteWriter {
  readonly buf: Uint8Array;
  pos: number;
  constructor(size: number, start = 0) {
    this.buf = new Uint8Array(size);
    this.pos = start;
  }
  u8(v: number): void {
    this.buf[this.pos++] = v;
  }
  u16(v: number): void {
    this.buf[this.pos++] = v >>> 8;
    this.buf[this.pos++] = v & 0xff;
  }
  u32(v: number): void {
    writeU32(this.buf, this.pos, v);
    this.pos += 4;
  }
  /** A u64 from a safe integer (the caller has range-checked it). */
  u64(v: number): void {
    writeU32(this.buf, this.pos, Math.floor(v / 0x100000000));
    writeU32(this.buf, this.pos + 4, v >>> 0);
    this.pos += 8;
  }
  bytes(b: Uint8Array): void {
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
}
