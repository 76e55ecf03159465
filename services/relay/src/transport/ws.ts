/**
 * The WebSocket listener: the only module that touches uWebSockets.js (an npm
 * alias of @trufflesuite/uws-js-unofficial 20.30; no TLS and no compression
 * in that build — terminate TLS in front of it, see DESIGN §2).
 *
 * Binary messages carry one or more whole frames. The subprotocol
 * `libertaria-relay.v1` is required: it names the framing, so a client of
 * another protocol is refused at the upgrade instead of failing later.
 */

import uWS from 'uWebSockets.js';
import { FRAME_HEADER_SIZE, ProtocolError, readFrameHeader } from '@libertaria/protocol';
import type { TrustedProxies } from './client-address.js';
import { inboundArena, retainFrame } from './inbound-arena.js';
import type { AcceptConnection, Listener, PeerTransport, TransportSink } from './types.js';
import { countRefusedSend, type Flushable, scheduleFlush } from './write-batch.js';

export const WS_SUBPROTOCOL = 'libertaria-relay.v1';

export interface WsListenerOptions {
  host: string;
  port: number;
  /** Largest frame body accepted; a message may batch frames up to maxMessageBytes in all. */
  maxBody: number;
  maxMessageBytes: number;
  /**
   * Above this many buffered bytes uWS refuses sends. The connection's
   * outbound budget keeps it below (PeerConnection); a refused frame is kept
   * and sent after the drain all the same, never dropped.
   */
  maxBackpressure: number;
  idleTimeoutSeconds: number;
  /** Whose X-Forwarded-For names the client (client-address.ts); absent: nobody's. */
  trustedProxies?: TrustedProxies | undefined;
  /** Poison inbound slabs when they are recycled (RELAY_DEBUG_POISON_RECYCLED; inbound-arena.ts). */
  poisonRecycled?: boolean;
}

interface SocketData {
  remoteAddress: string;
  sink?: TransportSink;
  transport?: WsTransport;
}

/** uWS `WebSocket.send` result: refused, over maxBackpressure (1 = sent, 0 = buffered: both accepted). */
const SEND_DROPPED = 2;

/** Most bytes of frames joined into one outbound message (a frame larger than this goes alone). */
export const COALESCE_BYTES = 64 * 1024;

/**
 * One buffer for every join: uWS copies what send() is given before it
 * returns (into its cork buffer or the socket), so the bytes can be reused
 * by the next join; a fresh buffer per message would be garbage per flush.
 */
const scratch = Buffer.allocUnsafeSlow(COALESCE_BYTES);

/** frames[from..to) (bytes in all) back to back in the scratch buffer: a view valid until the next join. */
function coalesce(frames: readonly Uint8Array[], from: number, to: number, bytes: number): Buffer {
  let at = 0;
  for (let k = from; k < to; k++) {
    const f = frames[k]!;
    scratch.set(f, at);
    at += f.byteLength;
  }
  return scratch.subarray(0, bytes);
}

class WsTransport implements PeerTransport, Flushable {
  readonly kind = 'ws' as const;
  closed = false;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  /** uWS refused a send: what is pending (that frame first) waits for its drain. */
  private stalled = false;
  constructor(
    private readonly ws: uWS.WebSocket<SocketData>,
    readonly remoteAddress: string,
  ) {}
  write(bytes: Uint8Array): void {
    if (this.closed) return;
    this.pendingBytes += bytes.byteLength;
    // Stalled, the frame waits for uWS's drain, not for this turn's flush: keep a copy of an inbound one.
    if (this.stalled) this.pending.push(retainFrame(bytes));
    else if (this.pending.push(bytes) === 1) scheduleFlush(this);
  }
  flush(): void {
    if (this.closed) {
      this.pending = [];
      this.pendingBytes = 0;
      return;
    }
    if (this.stalled || this.pending.length === 0) return;
    // One corked burst: uWS copies each frame into its buffer and writes once.
    this.ws.cork(this.sendPending);
  }
  /**
   * The cork callback (one function per connection, not one per flush).
   * Frames go out several to a message (docs/protocol.md: a message holds
   * one or more whole frames), up to COALESCE_BYTES each: uWS's cost is per
   * message (a call into C++, a WebSocket header), and a DELIVER with its
   * ACKs is many small frames.
   */
  private readonly sendPending = (): void => {
    const frames = this.pending;
    const n = frames.length;
    let i = 0;
    while (i < n) {
      const first = frames[i]!;
      let end = i + 1;
      let bytes = first.byteLength;
      while (end < n && bytes + frames[end]!.byteLength <= COALESCE_BYTES) bytes += frames[end++]!.byteLength;
      const message = end === i + 1 ? first : coalesce(frames, i, end, bytes);
      if (this.ws.send(message, true, false) === SEND_DROPPED) break;
      this.pendingBytes -= bytes;
      i = end;
    }
    if (i === n) {
      this.pending = [];
      this.pendingBytes = 0;
      return;
    }
    // Refused: keep this frame and the ones after it, in order, for the drain.
    // The budget keeps uWS below maxBackpressure, so this is not expected (counted).
    countRefusedSend();
    this.stalled = true;
    // They wait for the drain, maybe turns from now: inbound frames among them are copied out of their slabs.
    this.pending = frames.slice(i).map(retainFrame);
  };
  /** uWS drained part of its buffer: send what it refused before. */
  onSocketDrain(): void {
    if (!this.stalled) return;
    this.stalled = false;
    this.flush();
  }
  bufferedBytes(): number {
    return this.closed ? 0 : this.pendingBytes + this.ws.getBufferedAmount();
  }
  socketBufferedBytes(): number {
    return this.closed ? 0 : this.ws.getBufferedAmount();
  }
  channelBinding(): undefined {
    // TLS for WebSockets ends at an ingress in front of this build of uWS (no TLS): nothing to bind.
    return undefined;
  }
  end(): void {
    if (this.closed) return;
    this.stalled = false;
    this.flush();
    this.ws.end(1000, 'bye');
  }
  destroy(): void {
    if (!this.closed) this.ws.close();
  }
}

/** Splits one WebSocket message into whole frames; a message must not end inside a frame. */
function forEachFrame(message: Buffer, maxBody: number, sink: TransportSink): void {
  if (message.length === 0) throw new ProtocolError('TRUNCATED', 'empty message holds no frame');
  let offset = 0;
  while (offset < message.length) {
    const bodyLength = readFrameHeader(message, offset, maxBody);
    const end = offset + FRAME_HEADER_SIZE + bodyLength;
    if (end > message.length) {
      throw new ProtocolError('TRUNCATED', `message ends ${end - message.length} bytes inside a frame`);
    }
    // One frame filling the message (paced senders send one per message) is the message itself: no view.
    sink.onFrame(offset === 0 && end === message.length ? message : message.subarray(offset, end));
    offset = end;
  }
}

export function listenWebSocket(options: WsListenerOptions, accept: AcceptConnection): Promise<Listener> {
  const app = uWS.App();
  if (options.poisonRecycled) inboundArena.poisonRecycled = true;
  app.ws<SocketData>('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: options.maxMessageBytes,
    maxBackpressure: options.maxBackpressure,
    closeOnBackpressureLimit: 0,
    idleTimeout: options.idleTimeoutSeconds,
    sendPingsAutomatically: true,
    upgrade: (res, req, context) => {
      const protocols = req.getHeader('sec-websocket-protocol');
      const offered = protocols.split(',').map((p) => p.trim());
      if (!offered.includes(WS_SUBPROTOCOL)) {
        res.writeStatus('426 Upgrade Required').end(`WebSocket subprotocol ${WS_SUBPROTOCOL} required\n`);
        return;
      }
      const peer = Buffer.from(res.getRemoteAddressAsText()).toString();
      const trusted = options.trustedProxies;
      const remoteAddress = trusted ? trusted.clientAddress(peer, req.getHeader('x-forwarded-for')) : peer;
      res.upgrade<SocketData>(
        { remoteAddress },
        req.getHeader('sec-websocket-key'),
        WS_SUBPROTOCOL,
        req.getHeader('sec-websocket-extensions'),
        context,
      );
    },
    open: (ws) => {
      const data = ws.getUserData();
      const transport = new WsTransport(ws, data.remoteAddress);
      data.transport = transport;
      data.sink = accept(transport);
    },
    message: (ws, message, isBinary) => {
      const data = ws.getUserData();
      const sink = data.sink;
      if (!sink) return;
      if (sink.onBytesIn !== undefined && !sink.onBytesIn(message.byteLength)) return;
      if (!isBinary) {
        sink.onProtocolError(new ProtocolError('BAD_FIELD', 'text messages are not part of the protocol'));
        return;
      }
      // uWS neuters `message` when this callback returns; one copy per message
      // (not per frame) into a recycled slab lets frames outlive the callback
      // for a few turns (inbound-arena.ts: what keeps one longer copies it).
      const bytes = inboundArena.copy(message);
      try {
        forEachFrame(bytes, options.maxBody, sink);
      } catch (err) {
        // A throw out of a uWS callback would reach the process; end this connection instead.
        sink.onProtocolError(err instanceof ProtocolError ? err : new ProtocolError('INTERNAL', String(err)));
      }
    },
    drain: (ws) => {
      const data = ws.getUserData();
      data.transport?.onSocketDrain();
      data.sink?.onDrain();
    },
    close: (ws) => {
      const data = ws.getUserData();
      if (data.transport) data.transport.closed = true;
      data.sink?.onClose();
    },
  });
  return new Promise((resolve, reject) => {
    app.listen(options.host, options.port, (listenSocket) => {
      if (!listenSocket) {
        reject(new Error(`cannot listen for WebSocket on ${options.host}:${options.port}`));
        return;
      }
      let open = true;
      resolve({
        port: uWS.us_socket_local_port(listenSocket as unknown as uWS.us_socket),
        stopAccepting: () => {
          if (open) uWS.us_listen_socket_close(listenSocket);
          open = false;
        },
      });
    });
  });
}
