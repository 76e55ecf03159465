/**
 * The raw TCP counterpart of raw-ws.ts: a socket to the relay's TCP listener
 * (`tcp://host:port`), where relay frames follow each other on the stream
 * with no framing of their own (docs/protocol.md). Same interface as
 * RawWsClient, so a BenchPeer runs over either: each read hands the handler
 * the whole frames it completed as one "message" (a view, no copy); a frame
 * split across reads waits for its rest.
 */
import { connect } from 'node:net';
import { FRAME_HEADER_SIZE } from '@libertaria/protocol';
import { RawStream } from './raw-stream.js';

export class RawTcpClient extends RawStream {
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
        client.attach();
        resolve(client);
      });
    });
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

  protected onData(chunk: Buffer): void {
    const buf = this.take(chunk);
    const handlers = this.handlers;
    if (buf === undefined || handlers === undefined) return;
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
