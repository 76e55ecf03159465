/**
 * The PQXDH initial message (initiator → responder), version 1:
 *
 *   0    u8    version (1)
 *   1    u8    flags: 0x01 a one-time X25519 prekey was used,
 *                     0x02 the KEM prekey is one-time (else last-resort);
 *                     other bits zero
 *   2    32    IK_A: initiator's Ed25519 identity key (its DID key)
 *   34   32    IK_dh_A: initiator's X25519 identity DH key (canonical)
 *   66   64    Ed25519 signature by IK_A over the prekey transcript of
 *              IK_dh_A (kind 1, id 0): binds IK_dh_A to the DID
 *   130  32    EK_A: ephemeral X25519 key (canonical)
 *   162  u32   id of the responder's signed prekey SPK_B
 *   166  u32   id of the responder's KEM prekey (one-time or last-resort)
 *   170  [u32] id of the responder's one-time X25519 prekey, if flag 0x01
 *   ...  1088  ML-KEM-768 ciphertext
 *   ...  ...   the first Double Ratchet message (ratchet-message.ts), to the end
 *
 * Integers are big-endian. Decoding is strict (ProtocolError with a codec
 * code): wrong version, undefined flag bits, non-canonical X25519 keys (the
 * top bit or a value ≥ p would be ignored by X25519, letting a modified
 * message through), a short ratchet message or any truncation.
 */
import { ED25519_SIGNATURE_SIZE, MLKEM768_CIPHERTEXT_SIZE, ProtocolError } from '@libertaria/protocol';
import { ByteReader, ByteWriter } from './bytes.js';
import { decodeRatchetMessage } from './ratchet-message.js';

export const INITIAL_MESSAGE_VERSION = 1;
export const InitialMessageFlags = { ONE_TIME_PREKEY: 0x01, ONE_TIME_KEM_PREKEY: 0x02 } as const;
const KNOWN_FLAGS = InitialMessageFlags.ONE_TIME_PREKEY | InitialMessageFlags.ONE_TIME_KEM_PREKEY;
/** Everything before the optional one-time prekey id. */
const FIXED_PREFIX_SIZE = 1 + 1 + 32 + 32 + ED25519_SIGNATURE_SIZE + 32 + 4 + 4;

export interface InitialMessage {
  initiatorIdentityKey: Uint8Array;
  initiatorIdentityDhKey: Uint8Array;
  initiatorIdentityDhSignature: Uint8Array;
  ephemeralKey: Uint8Array;
  signedPrekeyId: number;
  kemPrekeyId: number;
  /** True when kemPrekeyId names a one-time KEM prekey, false for the last-resort one. */
  kemPrekeyOneTime: boolean;
  oneTimePrekeyId?: number;
  kemCipherText: Uint8Array;
  /** The first ratchet message, whole (header ‖ ciphertext). */
  ratchetMessage: Uint8Array;
}

export function initialMessageSize(m: InitialMessage): number {
  return (
    FIXED_PREFIX_SIZE + (m.oneTimePrekeyId === undefined ? 0 : 4) + MLKEM768_CIPHERTEXT_SIZE + m.ratchetMessage.length
  );
}

export function encodeInitialMessage(m: InitialMessage): Uint8Array {
  const flags =
    (m.oneTimePrekeyId === undefined ? 0 : InitialMessageFlags.ONE_TIME_PREKEY) |
    (m.kemPrekeyOneTime ? InitialMessageFlags.ONE_TIME_KEM_PREKEY : 0);
  const w = new ByteWriter(initialMessageSize(m))
    .u8(INITIAL_MESSAGE_VERSION)
    .u8(flags)
    .raw(m.initiatorIdentityKey)
    .raw(m.initiatorIdentityDhKey)
    .raw(m.initiatorIdentityDhSignature)
    .raw(m.ephemeralKey)
    .u32(m.signedPrekeyId)
    .u32(m.kemPrekeyId);
  if (m.oneTimePrekeyId !== undefined) w.u32(m.oneTimePrekeyId);
  return w.raw(m.kemCipherText).raw(m.ratchetMessage).done();
}

export function decodeInitialMessage(bytes: Uint8Array): InitialMessage {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError('BAD_FIELD', 'initial message: not bytes');
  const r = new ByteReader(bytes, 'initial message');
  const version = r.u8('version');
  if (version !== INITIAL_MESSAGE_VERSION) {
    throw new ProtocolError('UNSUPPORTED_VERSION', `initial message: version ${version} is not supported`);
  }
  const flags = r.u8('flags');
  if (flags & ~KNOWN_FLAGS) throw new ProtocolError('BAD_FIELD', 'initial message: undefined flag bits are set');
  const initiatorIdentityKey = r.bytesN(32, 'initiator identity key');
  const initiatorIdentityDhKey = r.x25519Key('initiator identity DH key');
  const initiatorIdentityDhSignature = r.bytesN(ED25519_SIGNATURE_SIZE, 'identity DH key signature');
  const ephemeralKey = r.x25519Key('ephemeral key');
  const signedPrekeyId = r.u32('signed prekey id');
  const kemPrekeyId = r.u32('KEM prekey id');
  const oneTimePrekeyId = flags & InitialMessageFlags.ONE_TIME_PREKEY ? r.u32('one-time prekey id') : undefined;
  const kemCipherText = r.bytesN(MLKEM768_CIPHERTEXT_SIZE, 'KEM ciphertext');
  const ratchetMessage = r.rest();
  decodeRatchetMessage(ratchetMessage); // validates its form now, so a bad one is a codec error here
  const message: InitialMessage = {
    initiatorIdentityKey,
    initiatorIdentityDhKey,
    initiatorIdentityDhSignature,
    ephemeralKey,
    signedPrekeyId,
    kemPrekeyId,
    kemPrekeyOneTime: (flags & InitialMessageFlags.ONE_TIME_KEM_PREKEY) !== 0,
    kemCipherText,
    ratchetMessage,
  };
  if (oneTimePrekeyId !== undefined) message.oneTimePrekeyId = oneTimePrekeyId;
  return message;
}
