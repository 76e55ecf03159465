/**
 * The two Ed25519 backends of Ed25519Identity (node:crypto in Node,
 * @noble/curves in browser bundles) are interchangeable: same public key and
 * same (deterministic, RFC 8032) signature for a seed, and each verifies the
 * other's signatures. Acceptance of malformed and edge-case signatures is
 * compared in shared/crypto/test/ed25519-strict.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { verifyEd25519, verifyEd25519Noble } from '@libertaria/identity';
import * as nobleBackend from '../src/ed25519-noble.js';
import * as nodeBackend from '../src/ed25519-node.js';

describe('Ed25519 backends', () => {
  it('derive the same public key and signature from a seed, and verify each other', () => {
    assert.equal(nodeBackend.ED25519_BACKEND, 'node:crypto');
    assert.equal(nobleBackend.ED25519_BACKEND, 'noble');
    for (let i = 0; i < 40; i++) {
      const seed = i === 0 ? nodeBackend.randomSeed() : i === 1 ? nobleBackend.randomSeed() : randomBytes(32);
      assert.equal(seed.length, 32);
      const a = nodeBackend.signingKey(seed);
      const b = nobleBackend.signingKey(seed);
      assert.deepEqual(a.publicKey, b.publicKey);
      const message = randomBytes(i * 7);
      const signature = a.sign(message);
      assert.deepEqual(b.sign(message), signature);
      assert.ok(nodeBackend.verifySignature(a.publicKey, message, signature));
      assert.ok(nobleBackend.verifySignature(a.publicKey, message, signature));
      assert.ok(verifyEd25519(a.publicKey, message, signature));
      assert.ok(verifyEd25519Noble(a.publicKey, message, signature));
      const flipped = Uint8Array.from(signature);
      flipped[i % 64]! ^= 1;
      assert.equal(verifyEd25519(a.publicKey, message, flipped), false);
      assert.equal(verifyEd25519Noble(a.publicKey, message, flipped), false);
    }
  });
});
