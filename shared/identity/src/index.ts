/** Identities of the Libertaria relay cluster: keys, DIDs, routing hints, key files and relay auth. */
export {
  AUTH_DOMAIN,
  AUTH_MAX_FIELD_BYTES,
  AUTH_NONCE_LENGTH,
  type AuthParams,
  authTranscript,
  CHALLENGE_DOMAIN,
  CHANNEL_BINDING_LENGTH,
  MIGRATE_DOMAIN,
  migrationTranscript,
  type PeerSigner,
  RELAY_KEY_LENGTH,
  relayChallengeTranscript,
  signAuth,
  TLS_EXPORTER_LABEL,
  type VerifyAuthParams,
  verifyAuth,
  verifyRelayChallenge,
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
  ED25519_ORDER,
  isCanonicalEd25519Scalar,
  isStrictEd25519Point,
  passesEd25519StrictRules,
} from './ed25519-strict.js';
export {
  ED25519_BACKEND,
  Ed25519Identity,
  PUBLIC_KEY_LENGTH,
  SEED_LENGTH,
  SIGNATURE_LENGTH,
  verifyEd25519,
  verifyEd25519Noble,
} from './keys.js';
