import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { leadingZeroBits, solvePowStamp, verifyPowStamp } from '@libertaria/protocol';

describe('proof-of-work stamps', () => {
  it('counts leading zero bits', () => {
    assert.equal(leadingZeroBits(Uint8Array.of(0x80)), 0);
    assert.equal(leadingZeroBits(Uint8Array.of(0x01)), 7);
    assert.equal(leadingZeroBits(Uint8Array.of(0x00, 0x00, 0x10)), 19);
    assert.equal(leadingZeroBits(new Uint8Array(4)), 32);
  });

  it('solves and verifies, and the digest is SHA-256 over domain ‖ nonce ‖ stamp', () => {
    for (const bits of [0, 1, 8, 14]) {
      const nonce = randomBytes(32);
      const stamp = solvePowStamp(nonce, bits);
      assert.equal(stamp.length, 8);
      assert.ok(verifyPowStamp(nonce, stamp, bits));
      // Computed independently with node:crypto, as the docs describe it.
      const digest = createHash('sha256').update('libertaria-anon-pow/1').update(nonce).update(stamp).digest();
      assert.ok(leadingZeroBits(digest) >= bits, `${bits} bits`);
    }
  });

  it('refuses stamps for another nonce, short stamps, and too little work', () => {
    const nonce = randomBytes(32);
    const stamp = solvePowStamp(nonce, 12);
    let other = randomBytes(32);
    while (verifyPowStamp(other, stamp, 12)) other = randomBytes(32);
    assert.equal(verifyPowStamp(other, stamp, 12), false);
    assert.equal(verifyPowStamp(nonce, stamp.subarray(0, 7), 0), false);
    // A stamp that fails 20 bits (found by counting: the solved one almost surely has fewer).
    const digest = createHash('sha256').update('libertaria-anon-pow/1').update(nonce).update(stamp).digest();
    const got = leadingZeroBits(digest);
    assert.equal(verifyPowStamp(nonce, stamp, got + 1), false);
    assert.equal(verifyPowStamp(nonce, stamp, got), true);
  });

  it('bounds the work and the difficulty', () => {
    assert.throws(() => solvePowStamp(randomBytes(32), 33), RangeError);
    assert.throws(() => solvePowStamp(randomBytes(32), -1), RangeError);
    assert.throws(() => solvePowStamp(randomBytes(31), 4), RangeError);
    assert.throws(() => solvePowStamp(randomBytes(32), 30, { maxAttempts: 100 }), /no proof-of-work stamp/);
  });
});
