/**
 * Raw TCP and TLS transport (Node only; loaded on demand for tcp:// and
 * tls:// URLs, see transport.ts). The stream is length-prefixed frames back
 * to back; FrameStreamDecoder reassembles them across reads.
 */
import { isIP, type Socket, connect as tcpConnect } from 'node:net';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { CHANNEL_BINDING_LENGTH, TLS_EXPORTER_LABEL } from '@libertaria/identity';
import { FrameStreamDecoder, ProtocolError, RelayError } from '@libertaria/protocol';
import { ClientErrorCode } from './codes.js';
import { BaseTransport, type Transport, type TransportOptions } from './transport.js';
import type { RelayUrl } from './url.js';

/** RFC 9266 exports with no context at all (not an empty one); Node's types insist on the argument, its code does not. */
const NO_CONTEXT = undefined as unknown as Buffer;

/** After end(), wait this long for the relay to close before destroying the socket. */
const CLOSE_GRACE_MS = 1000;

class TcpTransport extends BaseTransport {
  readonly url: RelayUrl;
  readonly channelBinding: Uint8Array | undefined;
  readonly #socket: Socket;
  readonly #decoder: FrameStreamDecoder;
  #error: Error | undefined;

  constructor(url: RelayUrl, socket: Socket, maxPayload: number) {
    super();
    this.url = url;
    // RFC 9266 tls-exporter of this TLS connection: both handshake signatures cover it.
    this.channelBinding =
      url.scheme === 'tls'
        ? new Uint8Array(
            (socket as TLSSocket).exportKeyingMaterial(CHANNEL_BINDING_LENGTH, TLS_EXPORTER_LABEL, NO_CONTEXT),
          )
        : undefined;
    this.#socket = socket;
    this.#decoder = new FrameStreamDecoder({ maxPayload });
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (error) => {
      this.#error ??= new RelayError(ClientErrorCode.unreachable, `${url.href}: ${error.message}`);
    });
    socket.on('end', () => {
      // The relay closed its side; finish ours (TCP half-close has no use in this protocol).
      socket.end();
    });
    socket.on('close', () => this.finish(this.#error));
  }

  get bufferedAmount(): number {
    return this.#socket.writableLength;
  }

  send(bytes: Uint8Array): void {
    if (this.closed || this.#socket.destroyed || !this.#socket.writable) {
      throw new RelayError(ClientErrorCode.unreachable, `${this.url.href}: connection is closed`);
    }
    this.#socket.write(bytes);
  }

  close(): void {
    if (this.#socket.destroyed) return;
    this.#socket.end();
    setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  #onData(chunk: Buffer): void {
    if (this.closed) return;
    try {
      // A plain Uint8Array view, so frames hold Uint8Arrays (whose slice() copies), not Buffers.
      this.deliver(this.#decoder.pushFrames(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)));
    } catch (error) {
      this.#error = error instanceof Error ? error : new ProtocolError('BAD_FIELD', String(error));
      this.#socket.destroy();
    }
  }
}

/** Opens a TCP (or, for tls://, TLS) connection to the relay; resolves once connected (and the TLS handshake done). */
export function openTcpTransport(url: RelayUrl, options: TransportOptions): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const secure = url.scheme === 'tls';
    const socket: Socket = secure
      ? tlsConnect({
          host: url.host,
          port: url.port,
          // SNI takes a host name only, never an IP address.
          ...(isIP(url.host) === 0 ? { servername: url.host } : {}),
          ...(options.tls?.ca !== undefined ? { ca: options.tls.ca } : {}),
          ...(options.tls?.rejectUnauthorized !== undefined
            ? { rejectUnauthorized: options.tls.rejectUnauthorized }
            : {}),
        })
      : tcpConnect({ host: url.host, port: url.port });
    const fail = (error: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    const timer = setTimeout(
      () =>
        fail(
          new RelayError(ClientErrorCode.handshakeTimeout, `${url.href}: no connection within ${options.timeoutMs} ms`),
        ),
      options.timeoutMs,
    );
    const onError = (error: Error): void =>
      fail(new RelayError(ClientErrorCode.unreachable, `${url.href}: ${error.message}`));
    socket.once('error', onError);
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      socket.setNoDelay(true);
      resolve(new TcpTransport(url, socket, options.maxPayload));
    });
  });
}
