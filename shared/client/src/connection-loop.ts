/**
 * RelayClient's link to the relay cluster: one authenticated connection at
 * a time to the first relay of the failover list that works, kept alive and
 * replaced when it dies (docs/client.md#reconnection-and-failover).
 *
 * - The loop (run): the candidates in order (a GOAWAY's hint first), a
 *   back-off after a round in which every relay failed, relays that refused
 *   us for good skipped, giving up after `reconnect.maxAttempts` rounds.
 * - A connection (connection.ts): opened with RESUME, the grants and MIGRATE
 *   from the previous one before the send window writes again; ended in
 *   end(), the one place that marks a connection over.
 * - Its liveness (tick): keepalive PINGs, a silent relay, an ACK overdue by
 *   the RTT-adaptive timeouts (link-timing.ts).
 * - Two states. Whether the client runs: `status` (run-status.ts: idle,
 *   running, closed, failed), moved only by connect(), close() and fail().
 *   How the link is: `lifecycle` (crypto/src/lifecycle.ts, one transition
 *   table; RelayClient.lifecycle, the 'state' events), moved here only: its
 *   terminal moves together with the run status's in close(), closed() and
 *   fail(), the others by the connections' events. They cannot be one union
 *   without changing what the client shows: the lifecycle is public and
 *   tells degraded, migrating and suspended apart, and says handshaking both
 *   before and after connect(); the run status tells idle from running and
 *   closed from failed.
 *
 * Browser-safe: no Node-only imports.
 */
import { SessionLifecycle } from '@libertaria/crypto';
import { migrationTranscript, type PeerSigner } from '@libertaria/identity';
import { encodeFrame, type Frame, ID_SIZE, type LibertariaError, RelayError } from '@libertaria/protocol';
import { backoffDelay, type ReconnectOptions } from './backoff.js';
import { randomBytes, toHex } from './bytes.js';
import { CLIENT_DEFAULTS, type ClientLogger, type RelayClientEvents } from './client-types.js';
import { ClientErrorCode, toError } from './codes.js';
import type { Connection, ConnectionEnd } from './connection.js';
import type { DedupeTracker } from './dedupe.js';
import type { TypedEmitter } from './emitter.js';
import { type Handshake, isPermanentRefusal, performHandshake, type SignatureVerifier } from './handshake.js';
import { type LinkTiming, PING_KEEPALIVE } from './link-timing.js';
import type { PingTable, PresenceTable } from './probes.js';
import { hintedUrls, type RelayList } from './relay-list.js';
import type { RelayPinStore } from './relay-pins.js';
import { pinOnFirstUse, relayExpectation } from './relay-trust.js';
import type { RequestTable } from './request-table.js';
import { RunStatus } from './run-status.js';
import type { SendWindow } from './send-window.js';
import type { TlsClientOptions } from './transport.js';
import type { RelayUrl } from './url.js';

/** What the link needs of the rest of the client. */
export interface LinkParts {
  readonly window: SendWindow<Connection>;
  /** The inbound side's tracker: RESUME carries its watermark; each connection starts its count anew. */
  readonly tracker: DedupeTracker;
  readonly pings: PingTable<Connection>;
  readonly presence: PresenceTable<Connection>;
  readonly requests: RequestTable<Connection>;
  readonly events: TypedEmitter<RelayClientEvents>;
  /** The grants presented again first thing on every connection (relay-requests.ts). */
  grants(): Iterable<Uint8Array>;
  /** Frames read from a connection (frame-dispatch.ts). */
  onFrames(connection: Connection, frames: Frame[]): void;
  /** A migration completed on `connection`: the peers are told (path-updates.ts). */
  onMigrated(connection: Connection): void;
  emitError(event: RelayClientEvents['error']): void;
  /** The loop gives up: the client fails with `error` (RelayClient's #fail, which calls fail() here). */
  fail(error: LibertariaError): void;
}

export interface ConnectionLoopOptions {
  /** The lifecycle's name in logs. */
  name: string;
  identity: PeerSigner;
  /** The relays to try, in failover order, and those to avoid (relay-list.ts). */
  relays: RelayList;
  expectRelayDid: string | undefined;
  relayPins: RelayPinStore | undefined;
  verifyRelay: SignatureVerifier | undefined;
  reconnect: ReconnectOptions;
  tls: TlsClientOptions | undefined;
  log: ClientLogger;
  timing: LinkTiming;
  parts: LinkParts;
}

/** Timers must not keep Node alive on their own (the socket does); browsers have no unref. */
function unref(timer: ReturnType<typeof setTimeout>): void {
  const t = timer as { unref?: () => void };
  t.unref?.();
}

export class ConnectionLoop {
  /** Whether the client runs: idle, running, closed or failed, and connect()'s promise (run-status.ts). */
  readonly status = new RunStatus('client');
  /**
   * The lifecycle of this client's link to the cluster (the seed's
   * SessionState for the relay path): transitions are logged and emitted as
   * 'state' events.
   */
  readonly lifecycle: SessionLifecycle;
  readonly timing: LinkTiming;
  readonly #identity: PeerSigner;
  readonly #relays: RelayList;
  readonly #expectRelayDid: string | undefined;
  readonly #relayPins: RelayPinStore | undefined;
  readonly #verifyRelay: SignatureVerifier | undefined;
  readonly #reconnect: ReconnectOptions;
  readonly #tls: TlsClientOptions | undefined;
  readonly #log: ClientLogger;
  readonly #parts: LinkParts;

  #current: Connection | undefined;
  #connections = 0;
  /** Href of the relay URL the last connection used: a different one on reconnect is a migration. */
  #lastPath: string | undefined;
  /** The last connection's connectionId (WELCOME): a new connection MIGRATEs from it. */
  #lastConnectionId: Uint8Array | undefined;
  #abort: AbortController | undefined;
  #wake: (() => void) | undefined;

  constructor(options: ConnectionLoopOptions) {
    this.#identity = options.identity;
    this.#relays = options.relays;
    this.#expectRelayDid = options.expectRelayDid;
    this.#relayPins = options.relayPins;
    this.#verifyRelay = options.verifyRelay;
    this.#reconnect = options.reconnect;
    this.#tls = options.tls;
    this.#log = options.log;
    this.timing = options.timing;
    this.#parts = options.parts;
    this.lifecycle = new SessionLifecycle({ name: options.name, log: this.#log });
    this.lifecycle.onTransition((t) => this.#parts.events.emit('state', t));
  }

  /** The connection in use, if any (it may be over a moment before the next one replaces it). */
  get current(): Connection | undefined {
    return this.#current;
  }

  /** The current connection if it is up. */
  get live(): Connection | undefined {
    const connection = this.#current;
    return connection === undefined || connection.over ? undefined : connection;
  }

  /** Connections made so far (stats.connections). */
  get connections(): number {
    return this.#connections;
  }

  // ---------------------------------------------------------------------------
  // The loop

  /** Connects, and reconnects whenever the connection ends, while the client runs. */
  async run(): Promise<void> {
    let failedRounds = 0;
    /** Connections in a row that ended soon after WELCOME: a relay that accepts and then drops us. */
    let shortConnections = 0;
    let preferred: RelayUrl[] = [];
    while (this.status.running) {
      const candidates = this.#relays.candidates(preferred);
      preferred = [];
      if (candidates.length === 0) {
        this.#parts.fail(
          new RelayError('AUTH_FAILED', 'every relay refused this client for good; see the error events'),
        );
        return;
      }
      let lastError: RelayError | undefined;
      let connected = false;
      for (const url of candidates) {
        if (!this.status.running) return;
        if (this.#relays.isRefused(url)) continue;
        const wait = this.#relays.notBefore(url) - Date.now();
        if (wait > 0) await this.#sleep(wait);
        if (!this.status.running) return;
        let handshake: Handshake;
        try {
          handshake = await this.#handshake(url);
        } catch (error) {
          lastError =
            error instanceof RelayError ? error : new RelayError(ClientErrorCode.unreachable, toError(error).message);
          this.#connectFailed(url, lastError);
          continue;
        }
        if (!this.status.running) {
          handshake.transport.close();
          return;
        }
        failedRounds = 0;
        connected = true;
        const end = await this.#open(url, handshake);
        if (end.refused !== undefined) this.#refuse(url, end.refused);
        if (end.goaway !== undefined) {
          this.#relays.deferUntil(url, Date.now() + end.goaway.reconnectAfterMs);
          preferred = hintedUrls(end.goaway.reconnectHint, this.#log);
        } else if (end.resync !== true && this.status.running) {
          // Jitter spreads the reconnects of everyone who lost this relay at the same moment; a
          // connection that died young counts as a failure, so a flapping relay is not hammered.
          const lived = Date.now() - (end.startedAt ?? 0);
          shortConnections = lived < this.#reconnect.maxDelayMs ? shortConnections + 1 : 0;
          await this.#sleep(backoffDelay(Math.max(0, shortConnections - 1), this.#reconnect));
        }
        break;
      }
      if (connected || !this.status.running) continue;
      failedRounds++;
      const maxRounds = this.#reconnect.maxAttempts;
      if (this.#relays.allRefused()) {
        this.#parts.fail(lastError ?? new RelayError('AUTH_FAILED', 'every relay refused this client'));
        return;
      }
      if (maxRounds > 0 && failedRounds >= maxRounds) {
        const code = lastError?.code ?? ClientErrorCode.unreachable;
        this.#parts.fail(
          new RelayError(
            code,
            `no relay reachable after ${failedRounds} round(s) over ${this.#relays.size} relay(s); last: ${lastError?.message ?? 'none'}`,
            { cause: lastError },
          ),
        );
        return;
      }
      await this.#sleep(backoffDelay(failedRounds - 1, this.#reconnect));
    }
  }

  async #handshake(url: RelayUrl): Promise<Handshake> {
    const abort = new AbortController();
    this.#abort = abort;
    try {
      const timeoutMs = this.timing.handshakeTimeout();
      const pending = relayExpectation(url, this.#expectRelayDid, this.#relayPins)
        .then((expectRelay) =>
          performHandshake(url, {
            identity: this.#identity,
            expectRelay,
            timeoutMs,
            tls: this.#tls,
            verify: this.#verifyRelay,
          }),
        )
        .then(async (h) => {
          await pinOnFirstUse(url, h.relayDid, this.#relayPins, this.#log);
          return h;
        });
      // close() must not wait for a handshake timeout; the late transport is closed when it resolves.
      const aborted = new Promise<never>((_, reject) => {
        abort.signal.addEventListener('abort', () => reject(this.status.closedError('connect')), { once: true });
      });
      const started = performance.now();
      pending.then(
        (h) => {
          if (abort.signal.aborted) h.transport.close();
          else this.timing.handshakeDone(performance.now() - started);
        },
        (error: unknown) => this.timing.handshakeFailed(error),
      );
      return await Promise.race([pending, aborted]);
    } finally {
      if (this.#abort === abort) this.#abort = undefined;
    }
  }

  #connectFailed(url: RelayUrl, error: RelayError): void {
    this.#log.debug?.('relay connection failed', { url: url.href, code: error.code, error: error.message });
    if (isPermanentRefusal(error)) this.#refuse(url, error);
  }

  /** AUTH_FAILED and friends will not improve by retrying: skip the relay from now on and say so. */
  #refuse(url: RelayUrl, error: RelayError): void {
    if (!this.#relays.refuse(url)) return;
    this.#log.warn?.('relay refused this client; not retrying it', { url: url.href, code: error.code });
    this.#parts.emitError({ error, url: url.href });
  }

  #sleep(ms: number): Promise<void> {
    if (ms <= 0 || !this.status.running) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  // ---------------------------------------------------------------------------
  // A connection

  #open(url: RelayUrl, handshake: Handshake): Promise<ConnectionEnd> {
    let resolveEnded: (end: ConnectionEnd) => void = () => {};
    const ended = new Promise<ConnectionEnd>((r) => {
      resolveEnded = r;
    });
    let resolveClosed: () => void = () => {};
    const transportClosed = new Promise<void>((r) => {
      resolveClosed = r;
    });
    const now = Date.now();
    const connection: Connection = {
      url,
      transport: handshake.transport,
      version: handshake.version,
      welcome: handshake.welcome,
      ended,
      transportClosed,
      resolveEnded,
      over: false,
      inFlight: 0,
      lastRx: now,
      lastTx: now,
      lastKeepalive: now,
      startedAt: now,
      leavingUnread: false,
      timer: undefined,
      keepalives: new Map(),
      migrationPing: undefined,
      lastAnsweredPing: undefined,
    };
    this.#current = connection;
    this.#connections++;
    handshake.transport.onClose = (error) => {
      resolveClosed();
      this.end(connection, error === undefined ? {} : { error });
    };
    if (connection.over) return ended;

    const parts = this.#parts;
    // RESUME first: the relay then redelivers everything after the watermark.
    const lastAcked = parts.tracker.lastAcked;
    if (!this.write(connection, { type: 'RESUME', lastAcked })) return ended;
    // Grants before any send: the relay holds a grant as soon as it reads GRANT_PRESENT, so the sends
    // pumped below are decided by it. The answers go unclaimed (a refusal shows in the sends' NACKs).
    for (const token of parts.grants()) {
      this.write(connection, { type: 'GRANT_PRESENT', requestId: randomBytes(ID_SIZE), token });
    }
    this.#enter(connection);
    parts.tracker.newConnection();
    parts.window.resend(connection);

    const hb = connection.welcome.heartbeatMs;
    const tick = Math.max(50, Math.min(1000, this.timing.ackTimeoutFloor / 4, hb > 0 ? hb / 4 : 1000));
    connection.timer = setInterval(() => this.#tick(connection), tick);
    unref(connection.timer);

    this.#log.info?.('connected to relay', { url: url.href, nodeId: connection.welcome.nodeId, lastAcked });
    parts.events.emit('connected', {
      url: url.href,
      nodeId: connection.welcome.nodeId,
      connectionId: toHex(connection.welcome.connectionId),
      maxPayload: connection.welcome.maxPayload,
      relayDid: handshake.relayDid ?? '',
    });
    this.status.markConnected();
    if (!connection.over) parts.onFrames(connection, handshake.leftover);
    if (!connection.over) handshake.transport.onFrames = (frames) => parts.onFrames(connection, frames);
    return ended;
  }

  /** Ends `connection` (once): what waited on it fails, the loop goes on with `end`. The only place that sets `over`. */
  end(connection: Connection, end: ConnectionEnd): void {
    if (connection.over) return;
    connection.over = true;
    if (connection.timer !== undefined) clearInterval(connection.timer);
    if (this.#current === connection) this.#current = undefined;
    connection.transport.onFrames = undefined;
    connection.transport.close();
    const lost = end.error ?? new RelayError(ClientErrorCode.unreachable, `${connection.url.href}: connection closed`);
    this.#parts.pings.connectionLost(connection, lost);
    this.#parts.presence.connectionLost(connection, lost);
    this.#parts.requests.connectionLost(connection, lost);
    this.#log.info?.('disconnected from relay', { url: connection.url.href, error: end.error?.message });
    if (this.status.running) this.lifecycle.applyIfAllowed('path_lost', lost.message);
    end.startedAt = connection.startedAt;
    this.#parts.events.emit(
      'disconnected',
      end.error === undefined ? { url: connection.url.href } : { url: connection.url.href, error: end.error },
    );
    connection.resolveEnded(end);
  }

  /**
   * Lifecycle on a new connection: the first one establishes the link; after
   * a loss, the same relay URL is a reconnection and another one (address,
   * node or transport) a migration, which ends when the relay has answered a
   * PING sent after RESUME (PING is a barrier, so the redelivery is under way).
   */
  #enter(connection: Connection): void {
    const href = connection.url.href;
    const previous = this.#lastPath;
    this.#lastPath = href;
    const previousConnection = this.#lastConnectionId;
    this.#lastConnectionId = connection.welcome.connectionId;
    if (previousConnection !== undefined) {
      // Whatever is left of the old path (a half-open socket after an address change, a node that
      // has not noticed yet) is closed by the relay cluster now instead of when it times out.
      const proof = this.#identity.sign(migrationTranscript(connection.welcome.connectionId, previousConnection));
      this.write(connection, { type: 'MIGRATE', previousConnectionId: previousConnection, proof });
    }
    const state = this.lifecycle.state;
    if (state === 'handshaking') {
      this.lifecycle.apply('established', href);
      return;
    }
    if (state !== 'suspended') return;
    if (previous === href) {
      this.lifecycle.apply('reconnected', href);
      return;
    }
    this.lifecycle.apply('path_changed', `${previous ?? 'none'} -> ${href}`);
    const data = this.timing.pingData(PING_KEEPALIVE);
    connection.migrationPing = toHex(data);
    this.write(connection, { type: 'PING', data });
  }

  /** Periodic per-connection duties: keepalive, liveness, stuck ACKs, ping timeouts. */
  #tick(connection: Connection): void {
    if (connection.over) return;
    const now = Date.now();
    const hb = connection.welcome.heartbeatMs;
    // A link whose delay jumps (a partition that delays rather than drops, a path moving to a
    // far relay) stays silent until its first answer teaches the RTT estimate: while the link is
    // degraded the limits double once, as TCP backs off its retransmission timer. A path that is
    // really dead is abandoned after 2 × max(2 × heartbeatMs, ackTimeout).
    const stretch = this.timing.adaptive && this.lifecycle.state === 'degraded' ? 2 : 1;
    const ackTimeout = this.timing.ackTimeout() * stretch;
    if (hb > 0 && now - connection.lastRx > Math.max(2 * hb * stretch, ackTimeout)) {
      this.end(connection, {
        error: new RelayError(
          ClientErrorCode.unreachable,
          `${connection.url.href}: relay silent for ${now - connection.lastRx} ms`,
        ),
      });
      return;
    }
    if (hb > 0 && this.lifecycle.state === 'active' && now - connection.lastRx > hb + this.timing.rto) {
      // We ping at hb/2 when quiet, so more than hb (plus a round trip) without a byte is a missed heartbeat.
      this.lifecycle.apply('heartbeat_missed', `${now - connection.lastRx} ms without traffic`);
    }
    const oldest = this.#parts.window.oldest();
    if (
      oldest !== undefined &&
      oldest.session === connection &&
      now - oldest.sentAt > ackTimeout &&
      this.timing.ackIsOverdue(connection, now - oldest.sentAt, ackTimeout, (c, frame) => this.write(c, frame))
    ) {
      // The relay ACKs after Redis confirms; this long without one means the path is stuck. Retry elsewhere.
      this.end(connection, {
        error: new RelayError(
          ClientErrorCode.unreachable,
          `${connection.url.href}: no ACK within ${ackTimeout} ms; reconnecting to send again`,
        ),
      });
      return;
    }
    const perf = performance.now();
    this.#parts.pings.expire(connection, perf, ackTimeout);
    this.#parts.requests.expire(connection, perf, ackTimeout);
    this.#parts.presence.expire(connection, perf, ackTimeout);
    // Ping when either direction is quiet: the relay wants traffic from us, and we want proof it is alive
    // (a client that only sends fast frames would otherwise hear nothing and declare the relay silent).
    const half = hb / 2;
    if (
      hb > 0 &&
      (now - connection.lastTx >= half || now - connection.lastRx >= half) &&
      now - connection.lastKeepalive >= half
    ) {
      connection.lastKeepalive = now;
      this.write(connection, this.timing.keepalive(connection));
    }
  }

  /** Writes one frame; on failure the connection ends and false is returned. */
  write(connection: Connection, frame: Frame): boolean {
    if (connection.over) return false;
    try {
      connection.transport.send(encodeFrame(frame, connection.version));
      connection.lastTx = Date.now();
      return true;
    } catch (error) {
      this.end(connection, { error: toError(error) });
      return false;
    }
  }

  /** A frame arrived on `connection`: the relay is alive, and a degraded link is active again. */
  heard(connection: Connection): void {
    connection.lastRx = Date.now();
    if (this.lifecycle.state === 'degraded') this.lifecycle.apply('heartbeat_ok');
  }

  /** A PONG on `connection` (hex data `key`): a keepalive's round trip, or the end of a migration. */
  pong(connection: Connection, key: string): void {
    this.timing.pong(connection, key);
    if (connection.migrationPing === key) {
      connection.migrationPing = undefined;
      if (this.lifecycle.applyIfAllowed('migrated', connection.url.href)) this.#parts.onMigrated(connection);
    }
  }

  // ---------------------------------------------------------------------------
  // The end

  /** close(): the client is closed and the link closing. False when it had already ended. */
  close(): boolean {
    if (!this.status.close()) return false;
    this.lifecycle.applyIfAllowed('close');
    return true;
  }

  /** After close()'s shutdown: the link is closed. */
  closed(): void {
    this.lifecycle.applyIfAllowed('closed');
  }

  /** Giving up: the client failed with `error` and the link is closed. False when it had already ended. */
  fail(error: LibertariaError): boolean {
    if (!this.status.fail(error)) return false;
    if (!this.lifecycle.applyIfAllowed('failed', error.code)) {
      this.lifecycle.applyIfAllowed('close', error.code);
      this.lifecycle.applyIfAllowed('closed', error.code);
    }
    this.#log.error?.('relay client gave up', { code: error.code, error: error.message });
    return true;
  }

  /** The shutdown's first step: connect() rejects with `reason` if still pending, no handshake or back-off goes on. */
  stop(reason: LibertariaError): void {
    this.status.settleConnect(reason);
    this.#abort?.abort();
    this.#wake?.();
  }

  /** The shutdown's last step: the current connection ends, its queued writes (ACKs) flushed, waiting a bounded time. */
  async closeConnection(): Promise<void> {
    const connection = this.#current;
    if (connection === undefined) return;
    this.end(connection, {});
    // Let the transport flush (ACKs written just before close) and finish; bounded so close() cannot hang.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      connection.transportClosed,
      new Promise<void>((r) => {
        timer = setTimeout(r, CLIENT_DEFAULTS.closeFlushMs);
      }),
    ]);
    if (timer !== undefined) clearTimeout(timer);
  }
}
