/**
 * The ActivityPub bridge's configuration: the one place the bridge reads the
 * environment. `docs/configuration.md` carries the table that
 * `describeConfig(bridgeActivityPubConfigSpec)` produces (a test keeps them
 * equal; `npm run docs` regenerates it).
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
export const BRIDGE_AP_ENV_PREFIX = 'BRIDGE_AP_';

export const bridgeActivityPubConfigSpec = {
  BRIDGE_AP_ORIGIN: url({
    protocols: ['https:', 'http:'],
    doc: 'Public origin of the bridge, e.g. `https://ap.example.org`: actors are `<origin>/users/<handle>` and `acct:<handle>@<host>`. Required; `http:` only with `BRIDGE_AP_INSECURE_TEST_MODE=true`. Every process of one bridge uses the same origin.',
  }),
  BRIDGE_AP_KEK: str({
    pattern: /^[0-9a-fA-F]{64}$/,
    secret: true,
    accepted: '64 hex digits (32 bytes)',
    doc: "Key-encryption key: every actor's private keys are stored in Redis sealed under it (AES-256-GCM), and Fedify's queued messages (which carry keys) are sealed under a key derived from it. Required; the same in every process of the bridge.",
  }),
  BRIDGE_AP_REDIS_URL: url({
    protocols: ['redis:', 'rediss:'],
    secret: true,
    doc: "Redis of the relay cluster: the sealed actor keys, followers, Fedify's cache and queue, the federation queues and registry. Required.",
  }),
  REDIS_CLUSTER_NODES: str({
    default: undefined,
    pattern: /^[A-Za-z0-9.\-[\]:]+:[0-9]{1,5}(,[A-Za-z0-9.\-[\]:]+:[0-9]{1,5})*$/,
    maxLength: 4096,
    accepted: '`host:port` seed nodes separated by commas',
    doc: 'Seed nodes of a Redis Cluster to run on instead of the single server at `BRIDGE_AP_REDIS_URL` (whose credentials and TLS then apply to every node); the federation prefix must carry a `{…}` hash tag (docs/redis.md).',
  }),
  BRIDGE_AP_INSECURE_TEST_MODE: bool({
    default: false,
    doc: 'TESTS ONLY. `true` lets the bridge use plain HTTP (its own origin, WebFinger, remote actors) and reach loopback and private addresses (Fedify `allowPrivateAddress`); it is logged as an error at every start. Never set it where the bridge faces the Internet: it opens the bridge to server-side request forgery.',
  }),
  BRIDGE_AP_RELAY_REDIS_PREFIX: str({
    default: 'lr',
    pattern: /^[A-Za-z0-9:_-]{1,32}$/,
    doc: "The relays' `RELAY_REDIS_PREFIX`: where the bridged peers' membrane policies are read, which decide who may follow them and message them (`federated://activitypub/<host>/<user>`).",
  }),
  BRIDGE_AP_WHEN_NO_POLICY: oneOf(['allow', 'deny'], {
    default: 'allow',
    doc: "What a fediverse sender gets from a bridged peer who has no membrane policy: `allow` (the relays' `RELAY_MEMBRANE_DEFAULT=open`) or `deny` (follows rejected, messages dropped).",
  }),
  BRIDGE_AP_HTTP_HOST: str({
    default: '127.0.0.1',
    pattern: /^[A-Za-z0-9.:%_-]{1,253}$/,
    accepted: 'a host name or IP address',
    doc: 'Address of the HTTP listener (WebFinger, actors, inboxes, NodeInfo, `/health`, `/metrics`); a TLS-terminating proxy serves it as `BRIDGE_AP_ORIGIN`.',
  }),
  BRIDGE_AP_HTTP_PORT: port({ default: 8091, doc: 'Port of the HTTP listener; 0 picks a free one.' }),
  BRIDGE_AP_MAX_ACTORS: int({
    default: 100000,
    min: 1,
    max: 10000000,
    doc: 'Most bridged identities (actors) the bridge holds; bridging one more fails with `BRIDGE_KEY_STORE_FULL`.',
  }),
  BRIDGE_AP_MAX_TEXT_BYTES: int({
    default: 16384,
    min: 1,
    max: 65536,
    doc: 'Longest message text, in UTF-8 bytes, bridged either way: longer outbound texts are refused with `BRIDGE_MESSAGE_TOO_LARGE`, longer inbound notes (after HTML is reduced to text) are refused and counted.',
  }),
  BRIDGE_AP_MAX_ACTIVITY_BYTES: int({
    default: 262144,
    min: 4096,
    max: 4194304,
    doc: 'Largest request body an inbox accepts, in bytes; larger ones get 413 and are counted (`too_large`).',
  }),
  BRIDGE_AP_MAX_FOLLOWERS: int({
    default: 10000,
    min: 0,
    max: 1000000,
    doc: 'Most followers one bridged actor keeps; a Follow beyond it is answered Reject and counted.',
  }),
  BRIDGE_AP_FETCH_TIMEOUT_MS: int({
    default: 10000,
    min: 100,
    max: 120000,
    doc: 'Time a WebFinger lookup or an actor fetch may take, in milliseconds.',
  }),
  BRIDGE_AP_MAX_FETCH_BYTES: int({
    default: 1048576,
    min: 1024,
    max: 16777216,
    doc: 'Largest WebFinger document the bridge reads, in bytes.',
  }),
  BRIDGE_AP_ACCOUNT_CACHE_SECONDS: int({
    default: 3600,
    min: 0,
    max: 604800,
    doc: 'How long a resolved remote account (acct: to actor, actor to acct:) is cached in Redis; an `Update` or `Delete` of the actor drops it at once.',
  }),
  BRIDGE_AP_THREAD_SECONDS: int({
    default: 604800,
    min: 0,
    max: 31536000,
    doc: "How long the last note a remote account sent a bridged peer is remembered: the peer's next message to that account is sent as a reply to it (`inReplyTo`), which keeps a Mastodon conversation in one thread. 0: never threaded.",
  }),
  BRIDGE_AP_SIGNATURE_WINDOW_SECONDS: int({
    default: 3600,
    min: 30,
    max: 86400,
    doc: "How far a signed request's date may be from the bridge's clock, in seconds (Fedify's `signatureTimeWindow`; Mastodon allows 1 hour).",
  }),
  BRIDGE_AP_MAX_RETRY_AFTER_MS: int({
    default: 600000,
    min: 1000,
    max: 86400000,
    doc: "Longest pause honoured from a remote's `Retry-After` (429), in milliseconds: the bridge's outbound queue pauses for the remote's delay up to this.",
  }),
  BRIDGE_AP_QUEUE_ATTEMPTS: int({
    default: 8,
    min: 1,
    max: 100,
    doc: "Tries of a job in Fedify's queue (inbox activities, Accept/Reject, notes to followers) before it stays failed on the dashboard.",
  }),
  BRIDGE_AP_QUEUE_BACKOFF_MS: int({
    default: 1000,
    min: 1,
    max: 3600000,
    doc: "First retry delay of Fedify's queue, in milliseconds; it doubles per attempt.",
  }),
  BRIDGE_AP_QUEUE_CONCURRENCY: int({
    default: 8,
    min: 1,
    max: 1000,
    doc: "Jobs of Fedify's queue this process runs at once.",
  }),
  BRIDGE_AP_FEDERATION_PREFIX: str({
    default: '{lr-bridge}',
    pattern: /^[A-Za-z0-9{}_-]{1,32}$/,
    accepted: '1 to 32 of `A-Z a-z 0-9 { } _ -`',
    doc: "Key prefix of the federation queues, registry and the bridge's own keys; the relays' `RELAY_FEDERATION_PREFIX`.",
  }),
  BRIDGE_AP_LIBERTARIA_RELAYS: str({
    pattern: /^(?:wss?|tcp|tls):\/\/[^\s,]+(?:,(?:wss?|tcp|tls):\/\/[^\s,]+)*$/,
    maxLength: 4096,
    accepted: 'comma-separated ws://, wss://, tcp:// or tls:// URLs',
    doc: 'Libertaria relays the bridge connects to as a peer (prekeys, sealed sessions). Required.',
  }),
  BRIDGE_AP_IDENTITY_FILE: str({
    maxLength: 4096,
    doc: "Key file of the bridge's own Libertaria identity (`lrelay keygen --out FILE`): the DID peers send to. Required.",
  }),
  BRIDGE_AP_STATE_DIR: str({
    default: undefined,
    maxLength: 4096,
    doc: "Directory of the bridge's sealed-session state (sessions, prekeys, opened messages). Required unless `BRIDGE_AP_SCALE_OUT` is on (the state is then in Redis).",
  }),
  BRIDGE_AP_SCALE_OUT: bool({
    default: false,
    doc: 'Run as one of any number of processes of this bridge behind one origin (docs/bridges.md#several-processes-behind-one-domain): sessions in Redis under per-peer leases and one leader (elected in Redis) holding the relay connection; actors, keys, followers and queues are in Redis anyway. No local file is written.',
  }),
  BRIDGE_AP_LEADER_TTL_MS: int({
    default: 10000,
    min: 300,
    max: 600000,
    doc: "Scaled out: the leader's lease, in milliseconds, renewed every third of it; a killed leader is replaced within about this.",
  }),
  BRIDGE_AP_SESSION_LOCK_TTL_MS: int({
    default: 10000,
    min: 100,
    max: 600000,
    doc: "Scaled out: the lease on one peer's session state while a process seals or opens, in milliseconds, renewed while held.",
  }),
  BRIDGE_AP_SESSION_LOCK_WAIT_MS: int({
    default: 30000,
    min: 0,
    max: 600000,
    doc: "Scaled out: how long a job waits for a busy peer's session lease, in milliseconds, before it fails with a retryable error and is retried with backoff.",
  }),
  BRIDGE_AP_JOB_LOCK_MS: int({
    default: 30000,
    min: 1000,
    max: 600000,
    doc: "Lock on a running federation job, in milliseconds (BullMQ's lockDuration and stall check): a job whose process died runs again elsewhere after at most about twice this.",
  }),
  BRIDGE_AP_OUTBOUND_CONCURRENCY: int({
    default: 8,
    min: 1,
    max: 1000,
    doc: 'Outbound jobs (messages to the fediverse) this process sends at once.',
  }),
  BRIDGE_AP_OUTBOUND_RATE: int({
    default: 50,
    min: 1,
    max: 100000,
    doc: "Most outbound jobs per second (BullMQ limiter on the bridge's queue, shared by all its processes).",
  }),
  BRIDGE_AP_RATE_LIMIT_PAUSE_MS: int({
    default: 10000,
    min: 1,
    max: 3600000,
    doc: 'When a remote answers 429 without `Retry-After`, the outbound queue pauses this long, in milliseconds; the job waits without spending an attempt.',
  }),
  BRIDGE_AP_OUTBOUND_ATTEMPTS: int({
    default: 8,
    min: 1,
    max: 100,
    doc: 'Tries of an outbound job whose error may clear (remote down, 5xx, timeouts); final errors (404, 410, too large, unknown sender) are never retried.',
  }),
  BRIDGE_AP_OUTBOUND_BACKOFF_MS: int({
    default: 1000,
    min: 1,
    max: 3600000,
    doc: 'First delay before retrying an outbound job, in milliseconds; it doubles per attempt.',
  }),
  BRIDGE_AP_JITTER_PERCENT: int({
    default: 50,
    min: 0,
    max: 100,
    doc: 'Share of each retry delay drawn at random, in percent (BullMQ backoff jitter).',
  }),
  BRIDGE_AP_INBOUND_ATTEMPTS: int({
    default: 10,
    min: 1,
    max: 100,
    doc: 'Tries a relay node gives an inbound job (a full mailbox or a Redis outage may clear).',
  }),
  BRIDGE_AP_INBOUND_BACKOFF_MS: int({
    default: 1000,
    min: 1,
    max: 3600000,
    doc: 'First delay before retrying an inbound job, in milliseconds; it doubles per attempt.',
  }),
  BRIDGE_AP_REGISTER_EVERY_MS: int({
    default: 10000,
    min: 100,
    max: 3600000,
    doc: 'How often the bridge writes its registration again, so a Redis that lost it knows the bridge again within this time.',
  }),
  BRIDGE_AP_INBOUND_TTL_SECONDS: int({
    default: 0,
    min: 0,
    max: 31536000,
    doc: "How long a bridged message waits in its recipient's mailbox, in seconds; 0 means the relays' maximum.",
  }),
  BRIDGE_AP_KEEP_COMPLETED: int({
    default: 10000,
    min: 0,
    max: 10000000,
    doc: "Completed jobs kept (newest first), in the inbound and in Fedify's queue: a message seen again while its job is kept is not handled twice.",
  }),
  BRIDGE_AP_KEEP_FAILED: int({
    default: 100000,
    min: 0,
    max: 10000000,
    doc: 'Failed jobs kept for operators to inspect and retry.',
  }),
  BRIDGE_AP_LOG_LEVEL: oneOf(['debug', 'info', 'warn', 'error'], {
    default: 'info',
    doc: 'Least severe log level written.',
  }),
} satisfies ConfigSpec;

export type BridgeActivityPubConfig = ConfigOf<typeof bridgeActivityPubConfigSpec>;

/** Checks across variables; they run once every variable is valid on its own. */
export function bridgeActivityPubConfigProblems(config: BridgeActivityPubConfig): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const origin = new URL(config.BRIDGE_AP_ORIGIN);
  if (origin.protocol === 'http:' && !config.BRIDGE_AP_INSECURE_TEST_MODE) {
    problems.push({
      variable: 'BRIDGE_AP_ORIGIN',
      message:
        'BRIDGE_AP_ORIGIN is http: — the fediverse needs https:; plain HTTP is for tests only (BRIDGE_AP_INSECURE_TEST_MODE=true)',
    });
  }
  if (origin.pathname !== '/' || origin.search !== '' || origin.hash !== '' || origin.username !== '') {
    problems.push({
      variable: 'BRIDGE_AP_ORIGIN',
      message: 'BRIDGE_AP_ORIGIN is an origin only: scheme, host and port, no path, query or credentials',
    });
  }
  if (!config.BRIDGE_AP_SCALE_OUT && config.BRIDGE_AP_STATE_DIR === undefined) {
    problems.push({
      variable: 'BRIDGE_AP_STATE_DIR',
      message: 'BRIDGE_AP_STATE_DIR is required unless BRIDGE_AP_SCALE_OUT is on',
    });
  }
  return problems;
}

/** Reads and validates the configuration; throws one ConfigValidationError listing every problem. */
export function loadBridgeActivityPubConfig(env: Env = process.env): BridgeActivityPubConfig {
  return readConfig(bridgeActivityPubConfigSpec, env, {
    prefix: BRIDGE_AP_ENV_PREFIX,
    validate: bridgeActivityPubConfigProblems,
  });
}

/** The markdown table of the variables, for docs/configuration.md. */
export function describeBridgeActivityPubConfig(): string {
  return describeConfig(bridgeActivityPubConfigSpec);
}
