import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigValidationError, describeConfig } from '@libertaria/config';
import { repoPath } from '../../../test-support/paths.js';
import { bridgeXmtpConfigSpec, loadBridgeXmtpConfig } from '../src/config.js';

const base = {
  BRIDGE_XMTP_ENV: 'dev',
  BRIDGE_XMTP_REDIS_URL: 'redis://127.0.0.1:6379',
  BRIDGE_XMTP_KEK: 'ab'.repeat(32),
  BRIDGE_XMTP_DB_DIR: '/var/lib/bridge-xmtp/db',
};

describe('bridge-xmtp configuration', () => {
  it('reads the required variables and applies defaults', () => {
    const config = loadBridgeXmtpConfig(base);
    assert.equal(config.BRIDGE_XMTP_ENV, 'dev');
    assert.equal(config.BRIDGE_XMTP_HTTP_PORT, 8091);
    assert.equal(config.BRIDGE_XMTP_WRITE_RATE, 10);
    assert.equal(config.BRIDGE_XMTP_READ_RATE, 50);
    assert.equal(config.BRIDGE_XMTP_ALLOW_NEW_INSTALLATION, false);
    assert.equal(config.BRIDGE_XMTP_WHEN_NO_POLICY, 'deny');
    assert.equal(config.BRIDGE_XMTP_RELAY_PREFIX, 'lr');
    assert.equal(config.BRIDGE_XMTP_PREFIX, '{lr-bridge}');
    assert.equal(config.BRIDGE_XMTP_LIBERTARIA_RELAYS, undefined);
  });

  it('reports every problem at once, never echoes the KEK, and refuses unknown BRIDGE_XMTP_ variables', () => {
    const secret = 'zz'.repeat(32);
    assert.throws(
      () =>
        loadBridgeXmtpConfig({
          ...base,
          BRIDGE_XMTP_ENV: 'mainnet',
          BRIDGE_XMTP_KEK: secret,
          BRIDGE_XMTP_READ_RAT: '5',
          BRIDGE_XMTP_LIBERTARIA_RELAYS: 'ws://127.0.0.1:8080',
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigValidationError);
        assert.deepEqual(err.problems.map((p) => p.variable).sort(), [
          'BRIDGE_XMTP_ENV',
          'BRIDGE_XMTP_KEK',
          'BRIDGE_XMTP_READ_RAT',
        ]);
        assert.ok(!err.message.includes(secret));
        return true;
      },
    );
  });

  it('needs the identity file and state dir to join the relay cluster, and a hash tag on a Redis Cluster', () => {
    assert.throws(
      () =>
        loadBridgeXmtpConfig({
          ...base,
          BRIDGE_XMTP_LIBERTARIA_RELAYS: 'ws://127.0.0.1:8080',
          REDIS_CLUSTER_NODES: '127.0.0.1:7000',
          BRIDGE_XMTP_PREFIX: 'plain',
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigValidationError);
        assert.deepEqual(err.problems.map((p) => p.variable).sort(), [
          'BRIDGE_XMTP_IDENTITY_FILE',
          'BRIDGE_XMTP_PREFIX',
          'BRIDGE_XMTP_STATE_DIR',
        ]);
        return true;
      },
    );
  });

  it('is documented in docs/configuration.md exactly as describeConfig gives it', () => {
    const doc = readFileSync(repoPath('docs/configuration.md'), 'utf8');
    const begin = '<!-- bridge-xmtp-config:begin -->';
    const end = '<!-- bridge-xmtp-config:end -->';
    assert.ok(doc.indexOf(begin) >= 0 && doc.indexOf(end) > doc.indexOf(begin));
    assert.equal(
      doc.slice(doc.indexOf(begin) + begin.length, doc.indexOf(end)).trim(),
      describeConfig(bridgeXmtpConfigSpec),
      'docs/configuration.md is out of date: run npm run docs',
    );
  });
});
