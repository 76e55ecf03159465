/**
 * The routed header of a whole SEND or DELIVER frame (envelope included, as a
 * transport hands it over), read and written in place. The layout is
 * frames.ts' `Routed`; this module only adds the envelope, so that a relay
 * routing a frame without decoding it takes every offset from one place.
 *
 * Zero-copy on purpose: the byte fields are views (subarray) into the frame,
 * the numbers are read from its bytes, and a position is written into it, so
 * the relay's forward path allocates nothing more than the views it asks for.
 * A view given a Buffer is a Buffer (subarray keeps the class). Nothing here
 * checks bounds: call it on a frame checkRoutedFrame (or the decoder)
 * accepted, or one at least MIN_ROUTED_FRAME_SIZE long.
 */
import { readU32, writeU32 } from './bytes.js';
import { FRAME_HEADER_SIZE, HINT_SIZE, ID_SIZE, Routed } from './frames.js';

/** Offsets of the routed header's fields inside a whole SEND/DELIVER frame. */
export const RoutedAt = {
  DEST: FRAME_HEADER_SIZE + Routed.DEST,
  SOURCE: FRAME_HEADER_SIZE + Routed.SOURCE,
  SESSION: FRAME_HEADER_SIZE + Routed.SESSION,
  MESSAGE_ID: FRAME_HEADER_SIZE + Routed.MESSAGE_ID,
  FLAGS: FRAME_HEADER_SIZE + Routed.FLAGS,
  TTL: FRAME_HEADER_SIZE + Routed.TTL,
  POSITION: FRAME_HEADER_SIZE + Routed.POSITION,
  PAYLOAD: FRAME_HEADER_SIZE + Routed.PAYLOAD,
} as const;

/** The smallest whole SEND/DELIVER frame: envelope and routed header, empty payload. */
export const MIN_ROUTED_FRAME_SIZE = RoutedAt.PAYLOAD;

/** The recipient's routing hint (24 bytes), a view into the frame. */
export function routedDest<T extends Uint8Array>(frame: T): T {
  return frame.subarray(RoutedAt.DEST, RoutedAt.DEST + HINT_SIZE) as T;
}

/** The sender's routing hint (24 bytes), a view into the frame. */
export function routedSource<T extends Uint8Array>(frame: T): T {
  return frame.subarray(RoutedAt.SOURCE, RoutedAt.SOURCE + HINT_SIZE) as T;
}

/** The sender's message id (16 bytes), a view into the frame. */
export function routedMessageId<T extends Uint8Array>(frame: T): T {
  return frame.subarray(RoutedAt.MESSAGE_ID, RoutedAt.MESSAGE_ID + ID_SIZE) as T;
}

/** The SendFlags byte. */
export function routedFlags(frame: Uint8Array): number {
  return frame[RoutedAt.FLAGS]!;
}

/** The TTL in seconds the sender asked for (0: the relay's maximum). */
export function routedTtl(frame: Uint8Array): number {
  return readU32(frame, RoutedAt.TTL);
}

/**
 * The u64 queue position (0 in a SEND and a fast DELIVER). Not checked
 * against 2^53: the relay reads it only from frames it wrote or from other
 * nodes, which write positions through writeRoutedPosition.
 */
export function readRoutedPosition(frame: Uint8Array): number {
  return readU32(frame, RoutedAt.POSITION) * 0x1_0000_0000 + readU32(frame, RoutedAt.POSITION + 4);
}

/**
 * Writes a queue position into the frame's u64 position field, in place: the
 * relay stores a DELIVER with position 0 and writes the position it was given
 * when it hands the same bytes on.
 */
export function writeRoutedPosition(frame: Uint8Array, position: number): void {
  // Anything else has no exact u64 here and would be delivered as some other position.
  if (!Number.isSafeInteger(position) || position < 0) {
    throw new RangeError(`position ${position} is not an integer in 0..2^53-1`);
  }
  writeU32(frame, RoutedAt.POSITION, Math.floor(position / 0x1_0000_0000));
  writeU32(frame, RoutedAt.POSITION + 4, position >>> 0);
}
