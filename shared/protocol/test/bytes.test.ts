import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { describe, it } from 'node:test';
import { bytesEqualAt } from '@libertaria/protocol';

describe('bytesEqualAt', () => {
  it("agrees with Buffer#compare's offsets for 5,000 random ranges, equal and not", () => {
    for (let n = 0; n < 5000; n++) {
      const a = randomBytes(randomInt(0, 64));
      const b = randomBytes(randomInt(0, 64));
      // Half the cases share a run of bytes, so both answers occur.
      if (a.length > 0 && b.length > 0 && randomInt(2) === 0) {
        const from = randomInt(0, a.length);
        const to = randomInt(0, b.length);
        a.copy(b, to, from, from + Math.min(a.length - from, b.length - to));
      }
      const aOffset = randomInt(0, a.length + 2);
      const bOffset = randomInt(0, b.length + 2);
      const length = randomInt(0, 30);
      const inRange = aOffset + length <= a.length && bOffset + length <= b.length;
      const expected = inRange && b.compare(a, aOffset, aOffset + length, bOffset, bOffset + length) === 0;
      assert.equal(bytesEqualAt(a, aOffset, b, bOffset, length), expected, `case ${n}`);
    }
  });

  it('is false for a range past either array or a length that is no count, and true for an empty range inside both', () => {
    const a = new Uint8Array([1, 2, 3]);
    assert.equal(bytesEqualAt(a, 1, a, 1, 2), true);
    assert.equal(bytesEqualAt(a, 2, a, 2, 2), false);
    assert.equal(bytesEqualAt(a, -1, a, 0, 1), false);
    assert.equal(bytesEqualAt(a, 3, new Uint8Array(0), 0, 0), true);
    // No silent "equal" for a length or offset that is no count.
    assert.equal(bytesEqualAt(a, 0, a, 0, Number.NaN), false);
    assert.equal(bytesEqualAt(a, 0, a, 0, -1), false);
    assert.equal(bytesEqualAt(a, 0.5, a, 0, 1), false);
  });
});
