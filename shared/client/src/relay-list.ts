/**
 * The relays RelayClient may connect to, in failover order: the configured
 * list (tried in order), relays a GOAWAY named first, relays still inside a
 * GOAWAY's reconnect delay last, and relays that refused the client for
 * good never again.
 *
 * Browser-safe: no Node-only imports.
 */
import type { ClientLogger } from './client-types.js';
import { toError } from './codes.js';
import { parseRelayUrl, type RelayUrl } from './url.js';

export class RelayList {
  readonly #relays: RelayUrl[];
  /** Per relay href: do not connect before this time (GOAWAY reconnectAfterMs). */
  readonly #notBefore = new Map<string, number>();
  /** Relays that refused us for good (AUTH_FAILED, UNSUPPORTED_VERSION, wrong identity). */
  readonly #refused = new Set<string>();

  constructor(relays: RelayUrl[]) {
    this.#relays = relays;
  }

  /** How many relays were configured. */
  get size(): number {
    return this.#relays.length;
  }

  /** Hinted URLs first, then the configured list; relays still inside a GOAWAY delay go last. */
  candidates(preferred: RelayUrl[]): RelayUrl[] {
    const seen = new Set<string>();
    const ready: RelayUrl[] = [];
    const later: RelayUrl[] = [];
    const now = Date.now();
    for (const [href, until] of this.#notBefore) if (until <= now) this.#notBefore.delete(href);
    for (const url of [...preferred, ...this.#relays]) {
      if (seen.has(url.href) || this.#refused.has(url.href)) continue;
      seen.add(url.href);
      if ((this.#notBefore.get(url.href) ?? 0) > now) later.push(url);
      else ready.push(url);
    }
    later.sort((a, b) => (this.#notBefore.get(a.href) ?? 0) - (this.#notBefore.get(b.href) ?? 0));
    return [...ready, ...later];
  }

  /** When `url` may be connected to again (ms since the epoch; 0 when now). */
  notBefore(url: RelayUrl): number {
    return this.#notBefore.get(url.href) ?? 0;
  }

  /** A GOAWAY asked us to stay away from `url` until `at`. */
  deferUntil(url: RelayUrl, at: number): void {
    this.#notBefore.set(url.href, at);
  }

  isRefused(url: RelayUrl): boolean {
    return this.#refused.has(url.href);
  }

  /** `url` refused us for good: never tried again. False when it was already refused. */
  refuse(url: RelayUrl): boolean {
    if (this.#refused.has(url.href)) return false;
    this.#refused.add(url.href);
    return true;
  }

  /** Every configured relay refused us for good. */
  allRefused(): boolean {
    return this.#relays.every((u) => this.#refused.has(u.href));
  }
}

/** The relay URLs of a GOAWAY's reconnect hint (comma-separated); unusable ones are logged and skipped. */
export function hintedUrls(hint: string, log: ClientLogger): RelayUrl[] {
  const out: RelayUrl[] = [];
  for (const part of hint.split(',')) {
    const text = part.trim();
    if (text === '') continue;
    try {
      out.push(parseRelayUrl(text));
    } catch (error) {
      log.warn?.('ignoring unusable GOAWAY reconnect hint', { hint: text, error: toError(error).message });
    }
  }
  return out;
}
