/**
 * A benchmark peer: a raw-socket WebSocket client (raw-ws.ts), or a raw TCP
 * one for `tcp://` URLs (raw-tcp.ts), that does the
 * relay handshake with the shared codec and real Ed25519 signatures, then
 * switches to a hot-path reader that only looks at each frame's type byte and
 * length, counts DELIVER/ACK/NACK/PEER_GONE, and hands DELIVER frames to a
 * callback in place (no decode, no copy).
 */
import { randomBytes } from 'node:crypto';
import { authTranscript, Ed25519Identity, routingHint } from '@libertaria/identity';
import {
  decodeFrame,
  decodeFrames,
  encodeFrame,
  type Frame,
  MAX_PAYLOAD_LIMIT,
  type WelcomeFrame,
} from '@libertaria/protocol';
import { ACK, DELIVER, ERROR, NACK, PEER_GONE } from './frames.js';
import { RawTcpClient } from './raw-tcp.js';
import { RawWsClient } from './raw-ws.js';

export const SUBPROTOCOL = 'libertaria-relay.v1';

export class BenchPeer {
  readonly hint: Buffer;
  delivered = 0;
  acked = 0;
  nacked = 0;
  peerGone = 0;
  /** The first few NACK/ERROR frames seen, decoded, for the report. */
  readonly problems: string[] = [];
  /** Called for each DELIVER with the buffer and the frame's start offset. */
  onDeliver: ((buf: Buffer, frameStart: number) => void) | undefined;
  /** Called after each socket read was parsed (flush ACK batches, refill send windows). */
  afterRead: (() => void) | undefined;
  /** Called once when the connection closes, whoever closed it (the reconnect storm). */
  onClosed: ((reason: string) => void) | undefined;

  private open = false;
  private handshakeFrames: Frame[] = [];
  private wake: (() => void) | undefined;

  /** The connection (named for WebSocket, the first transport; a RawTcpClient on `tcp://`). */
  readonly ws: RawWsClient | RawTcpClient;
  /** Raw TCP: frames go on the stream as they are, not in masked WebSocket messages. */
  readonly tcp: boolean;

  private constructor(
    ws: RawWsClient | RawTcpClient,
    readonly identity: Ed25519Identity,
  ) {
    this.ws = ws;
    this.tcp = ws instanceof RawTcpClient;
    this.hint = Buffer.from(routingHint(identity.publicKey));
    ws.setHandlers({
      onMessage: (buf, start, end) => (this.open ? this.onHot(buf, start, end) : this.onHandshake(buf, start, end)),
      onReadDone: () => this.afterRead?.(),
      onClose: (reason) => {
        this.wake?.();
        this.onClosed?.(reason);
      },
    });
  }

  /** Connects and authenticates (HELLO → CHALLENGE → AUTH → WELCOME). */
  static async connect(url: string, identity = Ed25519Identity.generate()): Promise<BenchPeer> {
    const ws = url.startsWith('tcp:') ? await RawTcpClient.connect(url) : await RawWsClient.connect(url, SUBPROTOCOL);
    const peer = new BenchPeer(ws, identity);
    try {
      await peer.handshake();
    } catch (err) {
      ws.destroy();
      throw err;
    }
    return peer;
  }

  /**
   * A peer on a bare WebSocket (no relay handshake): for the capacity sink,
   * so that the generator's ceiling is measured through this same reader.
   */
  static async connectRaw(url: string): Promise<BenchPeer> {
    const peer = new BenchPeer(await RawWsClient.connect(url, SUBPROTOCOL), Ed25519Identity.generate());
    peer.open = true;
    return peer;
  }

  /** Sends a frame encoded now (control frames; the hot path writes pre-encoded bytes to `ws`). */
  sendFrame(frame: Frame): void {
    this.ws.send(encodeFrame(frame));
  }

  close(): void {
    this.ws.close();
  }

  private async handshake(): Promise<WelcomeFrame> {
    const clientNonce = new Uint8Array(randomBytes(32));
    this.sendFrame({ type: 'HELLO', minVersion: 2, maxVersion: 2, features: 0, clientNonce });
    const challenge = await this.nextHandshake('CHALLENGE');
    // The relay's signature is not checked here: the benchmark measures the relay, not the client.
    const transcript = authTranscript({
      relayNonce: challenge.nonce,
      clientNonce,
      relayKey: challenge.relayKey,
      binding: this.tcp ? 'tcp' : 'ws',
    });
    this.sendFrame({
      type: 'AUTH',
      keyType: 1,
      publicKey: this.identity.publicKey,
      signature: this.identity.sign(transcript),
      did: this.identity.did,
    });
    const welcome = await this.nextHandshake('WELCOME');
    this.open = true;
    return welcome;
  }

  private async nextHandshake<T extends 'CHALLENGE' | 'WELCOME'>(type: T): Promise<Extract<Frame, { type: T }>> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const f = this.handshakeFrames.shift();
      if (f?.type === type) return f as Extract<Frame, { type: T }>;
      if (f) throw new Error(`handshake: expected ${type}, got ${describe(f)}`);
      if (this.ws.closed) throw new Error(`handshake: connection closed (${this.ws.closeReason})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`handshake: no ${type} within 5 s`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  private onHandshake(buf: Buffer, start: number, end: number): void {
    // Frames are views into `buf`; the handshake frames are small and read at once.
    this.handshakeFrames.push(...decodeFrames(buf.subarray(start, end), { maxPayload: MAX_PAYLOAD_LIMIT }));
    this.wake?.();
  }

  private onHot(buf: Buffer, start: number, end: number): void {
    let p = start;
    while (p + 6 <= end) {
      const type = buf[p + 1]!;
      const next = p + 6 + buf.readUInt32BE(p + 2);
      if (type === DELIVER) {
        this.delivered++;
        this.onDeliver?.(buf, p);
      } else if (type === ACK) {
        this.acked++;
      } else if (type === NACK || type === ERROR || type === PEER_GONE) {
        if (type === NACK) this.nacked++;
        if (type === PEER_GONE) this.peerGone++;
        if (this.problems.length < 5) {
          try {
            this.problems.push(describe(decodeFrame(buf.subarray(p, next), { maxPayload: MAX_PAYLOAD_LIMIT })));
          } catch (err) {
            this.problems.push(`undecodable frame type 0x${type.toString(16)}: ${String(err)}`);
          }
        }
      }
      p = next;
    }
  }
}

function describe(f: Frame): string {
  if (f.type === 'ERROR' || f.type === 'NACK') return `${f.type} code=0x${f.code.toString(16)} ${f.message}`;
  return f.type;
}
