/**
 * A minimal WebSocket client on a raw `node:net` socket, for load generation.
 *
 * Why not the `ws` package: DESIGN §5 measured a `ws` client topping out near
 * 90k msg/s, below what the relay should forward. This client does the HTTP
 * upgrade itself, sends *pre-encoded* masked frames (one fixed mask key: the
 * server cannot tell, and masking is then a one-time cost at encode time) and
 * parses the unmasked server→client frames only as far as the benchmark needs:
 * opcode and length, handing each binary message's payload range to a callback
 * without copying it.
 *
 * Not a general client: no fragmentation on send, no extensions, no text.
 */
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { type RawHandlers, RawStream } from './raw-stream.js';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** The fixed client mask key (RFC 6455 §5.3 wants it unpredictable; a load generator may reuse one). */
export const MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);

/** Size of the masked client frame header for a payload of `length` bytes. */
export function clientHeaderSize(length: number): number {
  return (length < 126 ? 2 : length < 65536 ? 4 : 10) + 4;
}

/** Encodes one binary WebSocket message (FIN, opcode 2) masked with MASK. */
export function encodeClientMessage(payload: Uint8Array, opcode = 0x2): Buffer {
  const header = clientHeaderSize(payload.length);
  const out = Buffer.allocUnsafe(header + payload.length);
  out[0] = 0x80 | opcode;
  if (payload.length < 126) {
    out[1] = 0x80 | payload.length;
  } else if (payload.length < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(payload.length, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeUInt32BE(Math.floor(payload.length / 0x1_0000_0000), 2);
    out.writeUInt32BE(payload.length >>> 0, 6);
  }
  MASK.copy(out, header - 4);
  for (let i = 0; i < payload.length; i++) out[header + i] = payload[i]! ^ MASK[i & 3]!;
  return out;
}

/**
 * Writes `bytes` into an already masked message at payload offset `at`
 * (`payloadStart` is where the payload begins inside `msg`), masking them on
 * the way: lets a pre-encoded frame carry a fresh id or timestamp.
 */
export function patchMasked(msg: Buffer, payloadStart: number, at: number, bytes: Uint8Array): void {
  for (let i = 0; i < bytes.length; i++) msg[payloadStart + at + i] = bytes[i]! ^ MASK[(at + i) & 3]!;
}

/** Encodes one unmasked server→client binary message (for the sink that stands in for a server). */
export function encodeServerMessage(payload: Uint8Array): Buffer {
  const header = payload.length < 126 ? 2 : payload.length < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(header + payload.length);
  out[0] = 0x82;
  if (payload.length < 126) out[1] = payload.length;
  else if (payload.length < 65536) {
    out[1] = 126;
    out.writeUInt16BE(payload.length, 2);
  } else {
    out[1] = 127;
    out.writeUInt32BE(Math.floor(payload.length / 0x1_0000_0000), 2);
    out.writeUInt32BE(payload.length >>> 0, 6);
  }
  out.set(payload, header);
  return out;
}

export function acceptKey(key: string): string {
  return createHash('sha1')
    .update(key + WS_GUID)
    .digest('base64');
}

/** The handlers a BenchPeer installs (raw-stream.ts). */
export type RawWsHandlers = RawHandlers;

export class RawWsClient extends RawStream {
  /** Connects and upgrades; resolves once the 101 with the right accept key and subprotocol arrived. */
  static connect(url: string, protocol: string, timeoutMs = 5000): Promise<RawWsClient> {
    const u = new URL(url);
    const path = u.pathname + u.search || '/';
    return new Promise((resolve, reject) => {
      const socket = connect({ host: u.hostname, port: Number(u.port) });
      socket.setNoDelay(true);
      const key = randomBytes(16).toString('base64');
      const expected = acceptKey(key);
      let head = Buffer.alloc(0);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`WebSocket upgrade to ${url} timed out`));
      }, timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.once('error', fail);
      socket.once('connect', () => {
        socket.write(
          `GET ${path} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`,
        );
      });
      const onHead = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) {
          if (head.length > 16384) fail(new Error('upgrade response headers too long'));
          return;
        }
        socket.off('data', onHead);
        socket.off('error', fail);
        clearTimeout(timer);
        const lines = head.toString('latin1', 0, end).split('\r\n');
        const headers = new Map<string, string>();
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(':');
          if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
        }
        if (!/^HTTP\/1\.1 101/.test(lines[0] ?? '')) return fail(new Error(`upgrade refused: ${lines[0]}`));
        if (headers.get('sec-websocket-accept') !== expected) return fail(new Error('bad Sec-WebSocket-Accept'));
        if (headers.get('sec-websocket-protocol') !== protocol) {
          return fail(new Error(`server chose subprotocol ${headers.get('sec-websocket-protocol')}`));
        }
        const client = new RawWsClient(socket);
        const rest = head.subarray(end + 4);
        if (rest.length > 0) client.pending = Buffer.from(rest);
        client.attach();
        resolve(client);
      };
      socket.on('data', onHead);
    });
  }

  /** Sends one masked binary message built from `payload` now. */
  send(payload: Uint8Array): boolean {
    return this.write(encodeClientMessage(payload));
  }

  close(): void {
    if (this.closed) return;
    // A masked close frame with status 1000, then end; destroy if the server lingers.
    this.socket.write(encodeClientMessage(Buffer.from([0x03, 0xe8]), 0x8));
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 500).unref();
    this.markClosed('closed by client');
  }

  protected onData(chunk: Buffer): void {
    const buf = this.take(chunk);
    const handlers = this.handlers;
    if (buf === undefined || handlers === undefined) return;
    const len = buf.length;
    let off = 0;
    while (len - off >= 2) {
      const b0 = buf[off]!;
      const b1 = buf[off + 1]!;
      let size = b1 & 0x7f;
      let header = 2;
      if (size === 126) {
        if (len - off < 4) break;
        size = buf.readUInt16BE(off + 2);
        header = 4;
      } else if (size === 127) {
        if (len - off < 10) break;
        size = buf.readUInt32BE(off + 2) * 0x1_0000_0000 + buf.readUInt32BE(off + 6);
        header = 10;
      }
      if (b1 & 0x80) header += 4; // a masked server frame is a protocol violation; skip the key anyway
      if (len - off < header + size) break;
      const start = off + header;
      const opcode = b0 & 0x0f;
      if (opcode === 0x2 || opcode === 0x0) {
        handlers.onMessage(buf, start, start + size);
      } else if (opcode === 0x9) {
        // PING → PONG with the same application data.
        this.write(encodeClientMessage(buf.subarray(start, start + size), 0xa));
      } else if (opcode === 0x8) {
        const code = size >= 2 ? buf.readUInt16BE(start) : 1005;
        const text = buf.toString('utf8', start + 2, start + size);
        this.socket.end();
        this.markClosed(`server closed: ${code} ${text}`);
        return;
      }
      off = start + size;
    }
    if (off < len) this.pending = buf.subarray(off);
    handlers.onReadDone?.();
  }
}
