/**
 * Pre-encoded relay frames for the load generator.
 *
 * A SEND template is encoded once (shared codec, then masked into a WebSocket
 * message); sending is a memcpy of the template plus, where the scenario
 * needs it, a few patched bytes (message id, send timestamp, sequence number)
 * masked in place. Payload layout used by every scenario:
 *
 *   0   f64 LE  send time, performance.now() of the generator process (ms)
 *   8   u32 BE  sequence number (per sender)
 *   12  ...     random filler up to the payload size
 */
import { randomBytes } from 'node:crypto';
import { encodeFrame, FRAME_HEADER_SIZE, PROTOCOL_VERSION, RoutedAt, SendFlags } from '@libertaria/protocol';
import { clientHeaderSize, encodeClientMessage, patchMasked } from './raw-ws.js';

export const DELIVER = 0x11;
export const ACK = 0x12;
export const NACK = 0x13;
export const PEER_GONE = 0x31;
export const ERROR = 0x3f;

/** Offsets inside a whole SEND/DELIVER frame (envelope included): shared's, under the bench's short name. */
export const AT = RoutedAt;
export const PAYLOAD_TS = 0;
export const PAYLOAD_SEQ = 8;
/** The low 4 bytes of the 16-byte message id carry the per-sender counter; the rest is random per sender. */
export const MSGID_SEQ = 12;

export interface SendTemplate {
  /** One masked WebSocket message (raw TCP: the bare frames) holding `framesPerMessage` SEND frames. */
  message: Buffer;
  framesPerMessage: number;
  frameSize: number;
  /** Where the (masked) payload of the WebSocket message starts in `message`; 0 on raw TCP. */
  wsHeader: number;
  /** Raw TCP: nothing is masked, patches are plain writes. */
  tcp: boolean;
}

/** Builds the masked WebSocket message (raw TCP: the bytes) carrying `framesPerMessage` identical SEND frames. */
export function sendTemplate(opts: {
  dest: Uint8Array;
  source: Uint8Array;
  durable: boolean;
  payloadBytes: number;
  framesPerMessage: number;
  tcp?: boolean;
}): SendTemplate {
  const messageId = randomBytes(16);
  messageId.fill(0, MSGID_SEQ);
  const payload = randomBytes(opts.payloadBytes);
  payload.fill(0, 0, 16);
  const frame = encodeFrame({
    type: 'SEND',
    dest: opts.dest,
    source: opts.source,
    sessionId: randomBytes(16),
    messageId,
    flags: opts.durable ? SendFlags.DURABLE : 0,
    ttl: 0,
    position: 0,
    payload,
  });
  const batch = Buffer.allocUnsafe(frame.length * opts.framesPerMessage);
  for (let i = 0; i < opts.framesPerMessage; i++) batch.set(frame, i * frame.length);
  const tcp = opts.tcp ?? false;
  return {
    message: tcp ? batch : encodeClientMessage(batch),
    framesPerMessage: opts.framesPerMessage,
    frameSize: frame.length,
    wsHeader: tcp ? 0 : clientHeaderSize(batch.length),
    tcp,
  };
}

/** `count` copies of the template message back to back: one socket write for many messages. */
export function repeat(template: SendTemplate, count: number): Buffer {
  const out = Buffer.allocUnsafe(template.message.length * count);
  for (let i = 0; i < count; i++) template.message.copy(out, i * template.message.length);
  return out;
}

const scratch = Buffer.alloc(8);

/**
 * Fills `out` (at `offset`) with one copy of a single-frame template whose
 * message id counter, payload timestamp and sequence are set to `seq` and
 * `now`. Returns the next offset.
 */
export function writeNumbered(template: SendTemplate, out: Buffer, offset: number, seq: number, now: number): number {
  template.message.copy(out, offset);
  const base = offset + template.wsHeader;
  const patch = template.tcp ? patchPlain : patchMasked;
  scratch.writeUInt32BE(seq >>> 0, 0);
  patch(out, base, AT.MESSAGE_ID + MSGID_SEQ, scratch.subarray(0, 4));
  patch(out, base, AT.PAYLOAD + PAYLOAD_SEQ, scratch.subarray(0, 4));
  scratch.writeDoubleLE(now, 0);
  patch(out, base, AT.PAYLOAD + PAYLOAD_TS, scratch);
  return offset + template.message.length;
}

/** patchMasked's signature for unmasked bytes (raw TCP). */
function patchPlain(msg: Buffer, payloadStart: number, at: number, bytes: Uint8Array): void {
  msg.set(bytes, payloadStart + at);
}

/** An ACK frame (envelope + messageId + position) is this long. */
export const ACK_FRAME_SIZE = FRAME_HEADER_SIZE + 16 + 8;

/**
 * Collects ACK frames for DELIVERs read from one socket read, and sends them
 * as one WebSocket message (several frames per message, as the protocol
 * allows; on raw TCP, the frames back to back in one write) when flushed.
 */
export class AckBatcher {
  private buf = Buffer.allocUnsafe(ACK_FRAME_SIZE * 256);
  private used = 0;
  count = 0;
  constructor(
    private readonly write: (msg: Buffer) => void,
    private readonly tcp = false,
  ) {}

  /** Acknowledges the DELIVER frame at `frameStart` in `src`. */
  add(src: Buffer, frameStart: number): void {
    if (this.used + ACK_FRAME_SIZE > this.buf.length) this.flush();
    const b = this.buf;
    const at = this.used;
    // Every frame after the handshake carries the negotiated version (it was 1 before protocol 2, and the
    // relay then refused these ACKs: the durable figures of bench runs since were 0-300 frames/s).
    b[at] = PROTOCOL_VERSION;
    b[at + 1] = ACK;
    b.writeUInt32BE(24, at + 2);
    src.copy(b, at + 6, frameStart + AT.MESSAGE_ID, frameStart + AT.MESSAGE_ID + 16);
    src.copy(b, at + 22, frameStart + AT.POSITION, frameStart + AT.POSITION + 8);
    this.used += ACK_FRAME_SIZE;
    this.count++;
  }

  flush(): void {
    if (this.used === 0) return;
    const frames = this.buf.subarray(0, this.used);
    // Raw TCP: a copy, since the socket may still hold the bytes when the buffer is reused.
    this.write(this.tcp ? Buffer.from(frames) : encodeClientMessage(frames));
    this.used = 0;
  }
}

/** Reads the u64 position of a DELIVER at `frameStart` (kept below 2^53 by the protocol). */
export function readPosition(buf: Buffer, frameStart: number): number {
  return buf.readUInt32BE(frameStart + AT.POSITION) * 0x1_0000_0000 + buf.readUInt32BE(frameStart + AT.POSITION + 4);
}

/** A DELIVER frame as the durable store keeps it (session id zero, TTL 0, position 0), for the Redis benchmarks. */
export function durableDeliver(dest: Uint8Array, source: Uint8Array, id: Uint8Array, payload: Uint8Array): Uint8Array {
  return encodeFrame({
    type: 'DELIVER',
    dest,
    source,
    sessionId: new Uint8Array(16),
    messageId: id,
    flags: SendFlags.DURABLE,
    ttl: 0,
    position: 0,
    payload,
  });
}
