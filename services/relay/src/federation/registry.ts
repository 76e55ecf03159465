/**
 * The bridge registry as a relay node sees it: which routing hints belong to
 * bridges, and which queue reaches each. Bridges write it (HSET
 * `<prefix>:bridges <hint hex> <registration>` then PUBLISH on
 * `<prefix>:bridges:changed`); nodes read it at start, on every announcement,
 * and every RELAY_FEDERATION_REFRESH_MS in case an announcement was missed
 * while the subscriber reconnected. Lookups on the SEND path are a Map read.
 */
import { type BridgeRegistration, bridgesChannel, bridgesKey, checkRegistration } from '@libertaria/bridge-kit';
import { HINT_SIZE } from '@libertaria/protocol';
import type { Logger } from '../log.js';
import type { RedisClient, Subscriber } from '../redis-connection.js';

export class BridgeRegistryCache {
  /** By hint as a latin1 string of its 24 bytes (the router's key form). */
  private byHint = new Map<string, BridgeRegistration>();
  private timer: NodeJS.Timeout | undefined;
  private loading: Promise<void> | undefined;
  private reloadAgain = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly subscriber: Subscriber,
    private readonly prefix: string,
    private readonly refreshMs: number,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.subscriber.on('message', (channel: string) => {
      if (channel === bridgesChannel(this.prefix)) void this.reload();
    });
    // ioredis re-subscribes after a reconnect; what was announced meanwhile is read again.
    this.subscriber.on('ready', () => void this.reload());
    await this.subscriber.subscribe(bridgesChannel(this.prefix));
    await this.reload();
    this.timer = setInterval(() => void this.reload(), this.refreshMs);
    this.timer.unref();
  }

  /** Reads the whole registry; concurrent calls share one read, and one more follows if asked meanwhile. */
  reload(): Promise<void> {
    if (this.loading) {
      this.reloadAgain = true;
      return this.loading;
    }
    this.loading = (async () => {
      try {
        do {
          this.reloadAgain = false;
          await this.readOnce();
        } while (this.reloadAgain);
      } catch (err) {
        this.log.warn('bridge registry read failed; keeping the previous one', { err });
      } finally {
        this.loading = undefined;
      }
    })();
    return this.loading;
  }

  private async readOnce(): Promise<void> {
    const entries = await this.redis.hgetall(bridgesKey(this.prefix));
    const next = new Map<string, BridgeRegistration>();
    for (const [field, value] of Object.entries(entries)) {
      try {
        const registration = checkRegistration(JSON.parse(value));
        if (registration.hint !== field) throw new Error('field is not the registration hint');
        next.set(Buffer.from(registration.hint, 'hex').toString('latin1'), registration);
      } catch (err) {
        // One bad entry must not hide the other bridges.
        this.log.warn('ignoring a malformed bridge registration', { field, err });
      }
    }
    this.byHint = next;
  }

  /** The bridge whose routing hint is `hint`, if one is registered. */
  lookup(hint: Uint8Array): BridgeRegistration | undefined {
    if (this.byHint.size === 0 || hint.length !== HINT_SIZE) return undefined;
    return this.byHint.get(Buffer.from(hint.buffer, hint.byteOffset, HINT_SIZE).toString('latin1'));
  }

  /** The bridge registered for `network` (nostr, activitypub, …), if any. */
  forNetwork(network: string): BridgeRegistration | undefined {
    for (const registration of this.byHint.values()) if (registration.network === network) return registration;
    return undefined;
  }

  get size(): number {
    return this.byHint.size;
  }

  close(): void {
    clearInterval(this.timer);
  }
}
