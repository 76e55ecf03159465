import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigValidationError, describeConfig, type Env } from '@libertaria/config';
import { ConfigError } from '@libertaria/protocol';
import { repoPath } from '../../../test-support/paths.js';
import { loadRelayConfig, type RelayConfig, relayConfigSpec, relayQueueSenderShare } from '../src/config.js';

/** The ConfigValidationError `env` must produce. */
function rejection(env: Env): ConfigValidationError {
  try {
    loadRelayConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigValidationError, `expected a ConfigValidationError, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected ${JSON.stringify(env)} to be rejected`);
}

describe('loadRelayConfig', () => {
  it('loads the documented defaults from an empty environment', () => {
    const expected: RelayConfig = {
      REDIS_URL: 'redis://127.0.0.1:6379',
      REDIS_CLUSTER_NODES: undefined,
      RELAY_DURABLE_WAIT_REPLICAS: 0,
      RELAY_DURABLE_WAIT_TIMEOUT_MS: 1000,
      RELAY_TRUSTED_PROXIES: undefined,
      RELAY_DEBUG_POISON_RECYCLED: false,
      RELAY_NODE_ID: undefined,
      RELAY_PUBLIC_URLS: undefined,
      RELAY_HOST: '0.0.0.0',
      RELAY_WS_PORT: 8080,
      RELAY_TCP_PORT: 8081,
      RELAY_ADMIN_PORT: 9090,
      RELAY_TCP_ENABLED: true,
      RELAY_TLS_CERT_FILE: undefined,
      RELAY_TLS_KEY_FILE: undefined,
      RELAY_IDENTITY_KEY_FILE: undefined,
      RELAY_IDENTITY_KEY: undefined,
      RELAY_MAX_PAYLOAD_BYTES: 65536,
      RELAY_SEND_QUEUE_FRAMES: 512,
      RELAY_SEND_QUEUE_BYTES: 4194304,
      RELAY_CROSS_NODE_MESSAGE_BYTES: 65536,
      RELAY_NODE_LINKS: true,
      RELAY_NODE_LINK_HOST: undefined,
      RELAY_NODE_LINK_PORT: 0,
      RELAY_NODE_LINK_BUFFER_BYTES: 8388608,
      RELAY_NODE_LINK_MESSAGE_BYTES: 262144,
      RELAY_NODE_LINK_MAX_INBOUND: 256,
      RELAY_NODE_LINK_HANDSHAKE_TIMEOUT_MS: 5000,
      RELAY_HANDSHAKE_STEP_TIMEOUT_MS: 10000,
      RELAY_HANDSHAKE_TIMEOUT_MS: 30000,
      RELAY_AUTH_FAILURES_PER_MINUTE: 20,
      RELAY_AUTH_FAILURES_PER_ADDRESS_PER_MINUTE: 300,
      RELAY_RATE_FRAMES_PER_SECOND: 5000,
      RELAY_RATE_BURST: 10000,
      RELAY_RATE_CONTROL_PER_SECOND: 200,
      RELAY_RATE_CONTROL_BURST: 2000,
      RELAY_RATE_CONTROL_FLOOD_SECONDS: 10,
      RELAY_QUEUE_MAX_FRAMES: 10000,
      RELAY_QUEUE_MAX_BYTES: 67108864,
      RELAY_QUEUE_ACKED_IDS: undefined,
      RELAY_QUEUE_MAX_FRAMES_PER_SENDER: undefined,
      RELAY_QUEUE_MAX_BYTES_PER_SENDER: undefined,
      RELAY_DURABLE_ACK_HOLD: 262144,
      RELAY_DURABLE_FRAMES_PATH: 'prewrite',
      RELAY_QUEUE_TTL_SECONDS: 2592000,
      RELAY_DURABLE_FRAMES_PER_SENDER_PER_HOUR: 50000,
      RELAY_DURABLE_BYTES_PER_SENDER_PER_HOUR: 268435456,
      RELAY_DURABLE_FRAMES_PER_ADDRESS_PER_HOUR: 200000,
      RELAY_DURABLE_BYTES_PER_ADDRESS_PER_HOUR: 1073741824,
      RELAY_DURABLE_BUDGET_RESERVE_FRAMES: 1024,
      RELAY_DURABLE_REQUIRE_PREKEYS: false,
      RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT: 90,
      RELAY_REDIS_MEMORY_CHECK_MS: 1000,
      RELAY_CONNECTIONS_PER_ADDRESS: 1000,
      RELAY_PRESENCE_TTL_MS: 15000,
      RELAY_HEARTBEAT_MS: 5000,
      RELAY_DRAIN_TIMEOUT_MS: 10000,
      RELAY_PREKEY_MAX_ONE_TIME: 100,
      RELAY_PREKEY_LOW_WATER: 10,
      RELAY_PREKEY_FETCHES_PER_MINUTE: 30,
      RELAY_PREKEY_TARGET_FETCHES_PER_MINUTE: 60,
      RELAY_PREKEY_PUBLISHES_PER_MINUTE: 30,
      RELAY_PREKEY_TTL_SECONDS: 7776000,
      RELAY_ANON_ENABLED: true,
      RELAY_ANON_POW_BITS: 16,
      RELAY_ANON_MAX_SENDS: 4,
      RELAY_ANON_LIFETIME_MS: 60000,
      RELAY_ANON_MAX_CONNECTIONS: 10000,
      RELAY_ONCE_MAX_RETENTION_SECONDS: 604800,
      RELAY_ONCE_CHECKS_PER_MINUTE: 600,
      RELAY_MEMBRANE_ENABLED: true,
      RELAY_MEMBRANE_DEFAULT: 'open',
      RELAY_MEMBRANE_AUDIT_MAX_ENTRIES: 1000000,
      RELAY_MEMBRANE_POLICY_CACHE_ENTRIES: 10000,
      RELAY_MEMBRANE_CACHE_MAX_AGE_MS: 60000,
      RELAY_MEMBRANE_CONNECTION_CACHE_ENTRIES: 1024,
      RELAY_MEMBRANE_PENDING_SENDS: 4096,
      RELAY_MEMBRANE_GRANTS_PER_CONNECTION: 64,
      RELAY_MEMBRANE_REQUESTS_PER_MINUTE: 120,
      RELAY_ADMIN_TOKEN: undefined,
      RELAY_REDIS_PREFIX: 'lr',
      RELAY_FEDERATION_ENABLED: true,
      RELAY_FEDERATION_PREFIX: '{lr-bridge}',
      RELAY_FEDERATION_REFRESH_MS: 30000,
      RELAY_FEDERATION_INBOUND_CONCURRENCY: 16,
      RELAY_FEDERATION_INBOUND_RATE: 2000,
      RELAY_FEDERATION_DASHBOARD_TOKEN: undefined,
      RELAY_FEDERATION_DASHBOARD_PORT: 9091,
      RELAY_FEDERATION_KEEP_COMPLETED: 10000,
      RELAY_FEDERATION_KEEP_COMPLETED_SECONDS: 86400,
      RELAY_FEDERATION_KEEP_FAILED: 100000,
      RELAY_FEDERATION_KEEP_FAILED_SECONDS: 604800,
      RELAY_LOG_LEVEL: 'info',
    };
    assert.deepEqual(loadRelayConfig({}), expected);
  });

  it('reads every kind of variable', () => {
    const config = loadRelayConfig({
      REDIS_URL: 'rediss://:pw@redis.internal:6380/2',
      RELAY_NODE_ID: 'relay-eu-1.a',
      RELAY_WS_PORT: '0',
      RELAY_TCP_ENABLED: 'no',
      RELAY_TLS_CERT_FILE: '/etc/relay/cert.pem',
      RELAY_TLS_KEY_FILE: '/etc/relay/key.pem',
      RELAY_IDENTITY_KEY_FILE: '/etc/relay/identity.key',
      RELAY_QUEUE_MAX_BYTES: '17179869184',
      RELAY_LOG_LEVEL: 'debug',
      PATH: '/usr/bin',
    });
    assert.equal(config.REDIS_URL, 'rediss://:pw@redis.internal:6380/2');
    assert.equal(config.RELAY_NODE_ID, 'relay-eu-1.a');
    assert.equal(config.RELAY_WS_PORT, 0);
    assert.equal(config.RELAY_TCP_ENABLED, false);
    assert.equal(config.RELAY_TLS_CERT_FILE, '/etc/relay/cert.pem');
    assert.equal(config.RELAY_TLS_KEY_FILE, '/etc/relay/key.pem');
    assert.equal(config.RELAY_IDENTITY_KEY_FILE, '/etc/relay/identity.key');
    assert.equal(config.RELAY_QUEUE_MAX_BYTES, 17179869184);
    assert.equal(config.RELAY_LOG_LEVEL, 'debug');
  });

  it('gives one sender a quarter of a recipient’s queue unless told otherwise, and at least one largest frame', () => {
    assert.deepEqual(relayQueueSenderShare(loadRelayConfig({})), {
      maxFramesPerSender: 2500,
      maxBytesPerSender: 16 * 1024 * 1024,
    });
    assert.deepEqual(relayQueueSenderShare(loadRelayConfig({ RELAY_QUEUE_MAX_FRAMES: '5' })).maxFramesPerSender, 2);
    // A quarter of this queue's bytes would not hold one 64 KiB frame: the share is one largest frame.
    assert.deepEqual(
      relayQueueSenderShare(loadRelayConfig({ RELAY_QUEUE_MAX_BYTES: String(65536 + 99 + 1000) })).maxBytesPerSender,
      65536 + 99,
    );
    assert.deepEqual(
      relayQueueSenderShare(
        loadRelayConfig({ RELAY_QUEUE_MAX_FRAMES_PER_SENDER: '7', RELAY_QUEUE_MAX_BYTES_PER_SENDER: '70000' }),
      ),
      { maxFramesPerSender: 7, maxBytesPerSender: 70000 },
    );
    const small = rejection({ RELAY_QUEUE_MAX_BYTES_PER_SENDER: '65000' });
    assert.equal(small.variable, 'RELAY_QUEUE_MAX_BYTES_PER_SENDER');
    assert.match(small.message, /cannot hold one largest frame/);
  });

  it('requires the TLS certificate and key together', () => {
    const certOnly = rejection({ RELAY_TLS_CERT_FILE: '/etc/relay/cert.pem' });
    assert.ok(certOnly instanceof ConfigError);
    assert.equal(certOnly.code, 'CONFIG_INVALID');
    assert.deepEqual(certOnly.problems, [
      {
        variable: 'RELAY_TLS_KEY_FILE',
        message: 'RELAY_TLS_CERT_FILE is set but RELAY_TLS_KEY_FILE is not: set both to serve TLS, or neither',
      },
    ]);
    const keyOnly = rejection({ RELAY_TLS_KEY_FILE: '/etc/relay/key.pem' });
    assert.equal(keyOnly.variable, 'RELAY_TLS_CERT_FILE');
    assert.match(keyOnly.message, /RELAY_TLS_KEY_FILE is set but RELAY_TLS_CERT_FILE is not/);
  });

  it('requires the heartbeat to be shorter than the presence TTL', () => {
    for (const env of [
      { RELAY_HEARTBEAT_MS: '15000' },
      { RELAY_HEARTBEAT_MS: '20000' },
      { RELAY_PRESENCE_TTL_MS: '5000' },
      { RELAY_PRESENCE_TTL_MS: '1000', RELAY_HEARTBEAT_MS: '1000' },
    ]) {
      const err = rejection(env);
      assert.equal(err.variable, 'RELAY_HEARTBEAT_MS');
      assert.equal(err.problems.length, 1);
      assert.match(err.message, /RELAY_HEARTBEAT_MS=\d+ is not less than RELAY_PRESENCE_TTL_MS=\d+/);
    }
    assert.equal(loadRelayConfig({ RELAY_PRESENCE_TTL_MS: '1000', RELAY_HEARTBEAT_MS: '999' }).RELAY_HEARTBEAT_MS, 999);
  });

  it('reports both cross-field problems together', () => {
    const err = rejection({ RELAY_TLS_KEY_FILE: '/k.pem', RELAY_HEARTBEAT_MS: '60000' });
    assert.deepEqual(
      err.problems.map((p) => p.variable),
      ['RELAY_TLS_CERT_FILE', 'RELAY_HEARTBEAT_MS'],
    );
  });

  it('rejects an unknown RELAY_ variable and suggests the intended one', () => {
    const err = rejection({ RELAY_WS_PROT: '9000' });
    assert.equal(err.variable, 'RELAY_WS_PROT');
    assert.equal(
      err.problems[0]?.message,
      'RELAY_WS_PROT is set but is not a known variable; did you mean RELAY_WS_PORT?',
    );
    assert.match(rejection({ RELAY_LOGLEVEL: 'debug' }).message, /did you mean RELAY_LOG_LEVEL\?/);
  });

  it('names the variable and its range when a value is out of range', () => {
    const port = rejection({ RELAY_WS_PORT: '70000' });
    assert.equal(port.variable, 'RELAY_WS_PORT');
    assert.equal(
      port.problems[0]?.message,
      'RELAY_WS_PORT="70000" is not accepted: expected an integer from 0 to 65535 (default 8080)',
    );
    const ttl = rejection({ RELAY_QUEUE_TTL_SECONDS: '59' });
    assert.equal(ttl.variable, 'RELAY_QUEUE_TTL_SECONDS');
    assert.match(ttl.message, /RELAY_QUEUE_TTL_SECONDS="59" is not accepted: expected an integer from 60 to 31536000/);
    const payload = rejection({ RELAY_MAX_PAYLOAD_BYTES: '1048577' });
    assert.match(payload.message, /RELAY_MAX_PAYLOAD_BYTES="1048577" is not accepted: .* from 1 to 1048576/);
  });

  it('rejects malformed string values', () => {
    assert.equal(rejection({ REDIS_URL: 'http://127.0.0.1:6379' }).variable, 'REDIS_URL');
    assert.equal(rejection({ RELAY_NODE_ID: 'has space' }).variable, 'RELAY_NODE_ID');
    assert.equal(rejection({ RELAY_NODE_ID: 'n'.repeat(65) }).variable, 'RELAY_NODE_ID');
    assert.equal(rejection({ RELAY_IDENTITY_KEY: 'not-a-seed' }).variable, 'RELAY_IDENTITY_KEY');
    assert.equal(rejection({ RELAY_IDENTITY_KEY: 'A'.repeat(44) }).variable, 'RELAY_IDENTITY_KEY');
    // The retired name of the relay identity (a string, before it was a key) is an unknown variable now.
    assert.equal(rejection({ RELAY_IDENTITY: 'libertaria-relay' }).variable, 'RELAY_IDENTITY');
    const both = rejection({ RELAY_IDENTITY_KEY_FILE: '/k', RELAY_IDENTITY_KEY: 'A'.repeat(43) });
    assert.equal(both.variable, 'RELAY_IDENTITY_KEY');
    // A step longer than the whole handshake is allowed: the whole bound wins (peer-connection.ts).
    assert.equal(loadRelayConfig({ RELAY_HANDSHAKE_TIMEOUT_MS: '300' }).RELAY_HANDSHAKE_STEP_TIMEOUT_MS, 10000);
    assert.equal(rejection({ RELAY_REDIS_PREFIX: 'a/b' }).variable, 'RELAY_REDIS_PREFIX');
    assert.equal(rejection({ RELAY_LOG_LEVEL: 'trace' }).variable, 'RELAY_LOG_LEVEL');
    assert.equal(rejection({ RELAY_TCP_ENABLED: 'on' }).variable, 'RELAY_TCP_ENABLED');
  });

  it('reports every problem at once', () => {
    const err = rejection({ RELAY_WS_PORT: 'abc', RELAY_LOG_LEVEL: 'loud', RELAY_TYPO: '1' });
    assert.deepEqual(
      err.problems.map((p) => p.variable),
      ['RELAY_WS_PORT', 'RELAY_LOG_LEVEL', 'RELAY_TYPO'],
    );
    assert.equal(err.message.split('\n').length, 4);
  });
});

describe('docs/configuration.md', () => {
  it('carries exactly the table describeConfig(relayConfigSpec) produces', () => {
    const doc = readFileSync(repoPath('docs/configuration.md'), 'utf8');
    const begin = '<!-- relay-config:begin -->';
    const end = '<!-- relay-config:end -->';
    const from = doc.indexOf(begin);
    const to = doc.indexOf(end);
    assert.ok(from >= 0 && to > from, 'docs/configuration.md needs the relay-config markers, begin before end');
    assert.equal(
      doc.slice(from + begin.length, to).trim(),
      describeConfig(relayConfigSpec),
      'docs/configuration.md is out of date: paste describeConfig(relayConfigSpec) between the markers',
    );
  });
});

describe('relay cross-field checks on queue sizes', () => {
  it('refuses queues that cannot hold one largest frame', () => {
    assert.throws(
      () => loadRelayConfig({ RELAY_MAX_PAYLOAD_BYTES: '1048576', RELAY_SEND_QUEUE_BYTES: '1048000' }),
      (err: unknown) =>
        err instanceof ConfigValidationError && err.problems.some((p) => p.variable === 'RELAY_SEND_QUEUE_BYTES'),
    );
  });
  it('refuses a byte budget below one largest frame, and takes 0 as no limit', () => {
    assert.throws(
      () => loadRelayConfig({ RELAY_DURABLE_BYTES_PER_SENDER_PER_HOUR: '1000' }),
      (err: unknown) =>
        err instanceof ConfigValidationError &&
        err.problems.some((p) => p.variable === 'RELAY_DURABLE_BYTES_PER_SENDER_PER_HOUR'),
    );
    assert.equal(
      loadRelayConfig({ RELAY_DURABLE_BYTES_PER_ADDRESS_PER_HOUR: '0' }).RELAY_DURABLE_BYTES_PER_ADDRESS_PER_HOUR,
      0,
    );
  });
  it('refuses a prekey low-water mark above the cap', () => {
    assert.throws(
      () => loadRelayConfig({ RELAY_PREKEY_MAX_ONE_TIME: '10', RELAY_PREKEY_LOW_WATER: '11' }),
      (err: unknown) =>
        err instanceof ConfigValidationError && err.problems.some((p) => p.variable === 'RELAY_PREKEY_LOW_WATER'),
    );
    assert.equal(
      loadRelayConfig({ RELAY_PREKEY_MAX_ONE_TIME: '10', RELAY_PREKEY_LOW_WATER: '10' }).RELAY_PREKEY_LOW_WATER,
      10,
    );
  });
  it('accepts a list of public URLs and refuses a bad one', () => {
    assert.equal(loadRelayConfig({ RELAY_PUBLIC_URLS: 'ws://a:1,tcp://b:2' }).RELAY_PUBLIC_URLS, 'ws://a:1,tcp://b:2');
    assert.throws(() => loadRelayConfig({ RELAY_PUBLIC_URLS: 'http://a' }), ConfigValidationError);
  });
});
