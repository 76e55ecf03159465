/**
 * The node's relay identity (docs/relay.md#relay-identity): an Ed25519 key
 * from RELAY_IDENTITY_KEY_FILE (a key file as `lrelay keygen` writes it, or a
 * PKCS#8 PEM Ed25519 private key) or RELAY_IDENTITY_KEY (the base64url seed).
 * The node signs every CHALLENGE with it; its DID is what clients pin.
 */
import { createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Ed25519Identity } from '@libertaria/identity';
import { decodeKeyFile } from '@libertaria/identity/node';
import { ConfigError } from '@libertaria/protocol';
import type { RelayConfig } from './config.js';

const MAX_KEY_FILE_BYTES = 16 * 1024;
/** RFC 8410 PKCS#8 PrivateKeyInfo of an Ed25519 key, up to its 32-byte seed. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

function seedOfPem(pem: string, path: string): Uint8Array {
  try {
    const key = createPrivateKey({ key: pem, format: 'pem' });
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType} key, not Ed25519`);
    // Re-encoded by OpenSSL as RFC 8410 PKCS#8 (prefix ‖ 32-byte seed), whatever form the file used.
    // Not a JWK export, which on Node 20 can deadlock (shared/crypto/src/crypto-node.ts, publicKeyOf).
    const der = key.export({ format: 'der', type: 'pkcs8' });
    if (
      der.length !== PKCS8_ED25519_PREFIX.length + 32 ||
      !der.subarray(0, PKCS8_ED25519_PREFIX.length).equals(PKCS8_ED25519_PREFIX)
    ) {
      throw new Error('an Ed25519 key OpenSSL does not encode as a 32-byte seed');
    }
    return new Uint8Array(der.subarray(PKCS8_ED25519_PREFIX.length));
  } catch (err) {
    throw new ConfigError(
      'RELAY_IDENTITY_KEY_FILE',
      `RELAY_IDENTITY_KEY_FILE ${JSON.stringify(path)}: not a usable PEM Ed25519 private key (${err instanceof Error ? err.message : String(err)})`,
    );
  }
}

/** Loads the node's identity key; throws ConfigError (CONFIG_INVALID) saying what is missing or wrong. */
export async function loadRelayIdentity(config: RelayConfig): Promise<Ed25519Identity> {
  const seed = config.RELAY_IDENTITY_KEY;
  if (seed !== undefined) {
    // The pattern already held it to 43 base64url characters: exactly 32 bytes.
    return Ed25519Identity.fromSeed(Buffer.from(seed, 'base64url'));
  }
  const path = config.RELAY_IDENTITY_KEY_FILE;
  if (path === undefined) {
    throw new ConfigError(
      'RELAY_IDENTITY_KEY_FILE',
      'no relay identity key: set RELAY_IDENTITY_KEY_FILE (e.g. a file made by `npx lrelay keygen --out relay.key`) or RELAY_IDENTITY_KEY; `npm start` creates one for a fresh setup (docs/relay.md#relay-identity)',
    );
  }
  let text: string;
  try {
    const bytes = await readFile(path);
    if (bytes.length > MAX_KEY_FILE_BYTES) throw new Error(`larger than ${MAX_KEY_FILE_BYTES} bytes`);
    text = bytes.toString('utf8');
  } catch (err) {
    throw new ConfigError(
      'RELAY_IDENTITY_KEY_FILE',
      `RELAY_IDENTITY_KEY_FILE ${JSON.stringify(path)} cannot be read: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  if (text.includes('-----BEGIN')) return Ed25519Identity.fromSeed(seedOfPem(text, path));
  try {
    return decodeKeyFile(text, path);
  } catch (err) {
    throw new ConfigError('RELAY_IDENTITY_KEY_FILE', err instanceof Error ? err.message : String(err));
  }
}
