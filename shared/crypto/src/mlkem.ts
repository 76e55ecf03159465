/**
 * ML-KEM-768 for both providers (Node 20 has no native ML-KEM), with sizes
 * checked up front and failures mapped to SessionError. Browser-safe.
 */

import { MLKEM768_CIPHERTEXT_SIZE, MLKEM768_PUBLIC_KEY_SIZE } from '@libertaria/protocol';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import {
  type KemEncapsulation,
  type KemKeyPair,
  MLKEM_ENCAPS_SEED_SIZE,
  MLKEM_KEYGEN_SEED_SIZE,
  MLKEM768_SECRET_KEY_SIZE,
} from './crypto-provider.js';
import { SessionError } from './errors.js';

function requireSize(bytes: Uint8Array, size: number, what: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== size) {
    throw new SessionError('INVALID_PUBLIC_KEY', `${what} must be ${size} bytes`);
  }
}

export function kemGenerate(random: (n: number) => Uint8Array, seed?: Uint8Array): KemKeyPair {
  const s = seed ?? random(MLKEM_KEYGEN_SEED_SIZE);
  if (s.length !== MLKEM_KEYGEN_SEED_SIZE) throw new RangeError(`an ML-KEM seed is ${MLKEM_KEYGEN_SEED_SIZE} bytes`);
  const { publicKey, secretKey } = ml_kem768.keygen(s);
  if (seed === undefined) s.fill(0);
  return { publicKey, secretKey };
}

export function kemEncapsulate(
  random: (n: number) => Uint8Array,
  publicKey: Uint8Array,
  seed?: Uint8Array,
): KemEncapsulation {
  requireSize(publicKey, MLKEM768_PUBLIC_KEY_SIZE, 'an ML-KEM-768 public key');
  const m = seed ?? random(MLKEM_ENCAPS_SEED_SIZE);
  if (m.length !== MLKEM_ENCAPS_SEED_SIZE) throw new RangeError(`ML-KEM encapsulation randomness is 32 bytes`);
  try {
    // noble runs the FIPS 203 §7.2 encapsulation key check (coefficients below q) and throws on failure.
    return ml_kem768.encapsulate(publicKey, m);
  } catch (err) {
    throw new SessionError('INVALID_PUBLIC_KEY', 'the ML-KEM-768 public key fails the FIPS 203 key check', {
      cause: err,
    });
  } finally {
    if (seed === undefined) m.fill(0);
  }
}

export function kemDecapsulate(cipherText: Uint8Array, secretKey: Uint8Array): Uint8Array {
  if (cipherText.length !== MLKEM768_CIPHERTEXT_SIZE) {
    throw new SessionError('DECRYPT_FAILED', `an ML-KEM-768 ciphertext is ${MLKEM768_CIPHERTEXT_SIZE} bytes`);
  }
  if (secretKey.length !== MLKEM768_SECRET_KEY_SIZE) {
    throw new RangeError(`an ML-KEM-768 secret key is ${MLKEM768_SECRET_KEY_SIZE} bytes`);
  }
  return ml_kem768.decapsulate(cipherText, secretKey);
}
