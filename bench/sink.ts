/**
 * The generator-capacity sink, run as its own process: a WebSocket endpoint
 * on a raw `node:net` server that does as little as possible, so what the
 * generator achieves against it is the generator's own ceiling.
 *
 *   GET /discard  reads and throws away whatever the client sends
 *   GET /source   writes pre-encoded DELIVER messages (1 KiB payload, one
 *                 frame per WebSocket message, like the relay) as fast as the
 *                 socket takes them
 *
 * Prints `{"msg":"listening","port":N}` once it serves.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { encodeFrame } from '@libertaria/protocol';
import { acceptKey, encodeServerMessage } from './raw-ws.js';

const payloadBytes = Number(process.env.BENCH_PAYLOAD_BYTES ?? 1024);

const deliver = encodeServerMessage(
  encodeFrame({
    type: 'DELIVER',
    dest: randomBytes(24),
    source: randomBytes(24),
    sessionId: randomBytes(16),
    messageId: randomBytes(16),
    flags: 0,
    ttl: 0,
    position: 0,
    payload: randomBytes(payloadBytes),
  }),
);
const burst = Buffer.concat(Array.from({ length: 64 }, () => deliver));

function serve(socket: Socket, path: string): void {
  if (path.startsWith('/source')) {
    let stopped = false;
    const pump = () => {
      for (let i = 0; i < 64 && !stopped; i++) {
        if (!socket.write(burst)) {
          socket.once('drain', pump);
          return;
        }
      }
      // The kernel took everything so far: yield so 'close' and 'drain' are seen.
      if (!stopped) setImmediate(pump);
    };
    socket.on('close', () => {
      stopped = true;
    });
    socket.on('data', () => {});
    pump();
    return;
  }
  socket.on('data', () => {});
}

const server = createServer((socket) => {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  let head = Buffer.alloc(0);
  const onHead = (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) return;
    socket.off('data', onHead);
    const lines = head.toString('latin1', 0, end).split('\r\n');
    const path = (lines[0] ?? '').split(' ')[1] ?? '/';
    const key =
      lines
        .find((l) => l.toLowerCase().startsWith('sec-websocket-key:'))
        ?.slice(18)
        .trim() ?? '';
    const protocol = lines
      .find((l) => l.toLowerCase().startsWith('sec-websocket-protocol:'))
      ?.slice(23)
      .split(',')[0]
      ?.trim();
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n` +
        (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : '') +
        '\r\n',
    );
    serve(socket, path);
  };
  socket.on('data', onHead);
});

server.listen(Number(process.env.BENCH_SINK_PORT ?? 0), '127.0.0.1', () => {
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
