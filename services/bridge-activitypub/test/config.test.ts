import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigValidationError, describeConfig } from '@libertaria/config';
import { repoPath } from '../../../test-support/paths.js';
import { bridgeActivityPubConfigSpec, loadBridgeActivityPubConfig } from '../src/config.js';

const base = {
  BRIDGE_AP_ORIGIN: 'https://ap.example.org',
  BRIDGE_AP_KEK: 'ab'.repeat(32),
  BRIDGE_AP_REDIS_URL: 'redis://127.0.0.1:6379',
  BRIDGE_AP_LIBERTARIA_RELAYS: 'wss://relay.example.org',
  BRIDGE_AP_IDENTITY_FILE: '/etc/bridge/identity.key',
  BRIDGE_AP_STATE_DIR: '/var/lib/bridge',
};

describe('bridge-activitypub configuration', () => {
  it('reads the required variables and applies defaults (insecure test mode off)', () => {
    const config = loadBridgeActivityPubConfig(base);
    assert.equal(config.BRIDGE_AP_INSECURE_TEST_MODE, false);
    assert.equal(config.BRIDGE_AP_HTTP_PORT, 8091);
    assert.equal(config.BRIDGE_AP_MAX_TEXT_BYTES, 16384);
    assert.equal(config.BRIDGE_AP_WHEN_NO_POLICY, 'allow');
  });

  it('refuses a plain-HTTP origin unless the insecure test mode is on, and an origin with a path', () => {
    assert.throws(
      () => loadBridgeActivityPubConfig({ ...base, BRIDGE_AP_ORIGIN: 'http://127.0.0.1:8091' }),
      (err: unknown) =>
        err instanceof ConfigValidationError &&
        err.problems.length === 1 &&
        err.problems[0]?.variable === 'BRIDGE_AP_ORIGIN' &&
        /tests only/.test(err.message),
    );
    const insecure = loadBridgeActivityPubConfig({
      ...base,
      BRIDGE_AP_ORIGIN: 'http://127.0.0.1:8091',
      BRIDGE_AP_INSECURE_TEST_MODE: 'true',
    });
    assert.equal(insecure.BRIDGE_AP_INSECURE_TEST_MODE, true);
    assert.throws(
      () => loadBridgeActivityPubConfig({ ...base, BRIDGE_AP_ORIGIN: 'https://ap.example.org/bridge' }),
      (err: unknown) => err instanceof ConfigValidationError && err.problems[0]?.variable === 'BRIDGE_AP_ORIGIN',
    );
  });

  it('needs a state directory unless scaled out (the sessions are then in Redis)', () => {
    const { BRIDGE_AP_STATE_DIR: _dir, ...withoutDir } = base;
    assert.throws(
      () => loadBridgeActivityPubConfig(withoutDir),
      (err: unknown) => err instanceof ConfigValidationError && err.problems[0]?.variable === 'BRIDGE_AP_STATE_DIR',
    );
    assert.equal(loadBridgeActivityPubConfig({ ...withoutDir, BRIDGE_AP_SCALE_OUT: 'true' }).BRIDGE_AP_SCALE_OUT, true);
  });

  it('reports every problem at once, never echoes the KEK, and refuses unknown BRIDGE_AP_ variables', () => {
    const secret = 'zz'.repeat(32);
    assert.throws(
      () =>
        loadBridgeActivityPubConfig({
          ...base,
          BRIDGE_AP_KEK: secret,
          BRIDGE_AP_MAX_TEXT_BYTE: '5',
          BRIDGE_AP_ORIGIN: undefined,
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigValidationError);
        assert.deepEqual(err.problems.map((p) => p.variable).sort(), [
          'BRIDGE_AP_KEK',
          'BRIDGE_AP_MAX_TEXT_BYTE',
          'BRIDGE_AP_ORIGIN',
        ]);
        assert.ok(!err.message.includes(secret));
        return true;
      },
    );
  });

  it('is documented in docs/configuration.md exactly as describeConfig gives it', () => {
    const doc = readFileSync(repoPath('docs/configuration.md'), 'utf8');
    const begin = '<!-- bridge-activitypub-config:begin -->';
    const end = '<!-- bridge-activitypub-config:end -->';
    assert.ok(doc.indexOf(begin) >= 0 && doc.indexOf(end) > doc.indexOf(begin));
    assert.equal(
      doc.slice(doc.indexOf(begin) + begin.length, doc.indexOf(end)).trim(),
      describeConfig(bridgeActivityPubConfigSpec),
      'docs/configuration.md is out of date: run npm run docs',
    );
  });
});
