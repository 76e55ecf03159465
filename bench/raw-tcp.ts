/**
 * The raw TCP counterpart of raw-ws.ts: a socket to the relay's TCP listener
 * (`tcp://host:port`), where relay frames follow each other on the stream
 * with no framing of their own (docs/protocol.md). Same interface as
 * RawWsClient, so a BenchPeer runs over either: each read hands the handler
 * the whole frames it completed as one "message" (a view, no copy); a frame
 * split across reads waits for its rest.
 */
import { connect, type Socket } from 'node:net';
import { FRAME_HEADER_SIZE } from '@libertaria/protocol';
import type { RawWsHandlers } from './raw-ws.js';

export class RawTcpClient {
  closed = false;
  closeReason = '';
  private pending: Buffer | undefined;
  private handlers: RawWsHandlers | undefined;

  private constructor(readonly socket: Socket) {}

  static connect(url: string, timeoutMs = 5000): Promise<RawTcpClient> {
    const u = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = connect({ host: u.hostname, port: Number(u.port) });
      socket.setNoDelay(true);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`TCP connection to ${url} timed out`));
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        const client = new RawTcpClient(socket);
        socket.on('data', (d: Buffer) => client.onData(d));
        socket.on('close', () => client.markClosed('socket closed'));
        socket.on('error', (err) => client.markClosed(`socket error: ${err.message}`));
        resolve(client);
      });
    });
  }

  setHandlers(handlers: RawWsHandlers): void {
    this.handlers = handlers;
    if (this.pending) {
      const p = this.pending;
      this.pending = undefined;
      this.onData(p);
    }
  }

  /** Writes frame bytes as they are; false when the socket buffer is above its high-water mark. */
  write(bytes: Uint8Array): boolean {
    if (this.closed) return false;
    return this.socket.write(bytes);
  }

  /** Sends frame bytes (no framing on a raw stream). */
  send(payload: Uint8Array): boolean {
    return this.write(payload);
  }

  close(): void {
    if (this.closed) return;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 500).unref();
    this.markClosed('closed by client');
  }

  destroy(): void {
    this.socket.destroy();
    this.markClosed('destroyed');
  }

  private markClosed(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.handlers?.onClose?.(reason);
  }

  private onData(chunk: Buffer): void {
    const handlers = this.handlers;
    if (!handlers) {
      this.pending = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
      return;
    }
    let buf = chunk;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = undefined;
    }
    // The whole frames at the front: envelope (version, type, u32 body length), then the body.
    let end = 0;
    while (buf.length - end >= FRAME_HEADER_SIZE) {
      const next = end + FRAME_HEADER_SIZE + buf.readUInt32BE(end + 2);
      if (next > buf.length) break;
      end = next;
    }
    if (end > 0) handlers.onMessage(buf, 0, end);
    if (end < buf.length) this.pending = buf.subarray(end);
    handlers.onReadDone?.();
  }
}
