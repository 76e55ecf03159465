/**
 * What the bench's two raw clients share (raw-ws.ts, raw-tcp.ts): a socket,
 * the handlers a BenchPeer installs, bytes held until they are installed,
 * writes, and closing once. Each subclass parses its own framing in `onData`.
 */
import type { Socket } from 'node:net';

export interface RawHandlers {
  /** A whole message (raw TCP: the whole frames of one read): `buf[start, end)` (a view; valid until the handler returns or longer). */
  onMessage(buf: Buffer, start: number, end: number): void;
  /** Called once after each socket read was fully parsed (a good moment to flush batched replies). */
  onReadDone?(): void;
  onClose?(reason: string): void;
}

export abstract class RawStream {
  closed = false;
  closeReason = '';
  protected pending: Buffer | undefined;
  protected handlers: RawHandlers | undefined;

  protected constructor(readonly socket: Socket) {}

  /** Starts reading from the socket once the transport is established. */
  protected attach(): void {
    this.socket.on('data', (d: Buffer) => this.onData(d));
    this.socket.on('close', () => this.markClosed('socket closed'));
    this.socket.on('error', (err) => this.markClosed(`socket error: ${err.message}`));
  }

  /** Installs the message handlers; bytes that arrived before are parsed now. */
  setHandlers(handlers: RawHandlers): void {
    this.handlers = handlers;
    if (this.pending) {
      const p = this.pending;
      this.pending = undefined;
      this.onData(p);
    }
  }

  /** Writes pre-encoded bytes; false when the socket buffer is above its high-water mark. */
  write(bytes: Uint8Array): boolean {
    if (this.closed) return false;
    return this.socket.write(bytes);
  }

  destroy(): void {
    this.socket.destroy();
    this.markClosed('destroyed');
  }

  protected markClosed(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.handlers?.onClose?.(reason);
  }

  /** The bytes of a read joined to what an earlier read left unparsed, or undefined (held) before the handlers exist. */
  protected take(chunk: Buffer): Buffer | undefined {
    if (!this.handlers) {
      this.pending = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
      return undefined;
    }
    if (!this.pending) return chunk;
    const buf = Buffer.concat([this.pending, chunk]);
    this.pending = undefined;
    return buf;
  }

  protected abstract onData(chunk: Buffer): void;
}
