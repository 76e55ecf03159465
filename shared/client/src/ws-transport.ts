/**
 * WebSocket transport. No Node-only imports: in a browser (or any runtime
 * with a global WebSocket) it uses globalThis.WebSocket; elsewhere it loads
 * the `ws` package with a variable specifier, so bundlers leave it out.
 *
 * One binary message holds one or more whole frames (docs/protocol.md), so
 * each message is decoded with decodeFrames. Subprotocol
 * `libertaria-relay.v1`, binaryType arraybuffer.
 */
import { decodeFrames, ProtocolError, RelayError } from '@libertaria/protocol';
import { ClientErrorCode } from './codes.js';
import { BaseTransport, type Transport, type TransportOptions } from './transport.js';
import type { RelayUrl } from './url.js';

export const WS_SUBPROTOCOL = 'libertaria-relay.v1';

/** The part of the WHATWG WebSocket API this transport uses; `ws` implements it too. */
interface WebSocketLike {
  binaryType: string;
  readonly bufferedAmount: number;
  readonly readyState: number;
  readonly protocol: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((event: { message?: string; error?: unknown }) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

type WebSocketConstructor = new (url: string, protocols: string | string[], options?: object) => WebSocketLike;

const OPEN = 1;
/** How long close() waits for the closing handshake before dropping the connection. */
const CLOSE_GRACE_MS = 1000;
/** A message can batch frames; bound it so a hostile relay cannot make `ws` buffer 100 MiB (its default). */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

let cachedConstructor: { ctor: WebSocketConstructor; isNodeWs: boolean } | undefined;

async function webSocketConstructor(): Promise<{ ctor: WebSocketConstructor; isNodeWs: boolean }> {
  if (cachedConstructor) return cachedConstructor;
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === 'function') {
    cachedConstructor = { ctor: global, isNodeWs: false };
    return cachedConstructor;
  }
  // A variable, not a literal: bundlers targeting browsers must not try to include `ws`.
  const specifier: string = 'ws';
  const mod = (await import(specifier)) as { default?: WebSocketConstructor; WebSocket?: WebSocketConstructor };
  const ctor = mod.WebSocket ?? mod.default;
  if (typeof ctor !== 'function') {
    throw new RelayError(
      ClientErrorCode.unreachable,
      'no WebSocket implementation (global WebSocket or the ws package)',
    );
  }
  cachedConstructor = { ctor, isNodeWs: true };
  return cachedConstructor;
}

function toBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}

function describe(event: { message?: string; error?: unknown }): string {
  if (event.error instanceof Error) return event.error.message;
  return typeof event.message === 'string' && event.message !== '' ? event.message : 'WebSocket error';
}

class WebSocketTransport extends BaseTransport {
  readonly url: RelayUrl;
  readonly #socket: WebSocketLike;
  readonly #maxPayload: number;
  #error: Error | undefined;

  constructor(url: RelayUrl, socket: WebSocketLike, maxPayload: number) {
    super();
    this.url = url;
    this.#socket = socket;
    this.#maxPayload = maxPayload;
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onerror = (event) => {
      this.#error ??= new RelayError(ClientErrorCode.unreachable, `${url.href}: ${describe(event)}`);
    };
    socket.onclose = (event) => {
      if (this.#error === undefined && event.code !== 1000 && event.code !== 1005) {
        const reason = event.reason ? `: ${event.reason}` : '';
        this.#error = new RelayError(
          ClientErrorCode.unreachable,
          `${url.href}: closed with code ${event.code}${reason}`,
        );
      }
      this.finish(this.#error);
    };
  }

  get bufferedAmount(): number {
    return this.#socket.bufferedAmount;
  }

  send(bytes: Uint8Array): void {
    if (this.closed || this.#socket.readyState !== OPEN) {
      throw new RelayError(ClientErrorCode.unreachable, `${this.url.href}: connection is closed`);
    }
    this.#socket.send(bytes);
  }

  close(): void {
    try {
      this.#socket.close(1000, 'client closing');
    } catch {
      // Already closing or closed; onclose reports the end either way.
    }
    // A dead peer never answers the closing handshake (`ws` would wait 30 s): cut it short.
    const timer = setTimeout(() => {
      if (this.closed) return;
      const terminate = (this.#socket as { terminate?: () => void }).terminate;
      if (typeof terminate === 'function') terminate.call(this.#socket);
      else this.finish(this.#error);
    }, CLOSE_GRACE_MS);
    (timer as { unref?: () => void }).unref?.();
  }

  #onMessage(data: unknown): void {
    if (this.closed) return;
    const bytes = toBytes(data);
    try {
      if (bytes === undefined) throw new ProtocolError('BAD_FIELD', 'a text WebSocket message is not a frame');
      this.deliver(decodeFrames(bytes, { maxPayload: this.#maxPayload }));
    } catch (error) {
      // A relay that sends undecodable bytes cannot be resynchronized: drop the connection.
      this.#error = error instanceof Error ? error : new ProtocolError('BAD_FIELD', String(error));
      this.close();
      this.finish(this.#error);
    }
  }
}

/** Opens a WebSocket to the relay; resolves once it is open. */
export async function openWebSocketTransport(url: RelayUrl, options: TransportOptions): Promise<Transport> {
  const { ctor, isNodeWs } = await webSocketConstructor();
  // Only the `ws` constructor takes a third argument; browsers ignore it anyway.
  const nodeOptions = isNodeWs
    ? {
        maxPayload: MAX_MESSAGE_BYTES,
        perMessageDeflate: false,
        handshakeTimeout: options.timeoutMs,
        ...(options.tls?.ca !== undefined ? { ca: options.tls.ca } : {}),
        ...(options.tls?.rejectUnauthorized !== undefined
          ? { rejectUnauthorized: options.tls.rejectUnauthorized }
          : {}),
      }
    : undefined;
  const socket = new ctor(url.href, WS_SUBPROTOCOL, nodeOptions);
  socket.binaryType = 'arraybuffer';
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.onopen = socket.onclose = null;
      // Not null: closing a socket that is still connecting makes `ws` emit 'error', and an
      // 'error' without a listener is an uncaught exception that would kill the application.
      socket.onerror = () => {};
      try {
        socket.close();
      } catch {
        // Closing a socket that never opened may throw in some implementations.
      }
      reject(error);
    };
    const timer = setTimeout(
      () =>
        fail(
          new RelayError(ClientErrorCode.handshakeTimeout, `${url.href}: no connection within ${options.timeoutMs} ms`),
        ),
      options.timeoutMs,
    );
    socket.onerror = (event) => fail(new RelayError(ClientErrorCode.unreachable, `${url.href}: ${describe(event)}`));
    socket.onclose = (event) =>
      fail(new RelayError(ClientErrorCode.unreachable, `${url.href}: closed with code ${event.code} before opening`));
    socket.onopen = () => {
      if (settled) return;
      if (socket.protocol !== WS_SUBPROTOCOL) {
        fail(new RelayError(ClientErrorCode.unexpectedFrame, `${url.href}: relay did not accept ${WS_SUBPROTOCOL}`));
        return;
      }
      settled = true;
      clearTimeout(timer);
      resolve(new WebSocketTransport(url, socket, options.maxPayload));
    };
  });
}
