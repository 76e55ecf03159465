import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { htmlToText, textToHtml } from '../src/html-text.js';

describe('HTML to text (inbound notes)', () => {
  const me = 'https://bridge.example/users/lq3x';

  it("reads Mastodon's direct message: the recipient's leading mention dropped, paragraphs and breaks kept", () => {
    const html = `<p><span class="h-card" translate="no"><a href="${me}" class="u-url mention">@<span>lq3x</span></a></span> hello <b>there</b><br>second line</p>\n<p>new paragraph &amp; more</p>`;
    assert.equal(htmlToText(html, new Set([me])), 'hello there\nsecond line\n\nnew paragraph & more');
  });

  it('keeps mentions of others and mentions that are not leading', () => {
    const html = `<p><a href="https://other.example/@x">@x</a> hi <a href="${me}">@lq3x</a></p>`;
    assert.equal(htmlToText(html, new Set([me])), '@x hi @lq3x');
  });

  it('never interprets markup: scripts, styles and comments are dropped, attributes never reach the text', () => {
    const html =
      '<p onclick="evil()">a<script>alert(1)</script><style>p{}</style><!-- hidden -->b<img src=x onerror=alert(1)></p>';
    assert.equal(htmlToText(html), 'ab');
  });

  it('decodes character references, and replaces invalid ones', () => {
    assert.equal(
      htmlToText('&lt;tag&gt; &#39;q&#39; &#x1F600; &#0; &#xD800; &bogus;'),
      "<tag> 'q' 😀 \ufffd \ufffd &bogus;",
    );
  });

  it('keeps a lone < and an unclosed tag as harmless text or nothing', () => {
    assert.equal(htmlToText('1 < 2'), '1 < 2');
    assert.equal(htmlToText('a <b'), 'a ');
  });

  it('runs in linear time on hostile input', () => {
    const hostile = '<a href="'.repeat(20_000) + '<'.repeat(50_000);
    const t0 = performance.now();
    htmlToText(hostile, new Set([me]));
    assert.ok(performance.now() - t0 < 2000);
  });
});

describe('text to HTML (outbound notes)', () => {
  it('escapes and paragraphs the text, and reads back the same through htmlToText', () => {
    for (const text of ['plain', 'a <b> & "c" \'d\'', 'line1\nline2', 'p1\n\np2', 'p1\n\n\np2', 'ünïcödé 😀']) {
      const html = textToHtml(text);
      assert.doesNotMatch(html.replace(/<\/?p>|<br>/g, ''), /[<>]/, 'no markup from the text');
      assert.equal(htmlToText(html), text);
    }
  });
});
