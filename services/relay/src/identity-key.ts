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

function seedOfPem(pem: string, path: string): Uint8Array {
  try {
    const key = createPrivateKey({ key: pem, format: 'pem' });
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType} key, not Ed25519`);
    const jwk = key.export({ format: 'jwk' });
    if (typeof jwk.d !== 'string') throw new Error('no private part');
    return Buffer.from(jwk.d, 'base64url');
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
