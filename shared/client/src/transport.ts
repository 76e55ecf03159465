/**
 * The one small interface every transport implements, and the base class
 * that gives them the same event semantics. Kept free of Node-only imports:
 * the browser build uses it with the WebSocket transport.
 */
import { type Frame, RelayError } from '@libertaria/protocol';
import { ClientErrorCode } from './codes.js';
import type { RelayUrl } from './url.js';

export interface Transport {
  readonly url: RelayUrl;
  /**
   * The TLS exporter (RFC 9266, 32 bytes) when this is a tls:// connection,
   * whose TLS the relay terminates itself; both handshake signatures cover it.
   */
  readonly channelBinding?: Uint8Array | undefined;
  /** Bytes accepted by send() and not yet handed to the network (backpressure signal). */
  readonly bufferedAmount: number;
  /** Sends whole encoded frames (one or more, back to back). Throws if the transport is closed. */
  send(bytes: Uint8Array): void;
  /** Closes gracefully (pending writes are flushed first); onClose follows. Idempotent. */
  close(): void;
  /**
   * Receives decoded frames in arrival order. Frames that arrive while no
   * handler is set are kept and handed over as soon as one is, so a
   * handshake can pass the connection on without losing a frame.
   */
  onFrames: ((frames: Frame[]) => void) | undefined;
  /** Called exactly once when the transport is closed, with an error when it was not a clean close. */
  onClose: ((error?: Error) => void) | undefined;
}

export interface TlsClientOptions {
  /** PEM CA certificate(s) to trust instead of the system store (Node only; e.g. for a private relay CA). */
  ca?: string | string[];
  /** Set false only in tests: accepts any certificate. Node only. */
  rejectUnauthorized?: boolean;
}

export interface TransportOptions {
  /** Give up opening after this long. */
  timeoutMs: number;
  /** Largest payload the decoder accepts (the client uses the protocol's hard ceiling). */
  maxPayload: number;
  tls?: TlsClientOptions;
}

/**
 * Shared event plumbing: buffering frames until a handler is set, and
 * calling onClose exactly once, even if it is set after the close happened.
 */
export abstract class BaseTransport implements Transport {
  abstract readonly url: RelayUrl;
  abstract readonly bufferedAmount: number;
  abstract send(bytes: Uint8Array): void;
  abstract close(): void;

  #frameHandler: ((frames: Frame[]) => void) | undefined;
  #closeHandler: ((error?: Error) => void) | undefined;
  #held: Frame[] = [];
  #closed = false;
  #closeError: Error | undefined;
  #closeReported = false;

  get onFrames(): ((frames: Frame[]) => void) | undefined {
    return this.#frameHandler;
  }
  set onFrames(handler: ((frames: Frame[]) => void) | undefined) {
    this.#frameHandler = handler;
    if (handler !== undefined && this.#held.length > 0) {
      const held = this.#held;
      this.#held = [];
      handler(held);
    }
  }

  get onClose(): ((error?: Error) => void) | undefined {
    return this.#closeHandler;
  }
  set onClose(handler: ((error?: Error) => void) | undefined) {
    this.#closeHandler = handler;
    if (handler !== undefined && this.#closed) this.#reportClose();
  }

  /** Whether the transport has closed (no more frames will arrive). */
  get closed(): boolean {
    return this.#closed;
  }

  protected deliver(frames: Frame[]): void {
    if (this.#closed || frames.length === 0) return;
    if (this.#frameHandler !== undefined) this.#frameHandler(frames);
    else for (const f of frames) this.#held.push(f);
  }

  protected finish(error?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeError = error;
    if (this.#closeHandler !== undefined) this.#reportClose();
  }

  #reportClose(): void {
    if (this.#closeReported) return;
    this.#closeReported = true;
    // Frames still held were never asked for; they die with the connection.
    this.#held = [];
    this.#closeHandler?.(this.#closeError);
  }
}

/** Whether this runtime is Node (tcp:// and tls:// need node:net and node:tls). */
function isNode(): boolean {
  return typeof (globalThis as { process?: { versions?: { node?: unknown } } }).process?.versions?.node === 'string';
}

/**
 * Opens the transport for a URL. tcp:// and tls:// load the Node-only module
 * through a variable specifier, so a browser bundler never follows it.
 * Outside Node they are refused before that import (INVALID_RELAY_URL, a
 * permanent refusal: the client skips that relay from then on), which a
 * browser would otherwise resolve against the page's URL and fetch from the
 * page's origin.
 */
export async function openTransport(url: RelayUrl, options: TransportOptions): Promise<Transport> {
  if (url.scheme === 'ws' || url.scheme === 'wss') {
    const { openWebSocketTransport } = await import('./ws-transport.js');
    return openWebSocketTransport(url, options);
  }
  if (!isNode()) {
    throw new RelayError(ClientErrorCode.invalidUrl, `${url.href}: ${url.scheme}:// needs Node; use ws:// or wss://`);
  }
  const specifier: string = './tcp-transport.js';
  const mod = (await import(specifier)) as typeof import('./tcp-transport.js');
  return mod.openTcpTransport(url, options);
}
