/**
 * A minimal protocol peer for relay tests, built straight on the codec and
 * independent of the client SDK: it lets tests send exactly the bytes they
 * want (forged auth, garbage, oversized frames) and read exactly what the
 * relay answers.
 */
import { randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { authTranscript, type Ed25519Identity, verifyRelayChallenge } from '@libertaria/identity';
import {
  type ChallengeFrame,
  decodeFrame,
  decodeFrames,
  encodeFrame,
  type Frame,
  FrameStreamDecoder,
  MAX_PAYLOAD_LIMIT,
  MAX_PROTOCOL_VERSION,
  MIN_PROTOCOL_VERSION,
  SendFlags,
  type WelcomeFrame,
} from '@libertaria/protocol';
import WebSocket from 'ws';

/** A SEND from `from` to `to` (fast unless `durable`), with a fresh message id unless one is given. */
export function sendFrameOf(
  from: Ed25519Identity,
  to: Ed25519Identity,
  payload: Uint8Array,
  durable = false,
  messageId: Uint8Array = randomBytes(16),
): Frame {
  return {
    type: 'SEND',
    dest: to.hint,
    source: from.hint,
    sessionId: new Uint8Array(16),
    messageId,
    flags: durable ? SendFlags.DURABLE : 0,
    ttl: 0,
    position: 0,
    payload,
  };
}

export class RawPeer {
  readonly frames: Frame[] = [];
  /** The client nonce of the last hello(). */
  clientNonce: Uint8Array = new Uint8Array(32);
  /** When set, received frames go to this instead of `frames` (a test that only counts or times them). */
  onFrames: ((frames: Frame[]) => void) | undefined;
  /** The TCP socket (undefined on WebSocket), for writes that honour backpressure. */
  private socket: Socket | undefined;
  private waiters: Array<() => void> = [];
  closed = false;
  readonly closedPromise: Promise<void>;
  private markClosed!: () => void;
  private constructor(
    private readonly writeBytes: (b: Uint8Array) => void,
    private readonly closeFn: () => void,
    readonly binding: 'ws' | 'tcp',
    /** Stops reading from the socket (a slow or stuck peer). */
    readonly pauseReading: () => void,
    /** Reads again after pauseReading(). */
    readonly resumeReading: () => void,
  ) {
    this.closedPromise = new Promise((r) => {
      this.markClosed = r;
    });
  }

  /**
   * `localAddress`: the source address to connect from, e.g. another
   * loopback address (127.0.0.2) to stand for a second host in tests of
   * per-address limits (every 127.0.0.0/8 address reaches the relay on 127.0.0.1).
   * `headers` (WebSocket only): extra headers of the upgrade request.
   */
  static async connect(
    url: string,
    options: { localAddress?: string; headers?: Record<string, string> } = {},
  ): Promise<RawPeer> {
    if (url.startsWith('ws://')) {
      const ws = new WebSocket(url, 'libertaria-relay.v1', {
        ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
        // Headers of the upgrade request, e.g. X-Forwarded-For as a proxy in front of the relay writes it.
        ...(options.headers === undefined ? {} : { headers: options.headers }),
      });
      ws.binaryType = 'nodebuffer';
      const peer = new RawPeer(
        (b) => ws.send(b),
        () => ws.close(),
        'ws',
        () => ws.pause(),
        () => ws.resume(),
      );
      ws.on('message', (data: Buffer) => peer.receive(decodeFrames(data, { maxPayload: MAX_PAYLOAD_LIMIT })));
      ws.on('close', () => peer.onClose());
      ws.on('error', () => peer.onClose());
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      return peer;
    }
    const u = new URL(url);
    const sock: Socket = netConnect({
      host: u.hostname,
      port: Number(u.port),
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
    });
    const decoder = new FrameStreamDecoder({ maxPayload: MAX_PAYLOAD_LIMIT });
    const peer = new RawPeer(
      (b) => sock.write(b),
      () => sock.destroy(),
      'tcp',
      () => sock.pause(),
      () => sock.resume(),
    );
    peer.socket = sock;
    sock.setNoDelay(true); // as the relay does: no Nagle delay in latency measurements
    sock.on('data', (d: Buffer) =>
      peer.receive(decoder.push(d).map((f) => decodeFrame(f, { maxPayload: MAX_PAYLOAD_LIMIT }))),
    );
    sock.on('close', () => peer.onClose());
    sock.on('error', () => peer.onClose());
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', () => resolve());
      sock.once('error', reject);
    });
    return peer;
  }

  private receive(frames: Frame[]): void {
    if (this.onFrames !== undefined) {
      this.onFrames(frames);
      return;
    }
    this.frames.push(...frames);
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.markClosed();
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(frame: Frame | Uint8Array): void {
    this.writeBytes(frame instanceof Uint8Array ? frame : encodeFrame(frame));
  }

  close(): void {
    this.closeFn();
  }

  /**
   * Writes bytes (any number of whole frames) and resolves when the socket
   * has room for more: on TCP after 'drain' if the kernel did not take them
   * at once, else on the next turn of the event loop (so a flood written in a
   * loop never starves this process's timers). WebSocket: the next turn.
   */
  writeFlood(bytes: Uint8Array): Promise<void> {
    const sock = this.socket;
    if (sock === undefined) {
      this.writeBytes(bytes);
      return new Promise((resolve) => setImmediate(resolve));
    }
    if (sock.write(bytes)) return new Promise((resolve) => setImmediate(resolve));
    return new Promise((resolve) => {
      const done = (): void => {
        sock.off('drain', done);
        sock.off('close', done);
        resolve();
      };
      sock.once('drain', done);
      sock.once('close', done);
    });
  }

  /**
   * Waits for (and removes) the first frame matching `pred`. The default
   * deadline is sized for a loaded 2-core CI machine (an answer takes
   * milliseconds on a quiet one); on failure the error lists the frames
   * received and not taken.
   */
  async next<T extends Frame['type']>(
    type: T | ((f: Frame) => boolean),
    timeoutMs = 20_000,
  ): Promise<Extract<Frame, { type: T }>> {
    const pred = typeof type === 'function' ? type : (f: Frame) => f.type === type;
    const what = typeof type === 'function' ? 'a matching frame' : type;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(i, 1)[0] as Extract<Frame, { type: T }>;
      if (this.closed) throw new Error(`connection closed while waiting for ${what}; frames: ${this.describeFrames()}`);
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; frames: ${this.describeFrames()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The frames received and not taken yet, with their error codes if any (for failure messages). */
  describeFrames(): string {
    if (this.frames.length === 0) return '(none)';
    return this.frames
      .map((f) => ('code' in f && f.code !== undefined ? `${f.type}(${String(f.code)})` : f.type))
      .join(',');
  }

  /** Sends a version-2 HELLO with a fresh client nonce (kept in `clientNonce`). */
  hello(features = 0): void {
    this.clientNonce = new Uint8Array(randomBytes(32));
    this.send({
      type: 'HELLO',
      minVersion: MIN_PROTOCOL_VERSION,
      maxVersion: MAX_PROTOCOL_VERSION,
      features,
      clientNonce: this.clientNonce,
    });
  }

  /** Whether the CHALLENGE proves the key it names over our nonce and this transport. */
  challengeVerifies(challenge: ChallengeFrame): boolean {
    return verifyRelayChallenge({
      relayDid: challenge.relayIdentity,
      relayKey: challenge.relayKey,
      signature: challenge.signature,
      relayNonce: challenge.nonce,
      clientNonce: this.clientNonce,
      binding: this.binding,
    });
  }

  /** The AUTH answering `challenge` (tamper may change what is signed or sent). */
  authFrame(
    identity: Ed25519Identity,
    challenge: ChallengeFrame,
    tamper: { relayKey?: Uint8Array; binding?: string; did?: string; publicKey?: Uint8Array } = {},
  ): Frame {
    const transcript = authTranscript({
      relayNonce: challenge.nonce,
      clientNonce: this.clientNonce,
      relayKey: tamper.relayKey ?? challenge.relayKey,
      binding: tamper.binding ?? this.binding,
    });
    return {
      type: 'AUTH',
      keyType: 1,
      publicKey: tamper.publicKey ?? identity.publicKey,
      signature: identity.sign(transcript),
      did: tamper.did ?? identity.did,
    };
  }

  /** HELLO → CHALLENGE (verified) → AUTH → WELCOME. `tamper` may change what is signed or sent. */
  async authenticate(
    identity: Ed25519Identity,
    tamper: { relayKey?: Uint8Array; binding?: string; did?: string; publicKey?: Uint8Array } = {},
  ): Promise<WelcomeFrame> {
    this.hello();
    const challenge = await this.next('CHALLENGE');
    if (!this.challengeVerifies(challenge)) throw new Error('the relay CHALLENGE does not verify');
    this.send(this.authFrame(identity, challenge, tamper));
    return this.next('WELCOME');
  }
}
