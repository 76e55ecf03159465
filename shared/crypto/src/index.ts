/**
 * The end-to-end session layer: PQXDH, the Double Ratchet, persistent,
 * ephemeral and 0-RTT sessions (docs/crypto.md). Relays only ever carry what
 * these functions produce.
 *
 * Browser-safe: nothing here imports a Node module. The node:crypto provider
 * is a separate import (`./crypto-node.js`, `nodeCrypto`) so a browser bundle
 * never pulls it in; browsers use `nobleCrypto`.
 */

/** The bounds-checked reader and writer that serialized session state (DoubleRatchet.writeTo / readFrom) goes through. */
export { ByteReader, ByteWriter } from './bytes.js';
export { nobleCrypto } from './crypto-noble.js';
export {
  AEAD_KEY_SIZE,
  AEAD_NONCE_SIZE,
  AEAD_TAG_SIZE,
  type CryptoProvider,
  type KemEncapsulation,
  type KemKeyPair,
  type X25519KeyPair,
} from './crypto-provider.js';
export { DEFAULT_RATCHET_LIMITS, DoubleRatchet, type RatchetLimits } from './double-ratchet.js';
export {
  type AcceptEphemeralParams,
  acceptEphemeralRequest,
  DEFAULT_EPHEMERAL_TTL_MS,
  decodeEphemeralRequest,
  decodeEphemeralResponse,
  EPHEMERAL_RESPONSE_RANDOM_SIZE,
  type EphemeralRequestParams,
  type EphemeralResponder,
  EphemeralSession,
} from './ephemeral.js';
export { SessionError } from './errors.js';
export {
  aeadKeys,
  kdfCk,
  kdfRk,
  MESSAGE_KEYS_INFO,
  messageAeadKeys,
  PQXDH_INFO,
  pqxdhKdf,
  ROOT_KDF_INFO,
} from './kdf.js';
export {
  type LifecycleEvent,
  type LifecycleLogger,
  type LifecycleState,
  type LifecycleTransition,
  nextState,
  SessionLifecycle,
} from './lifecycle.js';
export {
  encodeIdentity,
  type PqxdhInitiatorParams,
  type PqxdhInitiatorResult,
  type PqxdhResponderParams,
  type PqxdhResponderResult,
  type PublicIdentity,
  pqxdhInitiate,
  pqxdhRespond,
  SESSION_AD_SIZE,
  sessionAssociatedData,
} from './pqxdh.js';
export { decodeInitialMessage, encodeInitialMessage, type InitialMessage } from './pqxdh-message.js';
export {
  InMemoryOneTimePrekeyStore,
  InMemoryResponderPrekeys,
  type OneTimePrekeyKind,
  type OneTimePrekeyStore,
  type ResponderPrekeys,
} from './prekey-store.js';
export {
  generateIdentityDhKey,
  generateKemPrekey,
  generateOneTimePrekeys,
  generatePrekeyPublication,
  generateSignedPrekey,
  type IdentityDhKey,
  identityDhKeyFromPrivate,
  type LocalIdentity,
  type PrekeySecrets,
  type PublicationOptions,
  prekeyTranscript,
  signPrekey,
  verifyPrekeyBundle,
  verifyPrekeySignature,
} from './prekeys.js';
export { decodeRatchetMessage, RATCHET_HEADER_SIZE, type RatchetHeader } from './ratchet-message.js';
export {
  DEFAULT_ZERO_RTT_MAX_AGE_MS,
  decodeZeroRttMessage,
  type Open0RttParams,
  type Opened0Rtt,
  open0Rtt,
  type ResumptionTicket,
  seal0Rtt,
} from './resumption.js';
export {
  type AcceptSessionParams,
  acceptPersistentSession,
  type CreatePersistentSessionParams,
  createPersistentSession,
  DEFAULT_MAX_TICKETS,
  DEFAULT_ROTATION_POLICY,
  type InitiateSessionParams,
  initiatePersistentSession,
  PersistentSession,
  type RotationPolicy,
  type RotationReason,
  type SessionOptions,
  type SessionRole,
} from './session.js';
export { AllTicketStores, InMemoryTicketStore, type TicketStore } from './ticket-store.js';
