/**
 * An independent Nostr user for tests: nostr-tools' own Relay client and its
 * NIP-17/NIP-59 code (not the bridge's nip59.ts/relay-connection.ts), the way
 * a Nostr app talks to relays. It implements the contract suite's ForeignParty.
 */
import { type ForeignIdentity, nostrIdentity } from '@libertaria/bridge-kit';
import type { ForeignParty } from '@libertaria/bridge-kit/contract';
import type { NostrEvent } from 'nostr-tools/core';
import * as nip17 from 'nostr-tools/nip17';
import { generateSecretKey, getPublicKey } from 'nostr-tools/pure';
import { Relay, useWebSocketImplementation } from 'nostr-tools/relay';
import WebSocket from 'ws';

useWebSocketImplementation(WebSocket);

export class NostrUser implements ForeignParty {
  readonly secret = generateSecretKey();
  readonly pubkey = getPublicKey(this.secret);
  readonly identity: ForeignIdentity = nostrIdentity(this.pubkey);
  /** Rumor ids already returned by nextPrivateMessage. */
  private readonly consumed = new Set<string>();

  private queries = 0;
  /** Three days before this user was made: gift wraps are backdated up to two. */
  private readonly sinceBase = Math.floor(Date.now() / 1000) - 3 * 86400;

  constructor(readonly relayUrls: readonly string[]) {}

  /**
   * Never the same value twice for this user: @nostr-relay/core caches the
   * stored events of an identical filter for a second, so a REQ repeated
   * within that second, just after a new event was stored but before it was
   * subscribed, would be answered from the cache without it, and the event,
   * stored rather than live, would never come. Real relays cache too; real
   * clients' `since` values differ the same way. (It was "now − 3 days −
   * count", which repeats whenever a second passes between two queries: a
   * message that arrived before its REQ was then missed, the "no message
   * within 30 s" of a loaded machine, issue 11.)
   */
  private freshSince(): number {
    this.queries += 1;
    return this.sinceBase - this.queries;
  }

  /** Sends a NIP-17 message to `to`, the same gift wrap to every relay. */
  async sendPrivate(to: ForeignIdentity, text: string): Promise<void> {
    if (to.type !== 'nostr') throw new Error('a Nostr user writes to nostr identities');
    const wrap = nip17.wrapEvent(this.secret, { publicKey: to.pubkeyHex }, text);
    await this.publishEverywhere(wrap);
  }

  async publishEverywhere(event: NostrEvent): Promise<void> {
    for (const url of this.relayUrls) {
      const relay = await Relay.connect(url);
      try {
        await relay.publish(event);
      } finally {
        relay.close();
      }
    }
  }

  async nextPrivateMessage(from: ForeignIdentity, timeoutMs: number): Promise<string> {
    const rumor = await this.nextRumor(from, timeoutMs);
    return rumor.content;
  }

  /**
   * The next kind-14 rumor from `from` not returned before, read from every
   * relay given (default: all of the user's relays, as an app reads its inbox
   * relays); the first copy wins.
   */
  async nextRumor(from: ForeignIdentity, timeoutMs: number, relayUrls: readonly string[] = this.relayUrls) {
    if (from.type !== 'nostr') throw new Error('expected a nostr identity');
    const relays = await Promise.all(relayUrls.map((url) => Relay.connect(url)));
    try {
      // What the subscriptions saw, for the timeout error: a wait that fails on a
      // loaded machine then tells "nothing came" from "something else came".
      const seen = { wraps: 0, undecryptable: 0, otherSenders: 0, alreadyReturned: 0 };
      return await new Promise<ReturnType<typeof nip17.unwrapEvent>>((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new Error(
                `no message from ${from.uri} within ${timeoutMs} ms on ${relayUrls.join(', ')}; saw ${JSON.stringify(seen)}`,
              ),
            ),
          timeoutMs,
        );
        for (const relay of relays) {
          relay.subscribe([{ kinds: [1059], '#p': [this.pubkey], since: this.freshSince() }], {
            onevent: (wrap) => {
              seen.wraps += 1;
              let rumor: ReturnType<typeof nip17.unwrapEvent>;
              try {
                rumor = nip17.unwrapEvent(wrap, this.secret);
              } catch {
                seen.undecryptable += 1;
                return;
              }
              if (rumor.kind !== 14 || rumor.pubkey !== from.pubkeyHex) {
                seen.otherSenders += 1;
                return;
              }
              if (this.consumed.has(rumor.id)) {
                seen.alreadyReturned += 1;
                return;
              }
              this.consumed.add(rumor.id);
              clearTimeout(timer);
              resolve(rumor);
            },
          });
        }
      });
    } finally {
      for (const relay of relays) relay.close();
    }
  }
}
