/**
 * MultipathSession: one peer on several paths at once, the seed's
 * MultipathSession { paths, strategy }. Each path is a RelayClient with the
 * same identity and its own relay node and/or transport (ws://, tcp://).
 * See docs/multipath.md for the guarantees and what they rest on.
 *
 * Sending: every payload gets the multipath header (multipath-frame.ts:
 * stream id, per-recipient sequence number) and is then sealed ONCE with the
 * session's SessionManager, above the paths. The path clients themselves run
 * unsealed and only carry the sealed bytes, so a frame re-sent on another
 * path is byte for byte the same frame with the same message id (the relay
 * stores a durable message id once), and a frame that arrives on two paths
 * is opened once. The PathScheduler (multipath-scheduler.ts) picks the path.
 *
 * Losing a path: a durable send is complete when any path got the relay's
 * ACK. When every path it was written to is disconnected (or gave up), it is
 * written again, same id and bytes, on a connected path; the relay answers a
 * repeat with the original position. So a durable send fails only with a
 * NACK, close(), or when every path gave up.
 *
 * Receiving: every path's messages() is read into one MultipathInbound
 * (multipath-inbound.ts), which opens the first copy of each message id,
 * hides and later acknowledges the other copies, and releases each sender's
 * messages in order; while the application is behind, the paths are not
 * read.
 *
 * Browser-safe: no Node imports.
 */

import { hintFromDid } from '@libertaria/identity';
import { type LibertariaError, RelayError } from '@libertaria/protocol';
import { copyBytes, randomBytes, toHex } from './bytes.js';
import type { ClientLogger, PrekeyStatus, PublishPrekeysOptions, RelayClient, SendResult } from './client.js';
import { ClientErrorCode, toError, toLibertariaError } from './codes.js';
import { TypedEmitter } from './emitter.js';
import { encodeMultipathFrame, MULTIPATH_STREAM_ID_SIZE } from './multipath-frame.js';
import { MultipathInbound, type MultipathInboundStats, type MultipathMessage } from './multipath-inbound.js';
import { MULTIPATH_STRATEGIES, type MultipathStrategy, PathScheduler, type PathView } from './multipath-scheduler.js';
import type { ReorderOptions } from './reorder.js';
import { RunStatus, rejectUnacknowledged } from './run-status.js';
import type { SessionManager, SessionTransport } from './sessions.js';

export type { MultipathMessage } from './multipath-inbound.js';
export type { MultipathStrategy } from './multipath-scheduler.js';

export interface MultipathPathSpec {
  /** A RelayClient of the session's identity, not connected yet, with `sealing: false` (the session seals, above it). */
  client: RelayClient;
  /** Shown in events and stats (default `path<i>`). */
  name?: string;
  /** Share of frames under 'aggregate' (positive integer, default 1). */
  weight?: number;
}

export interface MultipathOptions {
  /** In priority order: for 'failover' the first is the primary. */
  paths: readonly MultipathPathSpec[];
  strategy: MultipathStrategy;
  /**
   * End-to-end sealing, shared by all paths (docs/multipath.md#sealing). Without it
   * payloads, and the multipath header, travel unsealed.
   */
  sessions?: SessionManager;
  /** Receive-side ordering limits (ReorderBuffer). */
  reorder?: ReorderOptions;
  /** Messages released to messages() and not yet taken before the paths stop being read (default 1024). */
  inboundBufferSize?: number;
  /** Acknowledged message ids remembered to acknowledge late copies and hide them (default 100,000). */
  dedupeSize?: number;
  logger?: ClientLogger;
}

export interface MultipathSendOptions {
  /** Stored by the relay and acknowledged (default true); false = fast. */
  durable?: boolean;
  /** 16 bytes; random by default. */
  messageId?: Uint8Array;
  /** Durable retention; 0 or unset = the relay's default. */
  ttlSeconds?: number;
}

export interface MultipathSendResult {
  messageId: Uint8Array;
  /** Queue position (durable). */
  position?: number;
  /** The path whose relay ACKed (durable) or that the frame was written to (fast). */
  path: string;
  /** The frame's sequence number in our stream to that recipient. */
  seq: number;
}

export interface MultipathEvents {
  'path-up': { path: string; url: string; nodeId: string };
  'path-down': { path: string; error?: Error };
  /** The path's RelayClient gave up (or was closed): it carries nothing from now on. */
  'path-failed': { path: string; error: LibertariaError };
  /** failover: the path new frames go to changed (undefined: none connected). */
  switch: { from?: string; to?: string };
  /** A durable send was written again on another path because its paths were down. */
  rerouted: { messageId: Uint8Array; from: string[]; to: string };
  'peer-gone': { path: string; hint: Uint8Array; messageId: Uint8Array };
  error: { error: LibertariaError; path?: string; messageId?: Uint8Array };
}

export interface MultipathPathStats {
  name: string;
  connected: boolean;
  failed: boolean;
  /** Frames written on this path (first writes and re-writes). */
  sent: number;
  sentDurable: number;
  sentFast: number;
  /** Durable sends this path's relay ACKed first. */
  acked: number;
  /** Durable sends written here because the paths they were on went down. */
  rerouted: number;
  /** Durable sends on this path awaiting the relay's ACK. */
  outstanding: number;
  /** First copies of inbound messages that came through this path. */
  received: number;
  /** Later copies of inbound messages that came through this path. */
  duplicates: number;
}

/** Per path, plus the receive side's delivered / duplicates / reorder figures. */
export interface MultipathStats extends MultipathInboundStats {
  paths: MultipathPathStats[];
  /** Durable sends not yet ACKed on any path. */
  pendingSends: number;
}

interface PathState {
  readonly index: number;
  readonly name: string;
  readonly client: RelayClient;
  readonly weight: number;
  failed: boolean;
  outstanding: number;
  sent: number;
  sentDurable: number;
  sentFast: number;
  acked: number;
  rerouted: number;
  received: number;
  duplicates: number;
}

interface PendingSend {
  readonly key: string;
  readonly messageId: Uint8Array;
  readonly to: string;
  readonly body: Uint8Array;
  readonly sessionId: Uint8Array | undefined;
  readonly ttlSeconds: number;
  readonly seq: number;
  /** Paths it is written to and whose send has not settled. */
  readonly written: Set<PathState>;
  readonly resolve: (result: MultipathSendResult) => void;
  readonly reject: (error: Error) => void;
}

interface OutboundStream {
  nextSeq: number;
  /** Sealing and dispatch of this recipient's frames, in send order. */
  tail: Promise<void>;
}

function positiveInt(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new RelayError(ClientErrorCode.invalidArgument, `multipath: ${name} must be a positive integer`);
  }
  return value;
}

/**
 * A path's RelayClient rejects a durable send without a NACK only when it is
 * closed or gives up, and then with the failure as `cause` (its shutdown,
 * run-status.ts rejectUnacknowledged); a NACK (QUEUE_FULL, …) has none. The
 * former is a path problem (try another path), the latter the relay's
 * verdict on the message.
 */
function isPathFailure(error: unknown): boolean {
  return error instanceof RelayError && (error.cause !== undefined || error.code === ClientErrorCode.closed);
}

export class MultipathSession {
  readonly events: TypedEmitter<MultipathEvents>;
  readonly did: string;
  readonly strategy: MultipathStrategy;

  readonly #paths: PathState[];
  readonly #scheduler: PathScheduler;
  readonly #sessions: SessionManager | undefined;
  readonly #log: ClientLogger;
  readonly #streamId = randomBytes(MULTIPATH_STREAM_ID_SIZE);

  /** idle, running, closed or failed, and connect()'s promise (run-status.ts, shared with RelayClient). */
  readonly #status = new RunStatus('multipath session');
  #active: PathState | undefined;

  readonly #outStreams = new Map<string, OutboundStream>();
  readonly #pending = new Map<string, PendingSend>();

  readonly #inbound: MultipathInbound;
  readonly #pumps: Promise<void>[] = [];

  constructor(options: MultipathOptions) {
    if (!MULTIPATH_STRATEGIES.includes(options.strategy)) {
      throw new RelayError(
        ClientErrorCode.invalidArgument,
        `multipath: strategy must be one of ${MULTIPATH_STRATEGIES.join(', ')}`,
      );
    }
    if (!Array.isArray(options.paths) || options.paths.length === 0) {
      throw new RelayError(ClientErrorCode.invalidArgument, 'multipath: at least one path is needed');
    }
    this.strategy = options.strategy;
    this.#scheduler = new PathScheduler(options.strategy);
    this.#sessions = options.sessions;
    this.#log = options.logger ?? {};
    const capacity = positiveInt(options.inboundBufferSize, 1024, 'inboundBufferSize');
    const dedupeSize = positiveInt(options.dedupeSize, 100_000, 'dedupeSize');
    const did = options.paths[0]!.client.did;
    const names = new Set<string>();
    this.#paths = options.paths.map((spec, index) => {
      const client = spec.client;
      if (client.did !== did) {
        throw new RelayError(
          ClientErrorCode.invalidArgument,
          'multipath: every path must be a client of the same identity',
        );
      }
      if (client.sealed) {
        throw new RelayError(
          ClientErrorCode.invalidArgument,
          'multipath: path clients must not seal (build them with sealing: false and give the SessionManager to the MultipathSession)',
        );
      }
      const name = spec.name ?? `path${index}`;
      if (names.has(name))
        throw new RelayError(ClientErrorCode.invalidArgument, `multipath: duplicate path name ${name}`);
      names.add(name);
      return {
        index,
        name,
        client,
        weight: positiveInt(spec.weight, 1, 'weight'),
        failed: false,
        outstanding: 0,
        sent: 0,
        sentDurable: 0,
        sentFast: 0,
        acked: 0,
        rerouted: 0,
        received: 0,
        duplicates: 0,
      };
    });
    if (new Set(this.#paths.map((p) => p.client)).size !== this.#paths.length) {
      throw new RelayError(ClientErrorCode.invalidArgument, 'multipath: a client can be one path only');
    }
    this.did = did;
    if (this.#sessions !== undefined && this.#sessions.identity.did !== did) {
      throw new RelayError(ClientErrorCode.invalidArgument, 'multipath: the SessionManager is for another identity');
    }
    this.events = new TypedEmitter((error, event) =>
      this.#log.error?.('event listener threw', { event: String(event), error: toError(error).message }),
    );
    const sessions = this.#sessions;
    this.#inbound = new MultipathInbound({
      capacity,
      dedupeSize,
      ...(options.reorder ? { reorder: options.reorder } : {}),
      ...(options.logger ? { logger: options.logger } : {}),
      open: (copy) => (sessions === undefined ? copy.payload : sessions.open(copy.from, copy.sessionId, copy.payload)),
      onError: (error, path, messageId) => this.#emitError({ error, path, messageId }),
    });
    for (const path of this.#paths) this.#listen(path);
  }

  /** Whether payloads are sealed end to end. */
  get sealed(): boolean {
    return this.#sessions !== undefined;
  }

  /** Whether at least one path is connected. */
  get connected(): boolean {
    return this.#paths.some((p) => p.client.connected);
  }

  /** The path names, in configuration order. */
  get pathNames(): string[] {
    return this.#paths.map((p) => p.name);
  }

  get stats(): MultipathStats {
    return {
      paths: this.#paths.map((p) => ({
        name: p.name,
        connected: p.client.connected,
        failed: p.failed,
        sent: p.sent,
        sentDurable: p.sentDurable,
        sentFast: p.sentFast,
        acked: p.acked,
        rerouted: p.rerouted,
        outstanding: p.outstanding,
        received: p.received,
        duplicates: p.duplicates,
      })),
      pendingSends: this.#pending.size,
      ...this.#inbound.stats,
    };
  }

  /**
   * Connects every path (each keeps reconnecting on its own). Resolves when
   * the first path is up; rejects only when every path gave up, or close()
   * came first.
   */
  connect(): Promise<void> {
    return this.#status.connect((connected) => {
      // Nobody may be awaiting it yet when a failure rejects it.
      connected.catch(() => {});
      for (const path of this.#paths) {
        this.#pumps.push(this.#pump(path));
        path.client.connect().then(
          () => this.#status.markConnected(),
          (error: unknown) => this.#pathFailed(path, toLibertariaError(error, `${path.name}: connect`)),
        );
      }
    });
  }

  /**
   * Sends `payload` to `to` (a DID) on the path the strategy picks.
   *
   * Durable (default): resolves once a relay ACKed it, on whichever path;
   * while every path it was written to is down it is written again on a
   * connected one (same id, same bytes). Rejects on a NACK, on close(), or
   * when every path gave up. Fast: resolves once written to a connected
   * path; rejects CONNECTION_FAILED when none is.
   */
  async send(to: string, payload: Uint8Array, options: MultipathSendOptions = {}): Promise<MultipathSendResult> {
    this.#status.throwIfNotRunning('send');
    if (typeof to !== 'string') {
      throw new RelayError(ClientErrorCode.invalidArgument, 'send: "to" must be a DID (sequence numbers are per DID)');
    }
    if (!(payload instanceof Uint8Array)) {
      throw new RelayError(ClientErrorCode.invalidArgument, 'send: payload must be a Uint8Array');
    }
    // Refused here (IdentityError INVALID_DID), not by every path in turn.
    hintFromDid(to);
    const durable = options.durable ?? true;
    const messageId = options.messageId === undefined ? randomBytes(16) : copyBytes(options.messageId);
    if (messageId.length !== 16) {
      throw new RelayError(ClientErrorCode.invalidArgument, 'send: messageId must be 16 bytes');
    }
    const key = toHex(messageId);
    if (this.#pending.has(key)) {
      throw new RelayError(ClientErrorCode.invalidArgument, `send: message ${key} is already pending`);
    }
    const ttlSeconds = options.ttlSeconds ?? 0;
    // Checked before a sequence number is spent (a refused frame would leave a gap at the receiver).
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 0 || ttlSeconds > 0xffffffff) {
      throw new RelayError(ClientErrorCode.invalidArgument, 'send: ttlSeconds must be an integer 0..2^32-1');
    }
    let stream = this.#outStreams.get(to);
    if (stream === undefined) {
      stream = { nextSeq: 0, tail: Promise.resolve() };
      this.#outStreams.set(to, stream);
    }
    // The sequence number is taken now, so it follows the order of send() calls.
    const seq = stream.nextSeq++;
    const framed = encodeMultipathFrame(this.#streamId, seq, payload);
    const sealing = this.#seal(to, framed);
    // Its rejection is handled through `dispatched` below, possibly a turn later: not unhandled meanwhile.
    sealing.catch(() => {});
    const turn = stream.tail.then(() => sealing);
    // Dispatch waits for the previous frame to this recipient to be handed to a path (not for its ACK).
    const dispatched = turn.then(({ body, sessionId }) =>
      durable
        ? this.#sendDurable({ key, messageId, to, body, sessionId, ttlSeconds, seq })
        : this.#sendFast(to, body, sessionId, messageId, seq),
    );
    stream.tail = dispatched.then(
      () => undefined,
      () => undefined,
    );
    return (await dispatched)();
  }

  /**
   * Inbound messages of all paths, each message id once, in each sender's
   * order (see the reorder rules). Ends on close(); throws the error the
   * session gave up with.
   */
  messages(): AsyncIterable<MultipathMessage> {
    return this.#inbound.messages();
  }

  /** Closes every path. Pending sends reject CLIENT_CLOSED; messages() ends; held messages stay with the relay. */
  async close(): Promise<void> {
    if (!this.#status.close()) return;
    await this.#shutdown(this.#status.closedError('close'), undefined);
  }

  // ---------------------------------------------------------------------------
  // Sending

  async #seal(to: string, framed: Uint8Array): Promise<{ body: Uint8Array; sessionId: Uint8Array | undefined }> {
    const sessions = this.#sessions;
    if (sessions === undefined) return { body: framed, sessionId: undefined };
    return sessions.seal(this.#sessionTransport, to, framed);
  }

  /** What the SessionManager needs (prekeys): served by the first connected path that answers. */
  readonly #sessionTransport: SessionTransport = {
    publishPrekeys: (publication, options?: PublishPrekeysOptions) =>
      this.#viaPath('publishPrekeys', (c) => c.publishPrekeys(publication, options)),
    fetchPrekeys: (to) => this.#viaPath('fetchPrekeys', (c) => c.fetchPrekeys(to)),
    prekeyStatus: () => this.#viaPath<PrekeyStatus>('prekeyStatus', (c) => c.prekeyStatus()),
  };

  async #viaPath<T>(operation: string, call: (client: RelayClient) => Promise<T>): Promise<T> {
    let last: unknown;
    for (const path of this.#paths) {
      if (!path.client.connected) continue;
      try {
        return await call(path.client);
      } catch (error) {
        // Only a lost connection is worth another path; the relay's answer is the cluster's answer.
        if (!(error instanceof RelayError) || error.code !== ClientErrorCode.unreachable) throw error;
        last = error;
      }
    }
    throw new RelayError(ClientErrorCode.unreachable, `${operation}: no path is connected`, { cause: last });
  }

  #views(): PathView[] {
    return this.#paths.map((p) => ({
      connected: !p.failed && p.client.connected,
      outstanding: p.outstanding,
      weight: p.weight,
    }));
  }

  #sendFast(
    to: string,
    body: Uint8Array,
    sessionId: Uint8Array | undefined,
    messageId: Uint8Array,
    seq: number,
  ): () => Promise<MultipathSendResult> {
    const tried = new Set<number>();
    const attempt = async (): Promise<MultipathSendResult> => {
      for (;;) {
        const index = this.#scheduler.pick(this.#views(), tried);
        if (index === undefined) {
          throw new RelayError(
            ClientErrorCode.unreachable,
            'send: no path is connected (fast messages are not queued)',
          );
        }
        tried.add(index);
        const path = this.#paths[index]!;
        this.#noteActive();
        try {
          await path.client.send(to, body, { durable: false, messageId, ...(sessionId ? { sessionId } : {}) });
        } catch (error) {
          // Lost between the check and the write: try the next path; anything else is final.
          if (error instanceof RelayError && error.code === ClientErrorCode.unreachable) continue;
          throw error;
        }
        path.sent++;
        path.sentFast++;
        return { messageId, path: path.name, seq };
      }
    };
    const result = attempt();
    // Started now (in send order); the caller awaits it after the dispatch chain.
    result.catch(() => {});
    return () => result;
  }

  #sendDurable(fields: Omit<PendingSend, 'written' | 'resolve' | 'reject'>): () => Promise<MultipathSendResult> {
    let resolve: (r: MultipathSendResult) => void = () => {};
    let reject: (e: Error) => void = () => {};
    const done = new Promise<MultipathSendResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    done.catch(() => {});
    if (!this.#status.running) {
      reject(this.#status.state === 'failed' ? this.#status.failure! : this.#status.closedError('send'));
      return () => done;
    }
    if (this.#pending.has(fields.key)) {
      reject(new RelayError(ClientErrorCode.invalidArgument, `send: message ${fields.key} is already pending`));
      return () => done;
    }
    const entry: PendingSend = { ...fields, written: new Set(), resolve, reject };
    this.#pending.set(entry.key, entry);
    const index = this.#scheduler.pick(this.#views());
    // None connected: it waits here and goes out on the first path that connects (#reroute).
    if (index !== undefined) {
      this.#noteActive();
      this.#write(entry, this.#paths[index]!);
    }
    return () => done;
  }

  #write(entry: PendingSend, path: PathState): void {
    entry.written.add(path);
    path.outstanding++;
    path.sent++;
    path.sentDurable++;
    path.client
      .send(entry.to, entry.body, {
        durable: true,
        messageId: entry.messageId,
        ttlSeconds: entry.ttlSeconds,
        ...(entry.sessionId ? { sessionId: entry.sessionId } : {}),
      })
      .then(
        (result: SendResult) => {
          path.outstanding--;
          if (!this.#pending.has(entry.key) || this.#pending.get(entry.key) !== entry) return;
          this.#pending.delete(entry.key);
          path.acked++;
          entry.resolve({
            messageId: entry.messageId,
            ...(result.position !== undefined ? { position: result.position } : {}),
            path: path.name,
            seq: entry.seq,
          });
        },
        (error: unknown) => {
          path.outstanding--;
          entry.written.delete(path);
          if (this.#pending.get(entry.key) !== entry) return;
          if (isPathFailure(error) && this.#status.running) {
            // Only a closed or failed client rejects this way: that path carries nothing any more.
            this.#pathFailed(path, toLibertariaError(error, `${path.name}: send`));
            this.#reroute();
            return;
          }
          // A NACK is this relay's verdict; while the same frame is still pending on another path
          // (re-sent there when this one went down) that path's answer decides.
          if (entry.written.size > 0) return;
          this.#pending.delete(entry.key);
          entry.reject(toError(error));
        },
      );
  }

  /**
   * Writes every pending durable send whose paths are all down (or that has
   * none yet) on a connected path, oldest first, so a path that dies loses
   * nothing in flight on it.
   */
  #reroute(): void {
    if (!this.#status.running) return;
    for (const entry of this.#pending.values()) {
      let up = false;
      for (const p of entry.written) {
        if (p.client.connected && !p.failed) {
          up = true;
          break;
        }
      }
      if (up) continue;
      const exclude = new Set<number>();
      for (const p of entry.written) exclude.add(p.index);
      const index = this.#scheduler.pick(this.#views(), exclude);
      if (index === undefined) return; // nothing connected: the next 'connected' retries
      const path = this.#paths[index]!;
      const from = [...entry.written].map((p) => p.name);
      if (from.length > 0) {
        path.rerouted++;
        this.events.emit('rerouted', { messageId: copyBytes(entry.messageId), from, to: path.name });
      }
      this.#write(entry, path);
    }
  }

  /** failover: tell when the path new frames go to changes. */
  #noteActive(): void {
    if (this.strategy !== 'failover') return;
    const index = this.#scheduler.pick(this.#views());
    const next = index === undefined ? undefined : this.#paths[index];
    if (next === this.#active) return;
    const from = this.#active?.name;
    this.#active = next;
    this.#log.info?.('multipath: failover switched path', { from, to: next?.name });
    this.events.emit('switch', { ...(from !== undefined ? { from } : {}), ...(next ? { to: next.name } : {}) });
  }

  // ---------------------------------------------------------------------------
  // Path events

  #listen(path: PathState): void {
    const events = path.client.events;
    events.on('connected', ({ url, nodeId }) => {
      if (!this.#status.running) return;
      this.events.emit('path-up', { path: path.name, url, nodeId });
      this.#noteActive();
      this.#reroute();
      this.#publishPrekeys(path);
    });
    events.on('disconnected', ({ error }) => {
      if (!this.#status.running) return;
      this.events.emit('path-down', error === undefined ? { path: path.name } : { path: path.name, error });
      this.#noteActive();
      this.#reroute();
    });
    events.on('prekeys-low', () => this.#publishPrekeys(path));
    events.on('peer-gone', ({ hint, messageId }) =>
      this.events.emit('peer-gone', { path: path.name, hint, messageId }),
    );
    events.on('error', ({ error, messageId }) =>
      this.#emitError({ error, path: path.name, ...(messageId ? { messageId } : {}) }),
    );
  }

  #publishPrekeys(path: PathState): void {
    const sessions = this.#sessions;
    if (sessions === undefined || !this.#status.running) return;
    // The path clients run unsealed, so publishing our prekeys is the session's job (the manager shares one run).
    sessions.ensurePublished(path.client).catch((error: unknown) => {
      if (this.#status.running) {
        this.#emitError({ error: toLibertariaError(error, 'publishing prekeys'), path: path.name });
      }
    });
  }

  #pathFailed(path: PathState, error: LibertariaError): void {
    if (path.failed || !this.#status.running) return;
    path.failed = true;
    this.#log.warn?.('multipath: path gave up', { path: path.name, code: error.code, error: error.message });
    this.events.emit('path-failed', { path: path.name, error });
    this.#noteActive();
    if (this.#paths.every((p) => p.failed)) {
      this.#fail(
        new RelayError(error.code, `every path gave up; last (${path.name}): ${error.message}`, { cause: error }),
      );
      return;
    }
    this.#reroute();
  }

  // ---------------------------------------------------------------------------
  // Receiving

  async #pump(path: PathState): Promise<void> {
    try {
      for await (const message of path.client.messages()) {
        if (this.#inbound.add(path.name, message) === 'first') path.received++;
        else path.duplicates++;
        // The application is behind: stop reading this path; its own flow control leaves
        // durable frames with the relay meanwhile (docs/client.md#inbound-flow-control).
        while (this.#status.running && this.#inbound.full) await this.#inbound.waitForRoom();
        if (!this.#status.running) return;
      }
    } catch (error) {
      this.#pathFailed(path, toLibertariaError(error, `${path.name}: messages`));
    }
  }

  // ---------------------------------------------------------------------------
  // Lifecycle

  #emitError(event: MultipathEvents['error']): void {
    if (!this.events.emit('error', event)) {
      this.#log.warn?.('multipath error', { code: event.error.code, error: event.error.message, path: event.path });
    }
  }

  #fail(error: LibertariaError): void {
    if (!this.#status.fail(error)) return;
    this.#log.error?.('multipath session gave up', { code: error.code, error: error.message });
    this.#emitError({ error });
    void this.#shutdown(error, error);
  }

  async #shutdown(reason: LibertariaError, inboxError: LibertariaError | undefined): Promise<void> {
    this.#status.settleConnect(reason);
    rejectUnacknowledged(this.#pending, reason);
    // Held and buffered messages were never acknowledged: the relay keeps them for the next session.
    this.#inbound.close(inboxError);
    await Promise.all(this.#paths.map((p) => p.client.close()));
    await Promise.allSettled(this.#pumps);
  }
}
