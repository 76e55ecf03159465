import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type DeliverFrame,
  decodeFrame,
  encodeFrame,
  MIN_ROUTED_FRAME_SIZE,
  RoutedAt,
  readRoutedPosition,
  routedDest,
  routedFlags,
  routedMessageId,
  routedSource,
  routedTtl,
  SendFlags,
  writeRoutedPosition,
} from '@libertaria/protocol';

const fill = (n: number, b: number): Uint8Array => new Uint8Array(n).fill(b);

function deliver(position: number): DeliverFrame {
  return {
    type: 'DELIVER',
    dest: fill(24, 0xd1),
    source: fill(24, 0x5e),
    sessionId: fill(16, 0x55),
    messageId: fill(16, 0x1d),
    flags: SendFlags.DURABLE,
    ttl: 0x01020304,
    position,
    payload: fill(5, 0xaa),
  };
}

describe('routed header accessors', () => {
  it('has the offsets of docs/protocol.md inside a whole frame', () => {
    assert.deepEqual(
      { ...RoutedAt },
      { DEST: 6, SOURCE: 30, SESSION: 54, MESSAGE_ID: 70, FLAGS: 86, TTL: 87, POSITION: 91, PAYLOAD: 99 },
    );
    assert.equal(MIN_ROUTED_FRAME_SIZE, 99);
  });

  it('reads every field the codec encodes', () => {
    const frame = deliver(2 ** 40 + 0x1234);
    const bytes = encodeFrame(frame);
    assert.deepEqual(routedDest(bytes), frame.dest);
    assert.deepEqual(routedSource(bytes), frame.source);
    assert.deepEqual(routedMessageId(bytes), frame.messageId);
    assert.equal(routedFlags(bytes), SendFlags.DURABLE);
    assert.equal(routedTtl(bytes), 0x01020304);
    assert.equal(readRoutedPosition(bytes), 2 ** 40 + 0x1234);
  });

  it('gives views into the frame, Buffers for a Buffer, and copies nothing', () => {
    const bytes = Buffer.from(encodeFrame(deliver(0)));
    const dest = routedDest(bytes);
    assert.ok(Buffer.isBuffer(dest));
    assert.equal(dest.buffer, bytes.buffer);
    assert.equal(dest.byteOffset, bytes.byteOffset + RoutedAt.DEST);
    assert.equal(routedSource(bytes).byteOffset, bytes.byteOffset + RoutedAt.SOURCE);
    assert.equal(routedMessageId(bytes).byteOffset, bytes.byteOffset + RoutedAt.MESSAGE_ID);
    assert.equal(routedMessageId(bytes).length, 16);
  });

  it('writes a position in place, high word included, and touches no other byte', () => {
    const bytes = encodeFrame(deliver(0));
    const before = Uint8Array.from(bytes);
    for (const position of [1, 0xffffffff, 2 ** 32, 2 ** 40 + 0x1235, Number.MAX_SAFE_INTEGER, 0]) {
      writeRoutedPosition(bytes, position);
      assert.equal(readRoutedPosition(bytes), position);
      assert.equal((decodeFrame(bytes) as DeliverFrame).position, position);
      assert.deepEqual(bytes.subarray(0, RoutedAt.POSITION), before.subarray(0, RoutedAt.POSITION));
      assert.deepEqual(bytes.subarray(RoutedAt.PAYLOAD), before.subarray(RoutedAt.PAYLOAD));
    }
  });

  it('refuses a position that has no exact u64 form', () => {
    const bytes = encodeFrame(deliver(7));
    for (const position of [-1, 0.5, 2 ** 53, Number.NaN]) {
      assert.throws(() => writeRoutedPosition(bytes, position), RangeError);
    }
    assert.equal(readRoutedPosition(bytes), 7);
  });
});
