/**
 * The test suite every bridge must pass (like Fedify's `testMessageQueue`):
 * call `testBridge('nostr', factory, options)` from a bridge's own test file.
 *
 * The factory gives a fresh bridge and a `remote`: a party on the foreign
 * network driven by code that is NOT the bridge's (an independent client), so
 * the suite checks interoperation, not the bridge against itself.
 *
 * This module imports `node:test`, so it is not re-exported from the package
 * index: import it as `@libertaria/bridge-kit/contract`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import { LibertariaError } from '@libertaria/protocol';
import { BridgeError } from './errors.js';
import type { ForeignIdentity } from './foreign-identity.js';
import { type Bridge, type BridgeInboundMessage, bridgeProtocolName, protocolServes } from './types.js';

/** A party on the foreign network, independent of the bridge under test. */
export interface ForeignParty {
  readonly identity: ForeignIdentity;
  /** Resolves with the text of the next private message from `from`; rejects after `timeoutMs`. */
  nextPrivateMessage(from: ForeignIdentity, timeoutMs: number): Promise<string>;
  /** Sends a private message to `to` the way a native client of that network does. */
  sendPrivate(to: ForeignIdentity, text: string): Promise<void>;
}

export interface BridgeHarness {
  readonly bridge: Bridge;
  readonly remote: ForeignParty;
  /** Stops the bridge and everything the factory started. */
  close(): Promise<void>;
}

export interface BridgeContractOptions {
  /** The longest text the bridge accepts, as configured by the factory (the suite sends ASCII, where characters and bytes agree). */
  readonly maxTextLength: number;
  /** An identity on another network, which this bridge must refuse. */
  readonly foreignIdentityOfAnotherNetwork: ForeignIdentity;
  /** How long a message may take to cross (default 10 s). */
  readonly deliveryTimeoutMs?: number;
}

function hasCode(code: string, retryable?: boolean) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof LibertariaError, `expected a LibertariaError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (retryable !== undefined) {
      assert.ok(err instanceof BridgeError, 'expected a BridgeError');
      assert.equal(err.retryable, retryable);
    }
    return true;
  };
}

function hexId(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex');
}

export function testBridge(name: string, factory: () => Promise<BridgeHarness>, options: BridgeContractOptions): void {
  const timeoutMs = options.deliveryTimeoutMs ?? 10_000;
  describe(`bridge contract: ${name}`, () => {
    let harness: BridgeHarness;
    let bridge: Bridge;
    const inbound: BridgeInboundMessage[] = [];
    const waiters: (() => void)[] = [];
    const alice = Ed25519Identity.generate().did;
    const bob = Ed25519Identity.generate().did;

    async function inboundMatching(pred: (m: BridgeInboundMessage) => boolean): Promise<BridgeInboundMessage> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = inbound.find(pred);
        if (found) return found;
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no matching inbound message within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    }

    before(async () => {
      harness = await factory();
      bridge = harness.bridge;
      bridge.onInbound(async (message) => {
        inbound.push(message);
        for (const wake of waiters.splice(0)) wake();
      });
      await bridge.start();
    });
    after(async () => {
      await harness?.close();
    });

    it('gives a bridged peer one stable identity on its network', async () => {
      const first = await bridge.bridgeIdentity(alice);
      const again = await bridge.bridgeIdentity(alice);
      assert.equal(again.uri, first.uri);
      assert.ok(
        protocolServes(bridge.protocol, first),
        `${first.uri} is not a ${bridgeProtocolName(bridge.protocol)} identity`,
      );
      assert.equal((await bridge.foreignIdentityOf(alice))?.uri, first.uri);
    });

    it('gives distinct peers distinct identities, and none to a peer never bridged', async () => {
      const a = await bridge.bridgeIdentity(alice);
      const b = await bridge.bridgeIdentity(bob);
      assert.notEqual(a.uri, b.uri);
      assert.equal(await bridge.foreignIdentityOf(Ed25519Identity.generate().did), undefined);
    });

    it('refuses a malformed DID', async () => {
      await assert.rejects(bridge.bridgeIdentity('did:libertaria:not-base58!'), hasCode('INVALID_DID'));
    });

    it('delivers a private message to the foreign party, from the bridged identity', async () => {
      const from = await bridge.bridgeIdentity(alice);
      const text = `hello from libertaria ${hexId()}`;
      const received = harness.remote.nextPrivateMessage(from, timeoutMs);
      const result = await bridge.send({
        type: 'private',
        id: hexId(),
        from: alice,
        to: harness.remote.identity,
        text,
      });
      assert.ok(result.acceptedBy.length > 0);
      assert.equal(await received, text);
    });

    it('hands the foreign party’s message to the inbound handler once, addressed to the peer', async () => {
      const to = await bridge.bridgeIdentity(alice);
      const text = `hello from ${name} ${hexId()}`;
      await harness.remote.sendPrivate(to, text);
      const got = await inboundMatching((m) => m.text === text);
      assert.equal(got.type, 'private');
      assert.equal(got.to, alice);
      assert.equal(got.from.uri, harness.remote.identity.uri);
      // Give duplicates (the same message through another upstream) time to arrive, then count.
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(inbound.filter((m) => m.text === text).length, 1);
    });

    it('refuses an identity of another network (final, not retryable)', async () => {
      await bridge.bridgeIdentity(alice);
      await assert.rejects(
        bridge.send({
          type: 'private',
          id: hexId(),
          from: alice,
          to: options.foreignIdentityOfAnotherNetwork,
          text: 'x',
        }),
        hasCode('BRIDGE_PROTOCOL_MISMATCH', false),
      );
    });

    it('refuses a text over its limit (final), and accepts one at the limit', async () => {
      await bridge.bridgeIdentity(alice);
      const to = harness.remote.identity;
      await assert.rejects(
        bridge.send({ type: 'private', id: hexId(), from: alice, to, text: 'x'.repeat(options.maxTextLength + 1) }),
        hasCode('BRIDGE_MESSAGE_TOO_LARGE', false),
      );
      const atLimit = 'y'.repeat(options.maxTextLength);
      const received = harness.remote.nextPrivateMessage(await bridge.bridgeIdentity(alice), timeoutMs);
      const result = await bridge.send({ type: 'private', id: hexId(), from: alice, to, text: atLimit });
      const text = await received.catch((err: Error) => {
        throw new Error(`${err.message}; the send reported ${JSON.stringify(result)}`);
      });
      assert.equal(text, atLimit);
    });

    it('refuses a send from a peer that was never bridged (final)', async () => {
      const stranger = Ed25519Identity.generate().did;
      await assert.rejects(
        bridge.send({ type: 'private', id: hexId(), from: stranger, to: harness.remote.identity, text: 'x' }),
        hasCode('BRIDGE_IDENTITY_UNKNOWN', false),
      );
    });

    it('reports its health for its own protocol', () => {
      const health = bridge.health();
      assert.equal(bridgeProtocolName(health.protocol), bridgeProtocolName(bridge.protocol));
      assert.ok(['ok', 'degraded', 'down'].includes(health.status));
    });

    it('closes idempotently, and then refuses sends with BRIDGE_CLOSED', async () => {
      await bridge.close();
      await bridge.close();
      assert.equal(bridge.health().status, 'down');
      await assert.rejects(
        bridge.send({ type: 'private', id: hexId(), from: alice, to: harness.remote.identity, text: 'late' }),
        hasCode('BRIDGE_CLOSED'),
      );
    });
  });
}
