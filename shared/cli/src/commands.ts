/**
 * `lrelay`: the command-line client of the relay. The commands live here,
 * free of process globals (streams, exit), so lrelay.ts stays a thin entry
 * point. See docs/client.md for the reference and exit codes.
 *
 * Every failure is one line `error: CODE: message` on stderr, never a stack
 * trace. CODE is an error code from errors.ts, or one of the CLI's own:
 * USAGE (bad command line), PEER_GONE (a fast message found no recipient),
 * TIMEOUT (listen --count not reached in time).
 */
import { lstat, readFile, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import {
  encodeFederatedMessage,
  type FederatedInbound,
  type ForeignIdentity,
  federatedMessageOf,
  parseForeignIdentity,
} from '@libertaria/bridge-kit';
import {
  ClientErrorCode,
  type InboundMessage,
  parseRelayUrls,
  RelayClient,
  relayUrlText,
  SessionManager,
  toHex,
} from '@libertaria/client';
import { FileRelayPinStore, FileSessionStore, relayPinsFile, stateDirForKeyFile } from '@libertaria/client/node';
import type { RotationPolicy } from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, parseDid, verifyEd25519 } from '@libertaria/identity';
import { readKeyFile, writeKeyFile } from '@libertaria/identity/node';
import { ACTIONS, type Action, DEFAULT_MEMBRANE_LIMITS, issueGrant } from '@libertaria/membrane';
import { LibertariaError } from '@libertaria/protocol';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_TIMEOUT = 3;
export const EXIT_INTERRUPTED = 130;

export const USAGE = `usage: lrelay keygen --out FILE
       lrelay whoami --key FILE
       lrelay send --relay URL[,URL...] --key FILE --to DID [--fast] [--unsealed] [--grant TOKEN_FILE] [ROTATION] [LINK] (--text STRING | --stdin)
       lrelay send --relay URL[,URL...] --key FILE --to FOREIGN-URI [--bridge DID] [ROTATION] [LINK] (--text STRING | --stdin)
       lrelay listen --relay URL[,URL...] --key FILE [--count N] [--timeout SECONDS] [--unsealed] [ROTATION] [LINK]
       lrelay policy set --relay URL[,URL...] --key FILE --file POLICY.json   (--file - reads stdin; --remove instead of --file)
       lrelay policy get --relay URL[,URL...] --key FILE
       lrelay grant --key OWNER_KEY --to DID --resource URI --action ACTION[,ACTION...] [--expires SECONDS|ISO-DATE] [--limit UNITS] --out TOKEN_FILE
       lrelay grant --revoke TOKEN_FILE --relay URL[,URL...] --key ISSUER_KEY
       lrelay audit --relay URL[,URL...] --key FILE [--since SECONDS|ISO-DATE] [--limit N]
ROTATION: [--rotate-messages N] [--rotate-seconds SECONDS]  (a new session after N messages or that age)
LINK: [--handshake-timeout SECONDS]  (per handshake step, default 15; 3 x the one-way delay on slow links)`;

/** How many rounds over the relay list the CLI tries before it gives up (the SDK default is forever). */
const SEND_CONNECT_ROUNDS = 5;
const LISTEN_CONNECT_ROUNDS = 10;
/** Durable sends awaiting ACK at once from --stdin, so a huge input is streamed, not buffered. */
const SEND_WINDOW = 256;

export interface CliIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Aborted on SIGINT/SIGTERM: the command closes its client and exits 130. */
  signal?: AbortSignal;
}

/** A failure with the CLI's code and exit status. */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: number;
  constructor(code: string, message: string, exitCode: number = EXIT_FAILURE) {
    super(message);
    this.code = code;
    this.exitCode = exitCode;
  }
}

function usage(message: string): CliError {
  return new CliError('USAGE', message, EXIT_USAGE);
}

/** A bad option value (URL, DID) is a usage error: exit 2, with the library's code. */
function badValue(error: unknown): never {
  if (error instanceof LibertariaError) throw new CliError(error.code, error.message, EXIT_USAGE);
  throw error;
}

function write(stream: NodeJS.WritableStream, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.write(text, (error) => (error ? reject(error) : resolve()));
  });
}

type OptionSpec = Record<string, { type: 'string' | 'boolean' }>;

function parse<O extends OptionSpec>(args: string[], options: O) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    // parseArgs messages are plain sentences naming the option; keep them.
    throw usage(error instanceof Error ? error.message : String(error));
  }
}

function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw usage(`${flag} is required`);
  return value;
}

function positiveInteger(value: string, flag: string): number {
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
    throw usage(`${flag} must be a positive integer`);
  }
  return Number(value);
}

function positiveSeconds(value: string, flag: string): number {
  if (!/^[0-9]+(\.[0-9]+)?$/.test(value) || !(Number(value) > 0) || Number(value) > 2_147_483) {
    throw usage(`${flag} must be a positive number of seconds`);
  }
  return Number(value);
}

/** Session rotation (docs/client.md#rotation): defaults are the SDK's (100,000 messages, 7 days). */
const ROTATION_OPTIONS = {
  'rotate-messages': { type: 'string' },
  'rotate-seconds': { type: 'string' },
} as const;

/** The link to the relay (docs/relay.md#slow-links). */
const LINK_OPTIONS = { 'handshake-timeout': { type: 'string' } } as const;

function handshakeTimeoutOf(values: { 'handshake-timeout'?: string }): number | undefined {
  const seconds = values['handshake-timeout'];
  return seconds === undefined ? undefined : Math.ceil(positiveSeconds(seconds, '--handshake-timeout') * 1000);
}

function rotationOf(values: { 'rotate-messages'?: string; 'rotate-seconds'?: string }): Partial<RotationPolicy> {
  const rotation: Partial<RotationPolicy> = {};
  const messages = values['rotate-messages'];
  const seconds = values['rotate-seconds'];
  if (messages !== undefined) rotation.maxMessages = positiveInteger(messages, '--rotate-messages');
  if (seconds !== undefined) rotation.maxAgeMs = Math.ceil(positiveSeconds(seconds, '--rotate-seconds') * 1000);
  return rotation;
}

async function keygen(args: string[], io: CliIo): Promise<number> {
  const values = parse(args, { out: { type: 'string' } });
  const out = required(values.out, '--out');
  // writeKeyFile refuses atomically too; this check only gives the CLI user a plainer message.
  if (
    await lstat(out).then(
      () => true,
      () => false,
    )
  ) {
    throw new CliError('INVALID_KEY_FILE', `${out} already exists; refusing to overwrite it`);
  }
  const identity = Ed25519Identity.generate();
  await writeKeyFile(out, identity);
  await write(io.stdout, `${identity.did}\n`);
  return EXIT_OK;
}

async function whoami(args: string[], io: CliIo): Promise<number> {
  const values = parse(args, { key: { type: 'string' } });
  const identity = await readKeyFile(required(values.key, '--key'));
  await write(io.stdout, `${identity.did}\n`);
  return EXIT_OK;
}

/** Yields the messages to send: the --text, or each line of stdin. */
async function* inputs(text: string | undefined, io: CliIo): AsyncGenerator<string> {
  if (text !== undefined) {
    yield text;
    return;
  }
  // crlfDelay: a \r\n split across reads still counts as one line end.
  const lines = createInterface({ input: io.stdin, crlfDelay: Number.POSITIVE_INFINITY, terminal: false });
  try {
    for await (const line of lines) yield line;
  } finally {
    lines.close();
  }
}

/**
 * How the CLI trusts relays (docs/client.md#relay-identity): a DID in the
 * relay URL must be proven; otherwise the key a relay proved first is pinned
 * per URL in `<keyfile>.state/relay-pins.json`, and a later change refused
 * (RELAY_IDENTITY_MISMATCH) with a message naming that file.
 */
function relayTrust(keyFile: string): { relayPins: FileRelayPinStore; verifyRelaySignature: typeof verifyEd25519 } {
  return {
    relayPins: new FileRelayPinStore(relayPinsFile(stateDirForKeyFile(keyFile))),
    verifyRelaySignature: verifyEd25519,
  };
}

/**
 * The CLI's client: sealed by default, with its sessions, prekeys and outbox
 * in `<keyfile>.state/` so consecutive runs keep them; `--unsealed` sends and
 * receives plain payloads.
 */
const UNSEALED_WARNING =
  '--unsealed: payloads travel readable by every relay and Redis on the path, and a relay can forge them';

function cliClient(o: {
  relays: string[];
  identity: Ed25519Identity;
  keyFile: string;
  unsealed: boolean;
  maxAttempts: number;
  rotation: Partial<RotationPolicy>;
  handshakeTimeoutMs: number | undefined;
  io: CliIo;
}): { client: RelayClient; sessions: SessionManager | undefined } {
  const { relays, identity, keyFile, unsealed, maxAttempts, rotation, handshakeTimeoutMs, io } = o;
  if (unsealed) io.stderr.write(`warning: ${UNSEALED_WARNING}\n`);
  const sessions = unsealed
    ? undefined
    : new SessionManager({
        identity,
        store: new FileSessionStore(stateDirForKeyFile(keyFile)),
        provider: nodeCrypto,
        verify: verifyEd25519,
        rotation,
      });
  const client = new RelayClient({
    relays,
    identity,
    ...relayTrust(keyFile),
    reconnect: { maxAttempts },
    ...(handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs }),
    // Silent as it always was; its one warning that matters (--unsealed) the CLI prints itself, below.
    logger: { warn: () => {} },
    // Offline-first: a send that never got its ACK goes out again on the next run, and
    // messages acknowledged by one `listen` are never shown by the next.
    outbox: new FileSessionStore(stateDirForKeyFile(keyFile)),
    ...(sessions === undefined ? { sealing: false } : { sessions }),
  });
  return { client, sessions };
}

function closeOnAbort(client: RelayClient, signal: AbortSignal | undefined): () => boolean {
  if (signal === undefined) return () => false;
  const onAbort = (): void => void client.close();
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.aborted;
}

async function send(args: string[], io: CliIo): Promise<number> {
  const values = parse(args, {
    relay: { type: 'string' },
    key: { type: 'string' },
    to: { type: 'string' },
    fast: { type: 'boolean' },
    text: { type: 'string' },
    stdin: { type: 'boolean' },
    unsealed: { type: 'boolean' },
    grant: { type: 'string' },
    bridge: { type: 'string' },
    ...ROTATION_OPTIONS,
    ...LINK_OPTIONS,
  });
  const relayList = required(values.relay, '--relay');
  const keyFile = required(values.key, '--key');
  const target = required(values.to, '--to');
  const grant = values.grant === undefined ? undefined : await readGrantFile(values.grant);
  if ((values.text !== undefined) === (values.stdin === true)) throw usage('give exactly one of --text or --stdin');
  const relays = (() => {
    try {
      return parseRelayUrls(relayList).map(relayUrlText);
    } catch (error) {
      return badValue(error);
    }
  })();
  // A DID is a Libertaria peer; anything else must be a foreign identity reached through --bridge.
  const foreign = target.includes(':') && !target.startsWith('did:');
  let to = target;
  let remote: ForeignIdentity | undefined;
  try {
    if (foreign) {
      remote = parseForeignIdentity(target);
      // Without --bridge the relay cluster names the bridge serving that network (BRIDGE_QUERY).
      to = values.bridge ?? '';
      if (values.fast === true || values.unsealed === true) {
        throw usage('a foreign --to is sent durable and sealed: drop --fast and --unsealed');
      }
    } else if (values.bridge !== undefined) {
      throw usage('--bridge goes with a foreign --to (nostr:npub1…, acct:…, xmtp:…)');
    }
    if (to !== '') parseDid(to);
  } catch (error) {
    badValue(error);
  }
  // Every usage error before the key file is read.
  const rotation = rotationOf(values);
  const handshakeTimeoutMs = handshakeTimeoutOf(values);
  const identity = await readKeyFile(keyFile);
  const durable = values.fast !== true;
  const encoder = new TextEncoder();
  // A federated send is a send-dm message sealed to the bridge (docs/bridges.md#from-the-sdk-and-the-cli).
  const encode = (text: string): Uint8Array =>
    remote === undefined ? encoder.encode(text) : encodeFederatedMessage({ type: 'send-dm', to: remote.uri, text });

  const { client } = cliClient({
    relays,
    identity,
    keyFile,
    unsealed: values.unsealed === true,
    maxAttempts: SEND_CONNECT_ROUNDS,
    rotation,
    handshakeTimeoutMs,
    io,
  });
  const interrupted = closeOnAbort(client, io.signal);
  const fastIds = new Set<string>();
  let peerGone = false;
  let firstError: unknown;
  client.events.on('peer-gone', ({ messageId }) => {
    if (fastIds.has(toHex(messageId))) peerGone = true;
  });
  client.events.on('error', ({ error, messageId }) => {
    // A NACK for one of our fast messages (RATE_LIMITED, ...) is that message's failure.
    if (messageId !== undefined && fastIds.has(toHex(messageId))) firstError ??= error;
  });
  try {
    await client.connect();
    if (to === '' && remote !== undefined) to = await client.findBridge(networkOf(remote));
    // Presented before the first send, and again on every reconnect by the client.
    if (grant !== undefined) await client.presentGrant(grant);
    const inFlight = new Set<Promise<unknown>>();
    for await (const text of inputs(values.text, io)) {
      if (firstError !== undefined || interrupted()) break;
      const payload = encode(text);
      if (!durable) {
        const { messageId } = await client.send(to, payload, { durable: false });
        fastIds.add(toHex(messageId));
        continue;
      }
      const pending: Promise<unknown> = client.send(to, payload).then(
        () => inFlight.delete(pending),
        (error: unknown) => {
          inFlight.delete(pending);
          firstError ??= error;
        },
      );
      inFlight.add(pending);
      if (inFlight.size >= SEND_WINDOW) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (!durable && firstError === undefined && !interrupted()) {
      // Barrier: a PEER_GONE for our messages must arrive before we call them delivered.
      await client.ping();
      // The relay answers PING at once but PEER_GONE only after a presence lookup in Redis;
      // a PRESENCE_QUERY for the same peer takes that same path, so its answer comes after.
      await client.presence(to);
    }
  } catch (error) {
    firstError ??= error;
  } finally {
    await client.close();
  }
  if (interrupted()) return EXIT_INTERRUPTED;
  if (firstError !== undefined) throw firstError;
  if (peerGone) throw new CliError('PEER_GONE', 'recipient is connected nowhere');
  return EXIT_OK;
}

function messageLine(message: InboundMessage, decoder: { decode(bytes: Uint8Array): string }): string {
  const federated = federatedLine(message);
  if (federated !== undefined) return federated;
  return `${JSON.stringify({
    id: toHex(message.messageId),
    from: message.from,
    to: message.to,
    text: decoder.decode(message.payload),
    durable: message.durable,
    // false: sent in the clear, readable and forgeable on the path (see InboundMessage.sealed).
    sealed: message.sealed,
  })}\n`;
}

/** The federation network name of a foreign identity's bridge (federationNetworkName). */
function networkOf(remote: ForeignIdentity): string {
  return remote.type === 'custom' ? `custom-${remote.scheme}` : remote.type;
}

/** A message a bridge relayed from a foreign identity: `from` is the foreign URI, `via` the bridge DID. */
function federatedLine(message: InboundMessage): string | undefined {
  let federated: FederatedInbound | undefined;
  try {
    federated = federatedMessageOf(message);
  } catch {
    return undefined; // malformed: shown as plain bytes, like any payload
  }
  if (federated === undefined) return undefined;
  return `${JSON.stringify({
    id: toHex(message.messageId),
    from: federated.from.uri,
    via: federated.via,
    to: message.to,
    text: federated.text,
    kind: federated.kind,
    sentAt: federated.sentAt,
    durable: message.durable,
  })}\n`;
}

async function listen(args: string[], io: CliIo): Promise<number> {
  const values = parse(args, {
    relay: { type: 'string' },
    key: { type: 'string' },
    count: { type: 'string' },
    timeout: { type: 'string' },
    unsealed: { type: 'boolean' },
    ...ROTATION_OPTIONS,
    ...LINK_OPTIONS,
  });
  const relayList = required(values.relay, '--relay');
  const keyFile = required(values.key, '--key');
  const count = values.count === undefined ? undefined : positiveInteger(values.count, '--count');
  const timeoutS = values.timeout === undefined ? undefined : positiveSeconds(values.timeout, '--timeout');
  const rotation = rotationOf(values);
  const handshakeTimeoutMs = handshakeTimeoutOf(values);
  const relays = (() => {
    try {
      return parseRelayUrls(relayList).map(relayUrlText);
    } catch (error) {
      return badValue(error);
    }
  })();
  const identity = await readKeyFile(keyFile);
  // Not fatal: replacement characters stand in for bytes that are not UTF-8.
  const decoder = new TextDecoder('utf-8');

  const { client, sessions } = cliClient({
    relays,
    identity,
    keyFile,
    unsealed: values.unsealed === true,
    maxAttempts: LISTEN_CONNECT_ROUNDS,
    rotation,
    handshakeTimeoutMs,
    io,
  });
  const interrupted = closeOnAbort(client, io.signal);
  let timedOut = false;
  // `listen --timeout 1` is how a peer publishes its prekeys: a timeout never cuts a publication short.
  let publishing: Promise<void> = Promise.resolve();
  const timer =
    timeoutS === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          void publishing.catch(() => undefined).finally(() => client.close());
        }, timeoutS * 1000);
  let received = 0;
  try {
    await client.connect();
    // Senders need our prekeys to start a session: published before we report anything.
    if (sessions !== undefined) {
      publishing = sessions.ensurePublished(client);
      await publishing;
    }
    for await (const message of client.messages()) {
      await write(io.stdout, messageLine(message, decoder));
      // Acknowledged only once printed: a crash before this point means redelivery, not loss.
      await message.ack();
      received++;
      if (count !== undefined && received >= count) break;
    }
  } catch (error) {
    // close() from the timer or a signal makes connect() reject: that is not a failure.
    if (!timedOut && !interrupted()) throw error;
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    await client.close();
  }
  if (count !== undefined && received >= count) return EXIT_OK;
  if (interrupted()) return EXIT_INTERRUPTED;
  if (timedOut && client.stats.connections === 0) {
    // Never connected is a failure, not a quiet listen.
    throw new CliError(ClientErrorCode.unreachable, `no relay reachable within ${timeoutS} s`);
  }
  if (timedOut && count !== undefined) {
    throw new CliError('TIMEOUT', `received ${received} of ${count} message(s) within ${timeoutS} s`, EXIT_TIMEOUT);
  }
  return EXIT_OK;
}

/** --relay as URLs, a bad one being a usage error. */
function relaysOf(list: string | undefined): string[] {
  const relayList = required(list, '--relay');
  try {
    return parseRelayUrls(relayList).map(relayUrlText);
  } catch (error) {
    return badValue(error);
  }
}

/**
 * An instant: whole seconds from now (`3600`) or an ISO 8601 date. Returns
 * unix seconds. `past` allows instants before now (--since).
 */
function instantOf(value: string, flag: string, past: boolean): number {
  const nowS = Math.floor(Date.now() / 1000);
  if (/^[0-9]{1,10}$/.test(value)) return past ? nowS - Number(value) : nowS + Number(value);
  const ms = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || !Number.isFinite(ms)) {
    throw usage(`${flag} must be a number of seconds or an ISO 8601 date`);
  }
  return Math.floor(ms / 1000);
}

/** A grant token file: the token in base64 (what `lrelay grant` writes). */
async function readGrantFile(file: string): Promise<Uint8Array> {
  const text = (await readFile(file, 'utf8')).trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) throw usage(`${file} is not a grant token file (base64)`);
  return new Uint8Array(Buffer.from(text, 'base64'));
}

/** A connected client for one membrane request, closed afterwards. */
async function withClient<T>(
  values: { relay?: string; key?: string },
  io: CliIo,
  run: (client: RelayClient) => Promise<T>,
): Promise<T> {
  const relays = relaysOf(values.relay);
  const identity = await readKeyFile(required(values.key, '--key'));
  const keyFile = required(values.key, '--key');
  const client = new RelayClient({
    relays,
    identity,
    ...relayTrust(keyFile),
    reconnect: { maxAttempts: SEND_CONNECT_ROUNDS },
    // Membrane requests carry no payload to seal; a client of its own would publish prekeys from memory.
    sealing: false,
  });
  closeOnAbort(client, io.signal);
  try {
    await client.connect();
    return await run(client);
  } finally {
    await client.close();
  }
}

async function readStream(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks).toString('utf8');
}

/** `lrelay policy set|get`: this DID's membrane policy on the relay (POLICY_PUT / POLICY_GET). */
async function policy(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'get') {
    const values = parse(rest, { relay: { type: 'string' }, key: { type: 'string' } });
    const stored = await withClient(values, io, (client) => client.getPolicy());
    await write(io.stdout, stored === null ? 'null\n' : `${JSON.stringify(JSON.parse(stored), null, 2)}\n`);
    return EXIT_OK;
  }
  if (sub === 'set') {
    const values = parse(rest, {
      relay: { type: 'string' },
      key: { type: 'string' },
      file: { type: 'string' },
      remove: { type: 'boolean' },
    });
    if ((values.file !== undefined) === (values.remove === true)) throw usage('give exactly one of --file or --remove');
    const text =
      values.remove === true
        ? null
        : values.file === '-'
          ? await readStream(io.stdin)
          : await readFile(values.file!, 'utf8');
    const stored = await withClient(values, io, (client) => client.setPolicy(text));
    await write(io.stdout, stored === null ? 'removed\n' : `${JSON.stringify(JSON.parse(stored), null, 2)}\n`);
    return EXIT_OK;
  }
  throw usage('policy needs a subcommand: set or get');
}

/** `lrelay grant`: signs a grant token with the owner's key (offline; no relay involved). */
async function grant(args: string[], io: CliIo): Promise<number> {
  const values = parse(args, {
    revoke: { type: 'string' },
    relay: { type: 'string' },
    key: { type: 'string' },
    to: { type: 'string' },
    resource: { type: 'string' },
    action: { type: 'string' },
    expires: { type: 'string' },
    limit: { type: 'string' },
    out: { type: 'string' },
  });
  if (values.revoke !== undefined) {
    // The issuer takes its grant back, cluster-wide (GRANT_REVOKE): prints the revoked link ids, one JSON line.
    const token = await readGrantFile(values.revoke);
    const cids = await withClient(values, io, (client) => client.revokeGrant(token));
    await write(io.stdout, `${JSON.stringify({ revoked: cids })}\n`);
    return EXIT_OK;
  }
  const owner = await readKeyFile(required(values.key, '--key'));
  const to = required(values.to, '--to');
  const resource = required(values.resource, '--resource');
  const actions = required(values.action, '--action').split(',');
  for (const a of actions) {
    if (a !== '*' && !(ACTIONS as readonly string[]).includes(a)) {
      throw usage(`--action: ${JSON.stringify(a)} is not one of ${ACTIONS.join(', ')} or *`);
    }
  }
  const out = required(values.out, '--out');
  const expiry = values.expires === undefined ? undefined : instantOf(values.expires, '--expires', false);
  const units = values.limit === undefined ? undefined : positiveInteger(values.limit, '--limit');
  let token: Uint8Array;
  try {
    token = issueGrant(
      owner,
      {
        audience: to,
        capabilities: actions.map((action) => ({ resource, action: action as Action | '*' })),
        ...(units !== undefined ? { constraints: [{ type: 'quota', units, windowSeconds: 0 }] } : {}),
        ...(expiry !== undefined ? { expiry } : {}),
      },
      DEFAULT_MEMBRANE_LIMITS,
    );
  } catch (error) {
    return badValue(error);
  }
  await writeFile(out, `${Buffer.from(token).toString('base64')}\n`, { mode: 0o600 });
  await write(io.stdout, `${out}\n`);
  return EXIT_OK;
}

/** `lrelay audit`: decisions about this DID's resources, one JSON line each, oldest first. */
async function audit(args: string[], io: CliIo): Promise<number> {
  const values = parse(args, {
    relay: { type: 'string' },
    key: { type: 'string' },
    since: { type: 'string' },
    limit: { type: 'string' },
  });
  const sinceMs = values.since === undefined ? 0 : instantOf(values.since, '--since', true) * 1000;
  const max = values.limit === undefined ? 1000 : positiveInteger(values.limit, '--limit');
  await withClient(values, io, async (client) => {
    let after: string | undefined;
    let printed = 0;
    while (printed < max) {
      const page = await client.queryAudit({
        sinceMs,
        limit: Math.min(1000, max - printed),
        ...(after !== undefined ? { after } : {}),
      });
      for (const record of page.records) await write(io.stdout, `${JSON.stringify(record)}\n`);
      printed += page.records.length;
      if (page.next === undefined) break;
      after = page.next;
    }
  });
  return EXIT_OK;
}

const COMMANDS: Record<string, (args: string[], io: CliIo) => Promise<number>> = {
  keygen,
  whoami,
  send,
  listen,
  policy,
  grant,
  audit,
};

/** Runs one command line; returns the exit status. Prints `error: CODE: message` for every failure. */
export async function runLrelay(argv: readonly string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === '--help' || command === '-h' || command === 'help') {
      await write(io.stdout, `${USAGE}\n`);
      return EXIT_OK;
    }
    if (command === undefined) throw usage('no command given');
    const run = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
    if (run === undefined) throw usage(`unknown command ${JSON.stringify(command)}`);
    return await run(rest, io);
  } catch (error) {
    let code: string;
    let exitCode: number;
    let message: string;
    if (error instanceof CliError) {
      ({ code, exitCode, message } = error);
    } else if (error instanceof LibertariaError) {
      code = error.code;
      exitCode = EXIT_FAILURE;
      message = error.message;
    } else {
      // Not expected: still one line, no stack trace.
      code = 'INTERNAL';
      exitCode = EXIT_FAILURE;
      message = error instanceof Error ? error.message : String(error);
    }
    const usageLine = exitCode === EXIT_USAGE ? `${USAGE}\n` : '';
    await write(io.stderr, `error: ${code}: ${message.replace(/\s*\n\s*/g, ' ')}\n${usageLine}`).catch(() => {});
    return exitCode;
  }
}
