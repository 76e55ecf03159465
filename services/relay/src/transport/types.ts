import type { ProtocolError } from '@libertaria/protocol';
import type { Transport } from '../metrics.js';

/**
 * What the connection logic needs from a transport: write, measure backpressure, close.
 *
 * A transport never drops what write() accepted: frames stay queued (this
 * turn's batch, then the socket layer's buffer) until the kernel takes them or
 * the connection closes. Bounding that memory is the caller's job, from
 * bufferedBytes(); the transport calls `onDrain` when it shrinks again.
 */
export interface PeerTransport {
  readonly kind: Transport;
  readonly remoteAddress: string;
  /**
   * The TLS exporter (RFC 9266 tls-exporter, 32 bytes) of a connection whose
   * TLS this node terminates itself (kind 'tls'); undefined otherwise. Both
   * handshake signatures cover it (docs/identity.md#relay-authentication-transcript).
   */
  channelBinding(): Uint8Array | undefined;
  /** Writes one or more whole frames. The transport takes the bytes as they are now (copy or reference: see below). */
  write(bytes: Uint8Array): void;
  /**
   * Bytes accepted by write() and not yet handed to the kernel: those queued
   * during this event-loop turn (flushed at its end) plus what the socket
   * layer holds. This is what a connection's outbound memory budget counts.
   */
  bufferedBytes(): number;
  /** The socket layer's share of bufferedBytes() (written at a flush, not yet taken by the kernel). */
  socketBufferedBytes(): number;
  /** Flushes what is buffered, then closes. */
  end(): void;
  /** Closes at once, dropping what is buffered. */
  destroy(): void;
  /**
   * Stops reading from the peer for `ms` (a flood over its budget: the
   * kernel's buffers fill and the peer meets TCP backpressure instead of this
   * node reading and refusing every frame). Optional: uWS offers no read pause
   * for WebSockets, which keep reading and refusing.
   */
  pauseReading?(ms: number): void;
}

/**
 * What a transport calls back into. Frames are handed over whole (one frame
 * per call, header included) and their bytes stay valid after the call
 * returns: transports copy transient receive buffers once per read, so the
 * connection logic may keep views (forward, store) without copying again.
 */
export interface TransportSink {
  /**
   * Called with the size of every read (TCP chunk, WebSocket message) before
   * its frames are split out. False: the connection refused them (it has
   * already answered and is closing); the transport reads no further.
   */
  onBytesIn?(bytes: number): boolean;
  onFrame(frame: Buffer): void;
  /** The bytes could not be split into frames (bad header, oversized, truncated message). */
  onProtocolError(err: ProtocolError): void;
  /** The socket layer's buffer shrank (it may still hold bytes: check bufferedBytes()). */
  onDrain(): void;
  onClose(): void;
}

/** Creates the connection logic for a new transport connection. */
export type AcceptConnection = (transport: PeerTransport) => TransportSink;

export interface Listener {
  readonly port: number;
  /** Stops accepting new connections; open ones are untouched. */
  stopAccepting(): void;
}
