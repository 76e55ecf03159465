/**
 * Both Ed25519 verifiers (node:crypto/OpenSSL: identity/keys.ts and the
 * nodeCrypto provider; pure JS: the nobleCrypto provider) refuse small-order
 * and non-canonical keys and signatures the same way (issue 12 item 7,
 * docs/identity.md#signature-rules). Fixtures: shared/crypto/test/vectors/ed25519-edge-cases.json.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { nobleCrypto } from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, isStrictEd25519Point, passesEd25519StrictRules, verifyEd25519 } from '@libertaria/identity';
import { ed25519 } from '@noble/curves/ed25519.js';
import { repoPath } from '../../../test-support/paths.js';

interface Vectors {
  smallOrder: Array<{ hex: string; order: number }>;
  nonCanonicalSmallOrder: Array<{ hex: string; why: string }>;
  cases: Array<{ message: string; pub_key: string; signature: string; valid: boolean; case: string }>;
}
const vectors = JSON.parse(
  readFileSync(repoPath('shared/crypto/test/vectors/ed25519-edge-cases.json'), 'utf8'),
) as Vectors;
const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));

type Verify = (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array) => boolean;
const verifiers: Array<[string, Verify]> = [
  ['identity/keys.ts (node:crypto)', verifyEd25519],
  ['nodeCrypto provider', nodeCrypto.verifyEd25519],
  ['nobleCrypto provider', nobleCrypto.verifyEd25519],
];

const L = (1n << 252n) + 27742317777372353535851937790883648493n;
function withS(signature: Uint8Array, s: bigint): Uint8Array {
  const out = Uint8Array.from(signature);
  for (let i = 0; i < 32; i++) {
    out[32 + i] = Number(s & 0xffn);
    s >>= 8n;
  }
  return out;
}
const sOf = (signature: Uint8Array): bigint =>
  BigInt(`0x${Buffer.from(signature.subarray(32)).reverse().toString('hex')}`);

describe('Ed25519 strict rules', () => {
  it('the fixtures are the 8 small-order points, each of the order listed', () => {
    assert.equal(new Set(vectors.smallOrder.map((p) => p.hex)).size, 8);
    for (const { hex: h, order } of vectors.smallOrder) {
      const point = ed25519.Point.fromBytes(hex(h), false);
      assert.ok(point.isSmallOrder(), h);
      assert.ok(point.multiplyUnsafe(BigInt(order)).is0(), `${h} has order ${order}`);
      if (order > 1) assert.ok(!point.multiplyUnsafe(BigInt(order / 2)).is0(), `${h} has order exactly ${order}`);
      assert.equal(isStrictEd25519Point(hex(h)), false);
    }
    for (const { hex: h } of vectors.nonCanonicalSmallOrder) assert.equal(isStrictEd25519Point(hex(h)), false, h);
  });

  for (const [name, verify] of verifiers) {
    it(`${name}: a small-order key with (R = small-order, S = 0) verifies nothing`, () => {
      const keys = [...vectors.smallOrder.map((p) => p.hex), ...vectors.nonCanonicalSmallOrder.map((p) => p.hex)];
      for (const a of keys) {
        for (const r of keys) {
          const signature = new Uint8Array(64);
          signature.set(hex(r));
          for (const message of [new Uint8Array(0), randomBytes(32), new TextEncoder().encode('any message')]) {
            assert.equal(verify(hex(a), message, signature), false, `A=${a} R=${r}`);
          }
        }
      }
    });

    it(`${name}: the "Taming the many EdDSAs" cases 0-9 as the project rule says`, () => {
      for (const [i, c] of vectors.cases.entries()) {
        assert.equal(verify(hex(c.pub_key), hex(c.message), hex(c.signature)), c.valid, `case ${i}: ${c.case}`);
      }
    });

    it(`${name}: S + L (non-canonical S) is refused, S itself accepted`, () => {
      for (let i = 0; i < 20; i++) {
        const id = Ed25519Identity.generate();
        const message = randomBytes(40);
        const signature = id.sign(message);
        assert.equal(verify(id.publicKey, message, signature), true);
        const s = sOf(signature);
        if (s + L < 1n << 256n) assert.equal(verify(id.publicKey, message, withS(signature, s + L)), false);
      }
    });

    it(`${name}: a non-canonical encoding of a valid key (y >= p) is refused`, () => {
      // Keys whose y < 19 have a second encoding y + p < 2^255; the rule refuses it before any curve arithmetic.
      for (let y = 2; y < 19; y++) {
        const encoding = new Uint8Array(32);
        let v = (1n << 255n) - 19n + BigInt(y);
        for (let i = 0; i < 32; i++) {
          encoding[i] = Number(v & 0xffn);
          v >>= 8n;
        }
        assert.equal(isStrictEd25519Point(encoding), false);
        assert.equal(verify(encoding, new Uint8Array(1), new Uint8Array(64)), false);
      }
    });
  }

  it('both providers agree on valid signatures and on random corruptions of them', () => {
    for (let i = 0; i < 200; i++) {
      const id = Ed25519Identity.generate();
      const message = randomBytes(i % 64);
      const signature = id.sign(message);
      const variants: Array<[Uint8Array, Uint8Array]> = [[id.publicKey, signature]];
      const badSig = Uint8Array.from(signature);
      badSig[i % 64]! ^= 1 << (i % 8);
      variants.push([id.publicKey, badSig]);
      const badKey = Uint8Array.from(id.publicKey);
      badKey[i % 32]! ^= 1 << (i % 8);
      variants.push([badKey, signature]);
      for (const [key, sig] of variants) {
        const results = verifiers.map(([, verify]) => verify(key, message, sig));
        assert.ok(
          results.every((r) => r === results[0]),
          `disagree on ${Buffer.from(key).toString('hex')}: ${results}`,
        );
      }
      assert.equal(nodeCrypto.verifyEd25519(id.publicKey, message, signature), true);
      assert.equal(nobleCrypto.verifyEd25519(id.publicKey, message, signature), true);
    }
  });

  it('keys made by Ed25519Identity always pass the key rule', () => {
    for (let i = 0; i < 200; i++) {
      const id = Ed25519Identity.generate();
      assert.ok(passesEd25519StrictRules(id.publicKey, id.sign(new Uint8Array(0))));
    }
  });
});
