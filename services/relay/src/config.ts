/**
 * The relay's configuration: the one place the relay reads the environment.
 * Each variable's default, accepted values and description live together in
 * `relayConfigSpec`; `docs/configuration.md` carries the table that
 * `describeConfig(relayConfigSpec)` produces (a test keeps them equal).
 */
import {
  bool,
  type ConfigOf,
  type ConfigProblem,
  type ConfigSpec,
  type Env,
  int,
  oneOf,
  port,
  readConfig,
  str,
  url,
} from '@libertaria/config';

/** Every relay variable starts with this, except the shared `REDIS_URL`; unknown ones are rejected. */
export const RELAY_ENV_PREFIX = 'RELAY_';

/** A host name or IP address as the relay accepts one (listeners, node link addresses in the registry). */
export const HOST_PATTERN = /^[A-Za-z0-9.:%_-]{1,253}$/;

export const relayConfigSpec = {
  REDIS_URL: url({
    default: 'redis://127.0.0.1:6379',
    protocols: ['redis:', 'rediss:'],
    doc: 'Redis holding presence, routes and durable queues. `rediss:` connects over TLS; credentials go in the URL.',
  }),
  REDIS_CLUSTER_NODES: str({
    default: undefined,
    pattern: /^[A-Za-z0-9.\-[\]:]+:[0-9]{1,5}(,[A-Za-z0-9.\-[\]:]+:[0-9]{1,5})*$/,
    maxLength: 4096,
    accepted: '`host:port` seed nodes separated by commas',
    doc: 'Seed nodes of a Redis Cluster to run on instead of the single server at `REDIS_URL` (whose user, password and `rediss:` TLS then apply to every node). Keys are hash-tagged so each script touches one slot, node-to-node frames use sharded pub/sub (docs/redis.md).',
  }),
  RELAY_NODE_ID: str({
    default: undefined,
    pattern: /^[A-Za-z0-9._-]{1,64}$/,
    doc: 'Name of this node in the cluster. Unset: derived from the host name plus a random suffix at start.',
  }),
  RELAY_HOST: str({
    default: '0.0.0.0',
    pattern: HOST_PATTERN,
    accepted: 'a host name or IP address',
    doc: 'Address the WebSocket, TCP and admin listeners bind to.',
  }),
  RELAY_WS_PORT: port({ default: 8080, doc: 'WebSocket listener port; 0 picks a free port.' }),
  RELAY_TCP_PORT: port({ default: 8081, doc: 'Raw TCP listener port; 0 picks a free port.' }),
  RELAY_ADMIN_PORT: port({ default: 9090, doc: 'Admin listener port (health, metrics); 0 picks a free port.' }),
  RELAY_TCP_ENABLED: bool({ default: true, doc: 'Whether to open the raw TCP listener.' }),
  RELAY_TLS_CERT_FILE: str({
    default: undefined,
    maxLength: 4096,
    doc: 'PEM certificate chain file. Set together with `RELAY_TLS_KEY_FILE` to serve TLS, or neither.',
  }),
  RELAY_TLS_KEY_FILE: str({
    default: undefined,
    maxLength: 4096,
    doc: 'PEM private key file. Set together with `RELAY_TLS_CERT_FILE` to serve TLS, or neither.',
  }),
  RELAY_IDENTITY_KEY_FILE: str({
    default: undefined,
    maxLength: 4096,
    doc: "The node's Ed25519 identity key (docs/relay.md#relay-identity): a key file as `lrelay keygen` writes it, or a PKCS#8 PEM Ed25519 private key. Its DID is what clients pin (`ws://host:8080#did:…`). Nodes of a cluster may share one operator key or each have their own. Exactly one of this and `RELAY_IDENTITY_KEY` must be set; `npm start` creates a key file for a fresh setup.",
  }),
  RELAY_IDENTITY_KEY: str({
    default: undefined,
    pattern: /^[A-Za-z0-9_-]{43}$/,
    secret: true,
    accepted: '32 bytes, base64url without padding (43 characters)',
    doc: "The node's Ed25519 identity key as its 32-byte seed (for a secret store that fills the environment); instead of `RELAY_IDENTITY_KEY_FILE`.",
  }),
  RELAY_PUBLIC_URLS: str({
    default: undefined,
    pattern: /^(?:(?:wss?|tcp|tls):\/\/[^\s,]+)(?:,(?:wss?|tcp|tls):\/\/[^\s,]+)*$/,
    maxLength: 1024,
    accepted: 'comma-separated ws://, wss://, tcp:// or tls:// URLs, or unset',
    doc: 'URLs at which peers reach this node, announced in Redis so draining nodes can name it in GOAWAY reconnect hints. Unset: this node is not proposed to others.',
  }),
  RELAY_MAX_PAYLOAD_BYTES: int({
    default: 65536,
    min: 1,
    max: 1048576,
    doc: 'Largest SEND payload accepted, in bytes (64 KiB).',
  }),
  RELAY_SEND_QUEUE_FRAMES: int({
    default: 512,
    min: 1,
    max: 65536,
    doc: 'Most frames written to one connection while its socket layer is backed up before fast frames are dropped and durable delivery pauses.',
  }),
  RELAY_SEND_QUEUE_BYTES: int({
    default: 4194304,
    min: 65536,
    max: 268435456,
    doc: "Outbound memory budget of one connection (4 MiB): most bytes the relay holds for it (this turn's writes and the socket layer's buffer) before fast frames are dropped and durable delivery pauses; control frames may exceed it by 64 KiB.",
  }),
  RELAY_CROSS_NODE_MESSAGE_BYTES: int({
    default: 65536,
    min: 4096,
    max: 8388608,
    doc: 'Frames for one other node leave as one pub/sub message per event-loop turn, or as soon as that message reaches this many bytes (64 KiB): the receiving node can deliver nothing of a message before all of it has arrived, so a smaller message lets the two nodes and Redis work at once (docs/benchmarks.md). A larger frame travels alone.',
  }),
  RELAY_NODE_LINKS: bool({
    default: true,
    doc: 'Whether frames for other nodes travel over direct TCP links between nodes (docs/relay.md#node-links), with Redis pub/sub as the fallback. Off: pub/sub only, and this node accepts no links.',
  }),
  RELAY_NODE_LINK_HOST: str({
    default: undefined,
    pattern: HOST_PATTERN,
    accepted: 'an IP address or host name other nodes reach this node at',
    doc: "Address this node accepts node links on, and tells other nodes (through its presence entry) to dial. Unset: `RELAY_HOST` when that names one address, else this machine's first non-internal IPv4 address (a pod's IP in Kubernetes), else 127.0.0.1.",
  }),
  RELAY_NODE_LINK_PORT: port({
    default: 0,
    doc: 'Port this node accepts node links on; 0 picks a free one (other nodes learn it through Redis). Set a fixed one where a firewall or NetworkPolicy must name it.',
  }),
  RELAY_NODE_LINK_BUFFER_BYTES: int({
    default: 8388608,
    min: 65536,
    max: 268435456,
    doc: 'Most bytes one outbound node link may hold unsent (8 MiB); beyond it, messages for that node take Redis pub/sub until the link catches up. A link holding nothing unsent takes any one message.',
  }),
  RELAY_NODE_LINK_MESSAGE_BYTES: int({
    default: 262144,
    min: 4096,
    max: 8388608,
    doc: 'Frames for one other node leave over its node link as one socket write per event-loop turn, or as soon as that write reaches this many bytes (256 KiB). The other node delivers from a link as it reads, so this only sets how many frames one write carries; a message that falls back to pub/sub is cut again at RELAY_CROSS_NODE_MESSAGE_BYTES (docs/relay.md#node-links).',
  }),
  RELAY_NODE_LINK_MAX_INBOUND: int({
    default: 256,
    min: 1,
    max: 65536,
    doc: 'Most node links (open or still in their handshake) this node accepts at once; one more is closed at once and counted.',
  }),
  RELAY_NODE_LINK_HANDSHAKE_TIMEOUT_MS: int({
    default: 5000,
    min: 100,
    max: 600000,
    doc: 'Time a node link has to complete its handshake, on both sides.',
  }),
  RELAY_HANDSHAKE_STEP_TIMEOUT_MS: int({
    default: 10000,
    min: 100,
    max: 600000,
    doc: "Time a peer has for each handshake step, counted from the relay's last message: HELLO after the connection opened, AUTH (or ANON_AUTH) after CHALLENGE. One round trip each: the default lets peers with 2.5 s of one-way delay in with room to spare (docs/relay.md#slow-links). Never more than `RELAY_HANDSHAKE_TIMEOUT_MS`.",
  }),
  RELAY_HANDSHAKE_TIMEOUT_MS: int({
    default: 30000,
    min: 100,
    max: 1800000,
    doc: 'Time a connection has to finish the whole handshake (HELLO to AUTH verified), in milliseconds, whatever its steps took: the bound against slowloris peers.',
  }),
  RELAY_AUTH_FAILURES_PER_MINUTE: int({
    default: 20,
    min: 1,
    max: 100000,
    doc: 'Failed handshakes allowed per DID per source address per minute before that DID is refused from that address.',
  }),
  RELAY_AUTH_FAILURES_PER_ADDRESS_PER_MINUTE: int({
    default: 300,
    min: 1,
    max: 1000000,
    doc: 'Failed handshakes of any kind allowed per source address per minute before the address is refused to anonymous connections and to DIDs that have not authenticated from it lately.',
  }),
  RELAY_RATE_FRAMES_PER_SECOND: int({
    default: 5000,
    min: 1,
    max: 1000000,
    doc: 'Sustained frame rate of one connection (token bucket refill per second).',
  }),
  RELAY_RATE_BURST: int({
    default: 10000,
    min: 1,
    max: 10000000,
    doc: 'Frames one connection may send in a burst (token bucket size).',
  }),
  // Sized so an honest SDK client (@libertaria/client) never meets the control budget, with the
  // costs of CONTROL_COSTS (rate-limits.ts): keepalive PINGs every heartbeatMs/2 (0.4 tokens/s at
  // the default 5 s), at most one probe PING in flight per tick (≤ 20/s while an ACK is overdue),
  // RESUME + MIGRATE + one GRANT_PRESENT per held grant at connect (50 + 50 + ≤ 64), PRESENCE_QUERY at
  // 4 each (200/s sustains 50 queries a second, the burst 500 at once: a contact list at start-up),
  // ACKs free while covered by durable frames delivered on the connection and 0.25 beyond (at most
  // maxUnackedInbound = 4,096 of those after a reconnect: 1,024). Worst start-up ≈ 1,200 < 2,000.
  // A flood is held to 200 PINGs, 50 presence lookups or 4 RESUMEs a second per connection.
  RELAY_RATE_CONTROL_PER_SECOND: int({
    default: 200,
    min: 1,
    max: 1000000,
    doc: 'Control budget of one connection, refilled per second (token bucket): every frame but SEND costs tokens by type (PING 1, PRESENCE_QUERY 4, RESUME 50, MIGRATE 50, ACK 0 while covered by delivered durable frames else 0.25; docs/relay.md#limits-and-backpressure). Over it the frame is not processed and the peer gets `RATE_LIMITED` (an ERROR, or a NACK for requests), at most one a second.',
  }),
  RELAY_RATE_CONTROL_BURST: int({
    default: 2000,
    min: 50,
    max: 10000000,
    doc: 'Size of the control budget of one connection (token bucket): what it may spend at once, e.g. at connect. At least 50, the cost of a RESUME.',
  }),
  RELAY_RATE_CONTROL_FLOOD_SECONDS: int({
    default: 10,
    min: 0,
    max: 3600,
    doc: 'A connection whose frames are refused over its control budget for this long, without a pause of more than a second, is closed with a fatal `ERROR RATE_LIMITED`; 0 never closes it.',
  }),
  RELAY_QUEUE_MAX_FRAMES: int({
    default: 10000,
    min: 1,
    max: 10000000,
    doc: 'Most frames held in the durable queue of one recipient.',
  }),
  RELAY_QUEUE_MAX_BYTES: int({
    default: 67108864,
    min: 1024,
    max: 17179869184,
    doc: 'Most bytes held in the durable queue of one recipient (64 MiB).',
  }),
  RELAY_QUEUE_ACKED_IDS: int({
    default: undefined,
    min: 1,
    max: 10000000,
    doc: "How many acknowledged frames one recipient's queue remembers (the newest), so that a sender's retry of one of them is answered `duplicate` instead of being stored and delivered again. Unset: `RELAY_QUEUE_MAX_FRAMES`. Each costs Redis about 150 bytes per queue (a sorted set of 40-byte members), and a larger set makes every ACK a little dearer: raise `RELAY_QUEUE_MAX_FRAMES` for large mailboxes without raising this.",
  }),
  // One sender's share of one recipient's queue (issue 12 item 5); relayQueueSenderShare() below applies the defaults.
  RELAY_QUEUE_MAX_FRAMES_PER_SENDER: int({
    default: undefined,
    min: 1,
    max: 10000000,
    doc: 'Most frames one sender (source routing hint) may hold in the durable queue of one recipient; beyond it that sender gets `QUEUE_SENDER_FULL` while others still get in. Unset: a quarter of `RELAY_QUEUE_MAX_FRAMES` (rounded up), so one sender can take at most a quarter of a mailbox. `RELAY_QUEUE_MAX_FRAMES` or more turns the share off.',
  }),
  RELAY_QUEUE_MAX_BYTES_PER_SENDER: int({
    default: undefined,
    min: 1024,
    max: 17179869184,
    doc: 'Most bytes one sender may hold in the durable queue of one recipient. Unset: a quarter of `RELAY_QUEUE_MAX_BYTES` (rounded up), and at least one largest frame (`RELAY_MAX_PAYLOAD_BYTES` + 99). `RELAY_QUEUE_MAX_BYTES` or more turns the share off.',
  }),
  RELAY_DURABLE_ACK_HOLD: int({
    default: 262144,
    min: 0,
    max: 16777216,
    doc: "Most recipients' ACKs this node holds back (or is sending) at once, 24 bytes each (6 MiB by default), while their backlogs are delivered: removing acknowledged frames waits until the recipient's delivery pump has caught up or paused, so Redis serves the reads first (docs/durable-queue.md#reads-before-clean-up). Beyond it ACKs go to Redis each turn; 0 never holds.",
  }),
  RELAY_DURABLE_FRAMES_PATH: oneOf(['prewrite', 'script'], {
    default: 'prewrite',
    doc: 'How durable frames reach Redis on one server: `prewrite` writes the frames of a call of 16 or more with `HSETNX` (no reply each: `CLIENT REPLY OFF`) right before the enqueue script, which then handles 40-byte members only (a smaller call takes `script`); `script` hands the frames to the script. A Redis Cluster, and a server that refuses `CLIENT REPLY` or `PEXPIRE ... NX` (asked once, before the first enqueue), always take `script`. Set `script` behind a proxy that passes `CLIENT REPLY` on without honouring it (docs/durable-queue.md#enqueue).',
  }),
  RELAY_QUEUE_TTL_SECONDS: int({
    default: 2592000,
    min: 60,
    max: 31536000,
    doc: 'Longest time a durable frame is kept, in seconds (30 days); also the largest TTL a sender may ask for.',
  }),
  // Storage budgets of durable frames (docs/relay.md#durable-budgets). A sliding hour (this hour's
  // count plus the last hour's weighted by how much of it still overlaps), counted in Redis so a
  // sender connected to several nodes has one budget. Sized far above an honest peer (an SDK client
  // fanning a message out to a 50-member group 100 times an hour stores 5,000 frames) and far below
  // what one connection could store (about 40 MB/s measured before these budgets).
  RELAY_DURABLE_FRAMES_PER_SENDER_PER_HOUR: int({
    default: 50000,
    min: 0,
    max: 1000000000,
    doc: 'Durable frames one sender DID may store in any hour, across the cluster (counted in Redis); beyond it `NACK DURABLE_BUDGET_EXCEEDED`. 0: no limit.',
  }),
  RELAY_DURABLE_BYTES_PER_SENDER_PER_HOUR: int({
    default: 268435456,
    min: 0,
    max: 1099511627776,
    doc: 'Durable bytes (stored frame sizes) one sender DID may store in any hour, across the cluster (256 MiB); beyond it `NACK DURABLE_BUDGET_EXCEEDED`. 0: no limit.',
  }),
  RELAY_DURABLE_FRAMES_PER_ADDRESS_PER_HOUR: int({
    default: 200000,
    min: 0,
    max: 1000000000,
    doc: 'Durable frames all DIDs connecting from one source address (an IPv6 /64) may store in any hour, across the cluster; beyond it `NACK DURABLE_BUDGET_EXCEEDED`. Higher than the per-sender budget: many peers share a NAT. 0: no limit.',
  }),
  RELAY_DURABLE_BYTES_PER_ADDRESS_PER_HOUR: int({
    default: 1073741824,
    min: 0,
    max: 1099511627776,
    doc: 'Durable bytes all DIDs connecting from one source address (an IPv6 /64) may store in any hour, across the cluster (1 GiB); beyond it `NACK DURABLE_BUDGET_EXCEEDED`. 0: no limit.',
  }),
  RELAY_DURABLE_BUDGET_RESERVE_FRAMES: int({
    default: 1024,
    min: 0,
    max: 65536,
    doc: 'Largest reserve of durable budget a node charges in Redis at once for one connection (its sender DID and address), then hands out frame by frame without a Redis call (services/relay/src/budget-reserves.ts). Reserves grow with use up to this, never above 1/16 of a budget, stop at 7/8 of one (the last eighth is charged frame by frame), and an unused remainder goes back after 1 s idle. 0 or 1: every durable frame is charged in Redis on its own.',
  }),
  RELAY_DURABLE_REQUIRE_PREKEYS: bool({
    default: false,
    doc: 'Store durable frames only for recipients that have published prekeys (a real, reachable identity rather than an invented hint); others get `NACK RECIPIENT_UNKNOWN`. Bridges are not affected. Off by default: peers that never publish prekeys (unsealed SDK clients) could not receive durable frames; turn it on where every client seals (docs/relay.md#durable-budgets).',
  }),
  RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT: int({
    default: 90,
    min: 1,
    max: 100,
    doc: "Durable SENDs (and prekey publications) are refused with `NACK STORE_FULL` while Redis uses this much of its `maxmemory` (read from `INFO memory` every `RELAY_REDIS_MEMORY_CHECK_MS`): the rest is kept for presence leases, acknowledgements and the membrane's audit. 100: only Redis' own OOM refuses them. No effect when Redis has no `maxmemory`.",
  }),
  RELAY_REDIS_MEMORY_CHECK_MS: int({
    default: 1000,
    min: 50,
    max: 600000,
    doc: "Interval at which a node reads Redis' memory use (`INFO memory`) for `RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT`, in milliseconds.",
  }),
  RELAY_CONNECTIONS_PER_ADDRESS: int({
    default: 1000,
    min: 0,
    max: 10000000,
    doc: 'Connections one source address (an IPv6 /64) may hold open on this node, handshaking ones included (per node, not cluster-wide); beyond it a new connection gets a fatal `ERROR ADDRESS_CONNECTION_LIMIT`. 0: no limit.',
  }),
  RELAY_TRUSTED_PROXIES: str({
    default: undefined,
    pattern: /^[0-9A-Fa-f:.]+(\/[0-9]{1,3})?(,[0-9A-Fa-f:.]+(\/[0-9]{1,3})?)*$/,
    maxLength: 4096,
    accepted: 'IP addresses and CIDRs separated by commas',
    doc: "Proxies (an Ingress controller's pods) whose `X-Forwarded-For` names a WebSocket client's address: the rightmost address in it that is not itself a trusted proxy is the one the per-address limits count (docs/deploy.md#client-addresses). Unset: the header is ignored and every peer is its socket's address. Raw TCP is not affected.",
  }),
  RELAY_DEBUG_POISON_RECYCLED: bool({
    default: false,
    doc: 'For tests: fill each recycled inbound WebSocket buffer with 0xEE when it becomes reusable, so a frame some code kept without copying it reads as garbage instead of silently as another frame (docs/relay.md#inbound-buffers). Costs a fill of 256 KiB per recycled buffer; leave it off in production.',
  }),
  RELAY_DURABLE_WAIT_REPLICAS: int({
    default: 0,
    min: 0,
    max: 16,
    doc: 'Replicas that must hold a durable frame (stored in a queue, or handed to a bridge as a BullMQ job) before the sender gets its ACK, and a single-use id before `ONCE_CHECK` answers it fresh (Redis `WAIT`, one per primary and event-loop turn, covering every write of that turn, after a look that the answering server holds them). 0: ACK once the primary holds it, so a primary that dies before replicating loses what it acknowledged (docs/redis.md measures that window). Fewer replicas within `RELAY_DURABLE_WAIT_TIMEOUT_MS`, or a write the answering server does not hold: `STORE_UNAVAILABLE`, and the peer retries (idempotent).',
  }),
  RELAY_DURABLE_WAIT_TIMEOUT_MS: int({
    default: 1000,
    min: 1,
    max: 1500,
    doc: "How long a `WAIT` for `RELAY_DURABLE_WAIT_REPLICAS` replicas may take, in milliseconds (below the 2 s command timeout of the relay's connection).",
  }),
  RELAY_PRESENCE_TTL_MS: int({
    default: 15000,
    min: 1000,
    max: 600000,
    doc: "Lease of a node in the registry, in milliseconds: its peers count as present while it is renewed, and a lease length after it expired a live node sweeps the dead node's presence entries. One renewal per heartbeat, whatever the number of peers.",
  }),
  RELAY_HEARTBEAT_MS: int({
    default: 5000,
    min: 100,
    max: 300000,
    doc: 'Interval at which a node renews its lease and re-reads the node registry (one pipeline of two commands), in milliseconds; must be less than `RELAY_PRESENCE_TTL_MS`.',
  }),
  RELAY_DRAIN_TIMEOUT_MS: int({
    default: 10000,
    min: 0,
    max: 600000,
    doc: 'On shutdown, time given to connections to drain before they are closed, in milliseconds.',
  }),
  RELAY_PREKEY_MAX_ONE_TIME: int({
    default: 100,
    min: 1,
    max: 10000,
    doc: 'Most one-time prekeys of each kind (X25519, ML-KEM) stored per peer; a publication beyond it is stored up to it.',
  }),
  RELAY_PREKEY_LOW_WATER: int({
    default: 10,
    min: 0,
    max: 10000,
    doc: 'A fetch that leaves a peer fewer one-time prekeys of a kind than this sends the peer a PREKEY_STATUS notice; 0 sends none. At most `RELAY_PREKEY_MAX_ONE_TIME`.',
  }),
  RELAY_PREKEY_FETCHES_PER_MINUTE: int({
    default: 30,
    min: 1,
    max: 100000,
    doc: 'PREKEY_FETCH frames one connection may send per minute (token bucket, burst of the same size); beyond it `NACK PREKEY_RATE_LIMITED`.',
  }),
  RELAY_PREKEY_TARGET_FETCHES_PER_MINUTE: int({
    default: 60,
    min: 1,
    max: 1000000,
    doc: "Fetches of one peer's prekeys per minute across the cluster (counted in Redis) that may consume one-time prekeys; beyond it bundles carry the signed and last-resort keys only.",
  }),
  RELAY_PREKEY_PUBLISHES_PER_MINUTE: int({
    default: 30,
    min: 1,
    max: 100000,
    doc: 'PREKEY_PUBLISH and PREKEY_STATUS_QUERY frames one connection may send per minute (token bucket, burst of the same size); beyond it `NACK PREKEY_RATE_LIMITED`.',
  }),
  RELAY_PREKEY_TTL_SECONDS: int({
    default: 7776000,
    min: 60,
    max: 31536000,
    doc: "How long a peer's prekeys are kept after its last publication, in seconds (90 days).",
  }),
  RELAY_ANON_ENABLED: bool({
    default: true,
    doc: 'Whether anonymous connections (ephemeral sessions: no DID, a proof-of-work stamp instead) are accepted. Off: such a HELLO gets `ERROR ANON_DISABLED`.',
  }),
  RELAY_ANON_POW_BITS: int({
    default: 16,
    min: 0,
    max: 32,
    doc: 'Proof-of-work difficulty announced to anonymous connections: leading zero bits of SHA-256 (2^bits hashes on average; 16 takes a client about 0.1 s here, each bit doubles it). 0 asks for none.',
  }),
  RELAY_ANON_MAX_SENDS: int({
    default: 4,
    min: 1,
    max: 65535,
    doc: 'Fast SENDs one anonymous connection may make (requests); beyond it `NACK ANON_LIMIT_REACHED`. Durable sends are never allowed anonymously.',
  }),
  RELAY_ANON_LIFETIME_MS: int({
    default: 60000,
    min: 1000,
    max: 3600000,
    doc: 'An anonymous connection is closed (GOAWAY) this long after WELCOME: time enough for its requests and their responses.',
  }),
  RELAY_ANON_MAX_CONNECTIONS: int({
    default: 10000,
    min: 1,
    max: 1000000,
    doc: 'Anonymous connections one node holds at once, handshaking included; beyond it new ones get `ERROR ANON_LIMIT_REACHED`.',
  }),
  RELAY_ONCE_MAX_RETENTION_SECONDS: int({
    default: 604800,
    min: 1,
    max: 31536000,
    doc: 'Longest a peer may ask the cluster to remember a single-use id (ONCE_CHECK: 0-RTT tickets, anonymous request ids), in seconds (7 days); beyond it `NACK ONCE_RETENTION_TOO_LONG`.',
  }),
  RELAY_ONCE_CHECKS_PER_MINUTE: int({
    default: 600,
    min: 1,
    max: 1000000,
    doc: 'ONCE_CHECK frames one connection may send per minute (token bucket, burst of the same size); beyond it `NACK RATE_LIMITED`.',
  }),
  RELAY_MEMBRANE_ENABLED: bool({
    default: true,
    doc: 'Whether the membrane decides every SEND and PREKEY_FETCH (docs/membrane.md#enforcement-in-the-relay). `false`: no checks at all, and policy, grant and audit requests get `NACK MEMBRANE_DISABLED`.',
  }),
  RELAY_MEMBRANE_DEFAULT: oneOf(['open', 'allowlist'], {
    default: 'open',
    doc: 'What a recipient without a policy (and without a grant presented for it) gets: `open` lets every peer reach it; `allowlist` refuses (`NACK ACCESS_NO_GRANT`) so only owners with a policy are reachable.',
  }),
  RELAY_MEMBRANE_AUDIT_MAX_ENTRIES: int({
    default: 1000000,
    min: 1000,
    max: 1000000000,
    doc: 'Audit trail retention: the Redis stream is trimmed (`XADD MAXLEN ~`) to about this many decisions, oldest first.',
  }),
  RELAY_MEMBRANE_POLICY_CACHE_ENTRIES: int({
    default: 10000,
    min: 0,
    max: 10000000,
    doc: 'Compiled owner policies (and recipient owners) cached per node; invalidated through Redis pub/sub on every change.',
  }),
  RELAY_MEMBRANE_CACHE_MAX_AGE_MS: int({
    default: 60000,
    min: 0,
    max: 3600000,
    doc: 'Oldest a cached policy or cached allow decision may be, in ms: a safety net should an invalidation message be lost.',
  }),
  RELAY_MEMBRANE_CONNECTION_CACHE_ENTRIES: int({
    default: 1024,
    min: 0,
    max: 1000000,
    doc: 'Recipients per connection whose stateless allow decision is cached, so repeated SENDs to them cost no Redis round trip.',
  }),
  RELAY_MEMBRANE_PENDING_SENDS: int({
    default: 4096,
    min: 1,
    max: 1000000,
    doc: 'SENDs of one connection that may wait for a membrane decision (they are held in order); beyond it `NACK RATE_LIMITED`.',
  }),
  RELAY_MEMBRANE_GRANTS_PER_CONNECTION: int({
    default: 64,
    min: 1,
    max: 10000,
    doc: 'Grant tokens one connection may hold (GRANT_PRESENT, one per root issuer); beyond it `NACK MEMBRANE_TOO_MANY_GRANTS`.',
  }),
  RELAY_MEMBRANE_REQUESTS_PER_MINUTE: int({
    default: 120,
    min: 1,
    max: 1000000,
    doc: 'GRANT_PRESENT, POLICY_PUT, POLICY_GET and AUDIT_QUERY frames one connection may send per minute (token bucket); beyond it `NACK RATE_LIMITED`.',
  }),
  RELAY_ADMIN_TOKEN: str({
    default: undefined,
    pattern: /^[\x21-\x7E]{16,256}$/,
    maxLength: 256,
    accepted: '16 to 256 printable ASCII characters, no spaces',
    secret: true,
    doc: "Bearer token for the admin API's membrane endpoints (`/membrane/audit`). Unset: those endpoints answer 404.",
  }),
  RELAY_REDIS_PREFIX: str({
    default: 'lr',
    pattern: /^[A-Za-z0-9:_-]{1,32}$/,
    doc: 'Prefix of every Redis key the relay writes, so clusters can share one Redis.',
  }),
  RELAY_FEDERATION_ENABLED: bool({
    default: true,
    doc: 'Hand durable SENDs addressed to a registered bridge to its BullMQ outbound queue, and run the inbound worker that stores bridged messages for their recipients (docs/bridges.md#federation).',
  }),
  RELAY_FEDERATION_PREFIX: str({
    default: '{lr-bridge}',
    pattern: /^[A-Za-z0-9{}_-]{1,32}$/,
    accepted: '1 to 32 of `A-Z a-z 0-9 { } _ -`',
    doc: 'Key prefix of the federation queues and the bridge registry; the `{…}` hash tag keeps them in one Redis Cluster slot. Bridges must use the same.',
  }),
  RELAY_FEDERATION_REFRESH_MS: int({
    default: 30000,
    min: 100,
    max: 3600000,
    doc: 'Interval at which a node re-reads the bridge registry, in milliseconds; registrations are also announced over pub/sub and read at once.',
  }),
  RELAY_FEDERATION_INBOUND_CONCURRENCY: int({
    default: 16,
    min: 1,
    max: 1000,
    doc: 'Inbound jobs (bridged messages) one node stores at once.',
  }),
  RELAY_FEDERATION_INBOUND_RATE: int({
    default: 2000,
    min: 1,
    max: 1000000,
    doc: 'Most inbound jobs the whole cluster stores per second (BullMQ limiter, shared by every node): bounds what bridges can push into mailboxes.',
  }),
  RELAY_FEDERATION_DASHBOARD_TOKEN: str({
    default: undefined,
    pattern: /^[\x21-\x7E]{32,256}$/,
    secret: true,
    accepted: '32 to 256 printable ASCII characters',
    doc: 'Admin token of the federation dashboard (Bull Board): `Authorization: Bearer <token>`, or HTTP Basic with the token as password. Unset: no dashboard on this node.',
  }),
  RELAY_FEDERATION_DASHBOARD_PORT: port({
    default: 9091,
    doc: 'Port of the federation dashboard, on `RELAY_HOST`; 0 picks a free one. Only with `RELAY_FEDERATION_DASHBOARD_TOKEN`.',
  }),
  RELAY_FEDERATION_KEEP_COMPLETED: int({
    default: 10000,
    min: 0,
    max: 10000000,
    doc: 'Completed federation jobs kept per queue (newest first) when the relay adds them; a frame re-sent while its completed job is kept is not sent twice.',
  }),
  RELAY_FEDERATION_KEEP_COMPLETED_SECONDS: int({
    default: 86400,
    min: 1,
    max: 31536000,
    doc: 'Longest a completed federation job is kept, in seconds (1 day).',
  }),
  RELAY_FEDERATION_KEEP_FAILED: int({
    default: 100000,
    min: 0,
    max: 10000000,
    doc: 'Failed federation jobs kept per queue for operators to inspect and retry (newest first).',
  }),
  RELAY_FEDERATION_KEEP_FAILED_SECONDS: int({
    default: 604800,
    min: 1,
    max: 31536000,
    doc: 'Longest a failed federation job is kept, in seconds (7 days).',
  }),
  RELAY_LOG_LEVEL: oneOf(['debug', 'info', 'warn', 'error'], {
    default: 'info',
    doc: 'Least severe log level written.',
  }),
} satisfies ConfigSpec;

/** The relay's configuration, keyed by environment variable name. */
export type RelayConfig = ConfigOf<typeof relayConfigSpec>;

/** Checks that involve more than one variable; they run once every variable is valid on its own. */
export function relayConfigProblems(config: RelayConfig): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const cert = config.RELAY_TLS_CERT_FILE;
  const key = config.RELAY_TLS_KEY_FILE;
  if ((cert === undefined) !== (key === undefined)) {
    const [set, unset] =
      cert === undefined
        ? ['RELAY_TLS_KEY_FILE', 'RELAY_TLS_CERT_FILE']
        : ['RELAY_TLS_CERT_FILE', 'RELAY_TLS_KEY_FILE'];
    problems.push({
      variable: unset,
      message: `${set} is set but ${unset} is not: set both to serve TLS, or neither`,
    });
  }
  if (config.RELAY_IDENTITY_KEY_FILE !== undefined && config.RELAY_IDENTITY_KEY !== undefined) {
    problems.push({
      variable: 'RELAY_IDENTITY_KEY',
      message: 'RELAY_IDENTITY_KEY_FILE and RELAY_IDENTITY_KEY are both set: give the identity key one way',
    });
  }
  if (config.RELAY_HEARTBEAT_MS >= config.RELAY_PRESENCE_TTL_MS) {
    problems.push({
      variable: 'RELAY_HEARTBEAT_MS',
      message:
        `RELAY_HEARTBEAT_MS=${config.RELAY_HEARTBEAT_MS} is not less than RELAY_PRESENCE_TTL_MS=${config.RELAY_PRESENCE_TTL_MS}: ` +
        'presence would expire between heartbeats; lower the heartbeat or raise the TTL',
    });
  }
  if (config.RELAY_PREKEY_LOW_WATER > config.RELAY_PREKEY_MAX_ONE_TIME) {
    problems.push({
      variable: 'RELAY_PREKEY_LOW_WATER',
      message: `RELAY_PREKEY_LOW_WATER=${config.RELAY_PREKEY_LOW_WATER} is above RELAY_PREKEY_MAX_ONE_TIME=${config.RELAY_PREKEY_MAX_ONE_TIME}: peers would be told to refill a store they cannot fill`,
    });
  }
  // 93 is the routed header of SEND/DELIVER and 6 the frame envelope: one largest frame must always fit.
  const largestFrame = config.RELAY_MAX_PAYLOAD_BYTES + 99;
  for (const variable of [
    'RELAY_DURABLE_BYTES_PER_SENDER_PER_HOUR',
    'RELAY_DURABLE_BYTES_PER_ADDRESS_PER_HOUR',
  ] as const) {
    if (config[variable] !== 0 && config[variable] < largestFrame) {
      problems.push({
        variable,
        message: `${variable}=${config[variable]} cannot hold one largest frame (RELAY_MAX_PAYLOAD_BYTES + 99 = ${largestFrame}); 0 means no limit`,
      });
    }
  }
  for (const variable of [
    'RELAY_SEND_QUEUE_BYTES',
    'RELAY_QUEUE_MAX_BYTES',
    'RELAY_QUEUE_MAX_BYTES_PER_SENDER',
  ] as const) {
    const value = config[variable];
    if (value !== undefined && value < largestFrame) {
      problems.push({
        variable,
        message: `${variable}=${config[variable]} cannot hold one largest frame (RELAY_MAX_PAYLOAD_BYTES + 99 = ${largestFrame})`,
      });
    }
  }
  return problems;
}

/**
 * One sender's share of one recipient's durable queue, with the defaults
 * applied. A quarter: one sender (a source routing hint) can take at most a
 * quarter of a mailbox, so a hostile or runaway sender leaves three quarters
 * to everyone else and it takes at least four identities to fill a mailbox
 * (each its own DID, handshake and rate budget), where one did before; while
 * an honest heavy sender still has 2,500 frames / 16 MiB of backlog with the
 * default limits (a week offline at about 350 messages a day from one
 * contact, or one bridge carrying many foreign senders). Smaller shares
 * would hold off more identities but refuse such senders; operators with
 * other traffic set the variables.
 */
export function relayQueueSenderShare(config: RelayConfig): { maxFramesPerSender: number; maxBytesPerSender: number } {
  const largestFrame = config.RELAY_MAX_PAYLOAD_BYTES + 99;
  return {
    maxFramesPerSender: config.RELAY_QUEUE_MAX_FRAMES_PER_SENDER ?? Math.ceil(config.RELAY_QUEUE_MAX_FRAMES / 4),
    maxBytesPerSender:
      config.RELAY_QUEUE_MAX_BYTES_PER_SENDER ??
      Math.min(config.RELAY_QUEUE_MAX_BYTES, Math.max(Math.ceil(config.RELAY_QUEUE_MAX_BYTES / 4), largestFrame)),
  };
}

/**
 * Reads and validates the relay's configuration. Throws one
 * `ConfigValidationError` (code CONFIG_INVALID) listing every problem,
 * including unknown `RELAY_*` variables.
 */
export function loadRelayConfig(env: Env = process.env): RelayConfig {
  return readConfig(relayConfigSpec, env, { prefix: RELAY_ENV_PREFIX, validate: relayConfigProblems });
}
