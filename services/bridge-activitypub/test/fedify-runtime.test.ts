/**
 * The Node 20 gap of the pinned Fedify that fedify-runtime.ts fills: without
 * `globalThis.navigator`, Fedify 2.3.6 cannot import an Ed25519 key from JWK
 * (what every queued outbox delivery of an actor with an Ed25519 key does).
 * Each test file runs in its own process, so the first test sees Node as it is.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exportJwk, importJwk } from '@fedify/fedify';
import { importedKeyPair } from './support/keys.js';

const major = Number(process.versions.node.split('.')[0]);

describe('Fedify on this Node', () => {
  it(`imports Ed25519 JWKs once fedify-runtime is loaded (Node ${process.versions.node})`, async () => {
    // jwk-export: imported key (support/keys.ts)
    const jwk = await exportJwk((await importedKeyPair('ed25519')).privateKey);
    if (major < 21) {
      assert.equal('navigator' in globalThis, false, 'Node 20 has no navigator');
      await assert.rejects(importJwk(jwk, 'private'), /navigator is not defined/, 'the gap is still there in Fedify');
    }
    const { fedifyRuntimeReady } = await import('../src/fedify-runtime.js');
    assert.equal(fedifyRuntimeReady, true);
    const key = await importJwk(jwk, 'private');
    assert.equal(key.algorithm.name, 'Ed25519');
    const rsa = (await importedKeyPair('rsa')).privateKey;
    // jwk-export: imported key (support/keys.ts)
    assert.equal((await importJwk(await exportJwk(rsa), 'private')).algorithm.name, 'RSASSA-PKCS1-v1_5');
    assert.match((globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent ?? '', /^Node\.js\//);
  });
});
