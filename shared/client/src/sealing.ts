/**
 * Whether RelayClient seals its payloads end to end (docs/client.md#sealed-sessions),
 * and what it says when it does not: the SessionManager it seals with (its
 * own unless given one; none with `sealing: false`), the all-zero session
 * id that marks an unsealed payload, and the warnings, each said once.
 *
 * Browser-safe: no Node-only imports.
 */
import { nobleCrypto } from '@libertaria/crypto';
import { ID_SIZE } from '@libertaria/protocol';
import { CLIENT_DEFAULTS, type ClientLogger, type RelayClientOptions } from './client-types.js';
import { InMemorySessionStore } from './session-store.js';
import { SessionManager } from './sessions.js';

/** The session id of an unsealed send (the SDK seals under ids of its own, never all zero). */
export const ZERO_SESSION = new Uint8Array(ID_SIZE);

export const UNSEALED_WARNING =
  'RelayClient with sealing: false: payloads travel readable by every relay and Redis on the path, and a relay can forge them (docs/client.md#sealed-sessions)';

export function isZero(bytes: Uint8Array): boolean {
  for (const b of bytes) if (b !== 0) return false;
  return true;
}

/**
 * Warnings said once per logger, however many clients share it (a test suite
 * makes hundreds); clients without a logger share the console, once per process.
 */
const warnedByLogger = new WeakMap<ClientLogger, Set<string>>();
const warnedOnConsole = new Set<string>();
export function warnOnce(kind: string, log: ClientLogger, message: string): void {
  const warn = log.warn;
  let warned = warnedOnConsole;
  if (warn !== undefined) {
    warned = warnedByLogger.get(log) ?? new Set();
    warnedByLogger.set(log, warned);
  }
  if (warned.has(kind)) return;
  warned.add(kind);
  // Without a logger the client is otherwise silent; this one must still be heard.
  if (warn !== undefined) warn.call(log, message);
  else globalThis.console?.warn(`libertaria: ${message}`);
}

/**
 * Sealed by default (issue 13): the given SessionManager, else one of our
 * own (memory-only unless `sessionStore`). Unsealed only when asked for,
 * and said aloud once per process: the payloads are the relay's to read.
 */
export function sealingSessions(options: RelayClientOptions, log: ClientLogger): SessionManager | undefined {
  // Warned about at the first unsealed payload, not here: a client that only
  // makes membrane requests (lrelay policy, grant --revoke) has none.
  if (options.sealing === false) return undefined;
  if (options.sessions !== undefined) return options.sessions;
  const provider = options.crypto ?? nobleCrypto;
  if (options.sessionStore === undefined) {
    warnOnce(
      'memory-sessions',
      log,
      "RelayClient keeps its end-to-end sessions in memory only: sealed mail that arrived for an earlier run's prekeys cannot be opened after a restart; pass sessionStore (a FileSessionStore in Node) to keep them (docs/client.md#sealed-sessions)",
    );
  }
  return new SessionManager({
    identity: options.identity,
    store: options.sessionStore ?? new InMemorySessionStore(),
    provider,
    verify: (key, data, signature) => provider.verifyEd25519(key, data, signature),
    log,
  });
}

/** A sealed client receiving unsealed messages says so once per sender (up to a bound): they are delivered marked `sealed: false`. */
export class UnsealedSenders {
  readonly #senders = new Set<string>();
  readonly #log: ClientLogger;

  constructor(log: ClientLogger) {
    this.#log = log;
  }

  warn(from: string, url: string): void {
    if (this.#senders.has(from)) return;
    if (this.#senders.size >= CLIENT_DEFAULTS.maxUnsealedWarnings) return;
    this.#senders.add(from);
    this.#log.warn?.('unsealed message received by a sealed client; delivered marked sealed: false', { url, from });
  }
}
