/**
 * The Ethereum account (EOA) behind each bridged XMTP inbox.
 *
 * XMTP V3 names an inbox by the identifiers that signed its creation; the
 * bridge uses a plain secp256k1 key per bridged DID, its Ethereum address as
 * the identifier, and signs XMTP's identity requests with EIP-191
 * (`personal_sign`): keccak-256 of "\x19Ethereum Signed Message:\n" + length +
 * message, a 65-byte r ‖ s ‖ v signature with v = 27 + recovery bit. That is
 * what `@xmtp/node-sdk`'s `EOASigner` expects, without pulling viem or ethers.
 *
 * The key is random (never derived from the DID): knowing a DID tells nothing
 * about its XMTP account, and a KEK rotation cannot change anyone's address.
 */
import { BridgeError } from '@libertaria/bridge-kit';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { keccak_256 } from '@noble/hashes/sha3.js';

export const EOA_SECRET_BYTES = 32;

/** A fresh random secp256k1 secret key (32 bytes, a valid scalar). */
export function generateEoaSecret(): Uint8Array {
  return secp256k1.utils.randomSecretKey();
}

/** The lowercase `0x…` address of a secret key: the last 20 bytes of keccak-256 of the uncompressed public key. */
export function eoaAddress(secret: Uint8Array): string {
  if (secret.length !== EOA_SECRET_BYTES) {
    throw new BridgeError('BRIDGE_KEY_STORE', `an XMTP account key is ${EOA_SECRET_BYTES} bytes`);
  }
  const pub = secp256k1.getPublicKey(secret, false);
  return `0x${Buffer.from(keccak_256(pub.subarray(1)).subarray(12)).toString('hex')}`;
}

/** EIP-55 mixed-case checksum of an address, for display and for vectors from wallets. */
export function checksumAddress(address: string): string {
  const hex = address.toLowerCase().replace(/^0x/, '');
  const hash = Buffer.from(keccak_256(new TextEncoder().encode(hex))).toString('hex');
  let out = '0x';
  for (let i = 0; i < hex.length; i++) {
    out += Number.parseInt(hash[i] as string, 16) >= 8 ? (hex[i] as string).toUpperCase() : hex[i];
  }
  return out;
}

/** keccak-256 of the EIP-191 version 0x45 prefix and the message. */
export function eip191Hash(message: string | Uint8Array): Uint8Array {
  const bytes = typeof message === 'string' ? new TextEncoder().encode(message) : message;
  const prefix = new TextEncoder().encode(`\x19Ethereum Signed Message:\n${bytes.length}`);
  const data = new Uint8Array(prefix.length + bytes.length);
  data.set(prefix, 0);
  data.set(bytes, prefix.length);
  return keccak_256(data);
}

/** `personal_sign`: 65 bytes r ‖ s ‖ v (v = 27 or 28), low-s, as Ethereum wallets produce. */
export function signPersonalMessage(secret: Uint8Array, message: string | Uint8Array): Uint8Array {
  // noble's 'recovered' format is recovery ‖ r ‖ s; Ethereum puts v last.
  const sig = secp256k1.sign(eip191Hash(message), secret, { prehash: false, format: 'recovered' });
  const out = new Uint8Array(65);
  out.set(sig.subarray(1), 0);
  out[64] = (sig[0] as number) + 27;
  return out;
}

/** The address that made a `personal_sign` signature (for tests and checks). */
export function recoverPersonalSigner(message: string | Uint8Array, signature: Uint8Array): string {
  if (signature.length !== 65) throw new BridgeError('BAD_FIELD', 'a personal_sign signature is 65 bytes');
  const v = signature[64] as number;
  const recovered = new Uint8Array(65);
  recovered[0] = v >= 27 ? v - 27 : v;
  recovered.set(signature.subarray(0, 64), 1);
  const point = secp256k1.recoverPublicKey(recovered, eip191Hash(message), { prehash: false });
  const uncompressed = secp256k1.Point.fromBytes(point).toBytes(false);
  return `0x${Buffer.from(keccak_256(uncompressed.subarray(1)).subarray(12)).toString('hex')}`;
}
