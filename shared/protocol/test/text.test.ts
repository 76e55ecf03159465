/**
 * fitText / truncateUtf8 (shared/protocol/src/text.ts): reasons in ERROR, NACK
 * and GOAWAY are cut to a UTF-8 byte budget on a code-point boundary, so the
 * encoder never refuses them (issue 12 item 1: a 509-character cut of
 * three-byte characters is 1,530 bytes, and the NACK's encoding threw).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeFrame, encodeFrame, fitText, MAX_TEXT_BYTES, truncateUtf8 } from '@libertaria/protocol';

const bytes = (s: string): number => new TextEncoder().encode(s).length;
/** No lone surrogate: every high surrogate is followed by a low one and vice versa. */
const wellFormed = (s: string): boolean =>
  !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);

describe('fitText', () => {
  it('returns text that fits unchanged', () => {
    assert.equal(fitText('plain reason'), 'plain reason');
    const exact = 'é'.repeat(MAX_TEXT_BYTES / 2);
    assert.equal(bytes(exact), MAX_TEXT_BYTES);
    assert.equal(fitText(exact), exact);
    assert.equal(fitText(''), '');
  });

  it('cuts 1-, 2-, 3- and 4-byte characters to at most the budget, marked with "..."', () => {
    for (const ch of ['a', 'ü', '€', '😀']) {
      for (let n = 1000; n < 1100; n++) {
        const text = ch.repeat(n);
        const cut = fitText(text);
        assert.ok(bytes(cut) <= MAX_TEXT_BYTES, `${ch} x ${n}: ${bytes(cut)} bytes`);
        if (bytes(text) > MAX_TEXT_BYTES) {
          assert.ok(cut.endsWith('...'));
          assert.ok(text.startsWith(cut.slice(0, -3)));
          // As much as fits: one more character would not.
          assert.ok(bytes(cut) + bytes(ch) > MAX_TEXT_BYTES);
        } else assert.equal(cut, text);
        assert.ok(wellFormed(cut));
      }
    }
  });

  it('the old cut (509 JavaScript characters) of the issue-12 reason does not fit; fitText does and encodes', () => {
    const reason = `unknown key ${'ü€'.repeat(300)} (allowed: version, capabilities)`;
    assert.ok(bytes(`${reason.slice(0, 509)}...`) > MAX_TEXT_BYTES);
    assert.throws(() =>
      encodeFrame({ type: 'NACK', messageId: new Uint8Array(16), code: 1, message: `${reason.slice(0, 509)}...` }),
    );
    const frame = encodeFrame({ type: 'NACK', messageId: new Uint8Array(16), code: 1, message: fitText(reason) });
    const back = decodeFrame(frame);
    assert.equal(back.type, 'NACK');
    assert.equal(back.type === 'NACK' && back.message, fitText(reason));
  });

  it('never splits a surrogate pair, whatever the alignment', () => {
    for (let prefix = 0; prefix < 8; prefix++) {
      const text = `${'x'.repeat(prefix)}${'😀'.repeat(600)}`;
      const cut = truncateUtf8(text, 100);
      assert.ok(bytes(cut) <= 100);
      assert.ok(wellFormed(cut), `prefix ${prefix}`);
    }
  });

  it('counts a lone surrogate as the 3 bytes it encodes to', () => {
    const text = '\ud800'.repeat(400);
    const cut = truncateUtf8(text, 30);
    assert.ok(bytes(cut) <= 30);
    assert.equal(cut, `${'\ud800'.repeat(9)}...`);
  });

  it('handles budgets below the ellipsis', () => {
    assert.equal(truncateUtf8('abcdef', 2), 'ab');
    assert.equal(truncateUtf8('€€', 2), '');
    assert.equal(truncateUtf8('abc', 0), '');
    assert.equal(truncateUtf8('abcd', 3), '...');
  });
});
