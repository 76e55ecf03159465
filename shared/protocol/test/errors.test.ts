import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  ConfigError,
  ERROR_CODES,
  type ErrorCode,
  errorCodeFromWire,
  errorCodeToWire,
  IdentityError,
  isErrorCode,
  LibertariaError,
  ProtocolError,
} from '@libertaria/protocol';
import { repoPath } from '../../../test-support/paths.js';

describe('error codes', () => {
  it('have unique wire numbers that map both ways', () => {
    const wires = Object.values(ERROR_CODES).map((c) => c.wire);
    assert.equal(new Set(wires).size, wires.length);
    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
      assert.equal(errorCodeFromWire(errorCodeToWire(code)), code);
    }
  });
  it('map an unknown wire number to UNKNOWN_ERROR instead of throwing', () => {
    assert.equal(errorCodeFromWire(0xbeef), 'UNKNOWN_ERROR');
  });
  it('recognize codes and nothing else', () => {
    assert.ok(isErrorCode('QUEUE_FULL'));
    assert.ok(!isErrorCode('toString'));
    assert.ok(!isErrorCode('queue_full'));
  });
  it('are carried by typed classes', () => {
    const e = new ProtocolError('TRUNCATED', 'short');
    assert.ok(e instanceof LibertariaError && e instanceof Error);
    assert.equal(e.name, 'ProtocolError');
    assert.equal(e.code, 'TRUNCATED');
    assert.equal(new IdentityError('INVALID_DID', 'x').name, 'IdentityError');
    const c = new ConfigError('RELAY_WS_PORT', 'bad');
    assert.equal(c.code, 'CONFIG_INVALID');
    assert.equal(c.variable, 'RELAY_WS_PORT');
  });
  it('are all listed in docs/errors.md, with their wire numbers, and nothing else is', () => {
    const doc = readFileSync(repoPath('docs/errors.md'), 'utf8');
    const rows = [...doc.matchAll(/^\| `([A-Z_]+)` \| 0x([0-9a-f]{4}) \| (.+) \|$/gm)];
    const documented = Object.fromEntries(
      rows.map((m) => [m[1]!, { wire: Number.parseInt(m[2]!, 16), summary: m[3]! }]),
    );
    assert.deepEqual(documented, ERROR_CODES);
  });
});
