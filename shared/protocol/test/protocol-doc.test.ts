import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { decodeFrame, encodeFrame, FrameType, type FrameTypeName } from '@libertaria/protocol';
import { repoPath } from '../../../test-support/paths.js';

/**
 * docs/protocol.md is the contract other implementations read. This test
 * keeps it honest: every frame type has a heading, a row in the summary table
 * and an example; every example decodes to its named type and re-encodes to
 * the same bytes.
 */
const doc = readFileSync(repoPath('docs/protocol.md'), 'utf8');

const examples = [...doc.matchAll(/```hex frame=([A-Z_]+)\n([\s\S]*?)```/g)].map((m) => ({
  name: m[1]!,
  bytes: Uint8Array.from(
    Buffer.from(
      m[2]!
        .split('\n')
        .map((line) => line.replace(/#.*$/, ''))
        .join(' ')
        // `xx*N`: the byte xx repeated N times (keeps 1,184-byte keys readable).
        .replace(/\b([0-9a-f]{2})\*(\d+)\b/g, (_, byte: string, n: string) => byte.repeat(Number(n)))
        .replace(/\s+/g, ''),
      'hex',
    ),
  ),
}));
const headings = [...doc.matchAll(/^### 0x([0-9a-f]{2}) ([A-Z_]+)$/gm)].map((m) => ({
  value: Number.parseInt(m[1]!, 16),
  name: m[2]!,
}));
const tableRows = [...doc.matchAll(/^\| 0x([0-9a-f]{2}) +\| ([A-Z_]+) +\|/gm)].map((m) => ({
  value: Number.parseInt(m[1]!, 16),
  name: m[2]!,
}));

const names = Object.keys(FrameType).sort();

describe('docs/protocol.md agrees with the codec', () => {
  it('has one heading per frame type, with the right type byte', () => {
    assert.deepEqual(headings.map((h) => h.name).sort(), names);
    for (const h of headings) assert.equal(h.value, FrameType[h.name as FrameTypeName], h.name);
  });
  it('has one summary table row per frame type, with the right type byte', () => {
    assert.deepEqual(tableRows.map((r) => r.name).sort(), names);
    for (const r of tableRows) assert.equal(r.value, FrameType[r.name as FrameTypeName], r.name);
  });
  it('has one example per frame type', () => {
    assert.deepEqual(examples.map((e) => e.name).sort(), names);
  });
  for (const e of examples) {
    it(`example ${e.name} decodes to ${e.name} and re-encodes to the same bytes`, () => {
      const frame = decodeFrame(e.bytes);
      assert.equal(frame.type, e.name);
      assert.equal(Buffer.from(encodeFrame(frame)).toString('hex'), Buffer.from(e.bytes).toString('hex'));
    });
  }
});
