/**
 * The NIP-44 v2 test vectors of the NIP's authors (paulmillr/nip44,
 * rust/src/nip44.vectors.json: the nostr-tools npm package ships none, and the
 * copy in the nostr-tools repository is of an earlier draft whose MACs no
 * longer match), run against the NIP-44 implementation the bridge seals with.
 * Conversation keys are also recomputed with node:crypto (ECDH x, then
 * HKDF-extract with salt "nip44-v2"), apart from the library under test.
 */
import assert from 'node:assert/strict';
import { createECDH, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import * as nip44 from 'nostr-tools/nip44';
import { getPublicKey } from 'nostr-tools/pure';
import { repoPath } from '../../../test-support/paths.js';

interface EncryptDecrypt {
  sec1: string;
  sec2: string;
  conversation_key: string;
  nonce: string;
  plaintext: string;
  ciphertext: string;
}
interface Vectors {
  v2: {
    valid: {
      get_conversation_key: { sec1: string; pub2: string; conversation_key: string }[];
      calc_padded_len: [number, number][];
      encrypt_decrypt: EncryptDecrypt[];
    };
    invalid: {
      encrypt_msg_lengths: number[];
      decrypt_msg_lengths: number[];
      get_conversation_key: { sec1: string; pub2: string; note: string }[];
      decrypt: { conversation_key: string; ciphertext: string; note: string }[];
    };
  };
}

const { v2 }: Vectors = JSON.parse(
  readFileSync(repoPath('services/bridge-nostr/test/vectors/nip44.vectors.json'), 'utf8'),
);
const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function conversationKeyByNodeCrypto(sec: string, xOnlyPub: string): string {
  const ecdh = createECDH('secp256k1');
  ecdh.setPrivateKey(Buffer.from(sec, 'hex'));
  const shared = ecdh.computeSecret(Buffer.from(`02${xOnlyPub}`, 'hex'));
  return createHmac('sha256', 'nip44-v2').update(shared).digest('hex');
}

describe('NIP-44 v2 vectors', () => {
  it(`get_conversation_key: ${v2.valid.get_conversation_key.length} keys`, () => {
    for (const v of v2.valid.get_conversation_key) {
      assert.equal(toHex(nip44.getConversationKey(hex(v.sec1), v.pub2)), v.conversation_key);
      assert.equal(conversationKeyByNodeCrypto(v.sec1, v.pub2), v.conversation_key);
    }
  });

  it(`encrypt_decrypt: ${v2.valid.encrypt_decrypt.length} exact ciphertexts with the given nonce, and back`, () => {
    for (const v of v2.valid.encrypt_decrypt) {
      const key = nip44.getConversationKey(hex(v.sec1), getPublicKey(hex(v.sec2)));
      assert.equal(toHex(key), v.conversation_key);
      // Either side derives the same key.
      assert.equal(toHex(nip44.getConversationKey(hex(v.sec2), getPublicKey(hex(v.sec1)))), v.conversation_key);
      assert.equal(nip44.encrypt(v.plaintext, key, hex(v.nonce)), v.ciphertext);
      assert.equal(nip44.decrypt(v.ciphertext, key), v.plaintext);
    }
  });

  it(`calc_padded_len: ${v2.valid.calc_padded_len.length} lengths`, () => {
    for (const [len, padded] of v2.valid.calc_padded_len) assert.equal(nip44.v2.utils.calcPaddedLen(len), padded);
  });

  it(`invalid get_conversation_key: ${v2.invalid.get_conversation_key.length} keys refused`, () => {
    for (const v of v2.invalid.get_conversation_key) {
      assert.throws(() => nip44.getConversationKey(hex(v.sec1), v.pub2), Error, v.note);
    }
  });

  it(`invalid decrypt: ${v2.invalid.decrypt.length} payloads refused (version, base64, MAC, padding)`, () => {
    for (const v of v2.invalid.decrypt) {
      assert.throws(() => nip44.decrypt(v.ciphertext, hex(v.conversation_key)), Error, v.note);
    }
  });
});
