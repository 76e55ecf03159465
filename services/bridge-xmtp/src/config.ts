/**
 * The XMTP bridge's configuration: the one place the bridge reads the
 * environment. docs/configuration.md carries the table that
 * `describeConfig(bridgeXmtpConfigSpec)` produces (`npm run docs`; a test
 * keeps them equal).
 */
import {
  bool,
  type ConfigOf,
  type ConfigProblem,
  type ConfigSpec,
  describeConfig,
  type Env,
  int,
  oneOf,
  port,
  readConfig,
  str,
  url,
} from '@libertaria/config';

/** Every variable of the bridge starts with this; unknown ones are rejected. */
export const BRIDGE_XMTP_ENV_PREFIX = 'BRIDGE_XMTP_';

export const bridgeXmtpConfigSpec = {
  BRIDGE_XMTP_ENV: oneOf(['production', 'dev', 'local'], {
    doc: "XMTP network the bridge's inboxes live on: `production` for real users, `dev` for tests (its data is wiped from time to time), `local` for a network run with xmtp-local-node. Required.",
  }),
  BRIDGE_XMTP_API_URL: url({
    default: undefined,
    protocols: ['http:', 'https:'],
    doc: "XMTP API endpoint instead of the environment's default (a private node); the inbox lookups of `Client.create` still use the environment's.",
  }),
  BRIDGE_XMTP_REDIS_URL: url({
    protocols: ['redis:', 'rediss:'],
    secret: true,
    doc: "Redis of the relay cluster: the bridge's sealed keys, accounts, cursors and sent-message ids, the BullMQ queues and the bridge registry. Required.",
  }),
  REDIS_CLUSTER_NODES: str({
    default: undefined,
    pattern: /^[A-Za-z0-9.\-[\]:]+:[0-9]{1,5}(,[A-Za-z0-9.\-[\]:]+:[0-9]{1,5})*$/,
    maxLength: 4096,
    accepted: '`host:port` seed nodes separated by commas',
    doc: 'Seed nodes of a Redis Cluster to use instead of the single server at `BRIDGE_XMTP_REDIS_URL` (whose user, password and `rediss:` TLS then apply to every node); the prefix must carry a `{…}` hash tag.',
  }),
  BRIDGE_XMTP_PREFIX: str({
    default: '{lr-bridge}',
    pattern: /^[A-Za-z0-9{}_-]{1,32}$/,
    accepted: '1 to 32 of `A-Z a-z 0-9 { } _ -`',
    doc: "Key prefix of the bridge's Redis keys and of the federation queues and registry; the relays' `RELAY_FEDERATION_PREFIX`.",
  }),
  BRIDGE_XMTP_KEK: str({
    pattern: /^[0-9a-fA-F]{64}$/,
    secret: true,
    accepted: '64 hex digits (32 bytes)',
    doc: "Key-encryption key: each bridged inbox's secp256k1 key and database key are stored sealed under it in Redis (AES-256-GCM). Required; keep it apart from Redis.",
  }),
  BRIDGE_XMTP_DB_DIR: str({
    maxLength: 4096,
    doc: "Directory of the inboxes' local XMTP databases (`<address>.db3`, SQLCipher): a persistent volume, since a lost database cannot be re-created without registering another installation. Required.",
  }),
  BRIDGE_XMTP_ALLOW_NEW_INSTALLATION: bool({
    default: false,
    doc: '`true` lets an inbox whose installation is recorded register a new one when its database is missing (after a lost volume: XMTP allows few installations per inbox). `false` refuses with `BRIDGE_STATE_MISSING`.',
  }),
  BRIDGE_XMTP_RELAY_PREFIX: str({
    default: 'lr',
    pattern: /^[A-Za-z0-9{}_-]{1,32}$/,
    accepted: '1 to 32 of `A-Z a-z 0-9 { } _ -`',
    doc: "The relays' `RELAY_REDIS_PREFIX`: where the bridged peers' membrane policies live, which decide messages from unknown XMTP senders (`federated://xmtp/<inbox id>`).",
  }),
  BRIDGE_XMTP_WHEN_NO_POLICY: oneOf(['deny', 'allow'], {
    default: 'deny',
    doc: 'Messages from unknown XMTP senders (a stranger opened the DM) to a bridged peer without a membrane policy: `deny` drops them (counted, audited), `allow` delivers them and allows the DM. A peer with a policy gets what it grants on `federated://xmtp/…`.',
  }),
  BRIDGE_XMTP_HTTP_HOST: str({
    default: '127.0.0.1',
    pattern: /^[A-Za-z0-9.:%_-]{1,253}$/,
    accepted: 'a host name or IP address',
    doc: 'Address of the HTTP listener (`/health`, `/metrics`).',
  }),
  BRIDGE_XMTP_HTTP_PORT: port({ default: 8091, doc: 'Port of the HTTP listener; 0 picks a free one.' }),
  BRIDGE_XMTP_MAX_IDENTITIES: int({
    default: 1000,
    min: 1,
    max: 100000,
    doc: 'Most bridged identities (XMTP inboxes, each an open client with its database) the bridge holds; bridging one more fails with `BRIDGE_IDENTITY_LIMIT`.',
  }),
  BRIDGE_XMTP_MAX_TEXT_BYTES: int({
    default: 16384,
    min: 1,
    max: 32768,
    doc: 'Longest message text, in UTF-8 bytes, bridged either way (a federated message carries at most 32 KiB).',
  }),
  BRIDGE_XMTP_WRITE_RATE: int({
    default: 10,
    min: 1,
    max: 10000,
    doc: "Most outbound messages per second towards XMTP (BullMQ limiter of the bridge's outbound queue). XMTP's published limit is 3,000 writes per 5 minutes per client: 10/s.",
  }),
  BRIDGE_XMTP_READ_RATE: int({
    default: 50,
    min: 1,
    max: 10000,
    doc: "Most inbound sync jobs per second (BullMQ limiter of the `xmtp-sync` queue). XMTP's published limit is 20,000 reads per 5 minutes per client: about 66/s.",
  }),
  BRIDGE_XMTP_RATE_LIMIT_PAUSE_MS: int({
    default: 30000,
    min: 1,
    max: 3600000,
    doc: 'When XMTP answers that the bridge is rate limited without saying for how long, the queue concerned (outbound or sync) pauses this long, in milliseconds; the job waits without spending an attempt.',
  }),
  BRIDGE_XMTP_OUTBOUND_CONCURRENCY: int({
    default: 4,
    min: 1,
    max: 1000,
    doc: 'Outbound jobs (messages to XMTP) sent at once.',
  }),
  BRIDGE_XMTP_OUTBOUND_ATTEMPTS: int({
    default: 8,
    min: 1,
    max: 100,
    doc: 'Tries of an outbound job whose error may clear (XMTP unavailable); final errors (unknown recipient, too large) are never retried.',
  }),
  BRIDGE_XMTP_OUTBOUND_BACKOFF_MS: int({
    default: 1000,
    min: 1,
    max: 3600000,
    doc: 'First delay before retrying an outbound job, in milliseconds; it doubles per attempt.',
  }),
  BRIDGE_XMTP_JITTER_PERCENT: int({
    default: 50,
    min: 0,
    max: 100,
    doc: 'Share of each retry delay drawn at random, in percent (BullMQ backoff jitter), for outbound, inbound and sync jobs.',
  }),
  BRIDGE_XMTP_SENT_TTL_SECONDS: int({
    default: 604800,
    min: 60,
    max: 31536000,
    doc: 'How long the XMTP message id of each sent frame is kept (7 days), so a frame sent again within it publishes nothing new; keep it above the retry window of outbound jobs.',
  }),
  BRIDGE_XMTP_SYNC_CONCURRENCY: int({
    default: 4,
    min: 1,
    max: 100,
    doc: 'Inbound sync jobs (each reads one inbox) run at once.',
  }),
  BRIDGE_XMTP_SYNC_ATTEMPTS: int({
    default: 10,
    min: 1,
    max: 100,
    doc: 'Tries of a sync job (XMTP or the inbound queue unavailable); the cursor stays before the message that failed.',
  }),
  BRIDGE_XMTP_SYNC_BACKOFF_MS: int({
    default: 1000,
    min: 1,
    max: 3600000,
    doc: 'First delay before retrying a sync job, in milliseconds; it doubles per attempt.',
  }),
  BRIDGE_XMTP_SYNC_INTERVAL_MS: int({
    default: 60000,
    min: 1000,
    max: 86400000,
    doc: 'Interval of the network sync of every bridged inbox, in milliseconds: the safety net of the message streams (a stream that missed something, an inbox that failed to open).',
  }),
  BRIDGE_XMTP_PAGE_SIZE: int({
    default: 100,
    min: 1,
    max: 10000,
    doc: 'Messages read from the local database per page of a conversation.',
  }),
  BRIDGE_XMTP_SYNC_KEEP_FAILED: int({
    default: 1000,
    min: 0,
    max: 1000000,
    doc: 'Failed sync jobs kept for operators to inspect.',
  }),
  BRIDGE_XMTP_LIBERTARIA_RELAYS: str({
    default: undefined,
    pattern: /^(?:wss?|tcp|tls):\/\/[^\s,]+(?:,(?:wss?|tcp|tls):\/\/[^\s,]+)*$/,
    maxLength: 4096,
    accepted: 'comma-separated ws://, wss://, tcp:// or tls:// URLs',
    doc: 'Libertaria relays the bridge connects to as a peer: set, the bridge joins the relay cluster (docs/bridges.md#federation); unset, it runs alone and only logs inbound messages.',
  }),
  BRIDGE_XMTP_IDENTITY_FILE: str({
    default: undefined,
    maxLength: 4096,
    doc: "Key file of the bridge's own Libertaria identity (`lrelay keygen --out FILE`). Required with `BRIDGE_XMTP_LIBERTARIA_RELAYS`.",
  }),
  BRIDGE_XMTP_STATE_DIR: str({
    default: undefined,
    maxLength: 4096,
    doc: "Directory of the bridge's sealed-session state (sessions, prekeys, opened messages). Required with `BRIDGE_XMTP_LIBERTARIA_RELAYS`.",
  }),
  BRIDGE_XMTP_INBOUND_ATTEMPTS: int({
    default: 10,
    min: 1,
    max: 100,
    doc: 'Tries a relay node gives an inbound job (a full mailbox or a Redis outage may clear).',
  }),
  BRIDGE_XMTP_INBOUND_BACKOFF_MS: int({
    default: 1000,
    min: 1,
    max: 3600000,
    doc: 'First delay before retrying an inbound job, in milliseconds; it doubles per attempt.',
  }),
  BRIDGE_XMTP_INBOUND_TTL_SECONDS: int({
    default: 0,
    min: 0,
    max: 31536000,
    doc: "How long a bridged message waits in its recipient's mailbox, in seconds; 0 means the relays' maximum.",
  }),
  BRIDGE_XMTP_KEEP_COMPLETED: int({
    default: 10000,
    min: 0,
    max: 10000000,
    doc: 'Completed inbound jobs kept (newest first): an XMTP message read again while its job is kept is not sealed twice.',
  }),
  BRIDGE_XMTP_KEEP_FAILED: int({
    default: 100000,
    min: 0,
    max: 10000000,
    doc: 'Failed inbound jobs kept for operators to inspect and retry.',
  }),
  BRIDGE_XMTP_REGISTER_EVERY_MS: int({
    default: 10000,
    min: 100,
    max: 3600000,
    doc: 'How often the bridge writes its registration in the relay cluster again, so a Redis that lost it knows the bridge again within this time.',
  }),
  BRIDGE_XMTP_LOG_LEVEL: oneOf(['debug', 'info', 'warn', 'error'], {
    default: 'info',
    doc: 'Least severe log level written.',
  }),
} satisfies ConfigSpec;

export type BridgeXmtpConfig = ConfigOf<typeof bridgeXmtpConfigSpec>;

/** Checks across variables; they run once every variable is valid on its own. */
export function bridgeXmtpConfigProblems(config: BridgeXmtpConfig): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  if (config.BRIDGE_XMTP_LIBERTARIA_RELAYS !== undefined) {
    for (const variable of ['BRIDGE_XMTP_IDENTITY_FILE', 'BRIDGE_XMTP_STATE_DIR'] as const) {
      if (config[variable] === undefined) {
        problems.push({ variable, message: `${variable} is required when BRIDGE_XMTP_LIBERTARIA_RELAYS is set` });
      }
    }
  }
  if (config.REDIS_CLUSTER_NODES !== undefined && !/\{[^}]+\}/.test(config.BRIDGE_XMTP_PREFIX)) {
    problems.push({
      variable: 'BRIDGE_XMTP_PREFIX',
      message: 'on a Redis Cluster the prefix needs a {…} hash tag (BullMQ scripts touch several keys of one queue)',
    });
  }
  return problems;
}

/** Reads and validates the configuration; throws one ConfigValidationError listing every problem. */
export function loadBridgeXmtpConfig(env: Env = process.env): BridgeXmtpConfig {
  return readConfig(bridgeXmtpConfigSpec, env, { prefix: BRIDGE_XMTP_ENV_PREFIX, validate: bridgeXmtpConfigProblems });
}

/** The markdown table of the variables, for docs/configuration.md. */
export function describeBridgeXmtpConfig(): string {
  return describeConfig(bridgeXmtpConfigSpec);
}
