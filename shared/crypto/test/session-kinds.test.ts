/**
 * The session kinds: persistent (PQXDH + ratchet + rotation + state),
 * ephemeral (one anonymous request/response) and 0-RTT resumption.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  acceptEphemeralRequest,
  EPHEMERAL_RESPONSE_RANDOM_SIZE,
  EphemeralSession,
  InMemoryTicketStore,
  nobleCrypto,
  open0Rtt,
  PersistentSession,
  type ResumptionTicket,
  type RotationReason,
  SessionError,
  type SessionOptions,
  seal0Rtt,
} from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { ProtocolError } from '@libertaria/protocol';
import {
  bitFlips,
  bundleOf,
  dec,
  enc,
  establishSession,
  hex,
  makePeer,
  makeResponder,
} from '../../../test-support/session-fixtures.js';

const p = nodeCrypto;

function isCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => err instanceof SessionError && err.code === code;
}

function typed(err: unknown): string {
  assert.ok(err instanceof SessionError || err instanceof ProtocolError, `untyped error ${String(err)}`);
  return err.code;
}

async function establish(options: SessionOptions = {}, providerB = p) {
  const { alice, bob, a, b, payload } = await establishSession(p, options, providerB);
  assert.equal(dec(payload), 'hello');
  return { alice, bob, a, b };
}

describe('persistent sessions', () => {
  it('agree on identities and session id, and talk both ways', async () => {
    const { alice, bob, a, b } = await establish({}, nobleCrypto);
    assert.equal(hex(a.sessionId), hex(b.sessionId));
    assert.equal(a.peerDid, bob.did);
    assert.equal(b.peerDid, alice.did);
    assert.equal(a.localDid, alice.did);
    assert.equal(b.localDid, bob.did);
    assert.equal(a.role, 'initiator');
    assert.equal(b.role, 'responder');
    for (let i = 0; i < 10; i++) {
      assert.equal(dec(b.decrypt(a.encrypt(enc(`a${i}`)))), `a${i}`);
      assert.equal(dec(a.decrypt(b.encrypt(enc(`b${i}`)))), `b${i}`);
    }
    assert.equal(a.messagesSent, 11); // the initial message carried the first
    assert.equal(b.messagesReceived, 11);
  });

  it('signals rotation by message count, once, through the hook', async () => {
    const due: RotationReason[] = [];
    const { a, b } = await establish({
      policy: { maxMessages: 5 },
      onRotationDue: (reason) => due.push(reason),
    });
    assert.equal(a.rotationDue(), undefined);
    for (let i = 0; i < 4; i++) b.decrypt(a.encrypt(enc('x')));
    assert.equal(a.rotationDue(), 'messages'); // 5 sent
    assert.deepEqual(due, ['messages', 'messages']); // once per side
    b.decrypt(a.encrypt(enc('still works past the policy')));
    assert.equal(due.length, 2);
  });

  it('signals rotation by age with an injected clock, and keeps counting across a restore', async () => {
    let now = 1_000_000;
    const clock = () => now;
    const { a, b } = await establish({ policy: { maxAgeMs: 60_000 }, clock });
    assert.equal(a.createdAt, 1_000_000);
    now += 59_999;
    assert.equal(a.rotationDue(), undefined);
    now += 1;
    assert.equal(a.rotationDue(), 'age');
    const restored = PersistentSession.restore(p, b.serialize(), { clock });
    assert.equal(restored.rotationDue(), 'age');
    assert.equal(restored.createdAt, 1_000_000);
    assert.equal(restored.messagesReceived, 1);
    assert.deepEqual(restored.policy, { maxMessages: 100_000, maxAgeMs: 60_000 });
  });

  it('serializes mid-conversation; a restarted peer continues, skipped keys included', async () => {
    const { a, b } = await establish();
    const late = [0, 1, 2].map((i) => a.encrypt(enc(`late ${i}`)));
    b.decrypt(a.encrypt(enc('overtakes')));
    const state = b.serialize();
    const b2 = PersistentSession.restore(nobleCrypto, state);
    b.destroy(); // the old process is gone
    assert.equal(b2.skippedKeyCount, 3);
    assert.equal(hex(b2.sessionId), hex(a.sessionId));
    assert.equal(dec(b2.decrypt(late[1]!)), 'late 1');
    assert.equal(dec(a.decrypt(b2.encrypt(enc('back after restart')))), 'back after restart');
    const a2 = PersistentSession.restore(p, a.serialize());
    assert.equal(dec(b2.decrypt(a2.encrypt(enc('both restarted')))), 'both restarted');
    assert.equal(dec(b2.decrypt(late[0]!)), 'late 0');
    assert.equal(b2.messagesReceived, 5);
  });

  it('refuses malformed or tampered state with SESSION_STATE_INVALID', async () => {
    const { b } = await establish();
    const state = b.serialize();
    const cases: Uint8Array[] = [
      state.subarray(0, 10),
      state.subarray(0, state.length - 1),
      Uint8Array.of(...state, 0),
      Uint8Array.of(9, ...state.subarray(1)), // version
      Uint8Array.of(state[0]!, 2, ...state.subarray(2)), // kind
    ];
    const peerKey = Uint8Array.from(state);
    peerKey[3 + 16 + 32]! ^= 1; // peer identity key: no longer matches the DID nor the AD
    cases.push(peerKey);
    for (const bytes of cases)
      assert.throws(() => PersistentSession.restore(p, bytes), isCode('SESSION_STATE_INVALID'));
  });
});

describe('ephemeral sessions', () => {
  it('carry one anonymous request and its response, on either provider', async () => {
    for (const [pr, ps] of [
      [nodeCrypto, nobleCrypto],
      [nobleCrypto, nodeCrypto],
    ] as const) {
      const bob = makeResponder(ps);
      const { session, request } = EphemeralSession.request({
        provider: pr,
        peerDid: bob.did,
        bundle: bundleOf(bob.publication),
        payload: enc('what time is it?'),
      });
      const responder = await acceptEphemeralRequest({ provider: ps, prekeys: bob.prekeys, request });
      assert.equal(dec(responder.payload), 'what time is it?');
      assert.equal(hex(responder.sessionId), hex(session.sessionId));
      const response = responder.sealResponse(enc('noon'));
      assert.throws(() => responder.sealResponse(enc('again')), isCode('SESSION_EXPIRED'));
      assert.equal(dec(session.openResponse(response)), 'noon');
      assert.throws(() => session.openResponse(response), isCode('SESSION_EXPIRED'));
    }
  });

  it('reveal nothing of the requester: no identity key in the request, fresh keys every time', async () => {
    const bob = makeResponder(p);
    const requester = makePeer(p); // exists, but the request never touches its keys
    const one = EphemeralSession.request({
      provider: p,
      peerDid: bob.did,
      bundle: bundleOf(bob.publication),
      payload: enc('q'),
    });
    const two = EphemeralSession.request({
      provider: p,
      peerDid: bob.did,
      bundle: bundleOf(bob.publication),
      payload: enc('q'),
    });
    for (const key of [requester.signer.publicKey, requester.identity.identityDh.publicKey]) {
      assert.ok(!hex(one.request).includes(hex(key)));
    }
    assert.notEqual(hex(one.request.subarray(9, 41)), hex(two.request.subarray(9, 41))); // ephemeral keys differ
    assert.notEqual(hex(one.session.sessionId), hex(two.session.sessionId));
  });

  it('refuse bit flips of a request and of a response (every bit of the first 128 bytes, one per byte beyond)', async () => {
    const bob = makeResponder(p);
    const { session, request } = EphemeralSession.request({
      provider: p,
      peerDid: bob.did,
      bundle: bundleOf(bob.publication),
      payload: enc('question'),
      // ~10,000 flips each pay an ML-KEM decapsulation: on a loaded machine that outlasts the default TTL.
      ttlMs: 24 * 60 * 60 * 1000,
    });
    for (const { flipped } of bitFlips(request, { everyBitBelow: 128 })) {
      await assert.rejects(
        acceptEphemeralRequest({ provider: p, prekeys: bob.prekeys, request: flipped }),
        (err) => typed(err) !== '',
      );
    }
    const responder = await acceptEphemeralRequest({ provider: p, prekeys: bob.prekeys, request });
    const response = responder.sealResponse(enc('answer'));
    const keep = session; // openResponse is single-use, so test flips on clones of the exchange
    for (const { flipped } of bitFlips(response, { everyBitBelow: 128 })) {
      assert.throws(
        () => keep.openResponse(flipped),
        (err) => typed(err) !== '' && (err as SessionError).code !== 'SESSION_EXPIRED',
      );
    }
    assert.equal(dec(keep.openResponse(response)), 'answer');
  });

  it('refuse a replayed request with a guard, and a response after expiry', async () => {
    const bob = makeResponder(p);
    const guard = new InMemoryTicketStore();
    let now = 5_000;
    const { session, request } = EphemeralSession.request({
      provider: p,
      peerDid: bob.did,
      bundle: bundleOf(bob.publication),
      payload: enc('once'),
      ttlMs: 1000,
      clock: () => now,
    });
    const responder = await acceptEphemeralRequest({ provider: p, prekeys: bob.prekeys, request, replayGuard: guard });
    await assert.rejects(
      acceptEphemeralRequest({ provider: p, prekeys: bob.prekeys, request, replayGuard: guard }),
      isCode('REPLAYED'),
    );
    const response = responder.sealResponse(enc('late'));
    now += 1001;
    assert.throws(() => session.openResponse(response), isCode('SESSION_EXPIRED'));
  });

  it('answer a replayed request (no guard) under a fresh key each time, never two plaintexts under one key and nonce', async () => {
    // The attack of issue 13 item 3: a relay replays a request and lies that it is fresh. With version 1 both
    // responses were sealed under the same key and nonce, so XOR of the ciphertexts was the XOR of the plaintexts.
    const bob = makeResponder(p);
    const { session, request } = EphemeralSession.request({
      provider: p,
      peerDid: bob.did,
      bundle: bundleOf(bob.publication),
      payload: enc('question'),
    });
    const first = (await acceptEphemeralRequest({ provider: p, prekeys: bob.prekeys, request })).sealResponse(
      enc('answer one'),
    );
    const second = (await acceptEphemeralRequest({ provider: p, prekeys: bob.prekeys, request })).sealResponse(
      enc('answer two'),
    );
    const body = (r: Uint8Array) => r.subarray(1 + EPHEMERAL_RESPONSE_RANDOM_SIZE);
    assert.notEqual(hex(first.subarray(1, 33)), hex(second.subarray(1, 33)), 'each response has its own randomness');
    const x1 = body(first);
    const x2 = body(second);
    const xorCipher = x1.map((b, i) => b ^ x2[i]!);
    const xorPlain = enc('answer one').map((b, i) => b ^ enc('answer two')[i]!);
    assert.notEqual(hex(xorCipher.subarray(0, xorPlain.length)), hex(xorPlain), 'keystream reused across responses');
    // The requester opens whichever arrives (it is the same exchange), and only one.
    assert.equal(dec(session.openResponse(second)), 'answer two');
  });

  it('refuse a version-1 request: its response key was a function of the request alone', async () => {
    const bob = makeResponder(p);
    const { request } = EphemeralSession.request({
      provider: p,
      peerDid: bob.did,
      bundle: bundleOf(bob.publication),
      payload: enc('old'),
    });
    const v1 = Uint8Array.from(request);
    v1[0] = 1;
    await assert.rejects(
      acceptEphemeralRequest({ provider: p, prekeys: bob.prekeys, request: v1 }),
      (err) => typed(err) === 'UNSUPPORTED_VERSION',
    );
  });

  it('refuse a bundle that is not the responder DID’s, and unknown prekey ids', async () => {
    const bob = makeResponder(p);
    const carol = makeResponder(p);
    assert.throws(
      () =>
        EphemeralSession.request({
          provider: p,
          peerDid: bob.did,
          bundle: bundleOf(carol.publication),
          payload: enc('x'),
        }),
      isCode('PREKEY_BUNDLE_INVALID'),
    );
    const { request } = EphemeralSession.request({
      provider: p,
      peerDid: carol.did,
      bundle: bundleOf(carol.publication),
      payload: enc('x'),
    });
    // Bob's prekey ids equal Carol's in these fixtures, so this reaches the AEAD: Encode(B) in the AD differs.
    await assert.rejects(
      acceptEphemeralRequest({ provider: p, prekeys: bob.prekeys, request }),
      isCode('DECRYPT_FAILED'),
    );
    // A retired signed prekey is not held any more.
    carol.prekeys.retireSignedPrekey(carol.secrets.signedPrekey.public.id);
    await assert.rejects(
      acceptEphemeralRequest({ provider: p, prekeys: carol.prekeys, request }),
      isCode('PREKEY_UNAVAILABLE'),
    );
  });
});

describe('0-RTT resumption', () => {
  async function setup() {
    let now = 10_000_000;
    const clock = () => now;
    const s = await establish({ clock });
    return { ...s, clock, advance: (ms: number) => (now += ms), now: () => now };
  }

  it('seals a first flight under a single-use ticket, in both directions', async () => {
    const { a, b, now } = await setup();
    const store = new InMemoryTicketStore();
    const t1 = a.issueResumptionTicket();
    const m1 = seal0Rtt(p, t1, enc('alice, resuming'), { now: now() });
    const opened = await open0Rtt({
      provider: nobleCrypto,
      message: m1,
      resolve: (id) => b.resumptionTicketFor(id),
      store,
      now: now(),
    });
    assert.equal(dec(opened.payload), 'alice, resuming');
    assert.equal(hex(opened.ticket.sessionId), hex(b.sessionId));
    const t2 = b.issueResumptionTicket();
    assert.notEqual(hex(t2.ticketId), hex(t1.ticketId));
    const m2 = seal0Rtt(p, t2, enc('bob, resuming'), { now: now() });
    assert.equal(
      dec(
        (await open0Rtt({ provider: p, message: m2, resolve: (id) => a.resumptionTicketFor(id), store, now: now() }))
          .payload,
      ),
      'bob, resuming',
    );
  });

  it('refuses a replay (TicketStore), a second seal with one ticket, and an unknown ticket', async () => {
    const { a, b, now } = await setup();
    const store = new InMemoryTicketStore();
    const ticket = a.issueResumptionTicket();
    const m = seal0Rtt(p, ticket, enc('once'), { now: now() });
    const open = (message: Uint8Array, resolve = (id: Uint8Array) => b.resumptionTicketFor(id)) =>
      open0Rtt({ provider: p, message, resolve, store, now: now() });
    await open(m);
    await assert.rejects(open(m), isCode('REPLAYED'));
    assert.throws(() => seal0Rtt(p, ticket, enc('twice'), { now: now() }), isCode('SESSION_EXPIRED'));
    // Own tickets are not the peer's: Alice cannot open what she sent herself.
    const t = a.issueResumptionTicket();
    await assert.rejects(
      open(seal0Rtt(p, t, enc('x'), { now: now() }), (id) => a.resumptionTicketFor(id)),
      isCode('TICKET_UNKNOWN'),
    );
  });

  it('binds the session: a ticket of Alice–Bob means nothing to Alice–Carol', async () => {
    const ab = await setup();
    const ac = await establish();
    const m = seal0Rtt(p, ab.a.issueResumptionTicket(), enc('for Bob'), { now: ab.now() });
    await assert.rejects(
      open0Rtt({
        provider: p,
        message: m,
        resolve: (id) => ac.b.resumptionTicketFor(id),
        store: new InMemoryTicketStore(),
        now: ab.now(),
      }),
      isCode('TICKET_UNKNOWN'),
    );
    // Even handed the right ticket id, a different AD fails the AEAD.
    const m2 = seal0Rtt(p, ab.a.issueResumptionTicket(), enc('for Bob'), { now: ab.now() });
    const real = ab.b.resumptionTicketFor(m2.subarray(1, 17))!;
    // Alice–Carol's AD (Carol's identities where Bob's were), read off a ticket Carol's session issues.
    const wrongAd: ResumptionTicket = { ...real, ad: ac.a.issueResumptionTicket().ad };
    await assert.rejects(
      open0Rtt({ provider: p, message: m2, resolve: () => wrongAd, store: new InMemoryTicketStore(), now: ab.now() }),
      isCode('DECRYPT_FAILED'),
    );
  });

  it('refuses messages outside the freshness window and tickets past their lifetime', async () => {
    const { a, b, now, advance } = await setup();
    const store = new InMemoryTicketStore();
    const m = seal0Rtt(p, a.issueResumptionTicket(), enc('old'), { now: now() });
    await assert.rejects(
      open0Rtt({
        provider: p,
        message: m,
        resolve: (id) => b.resumptionTicketFor(id),
        store,
        now: now() + 5 * 60_000 + 1,
      }),
      isCode('SESSION_EXPIRED'),
    );
    const future = seal0Rtt(p, a.issueResumptionTicket(), enc('from the future'), { now: now() + 60_000 });
    await assert.rejects(
      open0Rtt({ provider: p, message: future, resolve: (id) => b.resumptionTicketFor(id), store, now: now() }),
      isCode('SESSION_EXPIRED'),
    );
    const ticket = a.issueResumptionTicket(1000);
    advance(1001);
    assert.throws(() => seal0Rtt(p, ticket, enc('too late'), { now: now() }), isCode('SESSION_EXPIRED'));
  });

  it('issues a bounded number of tickets, and the counter survives serialization', async () => {
    const { a } = await establish({ maxTickets: 3 });
    const ids = [a.issueResumptionTicket(), a.issueResumptionTicket()].map((t) => hex(t.ticketId));
    const restored = PersistentSession.restore(p, a.serialize(), { maxTickets: 3 });
    const third = restored.issueResumptionTicket();
    assert.ok(!ids.includes(hex(third.ticketId)), 'a restored session re-issued a ticket');
    assert.throws(() => restored.issueResumptionTicket(), isCode('SESSION_EXPIRED'));
  });

  it('refuses every bit flip of a 0-RTT message', async () => {
    const { a, b, now } = await setup();
    const m = seal0Rtt(p, a.issueResumptionTicket(), enc('flip me'), { now: now() });
    const store = new InMemoryTicketStore();
    for (const { flipped } of bitFlips(m)) {
      await assert.rejects(
        open0Rtt({ provider: p, message: flipped, resolve: (id) => b.resumptionTicketFor(id), store, now: now() }),
        (err) => typed(err) !== '',
      );
    }
    assert.equal(store.size, 0, 'a forgery consumed a ticket');
    assert.equal(
      dec(
        (await open0Rtt({ provider: p, message: m, resolve: (id) => b.resumptionTicketFor(id), store, now: now() }))
          .payload,
      ),
      'flip me',
    );
  });
});
