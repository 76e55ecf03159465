/**
 * The raw TCP listener (TLS through node:tls when a certificate is
 * configured): frames back to back on a stream, reassembled with
 * FrameStreamDecoder. Writes are gathered per event-loop turn and written as
 * one buffer (write-batch.ts).
 */
import { readFileSync } from 'node:fs';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { CHANNEL_BINDING_LENGTH, TLS_EXPORTER_LABEL } from '@libertaria/identity';
import { FrameStreamDecoder, ProtocolError } from '@libertaria/protocol';
import type { AcceptConnection, Listener, PeerTransport, TransportSink } from './types.js';
import { type Flushable, scheduleFlush } from './write-batch.js';

/** RFC 9266 exports with no context at all (not an empty one); Node's types insist on the argument, its code does not. */
const NO_CONTEXT = undefined as unknown as Buffer;

export interface TcpListenerOptions {
  host: string;
  port: number;
  maxPayload: number;
  tls?: { certFile: string; keyFile: string };
  idleTimeoutMs: number;
}

class TcpTransport implements PeerTransport, Flushable {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  sink: TransportSink | undefined;
  constructor(
    private readonly socket: Socket,
    readonly kind: 'tcp' | 'tls',
    readonly remoteAddress: string,
  ) {}
  write(bytes: Uint8Array): void {
    this.pendingBytes += bytes.byteLength;
    if (this.pending.push(bytes) === 1) scheduleFlush(this);
  }
  flush(): void {
    const frames = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    if (this.socket.destroyed || !this.socket.writable || frames.length === 0) return;
    // One buffer per turn: one syscall, and the socket never holds views into
    // other connections' receive buffers (a slow reader would pin them).
    this.socket.write(frames.length === 1 ? Buffer.from(frames[0]!) : Buffer.concat(frames), this.written);
  }
  /**
   * A write reached the kernel. Once nothing is left, tell the connection:
   * unlike 'drain', this also fires after writes that stayed under the
   * stream's highWaterMark.
   */
  private readonly written = (): void => {
    if (this.socket.writableLength === 0) this.sink?.onDrain();
  };
  bufferedBytes(): number {
    return this.pendingBytes + this.socket.writableLength;
  }
  channelBinding(): Uint8Array | undefined {
    if (this.kind !== 'tls') return undefined;
    // RFC 9266: the exporter with this label and no context, 32 bytes.
    return (this.socket as TLSSocket).exportKeyingMaterial(CHANNEL_BINDING_LENGTH, TLS_EXPORTER_LABEL, NO_CONTEXT);
  }
  socketBufferedBytes(): number {
    return this.socket.writableLength;
  }
  end(): void {
    this.flush();
    this.socket.end();
    // A peer that never reads would hold the socket open; bound the goodbye.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }
  destroy(): void {
    this.socket.destroy();
  }
  private readPaused = false;
  pauseReading(ms: number): void {
    if (this.readPaused || this.socket.destroyed) return;
    this.readPaused = true;
    this.socket.pause();
    setTimeout(() => {
      this.readPaused = false;
      if (!this.socket.destroyed) this.socket.resume();
    }, ms).unref();
  }
}

export function listenTcp(options: TcpListenerOptions, accept: AcceptConnection): Promise<Listener> {
  const kind = options.tls ? 'tls' : 'tcp';
  const onSocket = (socket: Socket): void => {
    socket.setNoDelay(true);
    socket.setTimeout(options.idleTimeoutMs);
    const transport = new TcpTransport(socket, kind, socket.remoteAddress ?? 'unknown');
    const sink = accept(transport);
    transport.sink = sink;
    const decoder = new FrameStreamDecoder({ maxPayload: options.maxPayload });
    let failed = false;
    socket.on('data', (chunk: Buffer) => {
      if (failed) return;
      if (sink.onBytesIn !== undefined && !sink.onBytesIn(chunk.length)) {
        failed = true;
        return;
      }
      let frames: Uint8Array[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        failed = true;
        sink.onProtocolError(err instanceof ProtocolError ? err : new ProtocolError('INTERNAL', String(err)));
        return;
      }
      for (const f of frames) sink.onFrame(Buffer.from(f.buffer, f.byteOffset, f.byteLength));
    });
    socket.on('timeout', () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => sink.onClose());
  };
  const server: Server = options.tls
    ? createTlsServer({ cert: readFileSync(options.tls.certFile), key: readFileSync(options.tls.keyFile) }, onSocket)
    : createNetServer(onSocket);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : options.port;
      resolve({ port, stopAccepting: () => server.close() });
    });
  });
}
