/**
 * PQXDH: bundle verification, agreement in every prekey combination,
 * one-time prekey reuse, identity binding, replay of last-resort handshakes,
 * and that every single-bit change of an initial message is refused.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  acceptPersistentSession,
  type CryptoProvider,
  decodeInitialMessage,
  encodeInitialMessage,
  generateIdentityDhKey,
  InMemoryResponderPrekeys,
  InMemoryTicketStore,
  initiatePersistentSession,
  nobleCrypto,
  type OneTimePrekeyKind,
  type OneTimePrekeyStore,
  pqxdhInitiate,
  pqxdhRespond,
  prekeyTranscript,
  SessionError,
  verifyPrekeyBundle,
} from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity } from '@libertaria/identity';
import {
  decodePrekeyBundle,
  decodePrekeyPublication,
  encodePrekeyBundle,
  encodePrekeyPublication,
  type PrekeyBundle,
  PrekeyKind,
  ProtocolError,
  prekeySignatureMessage,
  verifyBundle,
  verifyPublication,
} from '@libertaria/protocol';
import {
  bitFlips,
  bundleOf,
  dec,
  enc,
  hex,
  makePeer,
  makeResponder,
  type Responder,
} from '../../../test-support/session-fixtures.js';

const p = nodeCrypto;

function isCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => err instanceof SessionError && err.code === code;
}

function clone(bundle: PrekeyBundle): PrekeyBundle {
  return structuredClone(bundle);
}

describe('prekey bundle verification', () => {
  const bob = makeResponder(p);
  const good = bundleOf(bob.publication, { oneTime: 0, oneTimeKem: 0 });

  it('accepts a well-formed bundle under either DID form of the identity key', () => {
    verifyPrekeyBundle(p, good, bob.did);
    verifyPrekeyBundle(p, good, bob.signer.didKey);
    verifyPrekeyBundle(nobleCrypto, good, bob.did);
  });

  it('refuses a bundle whose identity key is not the one the DID names', () => {
    const carol = makeResponder(p);
    // Carol's bundle is internally perfect, but it is not Bob's.
    assert.throws(() => verifyPrekeyBundle(p, bundleOf(carol.publication), bob.did), isCode('PREKEY_BUNDLE_INVALID'));
    assert.throws(() => verifyPrekeyBundle(p, good, 'did:libertaria:zzz'), isCode('PREKEY_BUNDLE_INVALID'));
  });

  it('refuses every forged or flipped signature', () => {
    const targets: [string, (b: PrekeyBundle) => Uint8Array][] = [
      ['identity DH key', (b) => b.identityDhKey.signature],
      ['signed prekey', (b) => b.signedPrekey.signature],
      ['last-resort KEM prekey', (b) => b.lastResortKemPrekey.signature],
      ['one-time KEM prekey', (b) => b.oneTimeKemPrekey!.signature],
    ];
    for (const [name, sig] of targets) {
      for (const bit of [0, 100, 511]) {
        const b = clone(good);
        sig(b)[bit >> 3]! ^= 1 << (bit & 7);
        assert.throws(() => verifyPrekeyBundle(p, b, bob.did), isCode('PREKEY_BUNDLE_INVALID'), `${name} bit ${bit}`);
      }
    }
  });

  it('refuses signatures swapped between keys, kinds or ids', () => {
    const swaps: ((b: PrekeyBundle) => void)[] = [
      // The identity DH key's signature on the signed prekey (same key type, other kind).
      (b) => {
        b.signedPrekey.signature = b.identityDhKey.signature;
      },
      // The signed prekey presented as the identity DH key.
      (b) => {
        b.identityDhKey = { ...b.signedPrekey, id: 0 };
      },
      // A last-resort KEM key (kind 3) presented as one-time (kind 4).
      (b) => {
        b.oneTimeKemPrekey = { ...b.lastResortKemPrekey };
      },
      // A one-time KEM key presented as the last-resort one.
      (b) => {
        b.lastResortKemPrekey = { ...b.oneTimeKemPrekey! };
      },
      // The right signature, another id.
      (b) => {
        b.signedPrekey = { ...b.signedPrekey, id: b.signedPrekey.id + 1 };
      },
      // Another key under the old signature.
      (b) => {
        b.signedPrekey = { ...b.signedPrekey, publicKey: p.x25519Generate().publicKey };
      },
      // An identity DH key id other than 0, even if signed so (our transcript
      // builder refuses such an id, so the signed bytes are assembled by hand).
      (b) => {
        const bytes = Buffer.concat([
          Buffer.from('libertaria-prekey/1\0'),
          Buffer.from([PrekeyKind.IDENTITY_DH, 0, 0, 0, 1]),
          b.identityDhKey.publicKey,
        ]);
        b.identityDhKey = { ...b.identityDhKey, id: 1, signature: bob.signer.sign(bytes) };
      },
      // A non-canonical X25519 key: the top bit is ignored by X25519 but not by us.
      (b) => {
        b.oneTimePrekey!.publicKey[31]! |= 0x80;
      },
      (b) => {
        b.identityKey = b.identityKey.subarray(1);
      },
    ];
    swaps.forEach((swap, i) => {
      const b = clone(good);
      swap(b);
      assert.throws(() => verifyPrekeyBundle(p, b, bob.did), isCode('PREKEY_BUNDLE_INVALID'), `swap ${i}`);
    });
  });

  it('refuses a bundle re-signed by someone else under the victim DID', () => {
    const mallory = makeResponder(p);
    const forged = clone(bundleOf(mallory.publication, { oneTime: 0 }));
    // Mallory keeps her own (valid) signatures but claims to be Bob.
    assert.throws(() => verifyPrekeyBundle(p, forged, bob.did), isCode('PREKEY_BUNDLE_INVALID'));
    // Bob's identity key with Mallory's signed keys: the signatures do not verify under Bob's key.
    forged.identityKey = bob.signer.publicKey;
    assert.throws(() => verifyPrekeyBundle(p, forged, bob.did), isCode('PREKEY_BUNDLE_INVALID'));
  });
});

describe('PQXDH agreement', () => {
  const combos = [
    { name: 'one-time X25519 and one-time KEM prekeys', oneTime: 0, oneTimeKem: 0 },
    { name: 'one-time X25519, last-resort KEM', oneTime: 1 },
    { name: 'no one-time X25519, one-time KEM', oneTimeKem: 1 },
    { name: 'signed prekey and last-resort KEM only', oneTime: undefined, oneTimeKem: undefined },
  ];
  for (const [pa, pb] of [
    [nodeCrypto, nodeCrypto],
    [nobleCrypto, nodeCrypto],
  ] as [CryptoProvider, CryptoProvider][]) {
    for (const combo of combos) {
      it(`${pa.name} → ${pb.name}: ${combo.name}`, async () => {
        const alice = makePeer(pa);
        const bob = makeResponder(pb);
        const x = pqxdhInitiate({
          provider: pa,
          identity: alice.identity,
          peerDid: bob.did,
          bundle: bundleOf(bob.publication, combo),
        });
        const bytes = encodeInitialMessage({ ...x.message, ratchetMessage: Uint8Array.of(1, ...new Uint8Array(56)) });
        const decoded = decodeInitialMessage(bytes);
        assert.deepEqual(encodeInitialMessage(decoded), bytes);
        const y = await pqxdhRespond({ provider: pb, prekeys: bob.prekeys, message: decoded });
        assert.equal(hex(y.sharedKey), hex(x.sharedKey));
        assert.equal(hex(y.ad), hex(x.ad));
        assert.equal(y.ad.length, 132);
        assert.equal(y.peerDid, alice.did);
        assert.equal(y.usedOneTimePrekey, combo.oneTime !== undefined || combo.oneTimeKem !== undefined);
        assert.equal(decoded.oneTimePrekeyId !== undefined, combo.oneTime !== undefined);
        assert.equal(decoded.kemPrekeyOneTime, combo.oneTimeKem !== undefined);
      });
    }
  }

  it('gives a different SK for every handshake, even to the same bundle', () => {
    const alice = makePeer(p);
    const bob = makeResponder(p);
    const bundle = bundleOf(bob.publication);
    const a = pqxdhInitiate({ provider: p, identity: alice.identity, peerDid: bob.did, bundle });
    const b = pqxdhInitiate({ provider: p, identity: alice.identity, peerDid: bob.did, bundle });
    assert.notEqual(hex(a.sharedKey), hex(b.sharedKey));
  });
});

async function initial(
  alice: ReturnType<typeof makePeer>,
  bob: Responder,
  combo: { oneTime?: number; oneTimeKem?: number },
) {
  return initiatePersistentSession({
    provider: p,
    identity: alice.identity,
    peerDid: bob.did,
    bundle: bundleOf(bob.publication, combo),
    payload: enc('hello bob'),
  }).initialMessage;
}

describe('PQXDH responder refusals', () => {
  it('refuses a one-time prekey used twice (replay and reuse), X25519 and KEM alike', async () => {
    const alice = makePeer(p);
    const bob = makeResponder(p);
    const message = await initial(alice, bob, { oneTime: 0, oneTimeKem: 0 });
    const { payload } = await acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage: message });
    assert.equal(dec(payload), 'hello bob');
    // Replay of the same message.
    await assert.rejects(
      acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage: message }),
      isCode('PREKEY_UNAVAILABLE'),
    );
    // Another initiator handed the same one-time X25519 key (a relay bug or a race).
    const carol = makePeer(p);
    await assert.rejects(
      acceptPersistentSession({
        provider: p,
        prekeys: bob.prekeys,
        initialMessage: await initial(carol, bob, { oneTime: 0 }),
      }),
      isCode('PREKEY_UNAVAILABLE'),
    );
    // And the same one-time KEM key.
    await assert.rejects(
      acceptPersistentSession({
        provider: p,
        prekeys: bob.prekeys,
        initialMessage: await initial(carol, bob, { oneTimeKem: 0 }),
      }),
      isCode('PREKEY_UNAVAILABLE'),
    );
    // Unused one-time keys still work.
    await acceptPersistentSession({
      provider: p,
      prekeys: bob.prekeys,
      initialMessage: await initial(carol, bob, { oneTime: 1, oneTimeKem: 1 }),
    });
    assert.equal(bob.prekeys.oneTime instanceof Object, true);
  });

  it('refuses prekey ids it does not hold (unknown or retired signed and last-resort prekeys)', async () => {
    const alice = makePeer(p);
    const bob = makeResponder(p);
    const message = await initial(alice, bob, {});
    const retired = InMemoryResponderPrekeys.fromSecrets(p, bob.identity, bob.secrets);
    retired.retireSignedPrekey(bob.secrets.signedPrekey.public.id);
    await assert.rejects(
      acceptPersistentSession({ provider: p, prekeys: retired, initialMessage: message }),
      isCode('PREKEY_UNAVAILABLE'),
    );
    const noKem = InMemoryResponderPrekeys.fromSecrets(p, bob.identity, bob.secrets);
    noKem.retireLastResortKemPrekey(bob.secrets.lastResortKemPrekey.public.id);
    await assert.rejects(
      acceptPersistentSession({ provider: p, prekeys: noKem, initialMessage: message }),
      isCode('PREKEY_UNAVAILABLE'),
    );
  });

  it('refuses an initiator whose identity DH key is not signed by its identity key', async () => {
    const alice = makePeer(p);
    const mallory = makePeer(p);
    const bob = makeResponder(p);
    // Mallory claims Alice's (public) DID key but brings her own DH key: she cannot sign it as Alice.
    const impostor = { signer: alice.signer, identityDh: mallory.identity.identityDh };
    const message = initiatePersistentSession({
      provider: p,
      identity: impostor,
      peerDid: bob.did,
      bundle: bundleOf(bob.publication),
      payload: enc('I am Alice'),
    }).initialMessage;
    await assert.rejects(
      acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage: message }),
      isCode('PREKEY_BUNDLE_INVALID'),
    );
    // A signature by Mallory's own key over her DH key does not help either.
    const selfSigned = { signer: alice.signer, identityDh: generateIdentityDhKey(p, mallory.signer) };
    const message2 = initiatePersistentSession({
      provider: p,
      identity: selfSigned,
      peerDid: bob.did,
      bundle: bundleOf(bob.publication),
      payload: enc('I am Alice'),
    }).initialMessage;
    await assert.rejects(
      acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage: message2 }),
      isCode('PREKEY_BUNDLE_INVALID'),
    );
  });

  it('refuses a replayed last-resort handshake when given a replay guard, and says so', async () => {
    const alice = makePeer(p);
    const bob = makeResponder(p);
    const message = await initial(alice, bob, {});
    const guard = new InMemoryTicketStore();
    await acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage: message, replayGuard: guard });
    await assert.rejects(
      acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage: message, replayGuard: guard }),
      isCode('REPLAYED'),
    );
    // Without a guard (and without one-time prekeys) the replay is accepted: the documented PQXDH caveat.
    await acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage: message });
  });
});

/** A store that never forgets, so each bit-flip trial sees the same responder state. */
class RepeatableStore implements OneTimePrekeyStore {
  constructor(private readonly inner: Map<string, Uint8Array>) {}
  peek(kind: OneTimePrekeyKind, id: number): Promise<Uint8Array | undefined> {
    return this.consume(kind, id);
  }
  async consume(kind: OneTimePrekeyKind, id: number): Promise<Uint8Array | undefined> {
    const key = this.inner.get(`${kind}:${id}`);
    return key && Uint8Array.from(key);
  }
}

/** Every bit of the first bytes of a message is flipped, one bit per byte beyond (bitFlips). */
const HEADER_FLIP_BYTES = 128;

describe('PQXDH initial message integrity', () => {
  it('every bit flip of the first 128 bytes of an initial message and one per byte beyond is refused, and the original still works', async () => {
    const alice = makePeer(p);
    const bob = makeResponder(p, 1, 1);
    const keys = new Map<string, Uint8Array>();
    for (const k of bob.secrets.oneTimePrekeys) keys.set(`x25519:${k.public.id}`, k.privateKey);
    for (const k of bob.secrets.oneTimeKemPrekeys) keys.set(`kem:${k.public.id}`, k.secretKey);
    const prekeys = new InMemoryResponderPrekeys(bob.identity, new RepeatableStore(keys));
    prekeys.addSecrets(p, bob.secrets);
    const message = await initial(alice, bob, { oneTime: 0, oneTimeKem: 0 });
    const codes: Record<string, number> = {};
    let flips = 0;
    for (const { index, bit, flipped } of bitFlips(message, { everyBitBelow: HEADER_FLIP_BYTES })) {
      flips++;
      try {
        await acceptPersistentSession({ provider: p, prekeys, initialMessage: flipped });
        assert.fail(`flip of byte ${index} bit ${bit} was accepted`);
      } catch (err) {
        assert.ok(err instanceof SessionError || err instanceof ProtocolError, `untyped error ${String(err)}`);
        codes[err.code] = (codes[err.code] ?? 0) + 1;
      }
    }
    assert.equal(flips, HEADER_FLIP_BYTES * 8 + (message.length - HEADER_FLIP_BYTES));
    // The flips land in the codec (version, flags, canonical keys), the identity binding, the prekey lookup and the AEAD.
    for (const code of [
      'UNSUPPORTED_VERSION',
      'BAD_FIELD',
      'PREKEY_BUNDLE_INVALID',
      'PREKEY_UNAVAILABLE',
      'DECRYPT_FAILED',
    ]) {
      assert.ok((codes[code] ?? 0) > 0, `no flip produced ${code}: ${JSON.stringify(codes)}`);
    }
    const { payload } = await acceptPersistentSession({ provider: p, prekeys, initialMessage: message });
    assert.equal(dec(payload), 'hello bob');
  });

  it('an identity key swapped for another valid one is refused', async () => {
    const alice = makePeer(p);
    const bob = makeResponder(p);
    const message = await initial(alice, bob, {});
    const m = decodeInitialMessage(message);
    const other = Ed25519Identity.generate();
    const swapped = encodeInitialMessage({ ...m, initiatorIdentityKey: other.publicKey });
    await assert.rejects(
      acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage: swapped }),
      isCode('PREKEY_BUNDLE_INVALID'),
    );
  });
});

describe('interop with the relay prekey codec (prekey-bundle.ts)', () => {
  it('signs the transcript the relay verifies, and a handshake works over an encoded bundle', async () => {
    const alice = makePeer(p);
    const bob = makeResponder(p, 2, 2);
    const spk = bob.publication.signedPrekey;
    assert.equal(
      hex(prekeyTranscript(PrekeyKind.SIGNED_X25519, spk.id, spk.publicKey)),
      hex(prekeySignatureMessage(PrekeyKind.SIGNED_X25519, spk.id, spk.publicKey)),
    );
    // What the relay accepts from Bob and hands to Alice, through the wire encodings.
    const publication = decodePrekeyPublication(encodePrekeyPublication(bob.publication));
    verifyPublication(publication, bob.signer.publicKey, (k, m, s) => p.verifyEd25519(k, m, s));
    const wire = decodePrekeyBundle(encodePrekeyBundle(bundleOf(publication, { oneTime: 1, oneTimeKem: 1 })));
    verifyBundle(wire, (k, m, s) => p.verifyEd25519(k, m, s), bob.signer.publicKey);
    const { initialMessage } = initiatePersistentSession({
      provider: p,
      identity: alice.identity,
      peerDid: bob.did,
      bundle: wire,
      payload: enc('over the wire'),
    });
    const { payload } = await acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage });
    assert.equal(dec(payload), 'over the wire');
  });
});
