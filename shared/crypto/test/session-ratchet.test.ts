/**
 * The Double Ratchet: round trips, out-of-order, lost and duplicated
 * messages, skipped-key bounds, transactional decryption, every bit flip of
 * a message refused, AD binding, and serialization mid-conversation.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ByteReader,
  ByteWriter,
  type CryptoProvider,
  DoubleRatchet,
  decodeRatchetMessage,
  nobleCrypto,
  RATCHET_HEADER_SIZE,
  type RatchetLimits,
  SessionError,
  sessionAssociatedData,
} from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { ProtocolError } from '@libertaria/protocol';
import { bitFlips, dec, enc } from '../../../test-support/session-fixtures.js';

const p = nodeCrypto;

function isCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => err instanceof SessionError && err.code === code;
}

const id = (n: number) => ({
  identityKey: new Uint8Array(32).fill(n),
  identityDhKey: new Uint8Array(32).fill(n + 1),
});
const AD_AB = sessionAssociatedData(id(1), id(3));
const AD_AC = sessionAssociatedData(id(1), id(5));

/** A fresh pair as PQXDH would leave it: Alice holds Bob's signed prekey, Bob its private half. */
function pair(
  pa: CryptoProvider = p,
  pb: CryptoProvider = p,
  limits?: RatchetLimits,
  adB: Uint8Array = AD_AB,
): { alice: DoubleRatchet; bob: DoubleRatchet } {
  const sk = p.randomBytes(32);
  const spk = p.x25519Generate();
  return {
    alice: DoubleRatchet.initiator(pa, sk, AD_AB, spk.publicKey, limits),
    bob: DoubleRatchet.responder(pb, sk, adB, spk, limits),
  };
}

describe('double ratchet: delivery', () => {
  for (const [pa, pb] of [
    [nodeCrypto, nodeCrypto],
    [nodeCrypto, nobleCrypto],
    [nobleCrypto, nobleCrypto],
  ] as [CryptoProvider, CryptoProvider][]) {
    it(`${pa.name} ↔ ${pb.name}: a long ping-pong with several messages per turn`, () => {
      const { alice, bob } = pair(pa, pb);
      assert.equal(bob.canSend, false);
      assert.throws(() => bob.encrypt(enc('too early')), isCode('SESSION_STATE_INVALID'));
      for (let turn = 0; turn < 20; turn++) {
        const [from, to] = turn % 2 === 0 ? [alice, bob] : [bob, alice];
        for (let i = 0; i <= turn % 3; i++) {
          const text = `turn ${turn} message ${i}`;
          assert.equal(dec(to.decrypt(from.encrypt(enc(text)))), text);
        }
      }
      assert.equal(alice.skippedKeyCount + bob.skippedKeyCount, 0);
    });
  }

  it('empty and large payloads', () => {
    const { alice, bob } = pair();
    assert.equal(bob.decrypt(alice.encrypt(new Uint8Array(0))).length, 0);
    const big = p.randomBytes(1 << 20);
    assert.deepEqual(bob.decrypt(alice.encrypt(big)), big);
  });

  it('out-of-order delivery within a chain and across DH ratchet steps', () => {
    const { alice, bob } = pair();
    const a = [0, 1, 2, 3, 4].map((i) => alice.encrypt(enc(`a${i}`)));
    assert.equal(dec(bob.decrypt(a[3]!)), 'a3');
    assert.equal(dec(bob.decrypt(a[0]!)), 'a0');
    assert.equal(bob.skippedKeyCount, 2);
    const b = [0, 1].map((i) => bob.encrypt(enc(`b${i}`)));
    assert.equal(dec(alice.decrypt(b[1]!)), 'b1');
    const a2 = alice.encrypt(enc('a-next-chain'));
    // Bob gets Alice's new chain before the rest of her old one: PN tells him how many to keep.
    assert.equal(dec(bob.decrypt(a2)), 'a-next-chain');
    assert.equal(dec(bob.decrypt(a[4]!)), 'a4');
    assert.equal(dec(bob.decrypt(a[2]!)), 'a2');
    assert.equal(dec(bob.decrypt(a[1]!)), 'a1');
    assert.equal(dec(alice.decrypt(b[0]!)), 'b0');
    assert.equal(alice.skippedKeyCount + bob.skippedKeyCount, 0);
  });

  it('lost messages leave keys behind but never block the conversation', () => {
    const { alice, bob } = pair();
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 10; i++) {
        const m = alice.encrypt(enc(`r${round} ${i}`));
        if (i % 3 === 0) assert.equal(dec(bob.decrypt(m)), `r${round} ${i}`); // the rest are "lost"
      }
      assert.equal(dec(alice.decrypt(bob.encrypt(enc(`ack ${round}`)))), `ack ${round}`);
    }
    // 6 lost per round (i = 1,2,4,5,7,8) and none delivered later.
    assert.equal(bob.skippedKeyCount, 30);
  });

  it('refuses duplicates and replays: a used message key is gone', () => {
    const { alice, bob } = pair();
    const m0 = alice.encrypt(enc('zero'));
    const m1 = alice.encrypt(enc('one'));
    const m2 = alice.encrypt(enc('two'));
    bob.decrypt(m0);
    assert.throws(() => bob.decrypt(m0), isCode('DUPLICATE_MESSAGE'));
    bob.decrypt(m2); // skips m1
    bob.decrypt(m1); // from the skipped store
    assert.throws(() => bob.decrypt(m1), isCode('DUPLICATE_MESSAGE'));
    assert.throws(() => bob.decrypt(m2), isCode('DUPLICATE_MESSAGE'));
    // After a DH ratchet step, a replay from an earlier chain is still recognised.
    alice.decrypt(bob.encrypt(enc('reply')));
    bob.decrypt(alice.encrypt(enc('new chain')));
    assert.throws(() => bob.decrypt(m0), isCode('DUPLICATE_MESSAGE'));
    assert.equal(dec(bob.decrypt(alice.encrypt(enc('still fine')))), 'still fine');
  });
});

describe('double ratchet: skipped-key bounds', () => {
  const limits: RatchetLimits = { maxSkipPerChain: 50, maxSkippedKeys: 120 };

  it('refuses a jump beyond maxSkipPerChain in one chain, and the state is untouched', () => {
    const { alice, bob } = pair(p, p, limits);
    const msgs = Array.from({ length: 60 }, (_, i) => alice.encrypt(enc(`m${i}`)));
    assert.throws(() => bob.decrypt(msgs[51]!), isCode('TOO_MANY_SKIPPED'));
    assert.equal(bob.skippedKeyCount, 0);
    assert.equal(dec(bob.decrypt(msgs[50]!)), 'm50'); // exactly the bound is fine
    assert.equal(bob.skippedKeyCount, 50);
    assert.equal(dec(bob.decrypt(msgs[7]!)), 'm7');
  });

  it('bounds PN (the previous chain) and N (the new chain) separately across a DH step', () => {
    const { alice, bob } = pair(p, p, limits);
    bob.decrypt(alice.encrypt(enc('start')));
    alice.decrypt(bob.encrypt(enc('reply')));
    for (let i = 0; i < 60; i++) alice.encrypt(enc('lost')); // Alice's old chain grows past the bound...
    alice.decrypt(bob.encrypt(enc('reply 2')));
    const next = alice.encrypt(enc('new chain')); // ...so her next chain's PN is 60: too many to skip
    assert.throws(() => bob.decrypt(next), isCode('TOO_MANY_SKIPPED'));
  });

  it('keeps at most maxSkippedKeys in total, evicting the oldest', () => {
    const { alice, bob } = pair(p, p, limits);
    const early: Uint8Array[] = [];
    for (let round = 0; round < 4; round++) {
      const batch = Array.from({ length: 41 }, (_, i) => alice.encrypt(enc(`r${round} m${i}`)));
      if (round === 0) early.push(batch[0]!);
      bob.decrypt(batch[40]!); // 40 skipped per round
      alice.decrypt(bob.encrypt(enc('ack')));
    }
    assert.equal(bob.skippedKeyCount, 120);
    // The first round's keys were evicted (160 skipped, 120 kept): its messages are gone for good.
    assert.throws(() => bob.decrypt(early[0]!), isCode('DUPLICATE_MESSAGE'));
  });

  it('the default bounds are 2,000 per chain and 25,000 in total', () => {
    const { alice, bob } = pair();
    const msgs: Uint8Array[] = [];
    for (let i = 0; i <= 2001; i++) msgs.push(alice.encrypt(enc(String(i))));
    assert.throws(() => bob.decrypt(msgs[2001]!), isCode('TOO_MANY_SKIPPED'));
    assert.equal(dec(bob.decrypt(msgs[2000]!)), '2000');
    assert.equal(bob.skippedKeyCount, 2000);
  });
});

describe('double ratchet: integrity', () => {
  it('every single-bit flip of a header or ciphertext is refused, with no state change', () => {
    const { alice, bob } = pair();
    bob.decrypt(alice.encrypt(enc('warm up')));
    alice.decrypt(bob.encrypt(enc('both chains exist')));
    const message = alice.encrypt(enc('the message under test, 40 bytes long..'));
    let flips = 0;
    const codes: Record<string, number> = {};
    for (const { flipped } of bitFlips(message)) {
      flips++;
      try {
        bob.decrypt(flipped);
        assert.fail('a flipped message was accepted');
      } catch (err) {
        assert.ok(err instanceof SessionError || err instanceof ProtocolError, String(err));
        codes[err.code] = (codes[err.code] ?? 0) + 1;
      }
    }
    assert.equal(flips, message.length * 8);
    assert.ok(
      codes['DECRYPT_FAILED']! > 0 && codes['UNSUPPORTED_VERSION']! > 0 && codes['BAD_FIELD']! > 0,
      JSON.stringify(codes),
    );
    // Nothing a forgery did survives: no skipped keys were stored, and the real message still opens.
    assert.equal(bob.skippedKeyCount, 0);
    assert.equal(dec(bob.decrypt(message)), 'the message under test, 40 bytes long..');
  });

  it('a forged message under a new ratchet key does not advance the ratchet', () => {
    const { alice, bob } = pair();
    bob.decrypt(alice.encrypt(enc('one')));
    const real = alice.encrypt(enc('two'));
    const forged = Uint8Array.from(real);
    forged.set(p.x25519Generate().publicKey, 1); // a fresh ratchet key: Bob would step if he trusted it
    assert.throws(() => bob.decrypt(forged), isCode('DECRYPT_FAILED'));
    assert.equal(dec(bob.decrypt(real)), 'two');
    assert.equal(dec(alice.decrypt(bob.encrypt(enc('three')))), 'three');
  });

  it('binds the session AD: a message for Alice–Bob cannot be opened as Alice–Carol', () => {
    // Same SK, same keys, only the associated data differs (Carol's identity in place of Bob's).
    const { alice, bob } = pair(p, p, undefined, AD_AC);
    assert.throws(() => bob.decrypt(alice.encrypt(enc('for Bob'))), isCode('DECRYPT_FAILED'));
    const ok = pair();
    assert.equal(dec(ok.bob.decrypt(ok.alice.encrypt(enc('for Bob')))), 'for Bob');
  });

  it('the header is authenticated but readable: ratchet key and counters, nothing else', () => {
    const { alice } = pair();
    alice.encrypt(enc('0'));
    const m = decodeRatchetMessage(alice.encrypt(enc('secret')));
    assert.equal(m.header.n, 1);
    assert.equal(m.header.pn, 0);
    assert.equal(m.headerBytes.length, RATCHET_HEADER_SIZE);
    assert.equal(m.sealed.length, 'secret'.length + 16);
  });
});

describe('double ratchet: serialization', () => {
  function roundTrip(r: DoubleRatchet, provider: CryptoProvider): DoubleRatchet {
    const w = new ByteWriter(r.serializedSize());
    r.writeTo(w);
    return DoubleRatchet.readFrom(provider, new ByteReader(w.done(), 'ratchet state'));
  }

  it('restores mid-conversation with skipped keys, on either provider, and continues', () => {
    const { alice, bob } = pair();
    const pending = [0, 1, 2, 3].map((i) => alice.encrypt(enc(`a${i}`)));
    bob.decrypt(pending[3]!); // 3 skipped
    alice.decrypt(bob.encrypt(enc('b0')));
    const nodeCopy = roundTrip(bob, nodeCrypto);
    assert.equal(nodeCopy.skippedKeyCount, 3);
    assert.equal(dec(nodeCopy.decrypt(pending[1]!)), 'a1');
    // The restarted peer is the noble copy from here on; the original must not send again (keys would repeat).
    const restarted = roundTrip(bob, nobleCrypto);
    bob.destroy();
    assert.equal(dec(restarted.decrypt(pending[2]!)), 'a2');
    assert.equal(dec(alice.decrypt(restarted.encrypt(enc('after restart')))), 'after restart');
    const alice2 = roundTrip(alice, nobleCrypto);
    assert.equal(dec(restarted.decrypt(alice2.encrypt(enc('restored alice')))), 'restored alice');
    assert.equal(dec(restarted.decrypt(pending[0]!)), 'a0');
    assert.equal(dec(alice2.decrypt(restarted.encrypt(enc('and back')))), 'and back');
  });

  it('refuses a state whose ratchet key pair does not match, and truncated or padded states', () => {
    const { alice } = pair();
    const w = new ByteWriter(alice.serializedSize());
    alice.writeTo(w);
    const bytes = w.done();
    const adLength = (bytes[0]! << 8) | bytes[1]!;
    const tampered = Uint8Array.from(bytes);
    tampered[2 + adLength + 32 + 1]! ^= 1; // second byte of the ratchet private key (the first's low bits are clamped)
    assert.throws(() => DoubleRatchet.readFrom(p, new ByteReader(tampered, 'state')), isCode('SESSION_STATE_INVALID'));
    assert.throws(
      () => DoubleRatchet.readFrom(p, new ByteReader(bytes.subarray(0, bytes.length - 1), 'state')),
      ProtocolError,
    );
  });
});
