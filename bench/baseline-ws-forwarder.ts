/**
 * The baseline: a plain forwarder built on the `ws` package, the naive
 * implementation a competent developer writes in an afternoon. It speaks the
 * relay's framing so the same load generator drives it:
 *
 *   HELLO  → CHALLENGE (fresh nonce, version 1)
 *   AUTH   → WELCOME. The signature is NOT verified (no Ed25519 verify, no
 *            DID check): the baseline does strictly less work per handshake
 *            than the relay. Registers routingHint(publicKey) → socket.
 *   SEND   → flips the type byte to DELIVER and sends the frame to the socket
 *            registered for the destination hint (dropped if none).
 *   PING   → PONG; anything else is ignored.
 *
 * No rate limits, no metrics, no backpressure bounds, no durable path, no
 * Redis: only fast-path forwarding within this one process. Several frames
 * per WebSocket message are accepted and each is forwarded as its own
 * message, as the relay does.
 *
 * Run as its own process: `node --import tsx bench/baseline-ws-forwarder.ts`
 * (BASELINE_HOST, BASELINE_PORT; port 0 picks a free one). Prints
 * `{"msg":"listening","port":N}` once it serves.
 */
import { randomBytes } from 'node:crypto';
import { Ed25519Identity, relayChallengeTranscript, routingHint } from '@libertaria/identity';
import { decodeFrame, encodeFrame } from '@libertaria/protocol';
import { type WebSocket, WebSocketServer } from 'ws';

const PROTOCOL = 'libertaria-relay.v1';
const SEND = 0x10;
const DELIVER = 0x11;

const peers = new Map<string, WebSocket>();
/** Signs CHALLENGE like a relay (one signature per handshake, as the relay pays). */
const identity = Ed25519Identity.generate();

const wss = new WebSocketServer({
  host: process.env.BASELINE_HOST ?? '127.0.0.1',
  port: Number(process.env.BASELINE_PORT ?? 0),
  perMessageDeflate: false,
  maxPayload: 16 * 1024 * 1024,
  handleProtocols: (protocols) => (protocols.has(PROTOCOL) ? PROTOCOL : false),
});

wss.on('connection', (ws) => {
  let state: 'hello' | 'auth' | 'open' = 'hello';
  let nonce: Buffer | undefined;
  let hintKey: string | undefined;

  ws.on('message', (data: Buffer) => {
    let offset = 0;
    while (offset + 6 <= data.length) {
      const end = offset + 6 + data.readUInt32BE(offset + 2);
      const frame = data.subarray(offset, end);
      offset = end;
      if (state === 'open' && frame[1] === SEND) {
        const dest = peers.get(frame.toString('hex', 6, 30));
        if (dest) {
          frame[1] = DELIVER;
          dest.send(frame);
        }
        continue;
      }
      let f: ReturnType<typeof decodeFrame>;
      try {
        f = decodeFrame(frame);
      } catch {
        ws.close(1002, 'bad frame');
        return;
      }
      if (state === 'hello' && f.type === 'HELLO' && f.clientNonce !== undefined) {
        nonce = randomBytes(32);
        state = 'auth';
        const signature = identity.sign(
          relayChallengeTranscript({
            relayNonce: nonce,
            clientNonce: f.clientNonce,
            relayKey: identity.publicKey,
            binding: 'ws',
          }),
        );
        ws.send(
          encodeFrame({
            type: 'CHALLENGE',
            version: 2,
            nonce,
            relayIdentity: identity.did,
            relayKey: identity.publicKey,
            signature,
          }),
        );
      } else if (state === 'auth' && f.type === 'AUTH') {
        // Deliberately not verified: see the header comment.
        const hint = Buffer.from(routingHint(f.publicKey));
        hintKey = hint.toString('hex');
        peers.set(hintKey, ws);
        state = 'open';
        ws.send(
          encodeFrame({
            type: 'WELCOME',
            hint,
            connectionId: randomBytes(16),
            maxPayload: 65536,
            heartbeatMs: 5000,
            nodeId: 'baseline',
          }),
        );
      } else if (state === 'open' && f.type === 'PING') {
        ws.send(encodeFrame({ type: 'PONG', data: f.data }));
      }
    }
  });
  ws.on('close', () => {
    if (hintKey !== undefined && peers.get(hintKey) === ws) peers.delete(hintKey);
  });
  ws.on('error', () => ws.terminate());
});

wss.on('listening', () => {
  const addr = wss.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
