/** Identities of the Libertaria relay cluster: keys, DIDs, routing hints, key files and relay auth. */
export {
  AUTH_DOMAIN,
  AUTH_MAX_FIELD_BYTES,
  AUTH_NONCE_LENGTH,
  type AuthParams,
  authTranscript,
  MIGRATE_DOMAIN,
  migrationTranscript,
  type PeerSigner,
  signAuth,
  type VerifyAuthParams,
  verifyAuth,
} from './auth.js';
export {
  didMatchesKey,
  formatDidKey,
  formatLibertariaDid,
  HINT_LENGTH,
  hintFromDid,
  hintFromHex,
  hintToHex,
  KEY_HASH_LENGTH,
  MAX_DID_LENGTH,
  type ParsedDid,
  parseDid,
  routingHint,
} from './did.js';
export {
  decodeKeyFile,
  encodeKeyFile,
  KEY_FILE_MODE,
  KEY_FILE_TYPE,
  KEY_FILE_VERSION,
  type KeyFileContents,
  readKeyFile,
  type WriteKeyFileOptions,
  writeKeyFile,
} from './keyfile.js';
export {
  Ed25519Identity,
  PUBLIC_KEY_LENGTH,
  publicKeyObject,
  SEED_LENGTH,
  SIGNATURE_LENGTH,
  verifyEd25519,
} from './keys.js';
