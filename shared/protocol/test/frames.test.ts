import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decodeFrame,
  decodeFrames,
  encodeAckOf,
  encodeFrame,
  encodeFrames,
  type Frame,
  FrameStreamDecoder,
  FrameType,
  MAX_PAYLOAD_LIMIT,
  MIN_BODY_LIMIT,
  maxBodySize,
  ProtocolError,
  RoutedAt,
} from '@libertaria/protocol';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const fill = (n: number, b: number): Uint8Array => new Uint8Array(n).fill(b);
const seq = (n: number, start: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

const D1 = 'd1'.repeat(24);
const REQ = '7e'.repeat(16);
const r = (byte: string, n: number): string => byte.repeat(n);

/** The prekeys of the docs/protocol.md examples: every byte field a repeated byte. */
const signedKeys = {
  identityKey: fill(32, 0xaa),
  identityDhKey: { id: 0, publicKey: fill(32, 0x11), signature: fill(64, 0x51) },
  signedPrekey: { id: 7, publicKey: fill(32, 0x22), signature: fill(64, 0x52) },
  lastResortKemPrekey: { id: 9, publicKey: fill(1184, 0x33), signature: fill(64, 0x53) },
};
const oneTimePrekey = { id: 100, publicKey: fill(32, 0x44) };
const oneTimeKemPrekey = { id: 200, publicKey: fill(1184, 0x55), signature: fill(64, 0x54) };
const SIGNED_HEX = `${r('aa', 32)} 00000000 ${r('11', 32)} ${r('51', 64)} 00000007 ${r('22', 32)} ${r('52', 64)} 00000009 ${r('33', 1184)} ${r('53', 64)}`;
const OTP_HEX = `00000064 ${r('44', 32)}`;
const OTK_HEX = `000000c8 ${r('55', 1184)} ${r('54', 64)}`;
const S51 = '51'.repeat(24);
const SESSION = '5e'.repeat(16);
const MSG = '1d'.repeat(16);

/** One fixture per frame type: the object and its exact bytes, checked in both directions. */
const fixtures: Array<{ frame: Frame; hex: string }> = [
  {
    frame: { type: 'HELLO', minVersion: 2, maxVersion: 2, features: 0, clientNonce: fill(32, 0xcc) },
    hex: `0101 00000026 02 02 00000000 ${r('cc', 32)}`,
  },
  {
    frame: {
      type: 'CHALLENGE',
      version: 2,
      nonce: seq(32, 0),
      relayIdentity: 'relay.example',
      relayKey: fill(32, 0xab),
      signature: fill(64, 0x5a),
    },
    hex: `0102 0000008f 02 ${toHex(seq(32, 0))} 0d ${toHex(text('relay.example'))} ${r('ab', 32)} ${r('5a', 64)}`,
  },
  {
    frame: { type: 'AUTH', keyType: 1, publicKey: fill(32, 0xaa), signature: fill(64, 0x55), did: 'did:key:z6Mk' },
    hex: `0203 0000006e 01 ${'aa'.repeat(32)} ${'55'.repeat(64)} 0c ${toHex(text('did:key:z6Mk'))}`,
  },
  {
    frame: {
      type: 'WELCOME',
      hint: fill(24, 0xd1),
      connectionId: fill(16, 0xc0),
      maxPayload: 65536,
      heartbeatMs: 5000,
      nodeId: 'node-1',
    },
    hex: `0204 00000037 ${D1} ${'c0'.repeat(16)} 00010000 00001388 06 ${toHex(text('node-1'))}`,
  },
  {
    frame: {
      type: 'SEND',
      dest: fill(24, 0xd1),
      source: fill(24, 0x51),
      sessionId: fill(16, 0x5e),
      messageId: fill(16, 0x1d),
      flags: 1,
      ttl: 3600,
      position: 0,
      payload: text('hi'),
    },
    hex: `0210 0000005f ${D1} ${S51} ${SESSION} ${MSG} 01 00000e10 0000000000000000 6869`,
  },
  {
    frame: {
      type: 'DELIVER',
      dest: fill(24, 0xd1),
      source: fill(24, 0x51),
      sessionId: fill(16, 0x5e),
      messageId: fill(16, 0x1d),
      flags: 0,
      ttl: 0,
      position: 2 ** 40 + 5,
      payload: new Uint8Array(0),
    },
    hex: `0211 0000005d ${D1} ${S51} ${SESSION} ${MSG} 00 00000000 0000010000000005`,
  },
  {
    frame: { type: 'ACK', messageId: fill(16, 0x1d), position: 42 },
    hex: `0212 00000018 ${MSG} 000000000000002a`,
  },
  {
    frame: { type: 'NACK', messageId: fill(16, 0x1d), code: 0x0302, message: 'queue full' },
    hex: `0213 0000001e ${MSG} 0302 000a ${toHex(text('queue full'))}`,
  },
  { frame: { type: 'RESUME', lastAcked: 41 }, hex: '0214 00000008 0000000000000029' },
  {
    frame: { type: 'MIGRATE', previousConnectionId: fill(16, 0x5e), proof: seq(4, 1) },
    hex: `0215 00000015 ${SESSION} 04 01020304`,
  },
  { frame: { type: 'PING', data: seq(8, 1) }, hex: '0220 00000008 0102030405060708' },
  { frame: { type: 'PONG', data: seq(8, 1) }, hex: '0221 00000008 0102030405060708' },
  { frame: { type: 'PEER_PRESENT', hint: fill(24, 0xd1) }, hex: `0230 00000018 ${D1}` },
  {
    frame: { type: 'PEER_GONE', hint: fill(24, 0xd1), messageId: fill(16, 0x1d) },
    hex: `0231 00000028 ${D1} ${MSG}`,
  },
  { frame: { type: 'PRESENCE_QUERY', hint: fill(24, 0xd1) }, hex: `0232 00000018 ${D1}` },
  {
    frame: { type: 'GOAWAY', reconnectAfterMs: 1000, reconnectHint: 'ws://r2:8080', reason: 'drain' },
    hex: `023e 00000019 000003e8 000c ${toHex(text('ws://r2:8080'))} 0005 ${toHex(text('drain'))}`,
  },
  {
    frame: { type: 'ERROR', code: 0x0201, flags: 1, message: 'bad sig' },
    hex: `013f 0000000c 0201 01 0007 ${toHex(text('bad sig'))}`,
  },
  {
    frame: {
      type: 'PREKEY_PUBLISH',
      requestId: fill(16, 0x7e),
      flags: 0,
      publication: { ...signedKeys, oneTimePrekeys: [oneTimePrekey], oneTimeKemPrekeys: [oneTimeKemPrekey] },
    },
    hex: `0240 00000aea ${REQ} 00 01 ${SIGNED_HEX} 0001 ${OTP_HEX} 0001 ${OTK_HEX}`,
  },
  {
    frame: { type: 'PREKEY_FETCH', requestId: fill(16, 0x7e), hint: fill(24, 0xd1) },
    hex: `0241 00000028 ${REQ} ${D1}`,
  },
  {
    frame: {
      type: 'PREKEY_BUNDLE',
      requestId: fill(16, 0x7e),
      bundle: { ...signedKeys, oneTimePrekey, oneTimeKemPrekey },
    },
    hex: `0242 00000ae6 ${REQ} 01 03 ${SIGNED_HEX} ${OTP_HEX} ${OTK_HEX}`,
  },
  {
    frame: {
      type: 'PREKEY_STATUS',
      hint: fill(24, 0xd1),
      requestId: new Uint8Array(16),
      flags: 7,
      oneTimeX25519: 9,
      oneTimeKem: 0,
      cap: 100,
      lowWater: 10,
      lastOneTimeX25519Id: 100,
      lastOneTimeKemId: 200,
    },
    hex: `0243 00000039 ${D1} ${'00'.repeat(16)} 07 0009 0000 0064 000a 00000064 000000c8`,
  },
  { frame: { type: 'PREKEY_STATUS_QUERY', requestId: fill(16, 0x7e) }, hex: `0244 00000010 ${REQ}` },
  {
    frame: {
      type: 'ANON_CHALLENGE',
      version: 1,
      nonce: fill(32, 0x4e),
      powBits: 16,
      maxSends: 4,
      lifetimeMs: 60000,
      relayIdentity: 'relay',
    },
    hex: `0205 0000002e 01 ${r('4e', 32)} 10 0004 0000ea60 05 ${toHex(text('relay'))}`,
  },
  { frame: { type: 'ANON_AUTH', stamp: hex('0000000000012345') }, hex: '0206 00000008 0000000000012345' },
  {
    frame: { type: 'ONCE_CHECK', requestId: fill(16, 0x7e), retentionSeconds: 360, id: fill(16, 0x1d) },
    hex: `0250 00000025 ${REQ} 00000168 10 ${r('1d', 16)}`,
  },
  {
    frame: { type: 'ONCE_RESULT', requestId: fill(16, 0x7e), fresh: true, epoch: fill(16, 0xe0) },
    hex: `0251 00000021 ${REQ} 01 ${'e0'.repeat(16)}`,
  },
  {
    frame: { type: 'BRIDGE_QUERY', requestId: fill(16, 0x7e), network: 'nostr' },
    hex: `0270 00000016 ${REQ} 05 ${toHex(text('nostr'))}`,
  },
  {
    frame: { type: 'BRIDGE_INFO', requestId: fill(16, 0x7e), did: 'did:key:z6Mk' },
    hex: `0271 0000001d ${REQ} 0c ${toHex(text('did:key:z6Mk'))}`,
  },
  {
    frame: { type: 'GRANT_PRESENT', requestId: fill(16, 0x7e), token: text('LMG') },
    hex: `0260 00000013 ${REQ} 4c4d47`,
  },
  {
    frame: { type: 'GRANT_ACCEPTED', requestId: fill(16, 0x7e), tokenId: fill(32, 0xc1), expiresAt: 1_800_000_000_000 },
    hex: `0261 00000038 ${REQ} ${r('c1', 32)} 000001a3185c5000`,
  },
  {
    frame: { type: 'GRANT_REVOKE', requestId: fill(16, 0x7e), token: text('LMG') },
    hex: `0267 00000013 ${REQ} 4c4d47`,
  },
  {
    frame: { type: 'GRANT_REVOKED', requestId: fill(16, 0x7e), cids: [fill(32, 0xc1)] },
    hex: `0268 00000031 ${REQ} 01 ${r('c1', 32)}`,
  },
  { frame: { type: 'GRANT_REVOKED', requestId: fill(16, 0x7e), cids: [] }, hex: `0268 00000011 ${REQ} 00` },
  { frame: { type: 'POLICY_PUT', requestId: fill(16, 0x7e), policy: text('{}') }, hex: `0262 00000012 ${REQ} 7b7d` },
  { frame: { type: 'POLICY_PUT', requestId: fill(16, 0x7e), policy: new Uint8Array(0) }, hex: `0262 00000010 ${REQ}` },
  { frame: { type: 'POLICY_GET', requestId: fill(16, 0x7e) }, hex: `0263 00000010 ${REQ}` },
  { frame: { type: 'POLICY', requestId: fill(16, 0x7e), policy: text('{}') }, hex: `0264 00000012 ${REQ} 7b7d` },
  {
    frame: { type: 'AUDIT_QUERY', requestId: fill(16, 0x7e), sinceMs: 1000, untilMs: 0, limit: 100, after: '5-0' },
    hex: `0265 00000026 ${REQ} 00000000000003e8 0000000000000000 0064 03 352d30`,
  },
  {
    frame: { type: 'AUDIT_RESULT', requestId: fill(16, 0x7e), next: '', records: text('[]') },
    hex: `0266 00000013 ${REQ} 00 5b5d`,
  },
];

function expectCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ProtocolError, `expected ProtocolError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

/** Compares a decoded frame to the expected object, Uint8Array fields (also nested ones) by content. */
function assertFrameEqual(actual: Frame, expected: Frame): void {
  const norm = (v: unknown): unknown =>
    v instanceof Uint8Array
      ? toHex(v)
      : Array.isArray(v)
        ? v.map(norm)
        : typeof v === 'object' && v !== null
          ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]))
          : v;
  assert.deepEqual(norm(actual), norm(expected));
}

describe('frame codec fixtures', () => {
  it('has a fixture for every frame type', () => {
    assert.deepEqual(new Set(fixtures.map((f) => f.frame.type)), new Set(Object.keys(FrameType)));
  });
  for (const { frame, hex: h } of fixtures) {
    it(`encodes ${frame.type} to its fixture bytes`, () => {
      assert.equal(toHex(encodeFrame(frame)), h.replace(/\s+/g, ''));
    });
    it(`decodes ${frame.type} from its fixture bytes`, () => {
      assertFrameEqual(decodeFrame(hex(h)), frame);
    });
  }
  it('decodes several frames from one message, in order', () => {
    const batch = encodeFrames(fixtures.map((f) => f.frame));
    const frames = decodeFrames(batch);
    assert.equal(frames.length, fixtures.length);
    for (const [i, f] of frames.entries()) assertFrameEqual(f, fixtures[i]!.frame);
  });
  it('decoded byte fields are views into the input, not copies', () => {
    const bytes = hex(fixtures.find((f) => f.frame.type === 'SEND')!.hex);
    const frame = decodeFrame(bytes) as Extract<Frame, { type: 'SEND' }>;
    assert.equal(frame.payload.buffer, bytes.buffer);
  });
});

describe('encodeAckOf', () => {
  it('writes the ACK encodeFrame writes, taking the messageId from a SEND in place', () => {
    const sendHex = fixtures.find((f) => f.frame.type === 'SEND')!.hex;
    const send = hex(sendHex);
    const { messageId } = decodeFrame(send) as Extract<Frame, { type: 'SEND' }>;
    for (const position of [0, 1, 2 ** 32 + 7, 2 ** 53 - 1]) {
      for (const version of [1, 2]) {
        assert.equal(
          toHex(encodeAckOf(send, RoutedAt.MESSAGE_ID, position, version)),
          toHex(encodeFrame({ type: 'ACK', messageId, position }, version)),
        );
      }
    }
  });
  it('refuses an id past the end and a position encodeFrame refuses', () => {
    const id = fill(16, 0x1d);
    expectCode(() => encodeAckOf(id, 1, 0), 'BAD_LENGTH');
    expectCode(() => encodeAckOf(id, -1, 0), 'BAD_LENGTH');
    expectCode(() => encodeAckOf(id, 0, 2 ** 53), 'BAD_FIELD');
    expectCode(() => encodeAckOf(id, 0, 1.5), 'BAD_FIELD');
  });
});

describe('strict decoding', () => {
  const sendHex = fixtures.find((f) => f.frame.type === 'SEND')!.hex;
  it('refuses an empty message', () => expectCode(() => decodeFrames(new Uint8Array(0)), 'TRUNCATED'));
  it('refuses a truncated header', () => expectCode(() => decodeFrame(hex('0220 0000')), 'TRUNCATED'));
  it('refuses a truncated body', () => expectCode(() => decodeFrame(hex('0220 00000008 01020304')), 'TRUNCATED'));
  it('refuses an unknown frame type', () => expectCode(() => decodeFrame(hex('0277 00000000')), 'UNKNOWN_FRAME_TYPE'));
  it('refuses an unsupported version', () => {
    expectCode(() => decodeFrame(hex('0320 00000008 0102030405060708')), 'UNSUPPORTED_VERSION');
    expectCode(() => decodeFrame(hex('0020 00000008 0102030405060708')), 'UNSUPPORTED_VERSION');
    // Version 1 is spoken only by the frozen frames now, and they only in version 1.
    expectCode(() => decodeFrame(hex('0120 00000008 0102030405060708')), 'UNSUPPORTED_VERSION');
    expectCode(() => decodeFrame(hex('023f 00000005 0201 00 0000')), 'UNSUPPORTED_VERSION');
    expectCode(() => decodeFrame(hex('0201 00000006 01 01 00000000')), 'UNSUPPORTED_VERSION');
    assert.equal(decodeFrame(hex('013f 00000005 0201 00 0000')).type, 'ERROR');
  });
  it('refuses a body length above the limit from the header alone', () => {
    // Announces 4 GiB but carries nothing: refused before any body is read.
    expectCode(() => decodeFrame(hex('0210 ffffffff')), 'FRAME_TOO_LARGE');
  });
  it('refuses a payload above the configured limit', () => {
    const big = encodeFrame({
      ...(fixtures[4]!.frame as Extract<Frame, { type: 'SEND' }>),
      payload: new Uint8Array(101),
    });
    assert.doesNotThrow(() => decodeFrame(big, { maxPayload: 101 }));
    expectCode(() => decodeFrame(big, { maxPayload: 100 }), 'FRAME_TOO_LARGE');
  });
  it('never accepts more than the hard payload ceiling, whatever the option says', () => {
    const head = new Uint8Array(6);
    head.set([2, 0x10]);
    new DataView(head.buffer).setUint32(2, 93 + MAX_PAYLOAD_LIMIT + 1);
    expectCode(() => decodeFrame(head, { maxPayload: 10 * MAX_PAYLOAD_LIMIT }), 'FRAME_TOO_LARGE');
  });
  it('refuses a body shorter than the fixed fields', () => {
    expectCode(() => decodeFrame(hex('0220 00000004 01020304')), 'BAD_LENGTH');
    expectCode(() => decodeFrame(hex(`0210 00000018 ${D1}`)), 'BAD_LENGTH');
    expectCode(() => decodeFrame(hex('0212 00000000')), 'BAD_LENGTH');
  });
  it('refuses bytes after the last field of a fixed frame', () => {
    expectCode(() => decodeFrame(hex('0220 00000009 010203040506070809')), 'TRAILING_BYTES');
  });
  it('refuses bytes after the frame when one frame is expected', () => {
    expectCode(() => decodeFrame(hex('0220 00000008 0102030405060708 00')), 'TRAILING_BYTES');
  });
  it('refuses a batch whose last frame is cut short', () => {
    expectCode(() => decodeFrames(hex('0220 00000008 0102030405060708 0121 0000')), 'TRUNCATED');
  });
  it('refuses undefined flag bits', () => {
    expectCode(() => decodeFrame(hex(sendHex.replace(' 01 00000e10', ' 03 00000e10'))), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex('013f 00000005 0201 02 0000')), 'BAD_FIELD');
  });
  it('refuses a position at or above 2^53 and a non-zero SEND position', () => {
    expectCode(() => decodeFrame(hex(`0212 00000018 ${MSG} 0020000000000000`)), 'BAD_FIELD');
    assert.equal(
      (decodeFrame(hex(`0212 00000018 ${MSG} 001fffffffffffff`)) as { position: number }).position,
      2 ** 53 - 1,
    );
    expectCode(() => decodeFrame(hex(sendHex.replace('0000000000000000', '0000000000000001'))), 'BAD_FIELD');
  });
  it('refuses invalid UTF-8 and bad inner string lengths', () => {
    expectCode(() => decodeFrame(hex('013f 00000007 0201 00 0002 c328')), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex('013f 00000007 0201 00 0003 4142')), 'BAD_LENGTH');
    expectCode(() => decodeFrame(hex(`0204 00000031 ${D1} ${'c0'.repeat(16)} 00010000 00001388 00`)), 'BAD_FIELD');
    const longText = '00'.repeat(1025);
    expectCode(() => decodeFrame(hex(`013f 00000406 0201 00 0401 ${longText}`)), 'BAD_FIELD');
  });
  it('keeps a leading byte-order mark so re-encoding is exact', () => {
    const bytes = hex('013f 00000008 0201 00 0003 efbbbf');
    assert.equal(toHex(encodeFrame(decodeFrame(bytes))), toHex(bytes));
  });
  it('refuses an empty or inverted HELLO version range and a non-Ed25519 key type', () => {
    expectCode(() => decodeFrame(hex('0101 00000006 00 01 00000000')), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex('0101 00000006 02 01 00000000')), 'BAD_FIELD');
    const auth = fixtures.find((f) => f.frame.type === 'AUTH')!.hex.replace('0203 0000006e 01', '0203 0000006e 02');
    expectCode(() => decodeFrame(hex(auth)), 'BAD_FIELD');
  });
  it('reads a version-1 HELLO (no client nonce) so a relay can refuse it by version; a cut nonce is refused', () => {
    const v1 = decodeFrame(hex('0101 00000006 01 01 00000000'));
    assert.deepEqual(v1, { type: 'HELLO', minVersion: 1, maxVersion: 1, features: 0 });
    assert.equal(toHex(encodeFrame(v1)), '010100000006010100000000');
    expectCode(() => decodeFrame(hex(`0101 00000016 02 02 00000000 ${r('cc', 16)}`)), 'BAD_LENGTH');
    expectCode(() => decodeFrame(hex(`0101 00000027 02 02 00000000 ${r('cc', 33)}`)), 'TRAILING_BYTES');
    expectCode(
      () => encodeFrame({ type: 'HELLO', minVersion: 2, maxVersion: 2, features: 0, clientNonce: fill(31, 1) }),
      'BAD_FIELD',
    );
  });
  it('refuses a CHALLENGE without the relay key and signature (a version-1 layout)', () => {
    expectCode(
      () => decodeFrame(hex(`0102 0000002f 01 ${toHex(seq(32, 0))} 0d ${toHex(text('relay.example'))}`)),
      'BAD_LENGTH',
    );
  });
  it('refuses an empty migration proof', () => {
    expectCode(() => decodeFrame(hex(`0215 00000011 ${SESSION} 00`)), 'BAD_FIELD');
  });
  it('refuses malformed prekey frames', () => {
    const publish = fixtures.find((f) => f.frame.type === 'PREKEY_PUBLISH')!.hex.replace(/\s+/g, '');
    // Undefined PREKEY_PUBLISH flag bit.
    expectCode(() => decodeFrame(hex(publish.replace(`${REQ}00`, `${REQ}02`))), 'BAD_FIELD');
    // A publication cut short (body length adjusted so the frame itself is whole).
    expectCode(() => decodeFrame(hex(`0240 00000015 ${REQ} 00 01 aabbcc`)), 'BAD_LENGTH');
    // Undefined status flags, and a last id without its flag.
    const status = `${D1} ${'00'.repeat(16)}`;
    expectCode(() => decodeFrame(hex(`0243 00000039 ${status} 08 0000 0000 0064 000a 00000000 00000000`)), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex(`0243 00000039 ${status} 01 0000 0000 0064 000a 00000001 00000000`)), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex(`0241 00000029 ${REQ} ${D1} 00`)), 'TRAILING_BYTES');
    expectCode(() => decodeFrame(hex(`0244 0000000f ${'7e'.repeat(15)}`)), 'BAD_LENGTH');
  });
  it('accepts bodies up to MIN_BODY_LIMIT whatever the payload limit, and SEND payloads only up to it', () => {
    const bundle = hex(fixtures.find((f) => f.frame.type === 'PREKEY_BUNDLE')!.hex);
    assert.equal(decodeFrame(bundle, { maxPayload: 1 }).type, 'PREKEY_BUNDLE');
    assert.equal(maxBodySize(1), MIN_BODY_LIMIT);
    assert.equal(maxBodySize(65536), 93 + 65536);
    const send = encodeFrame({
      ...(fixtures[4]!.frame as Extract<Frame, { type: 'SEND' }>),
      payload: new Uint8Array(2),
    });
    expectCode(() => decodeFrame(send, { maxPayload: 1 }), 'FRAME_TOO_LARGE');
  });
});

describe('encoder validation', () => {
  it('refuses fields of the wrong size or range with BAD_FIELD', () => {
    expectCode(() => encodeFrame({ type: 'PING', data: new Uint8Array(7) }), 'BAD_FIELD');
    expectCode(() => encodeFrame({ type: 'ACK', messageId: fill(16, 1), position: -1 }), 'BAD_FIELD');
    expectCode(() => encodeFrame({ type: 'ACK', messageId: fill(16, 1), position: 2 ** 53 }), 'BAD_FIELD');
    expectCode(() => encodeFrame({ type: 'ERROR', code: 70000, flags: 0, message: '' }), 'BAD_FIELD');
    expectCode(() => encodeFrame({ type: 'ERROR', code: 1, flags: 0, message: 'x'.repeat(1025) }), 'BAD_FIELD');
    const send = fixtures[4]!.frame as Extract<Frame, { type: 'SEND' }>;
    expectCode(() => encodeFrame({ ...send, position: 1 }), 'BAD_FIELD');
    expectCode(() => encodeFrame({ ...send, flags: 2 }), 'BAD_FIELD');
  });
});

describe('FrameStreamDecoder (TCP)', () => {
  const stream = encodeFrames(fixtures.map((f) => f.frame));
  it('reassembles frames split at every byte boundary', () => {
    for (const step of [1, 2, 5, 7, 64, 1000]) {
      const d = new FrameStreamDecoder();
      const got: Frame[] = [];
      for (let o = 0; o < stream.length; o += step) got.push(...d.pushFrames(stream.subarray(o, o + step)));
      assert.equal(got.length, fixtures.length, `step ${step}`);
      for (const [i, f] of got.entries()) assertFrameEqual(f, fixtures[i]!.frame);
      assert.equal(d.pendingBytes, 0);
    }
  });
  it('refuses an oversized frame as soon as its header arrives, holding nothing', () => {
    const d = new FrameStreamDecoder({ maxPayload: 1000 });
    expectCode(() => d.push(hex('0210 7fffffff')), 'FRAME_TOO_LARGE');
    assert.equal(d.pendingBytes, 0);
    // The stream is dead after an error: it cannot be resynchronized.
    expectCode(() => d.push(hex('0220 00000008 0102030405060708')), 'FRAME_TOO_LARGE');
  });
  it('holds a partial frame until the rest arrives', () => {
    const d = new FrameStreamDecoder();
    assert.deepEqual(d.push(hex('0220 0000')), []);
    assert.equal(d.pendingBytes, 4);
    assert.equal(d.push(hex('0008 0102030405060708')).length, 1);
  });
});

describe('anonymous and single-use id frames refuse bad fields', () => {
  it('ANON_CHALLENGE.powBits above 32 is BAD_FIELD', () => {
    expectCode(
      () => decodeFrame(hex(`0205 0000002e 01 ${r('4e', 32)} 21 0004 0000ea60 05 ${toHex(text('relay'))}`)),
      'BAD_FIELD',
    );
    expectCode(
      () =>
        encodeFrame({
          type: 'ANON_CHALLENGE',
          version: 1,
          nonce: fill(32, 0),
          powBits: 33,
          maxSends: 1,
          lifetimeMs: 1,
          relayIdentity: 'r',
        }),
      'BAD_FIELD',
    );
  });
  it('ANON_AUTH stamp must be 8 bytes', () => {
    expectCode(() => decodeFrame(hex('0206 00000007 00000000000123')), 'BAD_LENGTH');
    expectCode(() => decodeFrame(hex('0206 00000009 000000000001234500')), 'TRAILING_BYTES');
    expectCode(() => encodeFrame({ type: 'ANON_AUTH', stamp: fill(7, 0) }), 'BAD_FIELD');
  });
  it('ONCE_CHECK needs a retention of at least 1 s and an id of 1..64 bytes', () => {
    expectCode(() => decodeFrame(hex(`0250 00000025 ${REQ} 00000000 10 ${r('1d', 16)}`)), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex(`0250 00000015 ${REQ} 00000168 00`)), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex(`0250 00000056 ${REQ} 00000168 41 ${r('1d', 65)}`)), 'BAD_FIELD');
    expectCode(
      () => encodeFrame({ type: 'ONCE_CHECK', requestId: fill(16, 0), retentionSeconds: 1, id: fill(65, 1) }),
      'BAD_FIELD',
    );
    expectCode(
      () => encodeFrame({ type: 'ONCE_CHECK', requestId: fill(16, 0), retentionSeconds: 0, id: fill(1, 1) }),
      'BAD_FIELD',
    );
  });
  it('GRANT_PRESENT needs a token; AUDIT_QUERY.limit is 1..1000; cursors are at most 64 bytes', () => {
    expectCode(() => decodeFrame(hex(`0260 00000010 ${REQ}`)), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex(`0265 00000023 ${REQ} ${r('00', 16)} 0000 00`)), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex(`0265 00000023 ${REQ} ${r('00', 16)} 03e9 00`)), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex(`0266 00000052 ${REQ} 41 ${r('31', 65)}`)), 'BAD_FIELD');
    expectCode(() => decodeFrame(hex(`0261 00000037 ${REQ} ${r('c1', 31)} ${r('00', 8)}`)), 'BAD_LENGTH');
    assert.throws(() => encodeFrame({ type: 'GRANT_PRESENT', requestId: fill(16, 1), token: new Uint8Array(0) }));
  });
  it('ONCE_RESULT.fresh is 0 or 1, followed by a 16-byte epoch', () => {
    const epoch = r('e0', 16);
    expectCode(() => decodeFrame(hex(`0251 00000021 ${REQ} 02 ${epoch}`)), 'BAD_FIELD');
    assert.equal((decodeFrame(hex(`0251 00000021 ${REQ} 00 ${epoch}`)) as { fresh: boolean }).fresh, false);
    // Without the epoch (the layout before it) the frame is too short.
    expectCode(() => decodeFrame(hex(`0251 00000011 ${REQ} 00`)), 'BAD_LENGTH');
    assert.throws(() => encodeFrame({ type: 'ONCE_RESULT', requestId: fill(16, 1), fresh: true, epoch: fill(15, 1) }));
  });
});
