/**
 * First messages of a session (issue 13 item 4): a forged initial message
 * naming a real one-time prekey does not burn it (keys are consumed only
 * after the message authenticates), two authenticated messages racing for
 * one one-time key get it once, a last-resort initial message is refused
 * when replayed after its session is gone (a durable record in the session
 * store, surviving a restart), and new-session handshakes are rate-limited
 * per sender before any expensive work.
 *
 * The prekey directory here is a small in-process SessionTransport (what a
 * relay's PREKEY_* service answers): the behaviour under test is the
 * responder's, which never talks to the relay while opening.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  InMemorySessionStore,
  type PrekeyStatusLike,
  SessionManager,
  type SessionStore,
  type SessionTransport,
} from '@libertaria/client';
import { FileSessionStore } from '@libertaria/client/node';
import {
  acceptPersistentSession,
  decodeInitialMessage,
  encodeInitialMessage,
  initiatePersistentSession,
} from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import { LibertariaError, type PrekeyBundle, type PrekeyPublication } from '@libertaria/protocol';
import { bundleOf, dec, enc, makePeer, makeResponder } from '../../../test-support/session-fixtures.js';

const p = nodeCrypto;

function code(err: unknown): string {
  return err instanceof LibertariaError ? err.code : `untyped: ${String(err)}`;
}

/** What a relay's prekey service does for one DID, in memory: optionally hands out no one-time keys. */
class Directory implements SessionTransport {
  readonly #pubs = new Map<string, PrekeyPublication>();
  constructor(
    private readonly did: string,
    private readonly oneTime: boolean,
  ) {}
  async publishPrekeys(publication: PrekeyPublication): Promise<PrekeyStatusLike> {
    this.#pubs.set(this.did, publication);
    return this.prekeyStatus();
  }
  async prekeyStatus(): Promise<PrekeyStatusLike> {
    const pub = this.#pubs.get(this.did);
    return {
      published: pub !== undefined,
      oneTimeX25519: pub?.oneTimePrekeys.length ?? 0,
      oneTimeKem: pub?.oneTimeKemPrekeys.length ?? 0,
      lowWater: 0,
    };
  }
  async fetchPrekeys(to: string): Promise<PrekeyBundle> {
    const pub = this.#pubs.get(to);
    if (pub === undefined) throw new Error(`nothing published for ${to}`);
    const bundle = bundleOf(pub);
    if (this.oneTime) {
      const x = pub.oneTimePrekeys.shift();
      const k = pub.oneTimeKemPrekeys.shift();
      if (x) bundle.oneTimePrekey = x;
      if (k) bundle.oneTimeKemPrekey = k;
    }
    return bundle;
  }
}

function manager(identity: Ed25519Identity, store: SessionStore = new InMemorySessionStore(), extra = {}) {
  return new SessionManager({ identity, store, provider: p, verify: verifyEd25519, ...extra });
}

/** A fresh initiator (its own empty store) sealing one first message to `to` through `dir`. */
async function firstMessage(from: Ed25519Identity, to: string, dir: Directory, text: string) {
  const sender = manager(from);
  await sender.load();
  return sender.seal(dir, to, enc(text));
}

describe('one-time prekeys are consumed only by an authenticated initial message', () => {
  it('a forged message naming a real one-time prekey is refused and does not burn it', async () => {
    const alice = makePeer(p);
    const bob = makeResponder(p);
    const { initialMessage } = initiatePersistentSession({
      provider: p,
      identity: alice.identity,
      peerDid: bob.did,
      bundle: bundleOf(bob.publication, { oneTime: 0, oneTimeKem: 0 }),
      payload: enc('the real one'),
    });
    // Mallory keeps the header (names the real one-time ids) and garbles the first ratchet message.
    const decoded = decodeInitialMessage(initialMessage);
    const garbled = Uint8Array.from(decoded.ratchetMessage);
    garbled[garbled.length - 1]! ^= 0x01;
    const forged = encodeInitialMessage({ ...decoded, ratchetMessage: garbled });
    for (let i = 0; i < 3; i++) {
      await assert.rejects(
        acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage: forged }),
        (e) => ['DECRYPT_FAILED'].includes(code(e)),
      );
    }
    // Before the fix the forgeries consumed the keys and this failed with PREKEY_UNAVAILABLE.
    const { payload } = await acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage });
    assert.equal(dec(payload), 'the real one');
    await assert.rejects(
      acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage }),
      (e) => code(e) === 'PREKEY_UNAVAILABLE',
    );
  });

  it('two authenticated messages racing for one one-time prekey: exactly one is accepted', async () => {
    const bob = makeResponder(p);
    const messages = [makePeer(p), makePeer(p)].map(
      (peer) =>
        initiatePersistentSession({
          provider: p,
          identity: peer.identity,
          peerDid: bob.did,
          bundle: bundleOf(bob.publication, { oneTime: 1 }),
          payload: enc('mine'),
        }).initialMessage,
    );
    const results = await Promise.allSettled(
      messages.map((initialMessage) => acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage })),
    );
    assert.equal(
      results.filter((r) => r.status === 'fulfilled').length,
      1,
      JSON.stringify(results.map((r) => r.status)),
    );
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.ok(['REPLAYED', 'PREKEY_UNAVAILABLE'].includes(code(refused.reason)), code(refused.reason));
  });
});

describe('a last-resort initial message cannot be replayed', () => {
  it('is refused (REPLAYED) after its session is gone, also after a restart on the same FileSessionStore', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'first-messages-'));
    try {
      const bobId = Ed25519Identity.generate();
      const aliceId = Ed25519Identity.generate();
      const directory = new Directory(bobId.did, false); // no one-time keys: last resort only
      const bob = manager(bobId, new FileSessionStore(dir));
      await bob.ensurePublished(directory);
      const sealed = await firstMessage(aliceId, bobId.did, directory, 'pay 10 to carol');
      assert.equal(dec(await bob.open(aliceId.did, sealed.sessionId, sealed.body)), 'pay 10 to carol');

      // The session is evicted (rotations, or a peer record lost): the message itself would open again.
      const store = new FileSessionStore(dir);
      for (const name of await store.list('session-')) await store.delete(name);
      const restarted = manager(bobId, store);
      await assert.rejects(restarted.open(aliceId.did, sealed.sessionId, sealed.body), (e) => code(e) === 'REPLAYED');
      // A new handshake from the same peer is of course fine.
      const again = await firstMessage(aliceId, bobId.did, directory, 'hello again');
      assert.equal(dec(await restarted.open(aliceId.did, again.sessionId, again.body)), 'hello again');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('new-session handshakes are rate-limited per sender', () => {
  it('the 21st new session from one DID in a minute is refused; another DID is not; the budget refills', async () => {
    let now = 1_000_000;
    const bobId = Ed25519Identity.generate();
    const directory = new Directory(bobId.did, false);
    const bob = manager(bobId, new InMemorySessionStore(), { clock: () => now, maxHandshakesPerMinute: 20 });
    await bob.ensurePublished(directory);
    const mallory = Ed25519Identity.generate();
    const firsts = [];
    for (let i = 0; i < 21; i++) firsts.push(await firstMessage(mallory, bobId.did, directory, `spam ${i}`));
    for (let i = 0; i < 20; i++) await bob.open(mallory.did, firsts[i]!.sessionId, firsts[i]!.body);
    await assert.rejects(
      bob.open(mallory.did, firsts[20]!.sessionId, firsts[20]!.body),
      (e) => code(e) === 'HANDSHAKE_RATE_LIMITED',
    );
    const alice = Ed25519Identity.generate();
    const honest = await firstMessage(alice, bobId.did, directory, 'hi bob');
    assert.equal(dec(await bob.open(alice.did, honest.sessionId, honest.body)), 'hi bob');
    now += 3_000; // one token back at 20 per minute
    assert.equal(dec(await bob.open(mallory.did, firsts[20]!.sessionId, firsts[20]!.body)), 'spam 20');
  });
});
