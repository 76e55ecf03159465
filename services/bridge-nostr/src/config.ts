/**
 * The Nostr bridge's configuration: the one place the bridge reads the
 * environment. `docs/bridges.md` carries the table that
 * `describeConfig(bridgeNostrConfigSpec)` produces (a test keeps them equal).
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
export const BRIDGE_NOSTR_ENV_PREFIX = 'BRIDGE_NOSTR_';

/** A comma-separated list of ws:// or wss:// URLs. */
const RELAY_LIST = /^wss?:\/\/[^\s,]+(?:,wss?:\/\/[^\s,]+)*$/;

export const bridgeNostrConfigSpec = {
  BRIDGE_NOSTR_RELAYS: str({
    pattern: RELAY_LIST,
    maxLength: 4096,
    accepted: 'comma-separated ws:// or wss:// URLs',
    doc: 'Nostr relays the bridge reads from (gift wraps and mentions for bridged keys) and writes to when a recipient publishes no kind-10050 inbox relays. Required.',
  }),
  BRIDGE_NOSTR_KEK: str({
    pattern: /^[0-9a-fA-F]{64}$/,
    secret: true,
    accepted: '64 hex digits (32 bytes)',
    doc: 'Key-encryption key: every bridged Nostr secret key is stored sealed under it (AES-256-GCM). Required; keep it apart from the key store.',
  }),
  BRIDGE_NOSTR_KEY_STORE_FILE: str({
    default: undefined,
    maxLength: 4096,
    doc: 'File holding the sealed Nostr keys of bridged identities (created with mode 0600). Required unless `BRIDGE_NOSTR_SCALE_OUT` is on; with it, the keys live in Redis and an existing file named here is imported at start (once per identity; the file is only read).',
  }),
  BRIDGE_NOSTR_HTTP_HOST: str({
    default: '127.0.0.1',
    pattern: /^[A-Za-z0-9.:%_-]{1,253}$/,
    accepted: 'a host name or IP address',
    doc: 'Address of the HTTP listener (NIP-05 `/.well-known/nostr.json`, `/health`, `/metrics`).',
  }),
  BRIDGE_NOSTR_HTTP_PORT: port({ default: 8090, doc: 'Port of the HTTP listener; 0 picks a free one.' }),
  BRIDGE_NOSTR_MAX_IDENTITIES: int({
    default: 100000,
    min: 1,
    max: 10000000,
    doc: 'Most bridged identities (Nostr keys) the bridge holds; bridging one more fails with `BRIDGE_IDENTITY_LIMIT`.',
  }),
  BRIDGE_NOSTR_MAX_TEXT_BYTES: int({
    default: 16384,
    min: 1,
    max: 32768,
    doc: 'Longest message text, in UTF-8 bytes, bridged either way (16 KiB). NIP-44 v2 caps what one seal can carry at 65535 bytes, hence the ceiling; a text under the limit whose sealed form still exceeds it is refused with `BRIDGE_MESSAGE_TOO_LARGE`.',
  }),
  BRIDGE_NOSTR_MAX_EVENT_BYTES: int({
    default: 262144,
    min: 131072,
    max: 4194304,
    doc: 'Largest message from a relay, in bytes; longer ones are dropped and counted as malformed (256 KiB; the largest valid gift wrap is about 90 KiB).',
  }),
  BRIDGE_NOSTR_MAX_INBOX_RELAYS: int({
    default: 5,
    min: 1,
    max: 50,
    doc: "Most of a recipient's kind-10050 inbox relays a message is sent to; the rest are ignored.",
  }),
  BRIDGE_NOSTR_PUBLISH_TIMEOUT_MS: int({
    default: 5000,
    min: 100,
    max: 120000,
    doc: 'Time a relay has to connect and answer OK to a published event, in milliseconds.',
  }),
  BRIDGE_NOSTR_LOOKUP_TIMEOUT_MS: int({
    default: 3000,
    min: 100,
    max: 60000,
    doc: "Time given to the relays to return a recipient's kind-10050 inbox relay list, in milliseconds.",
  }),
  BRIDGE_NOSTR_RECONNECT_INITIAL_MS: int({
    default: 500,
    min: 10,
    max: 60000,
    doc: 'First delay before reconnecting to a relay that dropped or refused the connection, in milliseconds; it doubles per failure, with ±20% jitter.',
  }),
  BRIDGE_NOSTR_RECONNECT_MAX_MS: int({
    default: 30000,
    min: 10,
    max: 600000,
    doc: 'Largest delay between reconnection attempts, in milliseconds (the seed: 1 s, 2 s, 4 s … 30 s).',
  }),
  BRIDGE_NOSTR_PING_INTERVAL_MS: int({
    default: 30000,
    min: 0,
    max: 600000,
    doc: 'Interval of WebSocket pings to the configured relays, in milliseconds; a relay that has not answered one by the next is dropped and reconnected. 0 turns pings off.',
  }),
  BRIDGE_NOSTR_HANDLER_ATTEMPTS: int({
    default: 3,
    min: 1,
    max: 20,
    doc: 'Tries of the inbound handler (the hand-over towards the Libertaria peer) per message before it is left for a relay to resend.',
  }),
  BRIDGE_NOSTR_HANDLER_RETRY_MS: int({
    default: 200,
    min: 1,
    max: 60000,
    doc: 'Delay before the second try of the inbound handler, in milliseconds; it doubles for each further try.',
  }),
  BRIDGE_NOSTR_MAX_AUTH_KEYS: int({
    default: 16,
    min: 1,
    max: 1000,
    doc: 'Most bridged keys that answer one NIP-42 AUTH challenge (the first bridged). A relay that serves gift wraps only to their authenticated recipient serves these keys only.',
  }),
  BRIDGE_NOSTR_DEDUPE_CAPACITY: int({
    default: 100000,
    min: 100,
    max: 10000000,
    doc: 'Event ids remembered to deliver a message seen on several relays once; the oldest are forgotten first.',
  }),
  BRIDGE_NOSTR_LOOKBACK_SECONDS: int({
    default: 259200,
    min: 0,
    max: 2592000,
    doc: 'How far back subscriptions reach when (re)connecting, in seconds (3 days: NIP-59 backdates gift wraps by up to 2 days).',
  }),
  BRIDGE_NOSTR_REDIS_URL: url({
    default: undefined,
    protocols: ['redis:', 'rediss:'],
    secret: true,
    doc: 'Redis of the relay cluster (BullMQ queues and the bridge registry). Set it to join the cluster (docs/bridges.md#federation); unset, the bridge runs alone and only logs inbound messages.',
  }),
  REDIS_CLUSTER_NODES: str({
    default: undefined,
    pattern: /^[A-Za-z0-9.\-[\]:]+:[0-9]{1,5}(,[A-Za-z0-9.\-[\]:]+:[0-9]{1,5})*$/,
    maxLength: 4096,
    accepted: '`host:port` seed nodes separated by commas',
    doc: 'Seed nodes of a Redis Cluster to run the federation on instead of the single server at `BRIDGE_NOSTR_REDIS_URL` (whose user, password and `rediss:` TLS then apply to every node); the federation prefix must carry a `{…}` hash tag (docs/redis.md).',
  }),
  BRIDGE_NOSTR_FEDERATION_PREFIX: str({
    default: '{lr-bridge}',
    pattern: /^[A-Za-z0-9{}_-]{1,32}$/,
    accepted: '1 to 32 of `A-Z a-z 0-9 { } _ -`',
    doc: "Key prefix of the federation queues and registry; the relays' `RELAY_FEDERATION_PREFIX`.",
  }),
  BRIDGE_NOSTR_LIBERTARIA_RELAYS: str({
    default: undefined,
    pattern: /^(?:wss?|tcp|tls):\/\/[^\s,]+(?:,(?:wss?|tcp|tls):\/\/[^\s,]+)*$/,
    maxLength: 4096,
    accepted: 'comma-separated ws://, wss://, tcp:// or tls:// URLs',
    doc: 'Libertaria relays the bridge connects to as a peer (prekeys, sealed sessions). Required with `BRIDGE_NOSTR_REDIS_URL`.',
  }),
  BRIDGE_NOSTR_IDENTITY_FILE: str({
    default: undefined,
    maxLength: 4096,
    doc: "Key file of the bridge's own Libertaria identity (`lrelay keygen --out FILE`): the DID peers send to. Required with `BRIDGE_NOSTR_REDIS_URL`.",
  }),
  BRIDGE_NOSTR_STATE_DIR: str({
    default: undefined,
    maxLength: 4096,
    doc: "Directory of the bridge's sealed-session state (sessions, prekeys, opened messages). Required with `BRIDGE_NOSTR_REDIS_URL` unless `BRIDGE_NOSTR_SCALE_OUT` is on (the state is then in Redis).",
  }),
  BRIDGE_NOSTR_SCALE_OUT: bool({
    default: false,
    doc: 'Run as one of any number of processes of this bridge (docs/bridges.md#running-several-processes): Nostr keys sealed in Redis, sessions in Redis under per-peer leases, the gift-wrap cache in Redis, and one leader (elected in Redis) holding the relay connection. Needs `BRIDGE_NOSTR_REDIS_URL`; no local file is written.',
  }),
  BRIDGE_NOSTR_LEADER_TTL_MS: int({
    default: 10000,
    min: 300,
    max: 600000,
    doc: "Scaled out: the leader's lease, in milliseconds, renewed every third of it; a killed leader is replaced within about this (its relay connection, mailbox and inbound sealing move to another process).",
  }),
  BRIDGE_NOSTR_SESSION_LOCK_TTL_MS: int({
    default: 10000,
    min: 100,
    max: 600000,
    doc: "Scaled out: the lease on one peer's session state while a process seals or opens, in milliseconds, renewed while held; a process killed holding it blocks that peer for at most this long.",
  }),
  BRIDGE_NOSTR_SESSION_LOCK_WAIT_MS: int({
    default: 30000,
    min: 0,
    max: 600000,
    doc: 'Scaled out: how long a job waits for a busy peer\'s session lease, in milliseconds, before it fails with a retryable error (`bridge_federation_session_locks_total{result="busy"}`) and is retried with backoff.',
  }),
  BRIDGE_NOSTR_IDENTITY_REFRESH_MS: int({
    default: 30000,
    min: 100,
    max: 3600000,
    doc: 'Scaled out: how often a process reads the list of bridged identities from Redis again, in milliseconds, besides the notice of each new one (a notice missed during a Redis disconnection is caught up by then).',
  }),
  BRIDGE_NOSTR_JOB_LOCK_MS: int({
    default: 30000,
    min: 1000,
    max: 600000,
    doc: "Lock on a running federation job, in milliseconds (BullMQ's lockDuration, and its stall check's interval): a job whose process died (kill -9, a lost pod) runs again elsewhere after at most about twice this. A process whose event loop stalls longer may see its job run twice; sends and seals are idempotent per job.",
  }),
  BRIDGE_NOSTR_WRAP_TTL_SECONDS: int({
    default: 604800,
    min: 60,
    max: 31536000,
    doc: 'Scaled out: how long the gift wrap (or note) made for an outbound frame is kept in Redis, in seconds, so a retry on any process republishes the very same event (7 days: longer than an outbound job is retried by hand, usually).',
  }),
  BRIDGE_NOSTR_OUTBOUND_CONCURRENCY: int({
    default: 8,
    min: 1,
    max: 1000,
    doc: 'Outbound jobs (messages to Nostr) this bridge sends at once.',
  }),
  BRIDGE_NOSTR_OUTBOUND_RATE: int({
    default: 50,
    min: 1,
    max: 100000,
    doc: "Most outbound jobs per second towards the Nostr relays (BullMQ limiter on the bridge's queue, shared by all its workers).",
  }),
  BRIDGE_NOSTR_RATE_LIMIT_PAUSE_MS: int({
    default: 10000,
    min: 1,
    max: 3600000,
    doc: 'When no Nostr relay takes a message and they answer `rate-limited:`, the outbound queue pauses this long, in milliseconds; the job waits without spending an attempt.',
  }),
  BRIDGE_NOSTR_OUTBOUND_ATTEMPTS: int({
    default: 8,
    min: 1,
    max: 100,
    doc: 'Tries of an outbound job whose error may clear (no relay accepted); final errors (bad URI, too large) are never retried.',
  }),
  BRIDGE_NOSTR_OUTBOUND_BACKOFF_MS: int({
    default: 1000,
    min: 1,
    max: 3600000,
    doc: 'First delay before retrying an outbound job, in milliseconds; it doubles per attempt (1 s, 2 s, 4 s … about 2 min for the 8th).',
  }),
  BRIDGE_NOSTR_JITTER_PERCENT: int({
    default: 50,
    min: 0,
    max: 100,
    doc: 'Share of each retry delay drawn at random, in percent (BullMQ backoff jitter), so jobs failed together do not retry together.',
  }),
  BRIDGE_NOSTR_INBOUND_ATTEMPTS: int({
    default: 10,
    min: 1,
    max: 100,
    doc: 'Tries a relay node gives an inbound job (a full mailbox or a Redis outage may clear).',
  }),
  BRIDGE_NOSTR_INBOUND_BACKOFF_MS: int({
    default: 1000,
    min: 1,
    max: 3600000,
    doc: 'First delay before retrying an inbound job, in milliseconds; it doubles per attempt.',
  }),
  BRIDGE_NOSTR_REGISTER_EVERY_MS: int({
    default: 10000,
    min: 100,
    max: 3600000,
    doc: "How often the bridge writes its registration again (one HSET and a notice), so a Redis that lost it (a restart without persistence, a failover to a replica that had not synced) knows the bridge again within this time; until then relays refuse the bridge's inbound jobs (`BRIDGE_NOT_REGISTERED`).",
  }),
  BRIDGE_NOSTR_INBOUND_TTL_SECONDS: int({
    default: 0,
    min: 0,
    max: 31536000,
    doc: "How long a bridged message waits in its recipient's mailbox, in seconds; 0 means the relays' maximum (`RELAY_QUEUE_TTL_SECONDS`).",
  }),
  BRIDGE_NOSTR_KEEP_COMPLETED: int({
    default: 10000,
    min: 0,
    max: 10000000,
    doc: 'Completed inbound jobs kept (newest first): a foreign message seen again while its job is kept is not sealed twice.',
  }),
  BRIDGE_NOSTR_KEEP_FAILED: int({
    default: 100000,
    min: 0,
    max: 10000000,
    doc: 'Failed inbound jobs kept for operators to inspect and retry.',
  }),
  BRIDGE_NOSTR_LOG_LEVEL: oneOf(['debug', 'info', 'warn', 'error'], {
    default: 'info',
    doc: 'Least severe log level written.',
  }),
} satisfies ConfigSpec;

export type BridgeNostrConfig = ConfigOf<typeof bridgeNostrConfigSpec>;

/** Checks across variables; they run once every variable is valid on its own. */
export function bridgeNostrConfigProblems(config: BridgeNostrConfig): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  if (config.BRIDGE_NOSTR_RECONNECT_MAX_MS < config.BRIDGE_NOSTR_RECONNECT_INITIAL_MS) {
    problems.push({
      variable: 'BRIDGE_NOSTR_RECONNECT_MAX_MS',
      message: `BRIDGE_NOSTR_RECONNECT_MAX_MS=${config.BRIDGE_NOSTR_RECONNECT_MAX_MS} is below BRIDGE_NOSTR_RECONNECT_INITIAL_MS=${config.BRIDGE_NOSTR_RECONNECT_INITIAL_MS}`,
    });
  }
  const scaleOut = config.BRIDGE_NOSTR_SCALE_OUT;
  if (config.BRIDGE_NOSTR_REDIS_URL !== undefined) {
    const needed = ['BRIDGE_NOSTR_LIBERTARIA_RELAYS', 'BRIDGE_NOSTR_IDENTITY_FILE'] as const;
    for (const variable of scaleOut ? needed : ([...needed, 'BRIDGE_NOSTR_STATE_DIR'] as const)) {
      if (config[variable] === undefined) {
        problems.push({ variable, message: `${variable} is required when BRIDGE_NOSTR_REDIS_URL is set` });
      }
    }
  } else if (scaleOut) {
    problems.push({
      variable: 'BRIDGE_NOSTR_SCALE_OUT',
      message: 'BRIDGE_NOSTR_SCALE_OUT needs BRIDGE_NOSTR_REDIS_URL (the shared state lives there)',
    });
  }
  if (!scaleOut && config.BRIDGE_NOSTR_KEY_STORE_FILE === undefined) {
    problems.push({
      variable: 'BRIDGE_NOSTR_KEY_STORE_FILE',
      message: 'BRIDGE_NOSTR_KEY_STORE_FILE is required unless BRIDGE_NOSTR_SCALE_OUT is on',
    });
  }
  return problems;
}

/** The relay URLs of BRIDGE_NOSTR_RELAYS, without duplicates. */
export function relayUrls(config: BridgeNostrConfig): string[] {
  return [...new Set(config.BRIDGE_NOSTR_RELAYS.split(','))];
}

/** Reads and validates the configuration; throws one ConfigValidationError listing every problem. */
export function loadBridgeNostrConfig(env: Env = process.env): BridgeNostrConfig {
  return readConfig(bridgeNostrConfigSpec, env, {
    prefix: BRIDGE_NOSTR_ENV_PREFIX,
    validate: bridgeNostrConfigProblems,
  });
}

/** The markdown table of the variables, for docs/bridges.md. */
export function describeBridgeNostrConfig(): string {
  return describeConfig(bridgeNostrConfigSpec);
}
