/**
 * Trust on first use for relay keys (docs/client.md#relay-identity). A relay
 * URL without a DID fragment is pinned, per URL, to the key its relay proved
 * the first time; from then on any other key is refused with
 * RELAY_IDENTITY_MISMATCH, saying when and where the pin was made. Browser-safe
 * (the file implementation, which lrelay uses, is relay-pins-file.ts).
 */

export interface RelayPin {
  /** did:libertaria of the pinned relay key. */
  readonly did: string;
  /** When it was pinned, ISO 8601. */
  readonly since: string;
}

export interface RelayPinStore {
  /** Where the pins live, named in messages (a file path, "memory"). */
  readonly location: string;
  /** The pin for a relay URL (its normalized href, without fragment). */
  get(url: string): Promise<RelayPin | undefined>;
  /** Pins (or re-pins) a relay URL to a DID. */
  set(url: string, did: string): Promise<void>;
}

/** Pins kept in memory: for one process's lifetime (tests, short-lived clients). */
export class InMemoryRelayPinStore implements RelayPinStore {
  readonly location = 'memory';
  readonly #pins = new Map<string, RelayPin>();
  async get(url: string): Promise<RelayPin | undefined> {
    return this.#pins.get(url);
  }
  async set(url: string, did: string): Promise<void> {
    this.#pins.set(url, { did, since: new Date().toISOString() });
  }
}
