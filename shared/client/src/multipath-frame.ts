/**
 * The multipath header: what a MultipathSession (multipath.ts) puts in front
 * of every application payload so the receiver can merge its paths and
 * release one sender's messages in order. It is part of the plaintext that
 * gets sealed end to end, so relays never see it (with a SessionManager; an
 * unsealed session shows it like the rest of the payload).
 *
 *     offset  size  field
 *     0       1     version   1
 *     1       1     flags     0 (reserved: anything else is refused)
 *     2       8     streamId  random per sending MultipathSession instance
 *     10      8     seq       u64 big-endian, per (sender instance, recipient), from 0; at most 2^53 − 1
 *     18      rest  payload   the application bytes
 *
 * Decoding is strict (ProtocolError): TRUNCATED below 18 bytes,
 * UNSUPPORTED_VERSION for another version, BAD_FIELD for non-zero flags or a
 * sequence number above 2^53 − 1. See docs/multipath.md.
 */
import { ProtocolError } from '@libertaria/protocol';

export const MULTIPATH_VERSION = 1;
export const MULTIPATH_STREAM_ID_SIZE = 8;
export const MULTIPATH_HEADER_SIZE = 2 + MULTIPATH_STREAM_ID_SIZE + 8;
const TWO_32 = 0x1_0000_0000;

export interface MultipathFrame {
  readonly streamId: Uint8Array;
  readonly seq: number;
  /** A view into the decoded input. */
  readonly payload: Uint8Array;
}

export function encodeMultipathFrame(streamId: Uint8Array, seq: number, payload: Uint8Array): Uint8Array {
  if (streamId.length !== MULTIPATH_STREAM_ID_SIZE) {
    throw new ProtocolError('BAD_FIELD', `multipath: streamId must be ${MULTIPATH_STREAM_ID_SIZE} bytes`);
  }
  if (!Number.isSafeInteger(seq) || seq < 0) {
    throw new ProtocolError('BAD_FIELD', 'multipath: seq must be an integer 0..2^53-1');
  }
  const out = new Uint8Array(MULTIPATH_HEADER_SIZE + payload.length);
  out[0] = MULTIPATH_VERSION;
  out[1] = 0;
  out.set(streamId, 2);
  const view = new DataView(out.buffer);
  view.setUint32(10, Math.floor(seq / TWO_32));
  view.setUint32(14, seq % TWO_32);
  out.set(payload, MULTIPATH_HEADER_SIZE);
  return out;
}

export function decodeMultipathFrame(bytes: Uint8Array): MultipathFrame {
  if (bytes.length < MULTIPATH_HEADER_SIZE) {
    throw new ProtocolError(
      'TRUNCATED',
      `multipath: ${bytes.length} bytes, the header alone is ${MULTIPATH_HEADER_SIZE}`,
    );
  }
  if (bytes[0] !== MULTIPATH_VERSION) {
    throw new ProtocolError(
      'UNSUPPORTED_VERSION',
      `multipath: header version ${bytes[0]}, expected ${MULTIPATH_VERSION}`,
    );
  }
  if (bytes[1] !== 0) throw new ProtocolError('BAD_FIELD', `multipath: unknown flags 0x${bytes[1]!.toString(16)}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hi = view.getUint32(10);
  const lo = view.getUint32(14);
  // 2^53 − 1 = 0x1f_ffff_ffff_ffff: the high word may use 21 bits.
  if (hi > 0x1f_ffff) throw new ProtocolError('BAD_FIELD', 'multipath: seq above 2^53-1');
  return {
    streamId: bytes.subarray(2, 2 + MULTIPATH_STREAM_ID_SIZE),
    seq: hi * TWO_32 + lo,
    payload: bytes.subarray(MULTIPATH_HEADER_SIZE),
  };
}
