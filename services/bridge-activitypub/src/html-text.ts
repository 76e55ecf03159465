/**
 * HTML to text and back, for note content.
 *
 * Inbound: the fediverse sends HTML (Mastodon: `<p>`, `<br>`, `<a>`,
 * `<span class="h-card">` mentions). The Libertaria peer gets plain text:
 * every tag is dropped, never interpreted (so no markup, script or link
 * attribute reaches the peer as markup), `<br>` becomes a line break and a
 * paragraph a blank line, character references are decoded, the contents of
 * `<script>`, `<style>` and `<template>` are dropped, and leading mentions of
 * the recipient (`@handle` links to one of `dropMentionsOf`) are removed: a
 * direct message on Mastodon starts with them, and they say nothing to a
 * peer. One linear pass over the input; the input is bounded by the inbox's
 * body limit, the output by the caller.
 *
 * Outbound: the peer's text is escaped and put in paragraphs, with `<br>` for
 * single line breaks, as Mastodon writes notes.
 */

const NAMED: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: '\u00a0',
};

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|[A-Za-z]{2,8});/g, (whole, ref: string) => {
    if (ref[0] === '#') {
      const code =
        ref[1] === 'x' || ref[1] === 'X' ? Number.parseInt(ref.slice(2), 16) : Number.parseInt(ref.slice(1), 10);
      // Surrogates, NUL and out-of-range code points are not characters: U+FFFD, as HTML does.
      if (!Number.isFinite(code) || code === 0 || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
        return '\ufffd';
      return String.fromCodePoint(code);
    }
    return NAMED[ref.toLowerCase()] ?? whole;
  });
}

const TOKEN = /<!--[\s\S]*?(?:-->|$)|<\/?([A-Za-z][A-Za-z0-9-]*)([^>]*)>?|<|[^<]+/g;
const SKIP_CONTENT = new Set(['script', 'style', 'template', 'head', 'title']);
const BLOCK = new Set(['p', 'div', 'blockquote', 'li', 'ul', 'ol', 'pre', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6']);

function hrefOf(attributes: string): string | undefined {
  const m = /\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))/i.exec(attributes);
  const raw = m?.[1] ?? m?.[2] ?? m?.[3];
  return raw === undefined ? undefined : decodeEntities(raw);
}

/** Plain text of note HTML (see above). */
export function htmlToText(html: string, dropMentionsOf: ReadonlySet<string> = new Set()): string {
  let out = '';
  let skipping: string | undefined;
  /** Inside a leading mention's `<a>`, which is dropped. */
  let droppingMention = false;
  let pendingBreaks = 0;
  const emit = (text: string): void => {
    if (text === '') return;
    if (out !== '' && pendingBreaks > 0) out += '\n'.repeat(pendingBreaks);
    pendingBreaks = 0;
    out += text;
  };
  for (const match of html.matchAll(TOKEN)) {
    const token = match[0];
    const name = match[1]?.toLowerCase();
    if (token.startsWith('<!--')) continue;
    if (name !== undefined) {
      const closing = token.startsWith('</');
      if (skipping !== undefined) {
        if (closing && name === skipping) skipping = undefined;
        continue;
      }
      if (!closing && SKIP_CONTENT.has(name)) {
        skipping = name;
        continue;
      }
      if (name === 'a' && !closing && out.trim() === '') {
        const href = hrefOf(match[2] ?? '');
        if (href !== undefined && dropMentionsOf.has(href)) droppingMention = true;
        continue;
      }
      if (name === 'a' && closing && droppingMention) {
        droppingMention = false;
        continue;
      }
      if (name === 'br') pendingBreaks += 1;
      else if (BLOCK.has(name)) pendingBreaks = Math.max(pendingBreaks, 2);
      continue;
    }
    if (skipping !== undefined || droppingMention) continue;
    const text = decodeEntities(token);
    // Source formatting between blocks (`</p>\n<p>`) is not text.
    if (pendingBreaks > 0 && /^[ \t\r\n]*$/.test(text)) continue;
    // A direct message's leading mentions are followed by a space: start at the text.
    emit(out === '' ? text.replace(/^[ \t\r\n\u00a0]+/, '') : text);
  }
  return out;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Note HTML of a peer's text (see above). */
export function textToHtml(text: string): string {
  return text
    .split('\n\n')
    .map((paragraph) => `<p>${paragraph.split('\n').map(escapeHtml).join('<br>')}</p>`)
    .join('');
}
