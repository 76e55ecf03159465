/**
 * The two CryptoProviders must be interchangeable: byte-identical outputs on
 * fixed inputs (so a Node peer and a browser peer derive the same keys), the
 * same typed errors, and a browser build of the core with no Node module.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { type CryptoProvider, kdfCk, kdfRk, messageAeadKeys, nobleCrypto, SessionError } from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { repoPath } from '../../../test-support/paths.js';
import { hex, unhex } from '../../../test-support/session-fixtures.js';

const providers: CryptoProvider[] = [nodeCrypto, nobleCrypto];
const bytes = (n: number, start = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i * 7) & 0xff);

/** Runs `f` on both providers and asserts the hex outputs agree; returns node's. */
function same(what: string, f: (p: CryptoProvider) => Uint8Array | Uint8Array[]): string[] {
  const [a, b] = providers.map((p) => [f(p)].flat().map(hex));
  assert.deepEqual(a, b, `${what}: node and noble differ`);
  return a!;
}

function throwsCode(f: () => unknown, code: string): void {
  assert.throws(f, (err: unknown) => err instanceof SessionError && err.code === code);
}

describe('crypto providers agree byte for byte', () => {
  it('X25519 public keys and shared secrets (RFC 7748 §6.1 vector included)', () => {
    // RFC 7748 section 6.1.
    const alicePriv = unhex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
    const bobPub = unhex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
    for (const p of providers) {
      assert.equal(
        hex(p.x25519PublicKey(alicePriv)),
        '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
      );
      assert.equal(
        hex(p.x25519(alicePriv, bobPub)),
        '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742',
      );
    }
    for (let i = 0; i < 8; i++) {
      same('x25519', (p) => [
        p.x25519PublicKey(bytes(32, i)),
        p.x25519(bytes(32, i), p.x25519PublicKey(bytes(32, i + 100))),
      ]);
    }
  });

  it('HKDF-SHA256 (RFC 5869 test case 1) and HMAC-SHA256 (RFC 4231 test case 2)', () => {
    const ikm = new Uint8Array(22).fill(0x0b);
    const salt = unhex('000102030405060708090a0b0c');
    const info = unhex('f0f1f2f3f4f5f6f7f8f9');
    const okm = '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865';
    const mac = '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843';
    for (const p of providers) {
      assert.equal(hex(p.hkdf(ikm, salt, info, 42)), okm);
      assert.equal(
        hex(p.hmac(new TextEncoder().encode('Jefe'), new TextEncoder().encode('what do ya want for nothing?'))),
        mac,
      );
      // An empty salt is HashLen zeros (RFC 5869 §2.2) in both.
      assert.equal(hex(p.hkdf(ikm, new Uint8Array(0), info, 32)), hex(p.hkdf(ikm, new Uint8Array(32), info, 32)));
    }
    for (const n of [1, 32, 64, 100]) same(`hkdf ${n}`, (p) => p.hkdf(bytes(40), bytes(32, 3), bytes(9, 5), n));
  });

  it('the ratchet KDF chain: KDF_RK, KDF_CK and message-key expansion', () => {
    same('chain', (p) => {
      const out: Uint8Array[] = [];
      let { rootKey, chainKey } = kdfRk(p, bytes(32, 1), bytes(32, 2));
      out.push(rootKey, chainKey);
      for (let i = 0; i < 5; i++) {
        const step = kdfCk(p, chainKey);
        const keys = messageAeadKeys(p, step.messageKey);
        out.push(step.messageKey, keys.key, keys.nonce);
        chainKey = step.chainKey;
      }
      ({ rootKey, chainKey } = kdfRk(p, rootKey, bytes(32, 9)));
      return [...out, rootKey, chainKey];
    });
  });

  it('ChaCha20-Poly1305 (RFC 8439 §2.8.2) and cross-opening', () => {
    const key = unhex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
    const nonce = unhex('070000004041424344454647');
    const ad = unhex('50515253c0c1c2c3c4c5c6c7');
    const pt = new TextEncoder().encode(
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
    );
    const tag = '1ae10b594f09e26a7e902ecbd0600691';
    for (const p of providers) {
      const sealed = p.aeadSeal(key, nonce, pt, ad);
      assert.equal(hex(sealed.subarray(0, 16)), 'd31a8d34648e60db7b86afbc53ef7ec2');
      assert.equal(hex(sealed.subarray(sealed.length - 16)), tag);
      for (const q of providers) assert.deepEqual(q.aeadOpen(key, nonce, sealed, ad), pt);
    }
    for (const n of [0, 1, 63, 64, 1024])
      same(`aead ${n}`, (p) => p.aeadSeal(bytes(32), bytes(12), bytes(n), bytes(20)));
  });

  it('ML-KEM-768: same keys from a seed, and each decapsulates what the other encapsulated', () => {
    const [pkNode] = same('kem keygen', (p) => p.kemGenerate(bytes(64, 4)).publicKey);
    same('kem encaps', (p) => {
      const e = p.kemEncapsulate(unhex(pkNode!), bytes(32, 8));
      return [e.cipherText, e.sharedSecret];
    });
    const kp = nodeCrypto.kemGenerate();
    const e = nobleCrypto.kemEncapsulate(kp.publicKey);
    assert.deepEqual(nodeCrypto.kemDecapsulate(e.cipherText, kp.secretKey), e.sharedSecret);
  });

  it('Ed25519 verification (RFC 8032 test 1) agrees, including on malformed input', () => {
    const pk = unhex('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    const sig = unhex(
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    );
    const flipped = Uint8Array.from(sig);
    flipped[63]! ^= 0x10; // S ≥ L: non-canonical, both must refuse
    for (const p of providers) {
      assert.equal(p.verifyEd25519(pk, new Uint8Array(0), sig), true);
      assert.equal(p.verifyEd25519(pk, Uint8Array.of(1), sig), false);
      assert.equal(p.verifyEd25519(pk, new Uint8Array(0), flipped), false);
      assert.equal(p.verifyEd25519(pk.subarray(1), new Uint8Array(0), sig), false);
      assert.equal(p.verifyEd25519(pk, new Uint8Array(0), sig.subarray(1)), false);
    }
  });
});

describe('crypto providers fail the same typed way', () => {
  for (const p of providers) {
    it(`${p.name}: low-order X25519 keys, bad tags, bad KEM keys`, () => {
      throwsCode(() => p.x25519(bytes(32), new Uint8Array(32)), 'INVALID_PUBLIC_KEY');
      // u = 1 has order 1 on the curve (a low-order point): the shared secret is all zeros.
      throwsCode(() => p.x25519(bytes(32), Uint8Array.of(1, ...new Uint8Array(31))), 'INVALID_PUBLIC_KEY');
      throwsCode(() => p.x25519(bytes(32), bytes(31)), 'INVALID_PUBLIC_KEY');
      const sealed = p.aeadSeal(bytes(32), bytes(12), bytes(10), bytes(3));
      sealed[sealed.length - 1]! ^= 1;
      throwsCode(() => p.aeadOpen(bytes(32), bytes(12), sealed, bytes(3)), 'DECRYPT_FAILED');
      throwsCode(() => p.aeadOpen(bytes(32), bytes(12), bytes(15), bytes(3)), 'DECRYPT_FAILED');
      // An encapsulation key whose coefficients are not reduced mod q fails the FIPS 203 check.
      throwsCode(() => p.kemEncapsulate(new Uint8Array(1184).fill(0xff)), 'INVALID_PUBLIC_KEY');
      throwsCode(() => p.kemEncapsulate(new Uint8Array(100)), 'INVALID_PUBLIC_KEY');
      throwsCode(() => p.kemDecapsulate(new Uint8Array(10), p.kemGenerate().secretKey), 'DECRYPT_FAILED');
      assert.equal(p.randomBytes(100_000).length, 100_000);
      assert.notDeepEqual(p.randomBytes(32), p.randomBytes(32));
    });
  }
});

describe('browser safety of the session core', () => {
  const core = [
    'bytes.ts',
    'crypto-provider.ts',
    'crypto-noble.ts',
    'mlkem.ts',
    'kdf.ts',
    'double-ratchet.ts',
    'ratchet-message.ts',
    'pqxdh.ts',
    'pqxdh-message.ts',
    'prekeys.ts',
    'prekey-store.ts',
    'session.ts',
    'session-state.ts',
    'ephemeral.ts',
    'resumption.ts',
    'ticket-store.ts',
    'errors.ts',
    'index.ts',
  ];
  it('no core module imports a Node built-in or the node provider', () => {
    for (const file of core) {
      const source = readFileSync(repoPath('shared/crypto/src', file), 'utf8');
      assert.doesNotMatch(source, /from ['"]node:/, `${file} imports a Node module`);
      assert.doesNotMatch(
        source,
        /from ['"][^'"]*(crypto-node|identity\/keys)/,
        `${file} imports the node provider or node-only identity code`,
      );
    }
  });
  it('the session index bundles for a browser with no Node module', async () => {
    const { build } = await import('esbuild');
    const result = await build({
      entryPoints: [repoPath('shared/crypto/src/index.ts')],
      bundle: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      logLevel: 'silent',
    });
    assert.equal(result.errors.length, 0);
    const code = result.outputFiles[0]!.text;
    assert.doesNotMatch(code, /require\(["']node:|from ["']node:/);
    assert.match(code, /Libertaria_PQXDH_X25519_SHA-256_ML-KEM-768/);
  });
});
