/**
 * Known-answer vectors. session-kdf.json holds fixed inputs and the outputs
 * of every session-layer KDF step and of a full PQXDH; docs/crypto.md carries
 * the same table. This test checks (1) the doc table equals the JSON, (2)
 * both providers reproduce every output from the inputs, and (3) ML-KEM-768
 * reproduces the NIST ACVP vectors in mlkem768-fips203.json.
 *
 * SESSION_VECTORS_OUT=<file> writes the vectors recomputed from the JSON's
 * inputs to <file> and the doc table to <file>.md, for regenerating both
 * after an intended change (review the diff!).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  type CryptoProvider,
  InMemoryOneTimePrekeyStore,
  InMemoryResponderPrekeys,
  identityDhKeyFromPrivate,
  nobleCrypto,
  pqxdhInitiate,
  pqxdhRespond,
  signPrekey,
} from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity } from '@libertaria/identity';
import { type PrekeyBundle, PrekeyKind } from '@libertaria/protocol';
import { repoPath } from '../../../test-support/paths.js';
import { hex, unhex } from '../../../test-support/session-fixtures.js';
import { kdfCk, kdfRk, messageAeadKeys, sessionIdFromSharedKey } from '../src/kdf.js';

type Fields = Record<string, string>;
interface Vector {
  name: string;
  inputs: Fields;
  outputs: Fields;
}
interface VectorFile {
  description: string;
  vectors: Vector[];
}

const vectorFile = JSON.parse(
  readFileSync(repoPath('shared/crypto/test/vectors/session-kdf.json'), 'utf8'),
) as VectorFile;
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function input(v: Vector, field: string): Uint8Array {
  const value = v.inputs[field];
  assert.ok(value !== undefined, `${v.name}: input ${field} missing`);
  return unhex(value);
}

/** Computes every vector's outputs from its inputs. */
async function compute(p: CryptoProvider, v: Vector): Promise<Fields> {
  switch (v.name) {
    case 'kdf-rk': {
      const step = kdfRk(p, input(v, 'rootKey'), input(v, 'dhOutput'));
      return { rootKey: hex(step.rootKey), chainKey: hex(step.chainKey) };
    }
    case 'kdf-ck': {
      const first = kdfCk(p, input(v, 'chainKey'));
      const second = kdfCk(p, first.chainKey);
      return {
        messageKey0: hex(first.messageKey),
        chainKey1: hex(first.chainKey),
        messageKey1: hex(second.messageKey),
        chainKey2: hex(second.chainKey),
      };
    }
    case 'message-keys': {
      const { key, nonce } = messageAeadKeys(p, input(v, 'messageKey'));
      const sealed = p.aeadSeal(key, nonce, input(v, 'plaintext'), input(v, 'associatedData'));
      return { aeadKey: hex(key), nonce: hex(nonce), sealed: hex(sealed) };
    }
    case 'pqxdh':
      return computePqxdh(p, v);
    default:
      throw new Error(`unknown vector ${v.name}`);
  }
}

/** Ids used by the PQXDH vector: signed prekey 1, one-time prekey 2, one-time KEM prekey 3. */
async function computePqxdh(p: CryptoProvider, v: Vector): Promise<Fields> {
  const alice = Ed25519Identity.fromSeed(input(v, 'aliceIdentitySeed'));
  const bob = Ed25519Identity.fromSeed(input(v, 'bobIdentitySeed'));
  const aliceDh = identityDhKeyFromPrivate(p, alice, input(v, 'aliceIdentityDhPrivate'));
  const bobDh = identityDhKeyFromPrivate(p, bob, input(v, 'bobIdentityDhPrivate'));
  const spkPrivate = input(v, 'bobSignedPrekeyPrivate');
  const opkPrivate = input(v, 'bobOneTimePrekeyPrivate');
  const spk = p.x25519PublicKey(spkPrivate);
  const opk = p.x25519PublicKey(opkPrivate);
  const kem = p.kemGenerate(input(v, 'bobKemKeygenSeed'));
  const bundle: PrekeyBundle = {
    identityKey: bob.publicKey,
    identityDhKey: { id: 0, publicKey: bobDh.publicKey, signature: bobDh.signature },
    signedPrekey: { id: 1, publicKey: spk, signature: signPrekey(bob, PrekeyKind.SIGNED_X25519, 1, spk) },
    // The last-resort key is not used when a one-time KEM key is present; any signed key will do.
    lastResortKemPrekey: {
      id: 4,
      publicKey: kem.publicKey,
      signature: signPrekey(bob, PrekeyKind.LAST_RESORT_KEM, 4, kem.publicKey),
    },
    oneTimePrekey: { id: 2, publicKey: opk },
    oneTimeKemPrekey: {
      id: 3,
      publicKey: kem.publicKey,
      signature: signPrekey(bob, PrekeyKind.ONE_TIME_KEM, 3, kem.publicKey),
    },
  };
  const ephemeralPrivateKey = input(v, 'aliceEphemeralPrivate');
  const kemSeed = input(v, 'kemEncapsulationSeed');
  const x = pqxdhInitiate({
    provider: p,
    identity: { signer: alice, identityDh: aliceDh },
    peerDid: bob.did,
    bundle,
    deterministic: { ephemeralPrivateKey, kemSeed },
  });
  // The responder must derive the same SK from the same message.
  const store = new InMemoryOneTimePrekeyStore();
  store.add('x25519', 2, opkPrivate);
  store.add('kem', 3, kem.secretKey);
  const prekeys = new InMemoryResponderPrekeys({ signer: bob, identityDh: bobDh }, store);
  prekeys.addSignedPrekey(1, { privateKey: spkPrivate, publicKey: spk });
  const y = await pqxdhRespond({ provider: p, prekeys, message: { ...x.message, ratchetMessage: new Uint8Array() } });
  assert.equal(hex(y.sharedKey), hex(x.sharedKey), 'initiator and responder disagree on SK');
  assert.equal(hex(y.ad), hex(x.ad));
  const { sharedSecret } = p.kemEncapsulate(kem.publicKey, kemSeed);
  return {
    aliceIdentityKey: hex(alice.publicKey),
    aliceIdentityDhKey: hex(aliceDh.publicKey),
    bobIdentityKey: hex(bob.publicKey),
    bobIdentityDhKey: hex(bobDh.publicKey),
    ephemeralKey: hex(x.message.ephemeralKey),
    dh1: hex(p.x25519(aliceDh.privateKey, spk)),
    dh2: hex(p.x25519(ephemeralPrivateKey, bobDh.publicKey)),
    dh3: hex(p.x25519(ephemeralPrivateKey, spk)),
    dh4: hex(p.x25519(ephemeralPrivateKey, opk)),
    kemPublicKeySha256: sha256(kem.publicKey),
    kemCipherTextSha256: sha256(x.message.kemCipherText),
    kemSharedSecret: hex(sharedSecret),
    sharedKey: hex(x.sharedKey),
    associatedData: hex(x.ad),
    sessionId: hex(sessionIdFromSharedKey(p, x.sharedKey)),
  };
}

/** The doc table rows, in the JSON's order: | vector | in/out | field | hex |. */
function tableRows(file: VectorFile): string[] {
  const rows: string[] = [];
  for (const v of file.vectors) {
    for (const [k, value] of Object.entries(v.inputs)) rows.push(`| ${v.name} | in | ${k} | \`${value}\` |`);
    for (const [k, value] of Object.entries(v.outputs)) rows.push(`| ${v.name} | out | ${k} | \`${value}\` |`);
  }
  return rows;
}

describe('session known-answer vectors', () => {
  it('docs/crypto.md carries exactly the vectors of session-kdf.json', () => {
    const doc = readFileSync(repoPath('docs/crypto.md'), 'utf8');
    const block = /<!-- session-vectors:begin -->\n([\s\S]*?)<!-- session-vectors:end -->/.exec(doc);
    assert.ok(block, 'docs/crypto.md lacks the session-vectors markers');
    const rows = block[1]!.split('\n').filter((line) => /^\| [a-z]/.test(line) && !line.startsWith('| vector |'));
    assert.deepEqual(rows, tableRows(vectorFile));
  });

  for (const p of [nodeCrypto, nobleCrypto]) {
    it(`the ${p.name} provider reproduces every vector`, async () => {
      const out = process.env.SESSION_VECTORS_OUT;
      if (out && p === nodeCrypto) {
        const computed: VectorFile = {
          ...vectorFile,
          vectors: await Promise.all(vectorFile.vectors.map(async (v) => ({ ...v, outputs: await compute(p, v) }))),
        };
        writeFileSync(out, `${JSON.stringify(computed, null, 2)}\n`);
        const header = ['| vector | | field | value (hex) |', '| --- | --- | --- | --- |'];
        writeFileSync(`${out}.md`, `${[...header, ...tableRows(computed)].join('\n')}\n`);
      }
      for (const v of vectorFile.vectors) {
        assert.deepEqual(await compute(p, v), v.outputs, `vector ${v.name}`);
      }
    });
  }
});

interface MlKemVectors {
  keyGen: { tcId: number; d: string; z: string; ek: string; dkPke: string; hEk: string }[];
  encapsulation: { tcId: number; ek: string; m: string; c: string; k: string }[];
}

describe('ML-KEM-768 against NIST ACVP (FIPS 203) vectors', () => {
  const nist = JSON.parse(
    readFileSync(repoPath('shared/crypto/test/vectors/mlkem768-fips203.json'), 'utf8'),
  ) as MlKemVectors;
  for (const p of [nodeCrypto, nobleCrypto]) {
    it(`${p.name}: deterministic key generation from d ‖ z`, () => {
      assert.ok(nist.keyGen.length > 0);
      for (const t of nist.keyGen) {
        const { publicKey, secretKey } = p.kemGenerate(unhex(t.d + t.z));
        assert.equal(hex(publicKey), t.ek, `keyGen tcId ${t.tcId}: ek`);
        assert.equal(hex(secretKey), t.dkPke + t.ek + t.hEk + t.z, `keyGen tcId ${t.tcId}: dk`);
        // And the key pair works: what we encapsulate, it decapsulates.
        const e = p.kemEncapsulate(publicKey);
        assert.equal(hex(p.kemDecapsulate(e.cipherText, secretKey)), hex(e.sharedSecret));
      }
    });
    it(`${p.name}: encapsulation from m`, () => {
      assert.ok(nist.encapsulation.length > 0);
      for (const t of nist.encapsulation) {
        const { cipherText, sharedSecret } = p.kemEncapsulate(unhex(t.ek), unhex(t.m));
        assert.equal(hex(cipherText), t.c, `encapsulation tcId ${t.tcId}: c`);
        assert.equal(hex(sharedSecret), t.k, `encapsulation tcId ${t.tcId}: K`);
      }
    });
  }
});
