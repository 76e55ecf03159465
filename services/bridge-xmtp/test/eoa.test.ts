/**
 * The EOA keys behind XMTP inboxes, checked against vectors produced by
 * Ethereum tooling: Hardhat's first default account, and web3.js's
 * `accounts.sign` example (its documented signature of "Some data").
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  checksumAddress,
  eoaAddress,
  generateEoaSecret,
  recoverPersonalSigner,
  signPersonalMessage,
} from '../src/eoa.js';

const hex = (h: string) => Uint8Array.from(Buffer.from(h, 'hex'));

describe('EOA keys (secp256k1, EIP-191)', () => {
  it('derives the address Ethereum tools give for a key', () => {
    assert.equal(
      checksumAddress(eoaAddress(hex('ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80'))),
      '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266',
    );
  });

  it('signs personal messages as web3.js does, and the signer is recovered', () => {
    const key = hex('4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318');
    const address = eoaAddress(key);
    assert.equal(checksumAddress(address), '0x2c7536E3605D9C16a7a3D7b1898e529396a65c23');
    const sig = signPersonalMessage(key, 'Some data');
    assert.equal(
      Buffer.from(sig).toString('hex'),
      'b91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a0291c',
    );
    assert.equal(recoverPersonalSigner('Some data', sig), address);
    assert.notEqual(recoverPersonalSigner('Some other data', sig), address);
  });

  it('makes fresh random keys with lowercase 0x addresses, and refuses a key of the wrong size', () => {
    const a = eoaAddress(generateEoaSecret());
    const b = eoaAddress(generateEoaSecret());
    assert.match(a, /^0x[0-9a-f]{40}$/);
    assert.notEqual(a, b);
    assert.throws(() => eoaAddress(new Uint8Array(31)), { code: 'BRIDGE_KEY_STORE' });
  });
});
