/**
 * One WebSocket to one Nostr relay (NIP-01), with NIP-42 AUTH and reconnection.
 *
 * State is a string union changed only in `setState()`:
 *
 *   idle ──start()──► connecting ──open──► open ──drop──► backoff ──timer──► connecting
 *                          └──fail──► backoff                 (persistent connections only)
 *   any ──close()──► closed           a one-shot connection goes to closed instead of backoff
 *
 * Subscriptions are remembered and sent again after every reconnect; a REQ
 * the relay CLOSEd with `auth-required:` is sent again once AUTH succeeds.
 * When the relay sends ["AUTH", challenge], every signer (one per key the
 * connection acts for) answers with a kind-22242 event.
 *
 * Nothing here interprets events: EVENT payloads go to `onEvent` as they came
 * (the inbound processor verifies them); what cannot even be parsed goes to
 * `onMalformed` with a reason for the metrics.
 */
import { BridgeError } from '@libertaria/bridge-kit';
import { backoffDelay, type ReconnectOptions, resolveReconnectOptions } from '@libertaria/client';
import type { EventTemplate, NostrEvent } from 'nostr-tools/core';
import { makeAuthEvent } from 'nostr-tools/nip42';
import WebSocket from 'ws';

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'backoff' | 'closed';
export type Filter = Record<string, unknown>;
export type MalformedReason = 'too_large' | 'json' | 'shape';

/** Signs an event template with one key; `pubkey` says which. */
export interface Signer {
  readonly pubkey: string;
  sign(template: EventTemplate): Promise<NostrEvent>;
}

export interface RelayConnectionOptions {
  readonly url: string;
  /** Reconnect after drops (configured relays); false for one-shot connections to inbox relays. */
  readonly persistent: boolean;
  readonly reconnect: Partial<ReconnectOptions>;
  /** Time to connect and to get OK for a published event. */
  readonly timeoutMs: number;
  /**
   * WebSocket ping interval; a connection that has not answered the previous
   * ping by the next one is dropped and reconnected (a half-open TCP connection
   * would otherwise look open forever). 0 disables pings.
   */
  readonly pingIntervalMs: number;
  readonly maxMessageBytes: number;
  /** The keys that answer AUTH challenges on this connection. */
  readonly authSigners: () => readonly Signer[];
  readonly onEvent?: (url: string, subscriptionId: string, event: unknown) => void;
  readonly onMalformed?: (url: string, reason: MalformedReason) => void;
  readonly onStateChange?: (url: string, from: ConnectionState, to: ConnectionState, attempts: number) => void;
  readonly onAuth?: (url: string, ok: boolean, message: string) => void;
  readonly onNotice?: (url: string, message: string) => void;
}

export interface PublishOutcome {
  readonly ok: boolean;
  readonly message: string;
}

interface PendingOk {
  resolve(outcome: PublishOutcome): void;
  timer: NodeJS.Timeout;
}

interface Query {
  events: unknown[];
  done(reason: string): void;
}

let nextQuery = 0;

export class RelayConnection {
  state: ConnectionState = 'idle';
  /** Connection attempts that failed since the last successful open. */
  attempts = 0;
  lastError: string | undefined;
  private ws: WebSocket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pinger: NodeJS.Timeout | undefined;
  private readonly subscriptions = new Map<string, Filter[]>();
  private readonly awaitingAuth = new Set<string>();
  private readonly pendingOk = new Map<string, PendingOk>();
  private readonly queries = new Map<string, Query>();
  private authInFlight: Promise<void> | undefined;
  private openWaiters: { resolve(): void; reject(err: Error): void }[] = [];
  private readonly reconnect: ReconnectOptions;

  constructor(private readonly options: RelayConnectionOptions) {
    this.reconnect = resolveReconnectOptions(options.reconnect);
  }

  get url(): string {
    return this.options.url;
  }

  private setState(to: ConnectionState): void {
    const from = this.state;
    if (from === to) return;
    if (from === 'closed') throw new Error(`relay connection ${this.url}: closed is final (asked for ${to})`);
    this.state = to;
    this.options.onStateChange?.(this.url, from, to, this.attempts);
  }

  start(): void {
    if (this.state === 'idle') this.connect();
  }

  private connect(): void {
    this.setState('connecting');
    const ws = new WebSocket(this.url, {
      maxPayload: this.options.maxMessageBytes,
      handshakeTimeout: this.options.timeoutMs,
      perMessageDeflate: false,
    });
    this.ws = ws;
    let answered = true;
    ws.on('pong', () => {
      answered = true;
    });
    ws.on('open', () => {
      if (this.ws !== ws) return;
      if (this.options.pingIntervalMs > 0) {
        this.pinger = setInterval(() => {
          if (!answered) {
            this.lastError = `no pong within ${this.options.pingIntervalMs} ms`;
            ws.terminate();
            return;
          }
          answered = false;
          ws.ping();
        }, this.options.pingIntervalMs);
      }
      this.attempts = 0;
      this.lastError = undefined;
      this.setState('open');
      for (const [id, filters] of this.subscriptions) this.sendReq(id, filters);
      for (const w of this.openWaiters.splice(0)) w.resolve();
    });
    ws.on('message', (data, isBinary) => {
      if (this.ws === ws) this.receive(data as Buffer, isBinary);
    });
    ws.on('error', (err) => {
      // ws closes the socket after 'error' (a payload over maxPayload included): handled in 'close'.
      if (this.ws === ws) {
        this.lastError = err.message;
        if ((err as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
          this.options.onMalformed?.(this.url, 'too_large');
        }
      }
    });
    ws.on('close', () => {
      if (this.ws === ws) this.dropped();
    });
  }

  private dropped(): void {
    this.ws = undefined;
    if (this.pinger) clearInterval(this.pinger);
    this.pinger = undefined;
    this.awaitingAuth.clear();
    for (const [id, p] of this.pendingOk) {
      clearTimeout(p.timer);
      p.resolve({ ok: false, message: `error: connection lost (${this.lastError ?? 'closed'})` });
      this.pendingOk.delete(id);
    }
    for (const [id, q] of this.queries) {
      q.done('connection lost');
      this.queries.delete(id);
    }
    if (this.state === 'closed') return;
    this.attempts += 1;
    if (!this.options.persistent) {
      this.failWaiters(this.lastError ?? 'connection closed');
      this.setState('closed');
      return;
    }
    this.setState('backoff');
    const delay = backoffDelay(this.attempts - 1, this.reconnect);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.state === 'backoff') this.connect();
    }, delay);
  }

  private failWaiters(reason: string): void {
    for (const w of this.openWaiters.splice(0)) w.reject(new Error(reason));
  }

  /** Resolves once open; rejects after the timeout, or when a one-shot connection fails. */
  private whenOpen(): Promise<void> {
    if (this.state === 'open') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(new Error('connection closed'));
    this.start();
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.openWaiters = this.openWaiters.filter((w) => w !== waiter);
        reject(new Error(`not connected within ${this.options.timeoutMs} ms (${this.lastError ?? this.state})`));
      }, this.options.timeoutMs);
      this.openWaiters.push(waiter);
    });
  }

  private send(message: unknown[]): void {
    this.ws?.send(JSON.stringify(message));
  }

  private sendReq(id: string, filters: Filter[]): void {
    this.send(['REQ', id, ...filters]);
  }

  /** Sets (or replaces, same id) a subscription; it survives reconnects. */
  subscribe(id: string, filters: Filter[]): void {
    this.subscriptions.set(id, filters);
    if (this.state === 'open') this.sendReq(id, filters);
  }

  unsubscribe(id: string): void {
    if (this.subscriptions.delete(id) && this.state === 'open') this.send(['CLOSE', id]);
  }

  /** Publishes one event and waits for the relay's OK. Never throws: failures are outcomes. */
  async publish(event: NostrEvent): Promise<PublishOutcome> {
    try {
      await this.whenOpen();
    } catch (err) {
      return { ok: false, message: `error: ${(err as Error).message}` };
    }
    let outcome = await this.sendEvent(event);
    // NIP-42: a relay that wants AUTH first says so in OK; once our AUTH answered its challenge, try once more.
    if (!outcome.ok && outcome.message.startsWith('auth-required:')) {
      await (this.authInFlight ?? new Promise((r) => setTimeout(r, Math.min(500, this.options.timeoutMs / 4))));
      outcome = await this.sendEvent(event);
    }
    return outcome;
  }

  private sendEvent(event: NostrEvent): Promise<PublishOutcome> {
    return new Promise((resolve) => {
      const previous = this.pendingOk.get(event.id);
      if (previous) clearTimeout(previous.timer);
      const timer = setTimeout(() => {
        this.pendingOk.delete(event.id);
        resolve({ ok: false, message: `error: no OK within ${this.options.timeoutMs} ms` });
      }, this.options.timeoutMs);
      this.pendingOk.set(event.id, { resolve, timer });
      this.send(['EVENT', event]);
    });
  }

  /** Events matching `filters` stored on the relay, up to EOSE or the timeout. */
  async query(filters: Filter[], timeoutMs: number): Promise<unknown[]> {
    try {
      await this.whenOpen();
    } catch {
      return [];
    }
    const id = `q${++nextQuery}`;
    return new Promise((resolve) => {
      const events: unknown[] = [];
      const timer = setTimeout(() => finish('timeout'), timeoutMs);
      const finish = (_reason: string): void => {
        clearTimeout(timer);
        if (this.queries.delete(id) && this.state === 'open') this.send(['CLOSE', id]);
        resolve(events);
      };
      this.queries.set(id, { events, done: finish });
      this.sendReq(id, filters);
    });
  }

  private receive(data: Buffer, isBinary: boolean): void {
    if (data.length > this.options.maxMessageBytes) return this.options.onMalformed?.(this.url, 'too_large');
    if (isBinary) return this.options.onMalformed?.(this.url, 'shape');
    let message: unknown;
    try {
      message = JSON.parse(data.toString('utf8'));
    } catch {
      return this.options.onMalformed?.(this.url, 'json');
    }
    if (!Array.isArray(message) || typeof message[0] !== 'string') return this.options.onMalformed?.(this.url, 'shape');
    const [type, a, b, c] = message as [string, unknown, unknown, unknown];
    switch (type) {
      case 'EVENT': {
        if (typeof a !== 'string') return this.options.onMalformed?.(this.url, 'shape');
        const query = this.queries.get(a);
        if (query) query.events.push(b);
        else if (this.subscriptions.has(a)) this.options.onEvent?.(this.url, a, b);
        return;
      }
      case 'EOSE':
        if (typeof a === 'string') this.queries.get(a)?.done('eose');
        return;
      case 'OK': {
        if (typeof a !== 'string' || typeof b !== 'boolean') return this.options.onMalformed?.(this.url, 'shape');
        const pending = this.pendingOk.get(a);
        if (pending) {
          clearTimeout(pending.timer);
          this.pendingOk.delete(a);
          pending.resolve({ ok: b, message: typeof c === 'string' ? c : '' });
        }
        return;
      }
      case 'CLOSED': {
        if (typeof a !== 'string') return this.options.onMalformed?.(this.url, 'shape');
        const reason = typeof b === 'string' ? b : '';
        const query = this.queries.get(a);
        if (query) return query.done(`closed: ${reason}`);
        if (this.subscriptions.has(a) && reason.startsWith('auth-required:')) this.awaitingAuth.add(a);
        return;
      }
      case 'AUTH':
        if (typeof a !== 'string') return this.options.onMalformed?.(this.url, 'shape');
        void this.authenticate(a);
        return;
      case 'NOTICE':
        if (typeof a === 'string') this.options.onNotice?.(this.url, a.slice(0, 300));
        return;
      default:
        // NIP-45 COUNT, NIP-77 NEG-* and future types: not ours to judge, not malformed.
        return;
    }
  }

  private authenticate(challenge: string): Promise<void> {
    const run = this.answerChallenge(challenge).finally(() => {
      if (this.authInFlight === run) this.authInFlight = undefined;
    });
    this.authInFlight = run;
    return run;
  }

  private async answerChallenge(challenge: string): Promise<void> {
    const signers = this.options.authSigners();
    const results = await Promise.all(
      signers.map(async (signer) => {
        const event = await signer.sign(makeAuthEvent(this.url, challenge));
        const outcome = await new Promise<PublishOutcome>((resolve) => {
          const timer = setTimeout(() => {
            this.pendingOk.delete(event.id);
            resolve({ ok: false, message: 'error: no OK to AUTH' });
          }, this.options.timeoutMs);
          this.pendingOk.set(event.id, { resolve, timer });
          this.send(['AUTH', event]);
        });
        this.options.onAuth?.(this.url, outcome.ok, outcome.message);
        return outcome.ok;
      }),
    );
    if (results.some(Boolean) && this.state === 'open') {
      for (const id of this.awaitingAuth) {
        const filters = this.subscriptions.get(id);
        if (filters) this.sendReq(id, filters);
      }
      this.awaitingAuth.clear();
    }
  }

  /** Stops for good: no reconnect; pending publishes resolve as failed. */
  close(): void {
    if (this.state === 'closed') return;
    if (this.timer) clearTimeout(this.timer);
    this.failWaiters('connection closed');
    this.setState('closed');
    const ws = this.ws;
    this.dropped();
    ws?.terminate();
  }
}

/** ws:// and wss:// URLs in one spelling (lowercase host, trailing slash), so lists compare equal. */
export function normalizeRelayUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new BridgeError('CONFIG_INVALID', `${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new BridgeError('CONFIG_INVALID', `${JSON.stringify(url)} is not a ws:// or wss:// URL`);
  }
  return parsed.toString();
}
