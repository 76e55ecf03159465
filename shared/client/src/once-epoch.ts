/**
 * The client's half of the single-use id epoch (issue 13, item 6).
 *
 * The relay cluster remembers our single-use ids (ONCE_CHECK: 0-RTT tickets,
 * anonymous requests) in Redis, and every answer names the epoch of the data
 * set that holds them (once-store.ts on the relay). If Redis loses that data
 * set, ids we checked before are forgotten, and a replay of one of them would
 * be answered "fresh" again. The relay cannot tell a lost data set from a
 * new DID; we can, because we remember the epoch we saw last.
 *
 * So: the first epoch we ever see is adopted. An answer under another epoch
 * means the memory was lost at some point since our last check; from the
 * moment we notice, an id checked with retention R is refused (answered "not
 * fresh") until R has passed, because an id we accepted before the loss is
 * acceptable to us only within its own window, which R covers. Refusing
 * fails closed: 0-RTT falls back to a full handshake, an anonymous request
 * is refused and its sender may retry later.
 *
 * The epoch and the time of the last loss are kept in the SessionStore
 * (record `once-epoch`: packFields(epoch, u32 high, u32 low of lossAt in ms)),
 * so a restart in the middle of the window still refuses. Browser-safe.
 */
import { bytesEqual } from './bytes.js';
import { packFields, readU32, type SessionStore, u32, unpackFields } from './session-store.js';

const RECORD = 'once-epoch';

export interface OnceEpochLogger {
  warn?(message: string, fields?: Record<string, unknown>): void;
}

export class OnceEpochTracker {
  readonly #store: SessionStore;
  readonly #clock: () => number;
  readonly #log: OnceEpochLogger;
  #loaded = false;
  #epoch: Uint8Array | undefined;
  /** When we noticed the last epoch change (ms since the Unix epoch); 0: never. */
  #lossAt = 0;
  /** Answers are judged one at a time: the record is read, changed and written in order. */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(store: SessionStore, log: OnceEpochLogger = {}, clock: () => number = Date.now) {
    this.#store = store;
    this.#log = log;
    this.#clock = clock;
  }

  /** When the last loss was noticed (0: never); for tests and diagnostics. */
  get lossAt(): number {
    return this.#lossAt;
  }

  /**
   * The answer to act on, given the relay's: `fresh` under the epoch we
   * know, false within `retentionMs` of a noticed loss. The new epoch is
   * stored before the answer is given.
   */
  judge(fresh: boolean, epoch: Uint8Array, retentionMs: number): Promise<boolean> {
    const turn = this.#tail.then(() => this.#judge(fresh, epoch, retentionMs));
    this.#tail = turn.catch(() => {});
    return turn;
  }

  async #judge(fresh: boolean, epoch: Uint8Array, retentionMs: number): Promise<boolean> {
    if (!this.#loaded) await this.#load();
    const now = this.#clock();
    if (this.#epoch === undefined || !bytesEqual(this.#epoch, epoch)) {
      const changed = this.#epoch !== undefined;
      if (changed) {
        this.#lossAt = now;
        this.#log.warn?.(
          "the relay cluster's memory of single-use ids was lost (epoch changed): ids are refused until their retention has passed since now",
          { lossAt: new Date(now).toISOString() },
        );
      }
      this.#epoch = Uint8Array.from(epoch);
      await this.#save();
    }
    if (this.#lossAt !== 0 && now < this.#lossAt + retentionMs) return false;
    return fresh;
  }

  async #load(): Promise<void> {
    const bytes = await this.#store.get(RECORD);
    this.#loaded = true;
    if (bytes === undefined) return;
    try {
      const [epoch, hi, lo] = unpackFields(bytes);
      if (epoch === undefined || epoch.length === 0) throw new RangeError('no epoch');
      this.#lossAt = readU32(hi) * 2 ** 32 + readU32(lo);
      this.#epoch = epoch;
    } catch {
      // Unreadable: we cannot know what we saw, so act as if a loss was noticed now (fail closed).
      this.#lossAt = this.#clock();
      this.#epoch = undefined;
      this.#log.warn?.(
        'the stored single-use id epoch is unreadable: ids are refused until their retention has passed',
      );
    }
  }

  #save(): Promise<void> {
    const hi = Math.floor(this.#lossAt / 2 ** 32);
    return this.#store.put(RECORD, packFields([this.#epoch!, u32(hi), u32(this.#lossAt - hi * 2 ** 32)]));
  }
}
