/**
 * The pre-session payload envelope.
 *
 * Until end-to-end sealed sessions exist, a receiver needs to know which DID
 * sent a payload. The relay authenticates the sender's routing hint (the
 * SEND's source must be the hint of the key that signed AUTH), but a hint is
 * a hash, not a DID. So the SDK puts the sender's DID in front of the
 * application bytes, and the receiver accepts it only if hintFromDid(DID)
 * equals the DELIVER's source hint: a peer cannot claim a DID whose key it
 * did not authenticate with.
 *
 *     offset  size  field
 *     0       1     version      1
 *     1       1     didLength    1..128
 *     2       n     did          printable ASCII (0x21..0x7e), a did:libertaria or did:key DID
 *     2+n     rest  body         application bytes
 *
 * A control envelope has the same layout with version byte 3
 * (CONTROL_ENVELOPE_VERSION): the SDK's own notices between peers (a path
 * update after a migration), sealed like messages when sessions are on, and
 * never shown to the application as messages. The relay can tell a control
 * envelope from a message by that byte; not what it says.
 *
 * Decoding is strict (ProtocolError): TRUNCATED when the input ends early,
 * UNSUPPORTED_VERSION for another version, BAD_FIELD for a zero or too long
 * DID length, a non-ASCII byte or a string that is not a valid DID. The
 * sender check is RelayError SOURCE_MISMATCH. See docs/client.md.
 */

import { hintFromDid, parseDid } from '@libertaria/identity';
import { LibertariaError, MAX_DID_BYTES, ProtocolError, RelayError } from '@libertaria/protocol';
import { bytesEqual, toHex } from './bytes.js';
import { ClientErrorCode } from './codes.js';

export const ENVELOPE_VERSION = 1;
export const CONTROL_ENVELOPE_VERSION = 3;
/** version + didLength. */
export const ENVELOPE_HEADER_SIZE = 2;

export interface Envelope {
  readonly version: typeof ENVELOPE_VERSION | typeof CONTROL_ENVELOPE_VERSION;
  /** The DID the sender claims; trusted only after checkEnvelopeSender. */
  readonly senderDid: string;
  /** The application bytes: a view into the decoded input, copy it to keep it beyond the input's life. */
  readonly body: Uint8Array;
}

function isDidByte(b: number): boolean {
  return b >= 0x21 && b <= 0x7e;
}

/** Validates the DID text; `fail` decides which error a bad DID becomes. */
function checkDid(did: string, onError: (problem: string) => never): void {
  if (did.length < 1 || did.length > MAX_DID_BYTES) onError(`DID length ${did.length} outside 1..${MAX_DID_BYTES}`);
  for (let i = 0; i < did.length; i++) {
    if (!isDidByte(did.charCodeAt(i))) onError(`DID has a character outside printable ASCII at ${i}`);
  }
  try {
    parseDid(did);
  } catch (error) {
    onError(error instanceof LibertariaError ? error.message : 'DID does not parse');
  }
}

/** Bytes the envelope adds in front of the body for this sender. */
export function envelopeOverhead(senderDid: string): number {
  return ENVELOPE_HEADER_SIZE + senderDid.length;
}

/** Wraps `body` for `senderDid` (the sender's own DID). Throws ProtocolError BAD_FIELD for an unusable DID. */
export function encodeEnvelope(
  senderDid: string,
  body: Uint8Array,
  version: Envelope['version'] = ENVELOPE_VERSION,
): Uint8Array {
  if (!(body instanceof Uint8Array)) throw new ProtocolError('BAD_FIELD', 'envelope: body must be a Uint8Array');
  checkDid(senderDid, (problem) => {
    throw new ProtocolError('BAD_FIELD', `envelope: ${problem}`);
  });
  const out = new Uint8Array(ENVELOPE_HEADER_SIZE + senderDid.length + body.length);
  out[0] = version;
  out[1] = senderDid.length;
  for (let i = 0; i < senderDid.length; i++) out[ENVELOPE_HEADER_SIZE + i] = senderDid.charCodeAt(i);
  out.set(body, ENVELOPE_HEADER_SIZE + senderDid.length);
  return out;
}

/** Parses an envelope; the body is a view into `bytes`. Throws ProtocolError (see the module comment). */
export function decodeEnvelope(bytes: Uint8Array): Envelope {
  if (bytes.length < ENVELOPE_HEADER_SIZE) {
    throw new ProtocolError('TRUNCATED', `envelope: ${bytes.length} bytes, the header needs ${ENVELOPE_HEADER_SIZE}`);
  }
  const version = bytes[0]!;
  if (version !== ENVELOPE_VERSION && version !== CONTROL_ENVELOPE_VERSION) {
    throw new ProtocolError('UNSUPPORTED_VERSION', `envelope: version ${version} is not ${ENVELOPE_VERSION}`);
  }
  const didLength = bytes[1]!;
  if (didLength < 1 || didLength > MAX_DID_BYTES) {
    throw new ProtocolError('BAD_FIELD', `envelope: DID length ${didLength} outside 1..${MAX_DID_BYTES}`);
  }
  const end = ENVELOPE_HEADER_SIZE + didLength;
  if (bytes.length < end) {
    throw new ProtocolError('TRUNCATED', `envelope: DID needs ${didLength} bytes, ${bytes.length - 2} left`);
  }
  let did = '';
  for (let i = ENVELOPE_HEADER_SIZE; i < end; i++) {
    const b = bytes[i]!;
    // Checked byte by byte, so no decoder can turn odd bytes into a look-alike string.
    if (!isDidByte(b)) {
      throw new ProtocolError('BAD_FIELD', `envelope: DID byte 0x${b.toString(16)} is not printable ASCII`);
    }
    did += String.fromCharCode(b);
  }
  checkDid(did, (problem) => {
    throw new ProtocolError('BAD_FIELD', `envelope: ${problem}`);
  });
  return { version, senderDid: did, body: bytes.subarray(end) };
}

/**
 * Checks that the envelope's DID is the sender the relay authenticated:
 * hintFromDid(senderDid) must equal the DELIVER's source hint. Throws
 * RelayError SOURCE_MISMATCH otherwise.
 */
export function checkEnvelopeSender(envelope: Envelope, sourceHint: Uint8Array): void {
  const claimed = hintFromDid(envelope.senderDid);
  if (!bytesEqual(claimed, sourceHint)) {
    throw new RelayError(
      ClientErrorCode.senderMismatch,
      `envelope: sender ${JSON.stringify(envelope.senderDid)} does not own source hint ${toHex(sourceHint)}`,
    );
  }
}
