import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigValidationError, describeConfig } from '@libertaria/config';
import { repoPath } from '../../../test-support/paths.js';
import { bridgeNostrConfigSpec, loadBridgeNostrConfig, relayUrls } from '../src/config.js';

const base = {
  BRIDGE_NOSTR_RELAYS: 'ws://127.0.0.1:7001,ws://127.0.0.1:7002,ws://127.0.0.1:7001',
  BRIDGE_NOSTR_KEK: 'ab'.repeat(32),
  BRIDGE_NOSTR_KEY_STORE_FILE: '/tmp/keys.jsonl',
};

describe('bridge-nostr configuration', () => {
  it('reads the required variables and applies defaults', () => {
    const config = loadBridgeNostrConfig(base);
    assert.deepEqual(relayUrls(config), ['ws://127.0.0.1:7001', 'ws://127.0.0.1:7002']);
    assert.equal(config.BRIDGE_NOSTR_HTTP_PORT, 8090);
    assert.equal(config.BRIDGE_NOSTR_MAX_TEXT_BYTES, 16384);
  });

  it('reports every problem at once, never echoes the KEK, and refuses unknown BRIDGE_NOSTR_ variables', () => {
    const secret = 'zz'.repeat(32);
    assert.throws(
      () =>
        loadBridgeNostrConfig({
          ...base,
          BRIDGE_NOSTR_RELAYS: 'http://127.0.0.1:7001',
          BRIDGE_NOSTR_KEK: secret,
          BRIDGE_NOSTR_RECONECT_MAX_MS: '5',
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigValidationError);
        assert.deepEqual(err.problems.map((p) => p.variable).sort(), [
          'BRIDGE_NOSTR_KEK',
          'BRIDGE_NOSTR_RECONECT_MAX_MS',
          'BRIDGE_NOSTR_RELAYS',
        ]);
        assert.ok(!err.message.includes(secret));
        return true;
      },
    );
  });

  it('refuses a reconnect ceiling below its start', () => {
    assert.throws(
      () =>
        loadBridgeNostrConfig({
          ...base,
          BRIDGE_NOSTR_RECONNECT_INITIAL_MS: '1000',
          BRIDGE_NOSTR_RECONNECT_MAX_MS: '500',
        }),
      (err: unknown) =>
        err instanceof ConfigValidationError && err.problems[0]?.variable === 'BRIDGE_NOSTR_RECONNECT_MAX_MS',
    );
  });

  it('is documented in docs/bridges.md exactly as describeConfig gives it', () => {
    const doc = readFileSync(repoPath('docs/bridges.md'), 'utf8');
    const begin = '<!-- bridge-nostr-config:begin -->';
    const end = '<!-- bridge-nostr-config:end -->';
    assert.ok(doc.indexOf(begin) >= 0 && doc.indexOf(end) > doc.indexOf(begin));
    assert.equal(
      doc.slice(doc.indexOf(begin) + begin.length, doc.indexOf(end)).trim(),
      describeConfig(bridgeNostrConfigSpec),
      'docs/bridges.md is out of date: run npm run docs',
    );
  });
});
