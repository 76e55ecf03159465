/**
 * The relay identity is a key (issue 13, item 1): real relays on free
 * ports, a real Redis, real Ed25519.
 *
 * - GET /identity names the key the node signs CHALLENGE with; nodes may
 *   share an operator key; a PEM key file works; no key, no start.
 * - A client that pins the relay's DID in the URL connects; one that pins
 *   another DID is refused with RELAY_IDENTITY_MISMATCH before it signs.
 * - A relay in the middle (PassThroughRelay) that hands the client another
 *   relay's CHALLENGE, as it is or re-signed with its own key over the other
 *   relay's nonce, cannot log the client in at that other relay.
 * - Trust on first use: the SDK's pin store and lrelay's pins file keep the
 *   first key per URL and refuse a changed one with a message naming the pin.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RelayClient } from '@libertaria/client';
import { FileRelayPinStore, relayPinsFile, stateDirForKeyFile } from '@libertaria/client/node';
// The identity class of the built package: test-support (relays, raw peers) takes that one.
import { Ed25519Identity, relayChallengeTranscript, verifyEd25519 } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { encodeFrame, errorCodeFromWire, type Frame, FrameStreamDecoder, RelayError } from '@libertaria/protocol';
import { cli, nextMessage, text, within } from '../../../test-support/client-harness.js';
import { repoPath } from '../../../test-support/paths.js';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { TcpProxy } from '../../../test-support/tcp-proxy.js';

/**
 * A hostile relay M on 127.0.0.1: for each client it opens a connection to
 * the honest relay R, hands R the client's HELLO (same nonce) and gives the
 * client R's CHALLENGE, either as it is ('forward') or re-signed by M's own
 * key over R's nonce and the client's nonce ('resign', the best M can do to
 * look like itself). Whatever the client sends next goes to R; what R answers
 * is recorded and passed back.
 */
class PassThroughRelay {
  readonly identity = Ed25519Identity.generate();
  /** Frames the clients sent, by type. */
  readonly fromClients: string[] = [];
  /** What R answered to the frames the clients sent after CHALLENGE (WELCOME, or ERROR codes). */
  readonly rAnswers: string[] = [];
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number, mode: 'forward' | 'resign'): Promise<PassThroughRelay> {
    let self: PassThroughRelay | undefined;
    const server = createServer((client) => self?.onClient(client, targetPort, mode));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const address = server.address();
    assert.ok(address !== null && typeof address === 'object');
    self = new PassThroughRelay(server, address.port);
    return self;
  }

  get url(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  private onClient(client: Socket, targetPort: number, mode: 'forward' | 'resign'): void {
    this.sockets.add(client);
    const upstream = connect({ host: '127.0.0.1', port: targetPort });
    this.sockets.add(upstream);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    const fromClient = new FrameStreamDecoder();
    const fromRelay = new FrameStreamDecoder();
    let clientNonce: Uint8Array | undefined;
    let challenged = false;
    client.on('data', (chunk: Buffer) => {
      for (const bytes of fromClient.push(chunk)) {
        const frame = decode(bytes);
        this.fromClients.push(frame.type);
        if (frame.type === 'HELLO') clientNonce = frame.clientNonce;
        upstream.write(bytes);
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      for (const bytes of fromRelay.push(chunk)) {
        const frame = decode(bytes);
        if (frame.type === 'CHALLENGE' && !challenged) {
          challenged = true;
          if (mode === 'forward') {
            client.write(bytes);
            continue;
          }
          const m = this.identity;
          const signature = m.sign(
            relayChallengeTranscript({
              relayNonce: frame.nonce,
              clientNonce: clientNonce!,
              relayKey: m.publicKey,
              binding: 'tcp',
            }),
          );
          client.write(encodeFrame({ ...frame, relayIdentity: m.did, relayKey: m.publicKey, signature }));
          continue;
        }
        this.rAnswers.push(frame.type === 'ERROR' ? `ERROR ${errorCodeFromWire(frame.code)}` : frame.type);
        client.write(bytes);
      }
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

function decode(bytes: Uint8Array): Frame {
  return new FrameStreamDecoder().pushFrames(bytes)[0]!;
}

const isCode = (code: string) => (error: unknown) => error instanceof RelayError && error.code === code;

describe('relay identity keys', { timeout: 170_000 }, () => {
  let redis: RedisHandle;
  let relayKey: Ed25519Identity;
  let relay: RelayHandle;
  let other: RelayHandle;
  let dir: string;
  const clients: RelayClient[] = [];
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    redis = await startRedis();
    relayKey = Ed25519Identity.generate();
    [relay, other] = await Promise.all([
      startRelay({ redisUrl: redis.url, identity: relayKey }),
      startRelay({ redisUrl: redis.url }),
    ]);
    dir = await mkdtemp(join(tmpdir(), 'relay-identity-'));
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    for (const c of cleanups) await c().catch(() => undefined);
    await Promise.all([relay?.stop(), other?.stop()]);
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  function client(relays: string[], extra: Partial<ConstructorParameters<typeof RelayClient>[0]> = {}): RelayClient {
    const c = new RelayClient({
      relays,
      identity: Ed25519Identity.generate(),
      sealing: false,
      reconnect: { initialDelayMs: 20, maxDelayMs: 50, maxAttempts: 2 },
      ...extra,
    });
    clients.push(c);
    return c;
  }

  it('GET /identity on the admin port names the key the node signs with', async () => {
    const res = await fetch(`${relay.adminUrl}/identity`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { did: string; didKey: string };
    assert.deepEqual(body, { did: relayKey.did, didKey: relayKey.didKey });
    assert.equal(relay.did, relayKey.did, 'the listening line names it too');
    const otherBody = (await (await fetch(`${other.adminUrl}/identity`)).json()) as { did: string };
    assert.notEqual(otherBody.did, relayKey.did, 'a node with its own key');
  });

  it('a client with the right DID in the URL connects (ws and tcp, either DID form) and is told the key', async () => {
    for (const url of [`${relay.wsUrl}#${relayKey.did}`, `${relay.tcpUrl}#${relayKey.didKey}`]) {
      const c = client([url]);
      const connected = new Promise<{ relayDid: string }>((r) => c.events.once('connected', r));
      await within(c.connect(), 20_000, `connect ${url}`);
      assert.equal((await connected).relayDid, relayKey.did);
    }
  });

  it('a client with another DID in the URL is refused with RELAY_IDENTITY_MISMATCH, before it signs', async () => {
    const stranger = Ed25519Identity.generate();
    const peer = await RawPeer.connect(relay.tcpUrl);
    await peer.authenticate(Ed25519Identity.generate());
    const before = await authAttempts(relay);
    const c = client([`${relay.tcpUrl}#${stranger.did}`]);
    await assert.rejects(within(c.connect(), 20_000, 'connect'), (error: unknown) => {
      assert.ok(isCode('RELAY_IDENTITY_MISMATCH')(error), String(error));
      assert.match((error as Error).message, new RegExp(`proved key ${relayKey.did}, but the relay URL`));
      return true;
    });
    assert.equal(await authAttempts(relay), before, 'no AUTH reached the relay');
    peer.close();
  });

  it('a relay passing another relay’s CHALLENGE through, as it is, is refused by a client that pinned it', async () => {
    const mitm = await PassThroughRelay.start(relay.ports.tcp, 'forward');
    cleanups.push(() => mitm.close());
    const c = client([`${mitm.url}#${mitm.identity.did}`]);
    await assert.rejects(within(c.connect(), 20_000, 'connect'), isCode('RELAY_IDENTITY_MISMATCH'));
    assert.ok(!mitm.fromClients.includes('AUTH'), `the client signed nothing: ${mitm.fromClients.join(',')}`);
  });

  it('a relay re-signing another relay’s CHALLENGE with its own key cannot log the client in there (pinned or not)', async () => {
    const mitm = await PassThroughRelay.start(relay.ports.tcp, 'resign');
    cleanups.push(() => mitm.close());
    for (const url of [`${mitm.url}#${mitm.identity.did}`, mitm.url]) {
      const victim = Ed25519Identity.generate();
      const c = client([url], { identity: victim });
      // The client believes it talks to M and signs for M's key; M hands that AUTH to the honest relay.
      await assert.rejects(within(c.connect(), 20_000, 'connect'), isCode('AUTH_FAILED'));
      assert.ok(mitm.fromClients.includes('AUTH'), 'the client did sign, for the relay it was talking to');
      assert.deepEqual(mitm.rAnswers.slice(-1), ['ERROR AUTH_FAILED'], 'the honest relay refused the AUTH');
      assert.ok(!mitm.rAnswers.includes('WELCOME'));
      // And the victim is connected nowhere in the cluster.
      const observer = await RawPeer.connect(relay.tcpUrl);
      await observer.authenticate(Ed25519Identity.generate());
      observer.send({ type: 'PRESENCE_QUERY', hint: victim.hint });
      assert.equal((await observer.next((f) => f.type === 'PEER_GONE' || f.type === 'PEER_PRESENT')).type, 'PEER_GONE');
      observer.close();
    }
  });

  it('without a pin, a pure pass-through is the honest relay itself: the client is told whose key it met', async () => {
    const mitm = await PassThroughRelay.start(relay.ports.tcp, 'forward');
    cleanups.push(() => mitm.close());
    const c = client([mitm.url]);
    const connected = new Promise<{ relayDid: string }>((r) => c.events.once('connected', r));
    await within(c.connect(), 20_000, 'connect');
    assert.equal((await connected).relayDid, relayKey.did, "R's DID, not M's: a pin on M's URL would refuse it");
  });

  it('trust on first use: a pin per URL, a changed key refused naming the pin, a URL DID re-pins', async () => {
    const proxy = await TcpProxy.start({ port: relay.ports.tcp });
    cleanups.push(() => proxy.close());
    const pinsPath = join(dir, 'sdk', 'relay-pins.json');
    const pins = () => new FileRelayPinStore(pinsPath);
    const first = client([proxy.url('tcp')], { relayPins: pins(), verifyRelaySignature: verifyEd25519 });
    await within(first.connect(), 20_000, 'first connect');
    const stored = JSON.parse(await readFile(pinsPath, 'utf8')) as { pins: Record<string, { did: string }> };
    assert.equal(stored.pins[`${proxy.url('tcp')}`]?.did, relayKey.did);
    await first.close();

    // Same URL, another key behind it.
    proxy.setTarget(other.ports.tcp);
    const second = client([proxy.url('tcp')], { relayPins: pins() });
    await assert.rejects(within(second.connect(), 20_000, 'second connect'), (error: unknown) => {
      assert.ok(isCode('RELAY_IDENTITY_MISMATCH')(error), String(error));
      const message = (error as Error).message;
      assert.match(message, new RegExp(`proved key ${other.did}, but the key pinned for it on first use`));
      assert.ok(message.includes(pinsPath), message);
      assert.match(message, /The relay's key changed/);
      return true;
    });

    // The operator says the new key is right: the URL names it, and the pin follows.
    const third = client([`${proxy.url('tcp')}#${other.did}`], { relayPins: pins() });
    await within(third.connect(), 20_000, 'connect with the new DID');
    assert.equal((await pins().get(proxy.url('tcp')))?.did, other.did);
  });

  it('lrelay pins in <key>.state/relay-pins.json and refuses a changed key with RELAY_IDENTITY_MISMATCH', async () => {
    const proxy = await TcpProxy.start({ port: relay.ports.tcp });
    cleanups.push(() => proxy.close());
    const keyFile = join(dir, 'cli.key');
    await writeKeyFile(keyFile, Ed25519Identity.generate());
    const url = proxy.url('tcp');
    const ok = await cli(['listen', '--relay', url, '--key', keyFile, '--timeout', '5']).done;
    assert.equal(ok.stderr, '');
    assert.equal(ok.code, 0);
    const pinsPath = relayPinsFile(stateDirForKeyFile(keyFile));
    const stored = JSON.parse(await readFile(pinsPath, 'utf8')) as { pins: Record<string, { did: string }> };
    assert.equal(stored.pins[url]?.did, relayKey.did);

    proxy.setTarget(other.ports.tcp);
    const refused = await cli(['listen', '--relay', url, '--key', keyFile, '--timeout', '5']).done;
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /^error: RELAY_IDENTITY_MISMATCH: .*pinned for it on first use/);
    assert.ok(refused.stderr.includes(pinsPath), refused.stderr);

    const repinned = await cli([
      'listen',
      '--relay',
      `${url}#${other.did}`,
      '--key',
      keyFile,
      '--unsealed',
      '--timeout',
      '5',
    ]).done;
    assert.equal(repinned.code, 0, repinned.stderr);
  });

  it('nodes sharing one operator key are one identity to clients (expectRelayDid)', async () => {
    const twin = await startRelay({ redisUrl: redis.url, identity: relayKey });
    cleanups.push(() => twin.stop());
    assert.equal(twin.did, relayKey.did);
    const a = client([relay.wsUrl], { expectRelayDid: relayKey.didKey });
    const b = client([twin.tcpUrl], { expectRelayDid: relayKey.did });
    await Promise.all([within(a.connect(), 20_000, 'a'), within(b.connect(), 20_000, 'b')]);
    await a.send(b.did, text('across the cluster'));
    assert.equal(new TextDecoder().decode((await nextMessage(b)).payload), 'across the cluster');
  });

  it('takes a PEM key file; refuses to start without a key', async () => {
    const { privateKey } = generateKeyPairSync('ed25519');
    const pemFile = join(dir, 'relay.pem');
    await writeFile(pemFile, privateKey.export({ format: 'pem', type: 'pkcs8' }));
    const pemRelay = await startRelay({ redisUrl: redis.url, env: { RELAY_IDENTITY_KEY_FILE: pemFile } });
    cleanups.push(() => pemRelay.stop());
    // The seed from PKCS#8 DER (its last 32 bytes), not a JWK export: on Node 20 a JWK export of a
    // generated key can deadlock (shared/crypto/src/crypto-node.ts, publicKeyOf).
    const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
    assert.equal(pemRelay.did, Ed25519Identity.fromSeed(seed).did);

    const child = spawn(process.execPath, [repoPath('services/relay/dist/main.js')], {
      env: {
        PATH: process.env.PATH ?? '',
        REDIS_URL: redis.url,
        RELAY_WS_PORT: '0',
        RELAY_TCP_PORT: '0',
        RELAY_ADMIN_PORT: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const code = await within(
      new Promise<number | null>((r) => child.once('exit', r)),
      30_000,
      'a relay without a key exits',
    );
    assert.equal(code, 2);
    assert.match(stderr, /no relay identity key: set RELAY_IDENTITY_KEY_FILE/);
  });
});

/** AUTH frames a relay has read so far. */
async function authAttempts(relay: RelayHandle): Promise<number> {
  const metrics = await (await fetch(`${relay.adminUrl}/metrics`)).text();
  const m = /^relay_frames_total\{type="AUTH",direction="in"\} (\d+)/m.exec(metrics);
  return m === null ? 0 : Number(m[1]);
}
