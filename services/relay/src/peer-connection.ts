// Size: about 1,800 lines, one class per connection: the handshake, the frame dispatch, the
// durable delivery pump and the containment budgets all read and change the same per-connection
// state (handshake step, window, pump flags, byte budgets) on the hot path, so they stay in one
// object with no indirection per frame. What shares no state lives outside: the membrane
// requests (membrane/requests.ts), store-and-announce (store-and-announce.ts), the transports.
/**
 * One peer connection, whatever the transport: the handshake, then frame
 * dispatch. The hot path (a SEND from an authenticated peer) reads the routed
 * header in place, rewrites the type byte to DELIVER and hands the same bytes
 * on: no decode into objects, no re-encode, no copy.
 *
 * Outbound budget (docs/relay.md#limits-and-backpressure). Every write goes
 * to the transport, which holds it (this turn's batch, then the socket
 * layer's buffer) until the kernel takes it and never drops it. The
 * connection bounds that memory: it writes a data frame only while the
 * transport holds at most RELAY_SEND_QUEUE_BYTES with the frame included,
 * and counts the frames written while the socket layer was backed up (reset
 * when it empties) against RELAY_SEND_QUEUE_FRAMES. Fast frames beyond either
 * bound are dropped and counted (send_queue_overflow); durable frames are
 * never skipped: the delivery pump reads from Redis only what fits, stops
 * before the first frame that does not, with the cursor on the last frame
 * written, and resumes when the transport drains below half the budget.
 * Control frames may exceed the budget by CONTROL_SLACK_BYTES.
 *
 * Prekeys (PREKEY_PUBLISH/FETCH/STATUS_QUERY, docs/relay.md#prekeys): a
 * publication is accepted only for the connection's own authenticated key
 * with every signature verified; answers wait on Redis like durable stores,
 * so PING stays a barrier for them too.
 *
 * Anonymous connections (docs/relay.md#anonymous-connections): a HELLO with
 * the ANONYMOUS feature gets ANON_CHALLENGE; a valid proof-of-work stamp gets
 * WELCOME with a random reply hint. No DID or key is ever learned. Such a
 * connection may fetch prekeys (without consuming one-time keys) and make a
 * few fast SENDs, and is closed after its lifetime; everything that needs an
 * identity (durable sends, prekey publication, single-use ids) is refused.
 */
import { randomBytes } from 'node:crypto';
import type { BridgeRegistration } from '@libertaria/bridge-kit';
import {
  hintToHex,
  migrationTranscript,
  relayChallengeTranscript,
  routingHint,
  verifyAuth,
  verifyEd25519,
} from '@libertaria/identity';
import { canonicalDid } from '@libertaria/membrane';
import {
  ACK_MESSAGE_ID_OFFSET,
  ackPositionOf,
  bytesEqualAt,
  type CodecOptions,
  checkRoutedFrame,
  decodeFrame,
  type ErrorCode,
  ErrorFlags,
  encodeAckOf,
  encodeFrame,
  errorCodeToWire,
  FRAME_HEADER_SIZE,
  type Frame,
  FrameType,
  fitText,
  HelloFeatures,
  HINT_SIZE,
  ID_SIZE,
  LibertariaError,
  MAX_PROTOCOL_VERSION,
  MIN_PROTOCOL_VERSION,
  maxBodySize,
  PROTOCOL_VERSION,
  PrekeyPublishFlags,
  type PrekeyPublishFrame,
  type ProtocolError,
  RelayError,
  RoutedAt,
  routedDest,
  routedFlags,
  routedMessageId,
  SendFlags,
  verifyPowStamp,
  verifyPublication,
} from '@libertaria/protocol';
import { addressKey, type Charge, isOomError, type Refusal } from './budgets.js';
import { type Admission, OOM_REFUSAL } from './durable-admission.js';
import type { DurableStore, EnqueueResult, FetchedFrames, NamedFrames } from './durable-store.js';
import type { ConnectionGate, SendHost } from './membrane/enforcer.js';
import { type MembraneRequestFrame, MembraneRequests, type RequestHost } from './membrane/requests.js';
import type { AuthFailureReason } from './metrics.js';
import { PendingAcks } from './pending-acks.js';
import type { PrekeyCounts } from './prekey-store.js';
import { CONTROL_COST_BY_TYPE, REQUEST_ID_FRAMES, TokenBucket } from './rate-limits.js';
import type { RelayContext } from './relay-context.js';
import { AnnouncedWrite, type DurableAnnouncer, storeAndAnnounceTo } from './store-and-announce.js';
import { retainFrame } from './transport/inbound-arena.js';
import type { PeerTransport, TransportSink } from './transport/types.js';

type State = 'hello' | 'auth' | 'anon_auth' | 'attaching' | 'open' | 'closed';

/** Frames an anonymous connection may send once open (SEND has its own checks on the hot path). */
const ANON_ALLOWED: Partial<Record<Frame['type'], true>> = {
  PING: true,
  PONG: true,
  PRESENCE_QUERY: true,
  PREKEY_FETCH: true,
  ERROR: true,
};

const SEND_TYPE = FrameType.SEND;
const DELIVER_TYPE = FrameType.DELIVER;
const ACK_TYPE = FrameType.ACK;
/** Control frames (ACK, NACK, PONG…) may exceed the byte bound by this much: they are small and losing them costs retries. */
export const CONTROL_SLACK_BYTES = 64 * 1024;
/**
 * The most bytes a connection's transport can hold for its peer: the budget
 * (a data frame is written only if it fits, or into an empty transport, and
 * RELAY_SEND_QUEUE_BYTES holds at least one largest frame), then control
 * frames while at most CONTROL_SLACK_BYTES over it, the last one of any size.
 */
export function outboundCeiling(c: { RELAY_SEND_QUEUE_BYTES: number; RELAY_MAX_PAYLOAD_BYTES: number }): number {
  return c.RELAY_SEND_QUEUE_BYTES + CONTROL_SLACK_BYTES + FRAME_HEADER_SIZE + maxBodySize(c.RELAY_MAX_PAYLOAD_BYTES);
}

/** How long a TCP connection over its control budget is not read (its bucket refills meanwhile). */
const CONTROL_READ_PAUSE_MS = 100;
/**
 * Most bytes a peer may send before WELCOME: HELLO (44) and AUTH (at most
 * 232) or ANON_AUTH (14), with room to spare. Counted per read, before frames
 * are reassembled, so a peer trickling a large frame is cut off here rather
 * than buffered (the per-step and total handshake timers bound the time).
 */
export const HANDSHAKE_MAX_BYTES = 1024;
/** How many durable frames one Redis read fetches for a catching-up connection. */
const PUMP_BATCH = 256;
/**
 * The most bytes one such read asks for (the first frame is always read).
 * With PUMP_FETCH_CONCURRENCY it bounds the fetch replies queued on the
 * node's one Redis connection ahead of everyone else's commands.
 */
export const PUMP_FETCH_BYTES = 1024 * 1024;
/** A send of ACKs that Redis failed is tried again after this long (the connection keeps them). */
const ACK_RETRY_MS = 1000;
/** What one read of the durable queue returns (DurableStore.fetchWithin). */
type Fetched = Awaited<ReturnType<DurableStore['fetchWithin']>>;
/** One read of the durable queue by a delivery pump: where it starts, its answer, and what Redis named for it. */
interface PumpRead {
  after: number;
  read: Promise<Fetched>;
  named: NamedFrames | undefined;
}
/** A durable SEND waiting for its admission (PeerConnection.storeDurable). */
interface PendingAdmission {
  frame: Buffer;
  bridge: BridgeRegistration | undefined;
  /** Undefined until decided. */
  result: Admission | undefined;
}

/**
 * Delivery pumps of one node reading Redis at once; the others wait their
 * turn. Without it, many connections resuming a large backlog without
 * reading (one DID can open any number) each asked for their whole outbound
 * budget at once: megabytes of replies ahead of every other command on the
 * node's Redis connection, past the 2 s command timeout on a loaded machine,
 * retried a second later, and the node's durable SENDs and heartbeats timed
 * out with them for as long as it lasted (the adversarial suite's S03).
 */
export const PUMP_FETCH_CONCURRENCY = 8;

export class PeerConnection implements TransportSink, SendHost, RequestHost {
  state: State = 'hello';
  /** The authenticated peer's routing hint (set at WELCOME). */
  hint: Buffer | undefined;
  /** `hint` as a latin1 string: the router's map key. */
  hintKey = '';
  did = '';
  /** The authenticated Ed25519 key (a copy); the only key this connection may publish prekeys for. */
  private publicKey: Buffer | undefined;
  readonly id = randomBytes(16);

  private version = PROTOCOL_VERSION;
  private nonce: Buffer | undefined;
  /** HELLO's client nonce, signed in CHALLENGE and named in the AUTH transcript. */
  private clientNonce: Buffer | undefined;
  /** The whole handshake's bound (RELAY_HANDSHAKE_TIMEOUT_MS), from the connection's start. */
  private handshakeTimer: NodeJS.Timeout | undefined;
  /** The current step's bound (RELAY_HANDSHAKE_STEP_TIMEOUT_MS), from this node's last handshake message. */
  private stepTimer: NodeJS.Timeout | undefined;
  /** Bytes read before WELCOME (HANDSHAKE_MAX_BYTES). */
  private handshakeBytes = 0;
  private readonly bucket: TokenBucket;
  /** Every frame but SEND, at a cost per type (CONTROL_COSTS). */
  private readonly controlBucket: TokenBucket;
  /** Durable frames written to this connection and not acknowledged yet: ACKs up to this many are free. */
  private ackCredit = 0;
  /** When the last RATE_LIMITED answer for a control frame went out (at most one a second). */
  private lastRateAnswerAt = -Infinity;
  /** When the current run of control refusals (no pause over a second) began, and its latest refusal. */
  private floodSince = 0;
  private lastRefusalAt = -Infinity;
  private readonly prekeyFetchBucket: TokenBucket;
  private readonly prekeyPublishBucket: TokenBucket;
  private readonly onceBucket: TokenBucket;
  /** No DID: a proof-of-work stamp opened this connection (it holds one of ctx.anonSlots). */
  private anonymous = false;
  private anonSendsLeft = 0;
  private anonTimer: NodeJS.Timeout | undefined;
  private readonly codecOptions: CodecOptions;
  private backedUpFrames = 0;
  /**
   * Earlier frames whose answer waits on Redis (durable stores, presence
   * lookups). PONGs wait for them, so PING is a barrier: every ACK, NACK or
   * PEER_GONE owed for frames sent before the PING arrives before its PONG.
   */
  private asyncWork = 0;
  private deferredPongs: Uint8Array[] = [];
  /** ACKs not yet sent to Redis: this turn's, and those held while the pump reads a backlog (pending-acks.ts). */
  private readonly acks = new PendingAcks();
  /** How many ACKs of this connection count against the node's hold budget (held, or being sent). */
  private acksHeld = 0;
  private ackFlushScheduled = false;
  private ackRetryTimer: NodeJS.Timeout | undefined;
  /** The membrane's per-connection state (docs/membrane.md#enforcement-in-the-relay), made on first use. */
  private gate: ConnectionGate | undefined;
  private membraneRequests: MembraneRequests | undefined;
  membraneDid = '';
  /** The source address as budgets count it (IPv6 by /64). */
  private readonly address: string;
  /** Holds one of ctx.connectionsPerAddress's slots for `address`. */
  private holdsAddressSlot = false;
  /**
   * Durable SENDs waiting for their admission (budgets.ts: a Redis round
   * trip per turn), oldest first from `admissionHead`: each is stored only
   * after the one before, so one connection's durable frames keep their
   * order in the queue. A queue rather than a promise chained per frame: the
   * admission's own cost per frame is the relay's, on the durable path.
   */
  private admissions: Array<PendingAdmission | undefined> = [];
  private admissionHead = 0;
  /** In the router's table (from AUTH success until release). */
  private attached = false;
  private released = false;

  // Durable delivery: `cursor` is the highest position written to this
  // connection; RESUME sets it, the pump and live offers advance it.
  private resumed = false;
  private cursor = 0;
  private pumping = false;
  private pumpAgain = false;
  /** Delivery is paused: the transport holds too much; onDrain resumes it. */
  private pumpWaitsForDrain = false;
  private drainCheckScheduled = false;
  private pumpRetryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ctx: RelayContext,
    readonly transport: PeerTransport,
  ) {
    const c = ctx.config;
    this.bucket = new TokenBucket(c.RELAY_RATE_FRAMES_PER_SECOND, c.RELAY_RATE_BURST);
    this.controlBucket = new TokenBucket(c.RELAY_RATE_CONTROL_PER_SECOND, c.RELAY_RATE_CONTROL_BURST);
    this.prekeyFetchBucket = new TokenBucket(c.RELAY_PREKEY_FETCHES_PER_MINUTE / 60, c.RELAY_PREKEY_FETCHES_PER_MINUTE);
    this.prekeyPublishBucket = new TokenBucket(
      c.RELAY_PREKEY_PUBLISHES_PER_MINUTE / 60,
      c.RELAY_PREKEY_PUBLISHES_PER_MINUTE,
    );
    this.onceBucket = new TokenBucket(c.RELAY_ONCE_CHECKS_PER_MINUTE / 60, c.RELAY_ONCE_CHECKS_PER_MINUTE);
    this.codecOptions = { maxPayload: c.RELAY_MAX_PAYLOAD_BYTES };
    ctx.metrics.connections.labels(transport.kind).inc();
    this.address = addressKey(transport.remoteAddress);
    // Failed handshakes are judged at AUTH, once the DID is known (rate-limits.ts):
    // refusing the whole address here would lock out every peer behind one NAT.
    if (ctx.isDraining()) {
      this.fatal('DRAINING', 'this node is shutting down');
      return;
    }
    // Open connections are another matter: each costs this node a socket and memory whatever it sends.
    if (!ctx.connectionsPerAddress.tryTake(this.address)) {
      ctx.metrics.budgetRefused('connections_per_address');
      this.fatal(
        'ADDRESS_CONNECTION_LIMIT',
        `this address holds ${c.RELAY_CONNECTIONS_PER_ADDRESS} connections to this node (RELAY_CONNECTIONS_PER_ADDRESS); close some or use another node`,
      );
      return;
    }
    this.holdsAddressSlot = true;
    this.handshakeTimer = setTimeout(
      () =>
        this.guard('timer', () =>
          this.failAuth(
            'timeout',
            'AUTH_TIMEOUT',
            `handshake not finished within RELAY_HANDSHAKE_TIMEOUT_MS (${c.RELAY_HANDSHAKE_TIMEOUT_MS} ms)`,
          ),
        ),
      c.RELAY_HANDSHAKE_TIMEOUT_MS,
    );
    this.startStep('HELLO');
  }

  /**
   * The peer's next handshake message is due within one step of now: this
   * node has just sent its last message (the connection's acceptance, or
   * CHALLENGE), so a step is one round trip however slow the link.
   */
  private startStep(expected: string): void {
    clearTimeout(this.stepTimer);
    const c = this.ctx.config;
    const ms = Math.min(c.RELAY_HANDSHAKE_STEP_TIMEOUT_MS, c.RELAY_HANDSHAKE_TIMEOUT_MS);
    this.stepTimer = setTimeout(
      () =>
        this.guard('timer', () =>
          this.failAuth(
            'timeout',
            'AUTH_TIMEOUT',
            `no ${expected} within RELAY_HANDSHAKE_STEP_TIMEOUT_MS (${ms} ms) of the relay's last message`,
          ),
        ),
      ms,
    );
  }

  private endHandshakeTimers(): void {
    clearTimeout(this.handshakeTimer);
    clearTimeout(this.stepTimer);
  }

  onBytesIn(bytes: number): boolean {
    if (this.state === 'open') return true;
    if (this.state === 'closed') return false;
    this.handshakeBytes += bytes;
    if (this.handshakeBytes <= HANDSHAKE_MAX_BYTES) return true;
    this.guard('handshake_bytes', () =>
      this.failAuth(
        'protocol',
        'HANDSHAKE_TOO_LARGE',
        `more than ${HANDSHAKE_MAX_BYTES} bytes before WELCOME; an honest handshake needs a few hundred`,
      ),
    );
    return false;
  }

  // ---------------------------------------------------------------------------
  // Transport callbacks

  onFrame(frame: Buffer): void {
    try {
      this.handleFrame(frame);
    } catch (err) {
      this.internalError('frame', err);
    }
  }

  private handleFrame(frame: Buffer): void {
    if (this.state === 'closed') return;
    const type = frame[1]!;
    this.ctx.metrics.frame(type, 'in', frame.length);
    if (this.state === 'open') {
      if (type === SEND_TYPE) {
        this.onSend(frame);
        return;
      }
      // Charged before decoding: a flood costs this node a table read and a subtraction per frame.
      if (type === ACK_TYPE && this.ackCredit > 0) this.ackCredit--;
      else if (!this.controlBucket.spend(CONTROL_COST_BY_TYPE[type]!)) return this.refuseControl(type, frame);
      if (type === ACK_TYPE && !this.anonymous) {
        // One per durable frame delivered: read in place, no frame object (dispatch's rules otherwise).
        let position: number;
        try {
          position = ackPositionOf(frame, this.codecOptions);
        } catch (err) {
          return this.onProtocolError(err as ProtocolError);
        }
        return this.onAck(frame, ACK_MESSAGE_ID_OFFSET, position);
      }
    }
    let decoded: Frame;
    try {
      // Control frames may be handled over several turns (Redis calls): their bytes are copied out of
      // a recycled inbound slab (inbound-arena.ts). ACKs are many and small: onAck copies the id alone.
      decoded = decodeFrame(type === ACK_TYPE ? frame : retainFrame(frame), this.codecOptions);
    } catch (err) {
      this.onProtocolError(err as ProtocolError);
      return;
    }
    this.dispatch(decoded);
  }

  onProtocolError(err: ProtocolError): void {
    this.guard('protocol_error', () => {
      if (this.state === 'closed') return;
      if (this.state !== 'open') this.ctx.metrics.authFailures.labels('protocol').inc();
      this.ctx.log.debug('protocol error', { conn: this.id.toString('hex'), code: err.code, err: err.message });
      this.fatal(err.code, err.message);
    });
  }

  onDrain(): void {
    this.guard('drain', () => {
      if (this.transport.socketBufferedBytes() === 0) this.backedUpFrames = 0;
      if (this.pumpWaitsForDrain && this.deliveryMayResume()) {
        this.pumpWaitsForDrain = false;
        this.ctx.metrics.pausedDeliveries--;
        this.requestPump();
      }
    });
  }

  /** Durable delivery is paused, waiting for room (metrics). */
  isPaused(): boolean {
    return this.pumpWaitsForDrain;
  }

  onClose(): void {
    this.state = 'closed';
    this.guard('close', () => this.release());
  }

  // ---------------------------------------------------------------------------
  // Containment: nothing a connection does may throw into its transport, a
  // timer or a promise chain. What would is counted
  // (relay_internal_errors_total{where}), logged, and closes this connection
  // with INTERNAL; the process and the other connections carry on.

  /** Runs `fn`; a throw closes this connection instead of escaping. */
  private guard(where: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.internalError(where, err);
    }
  }

  /** The last handler of every promise chain this connection starts. */
  private readonly asyncFailed = (err: unknown): void => this.internalError('async', err);

  /** A bug (or an encoder refusing what we built) surfaced: count, log, close this connection. Never throws. */
  internalError(where: string, err: unknown): void {
    try {
      this.ctx.metrics.internalErrors.labels(where).inc();
      this.ctx.log.error('internal error; closing the connection', {
        where,
        conn: this.id.toString('hex'),
        peer: this.describe(),
        err,
      });
      this.fatal('INTERNAL', 'internal error on the relay; the connection is closed');
    } catch {
      // Even the goodbye failed: drop the socket.
      try {
        this.state = 'closed';
        this.transport.destroy();
      } catch {
        // Nothing left to do for this connection.
      }
    }
  }

  /** Encodes a frame for this peer; on failure closes the connection (INTERNAL) and returns undefined. */
  private encode(frame: Frame, version: number = PROTOCOL_VERSION): Uint8Array | undefined {
    try {
      return encodeFrame(frame, version);
    } catch (err) {
      this.internalError(`encode_${frame.type}`, err);
      return undefined;
    }
  }

  /** Frees what the connection holds, exactly once: timers, the gauge, its place in the router. */
  private release(): void {
    if (this.released) return;
    this.released = true;
    this.endHandshakeTimers();
    clearTimeout(this.pumpRetryTimer);
    clearTimeout(this.anonTimer);
    if (this.pumpWaitsForDrain) {
      this.pumpWaitsForDrain = false;
      this.ctx.metrics.pausedDeliveries--;
    }
    if (this.anonymous) this.ctx.anonSlots.release();
    if (this.holdsAddressSlot) this.ctx.connectionsPerAddress.release(this.address);
    this.ctx.metrics.connections.labels(this.transport.kind).dec();
    if (this.attached) this.ctx.router.detach(this);
    // ACKs received are sent even though the connection is gone (once: a failure now drops them).
    clearTimeout(this.ackRetryTimer);
    this.flushAcks();
  }

  // ---------------------------------------------------------------------------
  // Handshake and control frames

  private dispatch(frame: Frame): void {
    switch (this.state) {
      case 'hello':
        if (frame.type !== 'HELLO')
          return this.failAuth('protocol', 'NOT_AUTHENTICATED', `expected HELLO, got ${frame.type}`);
        return this.onHello(frame.minVersion, frame.maxVersion, frame.features, frame.clientNonce);
      case 'auth':
        if (frame.type !== 'AUTH')
          return this.failAuth('protocol', 'NOT_AUTHENTICATED', `expected AUTH, got ${frame.type}`);
        return this.onAuth(frame);
      case 'anon_auth':
        if (frame.type !== 'ANON_AUTH')
          return this.failAuth('protocol', 'NOT_AUTHENTICATED', `expected ANON_AUTH, got ${frame.type}`);
        return this.onAnonAuth(frame.stamp);
      case 'attaching':
        return this.fatal('NOT_AUTHENTICATED', 'wait for WELCOME before sending');
      case 'closed':
        return;
      case 'open':
        break;
    }
    if (this.anonymous && !ANON_ALLOWED[frame.type]) return this.refuseAnonymous(frame);
    switch (frame.type) {
      case 'ACK':
        return this.onAck(frame.messageId, 0, frame.position);
      case 'RESUME':
        return this.onResume(frame.lastAcked);
      case 'PING': {
        const pong = this.encode({ type: 'PONG', data: frame.data }, this.version);
        if (pong === undefined) return;
        if (this.asyncWork > 0) this.deferredPongs.push(pong);
        else this.writeControl(pong);
        return;
      }
      case 'PONG':
        return;
      case 'PRESENCE_QUERY':
        return this.onPresenceQuery(Buffer.from(frame.hint));
      case 'PREKEY_PUBLISH':
        return this.onPrekeyPublish(frame);
      case 'PREKEY_FETCH':
        return this.onPrekeyFetch(Buffer.from(frame.requestId), Buffer.from(frame.hint));
      case 'PREKEY_STATUS_QUERY':
        return this.onPrekeyStatusQuery(Buffer.from(frame.requestId));
      case 'BRIDGE_QUERY': {
        const bridge = this.ctx.federation?.bridgeForNetwork(frame.network);
        if (bridge === undefined) {
          return this.nackRequest(frame.requestId, 'BRIDGE_NOT_REGISTERED', `no bridge serves ${frame.network} here`);
        }
        this.writeControl(
          this.encode({ type: 'BRIDGE_INFO', requestId: frame.requestId, did: bridge.did }, this.version),
        );
        return;
      }
      case 'ONCE_CHECK':
        return this.onOnceCheck(Buffer.from(frame.requestId), frame.retentionSeconds, Buffer.from(frame.id));
      case 'MIGRATE':
        return this.onMigrate(frame.previousConnectionId, frame.proof);
      case 'GRANT_PRESENT':
      case 'GRANT_REVOKE':
      case 'POLICY_PUT':
      case 'POLICY_GET':
      case 'AUDIT_QUERY':
        return this.onMembraneRequest(frame);
      case 'ERROR':
        this.ctx.log.debug('peer reported error', { did: this.did, code: frame.code, message: frame.message });
        if (frame.flags & ErrorFlags.FATAL) this.close();
        return;
      case 'SEND': // handled on the hot path before decoding
      case 'HELLO':
      case 'AUTH':
      case 'CHALLENGE':
      case 'WELCOME':
      case 'DELIVER':
      case 'NACK':
      case 'PEER_PRESENT':
      case 'PEER_GONE':
      case 'GOAWAY':
      case 'PREKEY_BUNDLE':
      case 'PREKEY_STATUS':
      case 'ANON_CHALLENGE':
      case 'ANON_AUTH':
      case 'ONCE_RESULT':
      case 'GRANT_ACCEPTED':
      case 'GRANT_REVOKED':
      case 'POLICY':
      case 'AUDIT_RESULT':
      case 'BRIDGE_INFO':
        return this.fatal('UNEXPECTED_FRAME', `${frame.type} is not valid from a peer at this point`);
      default: {
        const unreachable: never = frame;
        return this.fatal('UNEXPECTED_FRAME', `unhandled ${(unreachable as Frame).type}`);
      }
    }
  }

  private onHello(minVersion: number, maxVersion: number, features: number, clientNonce?: Uint8Array): void {
    if (maxVersion < MIN_PROTOCOL_VERSION || minVersion > MAX_PROTOCOL_VERSION || clientNonce === undefined) {
      return this.failAuth(
        'version',
        'UNSUPPORTED_VERSION',
        `this relay speaks protocol versions ${MIN_PROTOCOL_VERSION}..${MAX_PROTOCOL_VERSION} (the relay proves an identity key), the client ${minVersion}..${maxVersion}: upgrade the client`,
      );
    }
    this.version = Math.min(maxVersion, MAX_PROTOCOL_VERSION);
    this.nonce = randomBytes(32);
    this.clientNonce = Buffer.from(clientNonce);
    if ((features & HelloFeatures.ANONYMOUS) !== 0) return this.offerAnonymous();
    this.state = 'auth';
    const identity = this.ctx.identity;
    const signature = identity.sign(
      relayChallengeTranscript({
        relayNonce: this.nonce,
        clientNonce: this.clientNonce,
        relayKey: identity.publicKey,
        binding: this.transport.kind,
        channelBinding: this.transport.channelBinding(),
      }),
    );
    this.writeControl(
      this.encode({
        type: 'CHALLENGE',
        version: this.version,
        nonce: this.nonce,
        relayIdentity: identity.did,
        relayKey: identity.publicKey,
        signature,
      }),
    );
    this.startStep('AUTH');
  }

  private onAuth(frame: Extract<Frame, { type: 'AUTH' }>): void {
    const address = this.transport.remoteAddress;
    // Before the signature check, whose cost is what the limits bound.
    if (this.ctx.authLimiter.peerBlocked(address, frame.did)) {
      return this.failAuth(
        'rate_limited',
        'AUTH_RATE_LIMITED',
        'too many failed handshakes for this DID or address; try later',
      );
    }
    const ok = verifyAuth({
      did: frame.did,
      publicKey: frame.publicKey,
      signature: frame.signature,
      relayNonce: this.nonce!,
      clientNonce: this.clientNonce!,
      relayKey: this.ctx.identity.publicKey,
      binding: this.transport.kind,
      channelBinding: this.transport.channelBinding(),
    });
    if (!ok) return this.failAuth('bad_signature', 'AUTH_FAILED', 'signature, key or DID did not verify', frame.did);
    this.ctx.authLimiter.recordSuccess(address, frame.did);
    this.endHandshakeTimers();
    this.nonce = undefined;
    this.clientNonce = undefined;
    this.publicKey = Buffer.from(frame.publicKey);
    this.hint = Buffer.from(routingHint(frame.publicKey));
    this.hintKey = this.hint.toString('latin1');
    this.did = frame.did;
    this.membraneDid = canonicalDid(frame.did);
    this.attachAndWelcome();
  }

  private attachAndWelcome(): void {
    this.state = 'attaching';
    this.attached = true;
    // Presence is registered before WELCOME, so a durable frame stored after
    // this point is either seen by our RESUME fetch or announced to us.
    this.ctx.router
      .attach(this)
      .then(
        () => {
          if (this.state !== 'attaching') return;
          this.state = 'open';
          this.writeControl(
            this.encode(
              {
                type: 'WELCOME',
                hint: this.hint!,
                connectionId: this.id,
                maxPayload: this.ctx.config.RELAY_MAX_PAYLOAD_BYTES,
                heartbeatMs: this.ctx.config.RELAY_HEARTBEAT_MS,
                nodeId: this.ctx.nodeId,
              },
              this.version,
            ),
          );
          this.ctx.log.debug('peer authenticated', { peer: this.describe(), transport: this.transport.kind });
        },
        (err: unknown) => {
          this.ctx.metrics.redisErrors.labels('presence').inc();
          this.ctx.log.warn('presence registration failed', { did: this.did, err });
          this.fatal('STORE_UNAVAILABLE', 'cannot register presence; try another node');
        },
      )
      .catch(this.asyncFailed);
  }

  private offerAnonymous(): void {
    const c = this.ctx.config;
    if (!c.RELAY_ANON_ENABLED) {
      this.ctx.metrics.anonConnections.labels('disabled').inc();
      return this.fatal('ANON_DISABLED', 'this relay does not accept anonymous connections');
    }
    // No DID to tell an anonymous peer from an abuser behind the same address.
    if (this.ctx.authLimiter.addressBlocked(this.transport.remoteAddress)) {
      return this.failAuth(
        'rate_limited',
        'AUTH_RATE_LIMITED',
        'too many failed handshakes from this address; try later',
      );
    }
    if (!this.ctx.anonSlots.tryTake()) {
      this.ctx.metrics.anonConnections.labels('full').inc();
      return this.fatal('ANON_LIMIT_REACHED', 'this node holds its maximum of anonymous connections; try later');
    }
    this.anonymous = true;
    this.state = 'anon_auth';
    this.writeControl(
      this.encode(
        {
          type: 'ANON_CHALLENGE',
          version: this.version,
          nonce: this.nonce!,
          powBits: c.RELAY_ANON_POW_BITS,
          maxSends: c.RELAY_ANON_MAX_SENDS,
          lifetimeMs: c.RELAY_ANON_LIFETIME_MS,
          relayIdentity: this.ctx.identity.did,
        },
        this.version,
      ),
    );
    this.startStep('ANON_AUTH');
  }

  private onAnonAuth(stamp: Uint8Array): void {
    const c = this.ctx.config;
    if (!verifyPowStamp(this.nonce!, stamp, c.RELAY_ANON_POW_BITS)) {
      this.ctx.metrics.anonConnections.labels('bad_stamp').inc();
      return this.failAuth(
        'bad_stamp',
        'ANON_BAD_STAMP',
        `the stamp does not have ${c.RELAY_ANON_POW_BITS} leading zero bits for this connection's nonce`,
      );
    }
    this.endHandshakeTimers();
    this.nonce = undefined;
    this.clientNonce = undefined;
    // A random reply address: unlinkable to any DID, and to the requester's other connections.
    this.hint = randomBytes(HINT_SIZE);
    this.hintKey = this.hint.toString('latin1');
    this.anonSendsLeft = c.RELAY_ANON_MAX_SENDS;
    this.ctx.metrics.anonConnections.labels('welcomed').inc();
    this.attachAndWelcome();
    this.anonTimer = setTimeout(
      () =>
        this.guard('timer', () => {
          this.goAway(0, '', 'anonymous connection lifetime over');
          this.close();
        }),
      c.RELAY_ANON_LIFETIME_MS,
    );
  }

  /** What an anonymous connection may not do: refused with ANON_NOT_PERMITTED, the connection stays. */
  private refuseAnonymous(frame: Frame): void {
    const message = `${frame.type} needs an authenticated DID; anonymous connections may fetch prekeys and send fast frames`;
    if ('requestId' in frame) return this.nackRequest(frame.requestId, 'ANON_NOT_PERMITTED', message);
    this.writeControl(
      this.encode({ type: 'ERROR', code: errorCodeToWire('ANON_NOT_PERMITTED'), flags: 0, message }, this.version),
    );
  }

  /** The SEND checks only anonymous connections pay: fast only, and a bounded count. */
  private anonSendAllowed(frame: Buffer, flags: number): boolean {
    const metrics = this.ctx.metrics;
    if ((flags & SendFlags.DURABLE) !== 0) {
      metrics.anonSends.labels('ANON_NOT_PERMITTED').inc();
      this.nack(frame, 'ANON_NOT_PERMITTED', 'anonymous connections send fast frames only; durable needs a DID');
      return false;
    }
    if (this.anonSendsLeft <= 0) {
      metrics.anonSends.labels('ANON_LIMIT_REACHED').inc();
      this.nack(frame, 'ANON_LIMIT_REACHED', 'this anonymous connection has used its sends');
      return false;
    }
    this.anonSendsLeft--;
    metrics.anonSends.labels('forwarded').inc();
    return true;
  }

  /** This connection replaces an earlier one of the same peer: close that one wherever it still is. */
  private onMigrate(previousConnectionId: Uint8Array, proof: Uint8Array): void {
    const { metrics } = this.ctx;
    const transcript = migrationTranscript(this.id, previousConnectionId);
    if (proof.length !== 64 || !verifyEd25519(this.publicKey!, transcript, proof)) {
      metrics.migrations.labels('bad_proof').inc();
      this.writeControl(
        this.encode(
          {
            type: 'ERROR',
            code: errorCodeToWire('AUTH_FAILED'),
            flags: 0,
            message: 'MIGRATE proof does not verify under this connection key',
          },
          this.version,
        ),
      );
      return;
    }
    const closedHere = this.ctx.router.closeReplaced(this.hint!, Buffer.from(previousConnectionId), this);
    metrics.migrations.labels(closedHere ? 'closed_local' : 'announced').inc();
    this.ctx.log.debug('peer migrated', {
      peer: this.describe(),
      previous: Buffer.from(previousConnectionId).toString('hex'),
      closedHere,
    });
  }

  /** The peer moved to another connection (MIGRATE there): say so and end this one. */
  replacedBy(): void {
    if (this.state === 'closed') return;
    this.guard('migrate', () => {
      this.goAway(0, '', 'migrated');
      this.close();
    });
  }

  private onOnceCheck(requestId: Buffer, retentionSeconds: number, id: Buffer): void {
    const { metrics, once } = this.ctx;
    if (!this.onceBucket.take()) {
      metrics.onceChecks.labels('RATE_LIMITED').inc();
      return this.nackRequest(requestId, 'RATE_LIMITED', 'single-use id check rate exceeded; retry later');
    }
    this.beginAsync();
    once
      .consume(this.hint!, id, retentionSeconds)
      .then(
        ({ fresh, epoch }) => {
          metrics.onceChecks.labels(fresh ? 'fresh' : 'seen').inc();
          this.writeControl(this.encode({ type: 'ONCE_RESULT', requestId, fresh, epoch }, this.version));
          this.endAsync();
        },
        (err: unknown) => {
          const code: ErrorCode = err instanceof RelayError ? err.code : 'INTERNAL';
          metrics.onceChecks.labels(code).inc();
          if (code === 'STORE_UNAVAILABLE') metrics.redisErrors.labels('once').inc();
          this.nackRequest(requestId, code, err instanceof Error ? err.message : String(err));
          this.endAsync();
        },
      )
      .catch(this.asyncFailed);
  }

  /** `did`: the DID a failed AUTH claimed, counted against that DID at this address as well as the address. */
  private failAuth(reason: AuthFailureReason, code: ErrorCode, message: string, did?: string): void {
    this.ctx.metrics.authFailures.labels(reason).inc();
    // A peer that is merely slow or speaks another version is not an attacker; only count what looks like one.
    if (reason === 'bad_signature' || reason === 'bad_stamp' || reason === 'protocol' || reason === 'timeout') {
      this.ctx.authLimiter.recordFailure(this.transport.remoteAddress, did);
    }
    this.fatal(code, message);
  }

  private onPresenceQuery(hint: Buffer): void {
    if (this.ctx.router.isLocal(hint.toString('latin1'))) {
      this.writeControl(this.encode({ type: 'PEER_PRESENT', hint }, this.version));
      return;
    }
    this.beginAsync();
    this.ctx.router
      .lookupRemote(hint)
      .then(
        (nodes) => {
          const frame: Frame =
            nodes.length > 0
              ? { type: 'PEER_PRESENT', hint }
              : { type: 'PEER_GONE', hint, messageId: new Uint8Array(16) };
          this.writeControl(this.encode(frame, this.version));
          this.endAsync();
        },
        () => {
          this.ctx.metrics.redisErrors.labels('presence').inc();
          this.endAsync();
        },
      )
      .catch(this.asyncFailed);
  }

  // ---------------------------------------------------------------------------
  // Prekeys

  private onPrekeyPublish(frame: PrekeyPublishFrame): void {
    const { metrics, prekeys } = this.ctx;
    const requestId = Buffer.from(frame.requestId);
    if (!this.prekeyPublishBucket.take()) {
      metrics.prekeyPublishes.labels('PREKEY_RATE_LIMITED').inc();
      return this.nackRequest(requestId, 'PREKEY_RATE_LIMITED', 'prekey publish rate exceeded; retry later');
    }
    try {
      // The DID's key signs; the publication must be for the key this connection authenticated with.
      verifyPublication(frame.publication, this.publicKey!, verifyEd25519);
    } catch (err) {
      const code: ErrorCode = err instanceof LibertariaError ? err.code : 'INTERNAL';
      metrics.prekeyPublishes.labels(code).inc();
      return this.nackRequest(requestId, code, err instanceof Error ? err.message : String(err));
    }
    const owner = this.hint!;
    // Publications are the other thing anyone can store for months: they stop at the memory reserve too.
    if (this.ctx.admission.guard?.full) {
      metrics.prekeyPublishes.labels('STORE_FULL').inc();
      metrics.budgetRefused('redis_memory');
      return this.nackRequest(requestId, 'STORE_FULL', OOM_REFUSAL.message);
    }
    const replace = (frame.flags & PrekeyPublishFlags.REPLACE_ONE_TIME) !== 0;
    this.beginAsync();
    // publish() copies the publication before it returns: the frame's fields are views into the transport buffer.
    const work = prekeys
      .publish(owner, frame.publication, replace)
      .then(
        (result) => {
          metrics.prekeyPublishes.labels('stored').inc();
          this.ctx.admission.recipientPublished(owner);
          this.writeStatus(requestId, result);
          this.endAsync();
        },
        (err: unknown) => {
          this.prekeyStoreFailed(err, 'publish', metrics.prekeyPublishes, requestId);
          this.endAsync();
        },
      )
      .catch(this.asyncFailed);
    this.ctx.trackDurableWrite(work);
  }

  private onPrekeyFetch(requestId: Buffer, target: Buffer): void {
    const { metrics } = this.ctx;
    if (!this.prekeyFetchBucket.take()) {
      metrics.prekeyFetches.labels('PREKEY_RATE_LIMITED').inc();
      return this.nackRequest(requestId, 'PREKEY_RATE_LIMITED', 'prekey fetch rate exceeded; retry later');
    }
    const gate = this.membraneGate();
    if (gate === undefined) return this.fetchPrekeys(requestId, target);
    // Fetching a peer's prekeys opens a session with it: the membrane's action `open`.
    this.beginAsync();
    gate
      .decideOpen(target)
      .then((v) => {
        if (v.allowed) this.fetchPrekeys(requestId, target);
        else this.nackRequest(requestId, v.code, v.message);
        this.endAsync();
      })
      .catch(this.asyncFailed);
  }

  private fetchPrekeys(requestId: Buffer, target: Buffer): void {
    const { metrics, prekeys, router } = this.ctx;
    this.beginAsync();
    prekeys
      .fetch(target, Date.now(), !this.anonymous)
      .then(
        (result) => {
          try {
            if (result.status === 'not_found') {
              metrics.prekeyFetches.labels('PREKEY_NOT_FOUND').inc();
              this.nackRequest(requestId, 'PREKEY_NOT_FOUND', `no prekeys published for ${hintToHex(target)}`);
              return;
            }
            const { bundle } = result;
            const outcome =
              result.status === 'throttled'
                ? 'throttled'
                : bundle.oneTimePrekey && bundle.oneTimeKemPrekey
                  ? 'both'
                  : bundle.oneTimePrekey
                    ? 'x25519_only'
                    : bundle.oneTimeKemPrekey
                      ? 'kem_only'
                      : 'last_resort';
            metrics.prekeyFetches.labels(outcome).inc();
            this.writeControl(this.encode({ type: 'PREKEY_BUNDLE', requestId, bundle }, this.version));
            if (result.notify !== undefined) {
              const notice = encodeFrame(prekeys.statusFrame(target, new Uint8Array(ID_SIZE), result.counts));
              metrics.prekeyLowNotices
                .labels(
                  router.notifyOwner(Buffer.from(notice.buffer, notice.byteOffset, notice.byteLength), result.notify),
                )
                .inc();
            }
          } catch (err) {
            this.prekeyStoreFailed(err, 'fetch', metrics.prekeyFetches, requestId);
          } finally {
            this.endAsync();
          }
        },
        (err: unknown) => {
          this.prekeyStoreFailed(err, 'fetch', metrics.prekeyFetches, requestId);
          this.endAsync();
        },
      )
      .catch(this.asyncFailed);
  }

  private onPrekeyStatusQuery(requestId: Buffer): void {
    const { prekeys } = this.ctx;
    if (!this.prekeyPublishBucket.take()) {
      return this.nackRequest(requestId, 'PREKEY_RATE_LIMITED', 'prekey status rate exceeded; retry later');
    }
    this.beginAsync();
    prekeys
      .status(this.hint!)
      .then(
        (counts) => {
          this.writeStatus(requestId, counts);
          this.endAsync();
        },
        (err: unknown) => {
          this.prekeyStoreFailed(err, 'status', undefined, requestId);
          this.endAsync();
        },
      )
      .catch(this.asyncFailed);
  }

  private writeStatus(requestId: Uint8Array, counts: PrekeyCounts): void {
    this.writeControl(this.encode(this.ctx.prekeys.statusFrame(this.hint!, requestId, counts), this.version));
  }

  /** A prekey operation failed in Redis (STORE_UNAVAILABLE) or on our side (INTERNAL): NACK it and count it. */
  private prekeyStoreFailed(
    err: unknown,
    operation: string,
    counter: { labels(result: string): { inc(): void } } | undefined,
    requestId: Uint8Array,
  ): void {
    if (isOomError(err)) {
      this.ctx.admission.guard?.noteOom();
      counter?.labels('STORE_FULL').inc();
      return this.nackRequest(requestId, 'STORE_FULL', 'Redis is at maxmemory');
    }
    const code: ErrorCode = err instanceof RelayError ? err.code : 'INTERNAL';
    counter?.labels(code).inc();
    if (code === 'STORE_UNAVAILABLE') this.ctx.metrics.redisErrors.labels(`prekey_${operation}`).inc();
    this.ctx.log.warn(`prekey ${operation} failed`, { did: this.did, code, err });
    this.nackRequest(requestId, code, code === 'STORE_UNAVAILABLE' ? 'Redis did not confirm' : 'internal error');
  }

  /** NACK for a prekey request: the same frame that refuses a SEND, carrying the request id. */
  nackRequest(requestId: Uint8Array, code: ErrorCode, message: string): void {
    this.writeControl(
      this.encode(
        { type: 'NACK', messageId: requestId, code: errorCodeToWire(code), message: fitText(message) },
        this.version,
      ),
    );
  }

  /** An unsolicited PREKEY_STATUS (low-water notice) for this peer, from this node or another. */
  deliverNotice(frame: Uint8Array): void {
    if (this.state !== 'open') return;
    this.guard('notice', () => this.writeControl(frame));
  }

  /** Marks the start of work whose answer to this peer waits on Redis. */
  beginAsync(): void {
    this.asyncWork++;
  }

  /** The answer has been written; release PONGs that waited for it. */
  endAsync(): void {
    if (--this.asyncWork > 0 || this.deferredPongs.length === 0) return;
    const pongs = this.deferredPongs;
    this.deferredPongs = [];
    for (const pong of pongs) this.writeControl(pong);
  }

  // ---------------------------------------------------------------------------
  // Data path

  /** The hot path: validate the routed header in place and forward or store. */
  private onSend(frame: Buffer): void {
    try {
      // Same rules as decodeFrame (fuzz-tested), without building an object.
      checkRoutedFrame(frame, this.codecOptions);
    } catch (err) {
      return this.onProtocolError(err as ProtocolError);
    }
    const flags = routedFlags(frame);
    // Compared in place: no view allocated for the common case.
    if (!bytesEqualAt(frame, RoutedAt.SOURCE, this.hint!, 0, HINT_SIZE)) {
      this.ctx.metrics.drop('source_mismatch');
      return this.nack(frame, 'SOURCE_MISMATCH', 'source hint is not your own');
    }
    if (!this.bucket.take()) {
      this.ctx.metrics.rateLimited(SEND_TYPE);
      return this.nack(frame, 'RATE_LIMITED', 'frame rate exceeded');
    }
    if (this.anonymous && !this.anonSendAllowed(frame, flags)) return;
    if ((flags & SendFlags.DURABLE) !== 0 && this.ctx.membrane !== undefined) {
      const dest = routedDest(frame);
      const bridged = this.ctx.federation?.bridgeFor(dest) !== undefined;
      const refusal = this.ctx.admission.precheck(this.hint!, this.address, bridged ? undefined : dest);
      if (refusal !== undefined) return this.refuseDurable(frame, refusal);
    }
    if (this.ctx.membrane !== undefined && !this.membraneGate()!.admit(frame, flags)) return;
    this.passSend(frame, flags);
  }

  /** A SEND every check allowed (the membrane's gate calls this later, in order, for SENDs it held). */
  passSend(frame: Buffer, flags: number): void {
    frame[1] = DELIVER_TYPE;
    if ((flags & SendFlags.DURABLE) === 0) {
      this.ctx.router.forwardFast(frame, this);
      return;
    }
    // Kept until Redis has it (turns from now): copied out of a recycled inbound slab (inbound-arena.ts).
    this.storeDurable(retainFrame(frame));
  }

  /**
   * A durable SEND: admitted first (Redis memory, recipient prekeys, sender
   * and address budgets: budgets.ts), then stored or handed to its bridge.
   * Admission answers at once when it needs no Redis call; otherwise the
   * frame waits for it, and for every earlier frame of this connection, so
   * frames are stored in the order they were sent.
   */
  private storeDurable(frame: Buffer): void {
    const ctx = this.ctx;
    const dest = routedDest(frame);
    const bridge = ctx.federation?.bridgeFor(dest);
    const admission = ctx.admission.admit(
      this.hint!,
      this.address,
      bridge === undefined ? dest : undefined,
      frame.length,
    );
    const waiting = this.admissions.length > this.admissionHead;
    if (!(admission instanceof Promise) && !waiting) {
      return this.admitted(frame, bridge, admission);
    }
    const entry: PendingAdmission = { frame, bridge, result: undefined };
    this.admissions.push(entry);
    // PING stays a barrier: its PONG waits for this frame's ACK or NACK.
    this.beginAsync();
    if (!(admission instanceof Promise)) {
      // Decided, but behind earlier frames still waiting: stored after them.
      entry.result = admission;
      return;
    }
    const work = admission
      .then(
        (result) => {
          entry.result = result;
        },
        (err: unknown) => {
          // The admission's Redis calls failed: nothing was charged, nothing is stored.
          if (isOomError(err)) {
            ctx.admission.guard?.noteOom();
            entry.result = { ok: false, refusal: OOM_REFUSAL };
            return;
          }
          ctx.metrics.redisErrors.labels('budget').inc();
          const message = `Redis did not confirm: ${err instanceof Error ? err.message : String(err)}`;
          entry.result = { ok: false, refusal: { code: 'STORE_UNAVAILABLE', budget: 'redis_memory', message } };
        },
      )
      .then(() => this.admitInOrder())
      .catch(this.asyncFailed);
    ctx.trackDurableWrite(work);
  }

  /** Stores (or refuses) the waiting frames whose admission is decided, oldest first, up to the first undecided one. */
  private admitInOrder(): void {
    const queue = this.admissions;
    while (this.admissionHead < queue.length) {
      const entry = queue[this.admissionHead]!;
      const result = entry.result;
      if (result === undefined) return;
      queue[this.admissionHead++] = undefined;
      this.guard('durable', () => this.admitted(entry.frame, entry.bridge, result));
      this.endAsync();
    }
    this.admissions = [];
    this.admissionHead = 0;
  }

  /** Admission decided: refuse (NACK, counted), or store / hand off with what was charged. */
  private admitted(frame: Buffer, bridge: BridgeRegistration | undefined, admission: Admission): void {
    if (!admission.ok) return this.refuseDurable(frame, admission.refusal);
    if (bridge !== undefined) {
      return this.handOffToBridge(frame, routedMessageId(frame), bridge, admission.charge);
    }
    this.enqueueDurable(frame, admission.charge);
  }

  private refuseDurable(frame: Buffer, refusal: Refusal): void {
    const { metrics } = this.ctx;
    metrics.durableStored.labels(refusal.code).inc();
    // STORE_UNAVAILABLE is Redis failing, not a budget: counted in relay_redis_errors_total instead.
    if (refusal.code !== 'STORE_UNAVAILABLE') metrics.budgetRefused(refusal.budget);
    this.nack(frame, refusal.code, refusal.message);
  }

  /**
   * Stores an admitted durable SEND in the recipient's mailbox
   * (store-and-announce.ts); ACKs or NACKs it. One DurableWrite object per
   * frame carries it through the store's batch: no promise or closure per
   * frame on this path (issue 18).
   */
  private enqueueDurable(frame: Buffer, charge: Charge | undefined): void {
    this.beginAsync();
    this.ctx.durableWrites.started();
    storeAndAnnounceTo(this.ctx.store, new DurableWrite(this, this.ctx.router, frame, charge, performance.now()));
  }

  /** A DurableWrite's frame is in Redis (or was already): ACK it. Internal to this module. */
  durableStored(write: DurableWrite, result: EnqueueResult): void {
    const ctx = this.ctx;
    ctx.durableWrites.settled();
    try {
      ctx.metrics.durableStoreSeconds.observe((performance.now() - write.started) / 1000);
      ctx.metrics.durableStoredCounts[result.status]++;
      if (result.depth !== undefined) ctx.metrics.durableQueueDepth.observe(result.depth);
      // Before the announcement (storeAndAnnounce's order): a peer sending to itself gets the ACK first.
      // Encoded from the frame's own messageId: no view of it and no frame object per durable SEND.
      this.writeControl(encodeAckOf(write.frame, RoutedAt.MESSAGE_ID, result.position, this.version));
      this.endAsync();
      // A duplicate was charged when it was first stored.
      if (result.status !== 'stored') ctx.admission.refund(write.charge);
    } catch (err) {
      this.asyncFailed(err);
    }
  }

  /** A DurableWrite's frame was refused or Redis did not confirm it: NACK it. Internal to this module. */
  durableFailed(write: DurableWrite, err: LibertariaError): void {
    const ctx = this.ctx;
    ctx.durableWrites.settled();
    try {
      ctx.admission.refund(write.charge);
      if (isOomError(err)) {
        // Redis reached maxmemory before the guard's next sample saw it coming.
        ctx.admission.guard?.noteOom();
        this.refuseDurable(write.frame, OOM_REFUSAL);
        this.endAsync();
        return;
      }
      const code: ErrorCode = err instanceof RelayError ? err.code : 'STORE_UNAVAILABLE';
      ctx.metrics.durableStored.labels(code).inc();
      if (code === 'STORE_UNAVAILABLE') {
        ctx.metrics.redisErrors.labels('enqueue').inc();
        ctx.log.warn('durable store failed', { err });
      }
      this.nack(write.frame, code, err.message);
      this.endAsync();
    } catch (error) {
      this.asyncFailed(error);
    }
  }

  refuseSend(frame: Buffer, code: ErrorCode, message: string): void {
    this.ctx.metrics.drop('membrane');
    // The membrane writes an audit record per decision and refuses when it cannot (no unaudited
    // access): at maxmemory that is Redis' OOM. A durable sender is told what it would have been
    // told by the store, STORE_FULL; a fast one keeps STORE_UNAVAILABLE (nothing was to be stored).
    if (
      code === 'STORE_UNAVAILABLE' &&
      (routedFlags(frame) & SendFlags.DURABLE) !== 0 &&
      /\bOOM command not allowed\b/.test(message)
    ) {
      this.ctx.admission.guard?.noteOom();
      this.ctx.metrics.budgetRefused('redis_memory');
      return this.nack(frame, 'STORE_FULL', `${OOM_REFUSAL.message} (${message})`);
    }
    this.nack(frame, code, message);
  }

  isOpen(): boolean {
    return this.state === 'open';
  }

  answer(frame: Frame): void {
    this.writeControl(this.encode(frame, this.version));
  }

  private membraneGate(): ConnectionGate | undefined {
    if (this.gate === undefined && this.ctx.membrane !== undefined) this.gate = this.ctx.membrane.gate(this);
    return this.gate;
  }

  private onMembraneRequest(frame: MembraneRequestFrame): void {
    const gate = this.membraneGate();
    if (gate === undefined) {
      return this.nackRequest(frame.requestId, 'MEMBRANE_DISABLED', 'this relay runs without the membrane');
    }
    this.membraneRequests ??= new MembraneRequests(
      this.ctx.membrane!,
      gate,
      this,
      this.ctx.config.RELAY_MEMBRANE_REQUESTS_PER_MINUTE,
      maxBodySize(this.ctx.config.RELAY_MAX_PAYLOAD_BYTES),
    );
    this.membraneRequests.handle(frame);
  }

  /** A durable SEND to a bridge goes to its BullMQ queue (federation/handoff.ts); ACK position 0: no mailbox. */
  private handOffToBridge(
    frame: Buffer,
    messageId: Buffer,
    bridge: BridgeRegistration,
    charge: Charge | undefined,
  ): void {
    this.beginAsync();
    const work = this.ctx
      .federation!.handOff(frame, bridge)
      .then(
        () => {
          this.writeControl(this.encode({ type: 'ACK', messageId, position: 0 }, this.version));
          this.endAsync();
        },
        (err: unknown) => {
          this.ctx.admission.refund(charge);
          if (isOomError(err)) {
            this.ctx.admission.guard?.noteOom();
            this.refuseDurable(frame, OOM_REFUSAL);
          } else {
            this.nack(frame, 'STORE_UNAVAILABLE', `the bridge queue did not take the frame: ${(err as Error).message}`);
          }
          this.endAsync();
        },
      )
      .catch(this.asyncFailed);
    this.ctx.trackDurableWrite(work);
  }

  private nack(frame: Buffer, code: ErrorCode, message: string): void {
    const messageId = routedMessageId(frame);
    this.writeControl(
      this.encode({ type: 'NACK', messageId, code: errorCodeToWire(code), message: fitText(message) }, this.version),
    );
  }

  /**
   * ACKs arriving in one turn are removed from the queue in one script call
   * (256 at most each). While the delivery pump is reading a backlog they are
   * held instead, within the node's RELAY_DURABLE_ACK_HOLD, and sent once it
   * has caught up or paused, or the connection closes: Redis serves the reads
   * first (pending-acks.ts says why that is safe). The ACK names the
   * messageId at `idOffset` of `bytes`, copied (they may lie in a recycled
   * inbound slab).
   */
  private onAck(bytes: Uint8Array, idOffset: number, position: number): void {
    this.acks.push(bytes, position, idOffset);
    // A draining node holds nothing: its connections close soon, and what they hold must reach Redis first.
    if (this.pumping && !this.ctx.isDraining() && this.ctx.ackHold?.tryHold()) {
      this.acksHeld++;
      return;
    }
    this.scheduleAckFlush();
  }

  private scheduleAckFlush(): void {
    if (this.ackFlushScheduled || this.acks.count === 0) return;
    this.ackFlushScheduled = true;
    setImmediate(this.flushAcksNow);
  }

  private readonly flushAcksNow = (): void => {
    this.ackFlushScheduled = false;
    this.guard('ack', () => this.flushAcks());
  };

  /**
   * Sends every ACK kept to Redis. The script calls go one after another
   * (DurableStore.ackPacked), so a send of many held ACKs puts the node's
   * other requests behind one call at a time, not all of them; the hold
   * budget they took is given back once they are done. If Redis fails them,
   * an open connection keeps them (and their budget) and tries again in a
   * second: the pump has moved past their frames and would not deliver them
   * again before a reconnect. The node's drain waits for the send.
   */
  private flushAcks(): void {
    if (this.acks.count === 0 || this.hint === undefined) return;
    clearTimeout(this.ackRetryTimer);
    const held = this.acksHeld;
    this.acksHeld = 0;
    const hold = this.ctx.ackHold;
    const taken = this.acks.take();
    let kept = false;
    const work = this.ctx.store
      .ackPacked(this.hint, taken)
      .catch((err: unknown) => {
        this.ctx.metrics.redisErrors.labels('ack').inc();
        if (this.state === 'closed') {
          // The frames stay queued and come back after a reconnect; the client drops them as duplicates.
          this.ctx.log.warn('ack failed', { err, acks: taken.count });
          return;
        }
        this.ctx.log.warn('ack failed; trying again in a second', { err, acks: taken.count });
        // Sent again whole: those the failed run had removed already remove nothing the second time.
        this.acks.append(taken);
        this.acksHeld += held;
        kept = true;
        clearTimeout(this.ackRetryTimer);
        this.ackRetryTimer = setTimeout(() => this.guard('timer', () => this.flushAcks()), ACK_RETRY_MS);
      })
      .finally(() => {
        if (!kept) hold?.release(held);
      });
    work.catch(this.asyncFailed);
    this.ctx.trackDurableWrite(work);
  }

  private onResume(lastAcked: number): void {
    // RESUME is a cumulative ack: the peer holds everything up to lastAcked.
    this.resumed = true;
    this.cursor = lastAcked;
    const hint = this.hint!;
    const run = lastAcked > 0 ? this.ctx.store.ackUpTo(hint, lastAcked) : Promise.resolve(undefined);
    run
      .then(
        (result) => {
          if (result?.restarted) {
            // Positions start again at 1: without this the peer would take the new frames for ones it acknowledged.
            this.cursor = 0;
            this.ctx.log.warn('queue restarted below the peer’s RESUME position', { peer: this.describe(), lastAcked });
            this.writeControl(
              this.encode(
                {
                  type: 'ERROR',
                  code: errorCodeToWire('QUEUE_RESET'),
                  flags: 0,
                  message: `RESUME ${lastAcked} is beyond every position this queue issued; positions restart`,
                },
                this.version,
              ),
            );
          }
          this.requestPump();
        },
        (err: unknown) => {
          this.ctx.metrics.redisErrors.labels('ack').inc();
          this.ctx.log.warn('resume ack failed', { err });
          this.requestPump();
        },
      )
      .catch(this.asyncFailed);
  }

  /**
   * A control frame over the connection's budget: not processed, counted, and
   * answered with RATE_LIMITED at most once a second (a NACK carrying the
   * request id for requests, else a non-fatal ERROR), so a flood is not
   * amplified. Refused for RELAY_RATE_CONTROL_FLOOD_SECONDS without a pause
   * of more than a second: the connection is closed (fatal ERROR RATE_LIMITED).
   */
  private refuseControl(type: number, frame: Buffer): void {
    const now = Date.now();
    this.ctx.metrics.rateLimited(type);
    if (now - this.lastRefusalAt > 1000) this.floodSince = now;
    this.lastRefusalAt = now;
    // TCP: stop reading this peer for a while, so its flood waits in the kernel, not on this event loop.
    this.transport.pauseReading?.(CONTROL_READ_PAUSE_MS);
    const floodMs = this.ctx.config.RELAY_RATE_CONTROL_FLOOD_SECONDS * 1000;
    if (floodMs > 0 && now - this.floodSince >= floodMs) {
      this.ctx.log.warn('closing a connection that kept flooding over its control budget', {
        peer: this.describe(),
        seconds: Math.round((now - this.floodSince) / 1000),
        type: this.ctx.metrics.typeName(type),
      });
      return this.fatal(
        'RATE_LIMITED',
        `frames over the control budget for ${this.ctx.config.RELAY_RATE_CONTROL_FLOOD_SECONDS} s; closing`,
      );
    }
    if (now - this.lastRateAnswerAt < 1000) return;
    this.lastRateAnswerAt = now;
    const message = `${this.ctx.metrics.typeName(type)} refused: control frame budget exceeded (RELAY_RATE_CONTROL_PER_SECOND); further refusals this second are silent`;
    const body = FRAME_HEADER_SIZE;
    if (REQUEST_ID_FRAMES[type] === 1 && frame.length >= body + ID_SIZE) {
      return this.nackRequest(Uint8Array.from(frame.subarray(body, body + ID_SIZE)), 'RATE_LIMITED', message);
    }
    this.writeControl(
      this.encode({ type: 'ERROR', code: errorCodeToWire('RATE_LIMITED'), flags: 0, message }, this.version),
    );
  }

  /** A durable frame was stored for this peer (here or on another node). */
  offerDurable(frame: Buffer, position: number): void {
    // guard() without its closure: this runs once per durable frame.
    try {
      this.offer(frame, position);
    } catch (err) {
      this.internalError('offer', err);
    }
  }

  private offer(frame: Buffer, position: number): void {
    if (!this.resumed || this.state !== 'open' || position <= this.cursor) return;
    if (position === this.cursor + 1 && !this.pumping && this.hasRoom(frame.length)) {
      this.writeOut(frame);
      this.cursor = position;
      this.ackCredit++;
      return;
    }
    // A gap (frames stored concurrently elsewhere) or backpressure: Redis has them in order.
    this.requestPump();
  }

  /** Re-reads the queue after a possible gap (e.g. the pub/sub link was down). */
  requestPump(): void {
    if (!this.resumed || this.state !== 'open') return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    this.pump().catch(this.asyncFailed);
  }

  private async pump(): Promise<void> {
    const hint = this.hint!;
    const budget = this.ctx.config.RELAY_SEND_QUEUE_BYTES;
    // Reads ahead: the read of the frames after the batch in hand, started
    // before that batch is written, so Redis reads the next batch while this
    // one goes out instead of the two taking turns (a drain was bound by that
    // wait, neither the relay nor Redis busy). It starts as soon as Redis has
    // named the batch in hand (fetchWithin's onNamed), while that batch is
    // still being read from Redis, or else once the batch arrived; at most
    // one read ahead. Used only if the batch was written whole.
    let current: PumpRead | undefined;
    let ahead: PumpRead | undefined;
    let failed = false;
    const dropAhead = (): void => {
      // Its slot is released by readQueue; its answer, or failure, is not needed.
      ahead?.read.catch(() => {});
      ahead = undefined;
    };
    const startRead = (after: number, room: number): PumpRead => {
      // (The names come a round trip later at the earliest: entry is set by then.)
      const read = this.readQueue(hint, after, room, (named) => {
        entry.named = named;
        if (entry === current) readAheadOf(entry);
      });
      const entry: PumpRead = { after, read, named: undefined };
      return entry;
    };
    /** Starts the read after position `last` if the budget has room for it beside `unwritten` bytes read but not yet written. */
    const startAhead = (last: number, unwritten: number): void => {
      const room = Math.min(PUMP_FETCH_BYTES, budget - this.transport.bufferedBytes() - unwritten);
      if (room > 0) ahead = startRead(last, room);
    };
    /** Starts the read after `entry`'s frames once Redis named them. */
    const readAheadOf = (entry: PumpRead): void => {
      const named = entry.named;
      if (ahead !== undefined || this.state !== 'open' || !named?.more || named.bytes < 0) return;
      startAhead(named.last, named.bytes);
    };
    try {
      do {
        this.pumpAgain = false;
        for (;;) {
          if (!this.deliveryMayResume()) return this.pauseDelivery();
          if (this.state !== 'open') return;
          const after = this.cursor;
          if (ahead !== undefined && ahead.after === after) {
            current = ahead;
            ahead = undefined;
            readAheadOf(current); // if Redis named its frames already
          } else {
            dropAhead();
            // Read only what the budget has room for (at least one frame), a bounded slice at a time.
            const room = Math.min(PUMP_FETCH_BYTES, Math.max(1, budget - this.transport.bufferedBytes()));
            current = startRead(after, room);
          }
          const fetched = await current.read;
          // (`last` and `vanished` are missing only from test doubles of the store.)
          const {
            frames: batch,
            more,
            last,
            vanished,
          } = fetched as Omit<Fetched, 'last' | 'vanished'> & Partial<Pick<FetchedFrames, 'last' | 'vanished'>>;
          if (this.state !== 'open') return;
          if (this.cursor !== after) {
            // A RESUME moved the cursor while this batch was read (a peer may
            // RESUME again on an open connection, and a queue found restarted
            // sets it to 0): the batch, and any read ahead, are for the old
            // place; writing them would skip the frames in between.
            dropAhead();
            continue;
          }
          if (batch.length > 0 && batch[0]!.position <= after) {
            // The queue expired entirely and restarted at 1 (the store reads
            // from the start when asked past its last position): follow it.
            this.ctx.log.warn('durable queue restarted; resetting cursor', { did: this.did, from: after });
            this.cursor = batch[0]!.position - 1;
          }
          if (more && batch.length > 0 && ahead === undefined) {
            // No read ahead started on the names (a store that does not tell
            // them): start it now, its room leaving out this batch, not yet written.
            let bytes = 0;
            for (const item of batch) bytes += item.frame.length;
            startAhead(last ?? batch[batch.length - 1]!.position, bytes);
          }
          const nowMs = Date.now();
          for (const item of batch) {
            if (item.position <= this.cursor) continue;
            // Other writes may have taken the room meanwhile: stop here, the
            // cursor on the last frame written; the rest stays in Redis.
            if (!this.hasRoom(item.frame.length)) return this.pauseDelivery();
            this.writeOut(item.frame);
            this.cursor = item.position;
            this.ackCredit++;
            this.ctx.metrics.durableDeliveryAge.observe(Math.max(0, nowMs - item.storedAtMs) / 1000);
          }
          // Frames Redis named but that were gone when read (acknowledged or
          // expired meanwhile, or lost to an evicting Redis) need no delivery:
          // the cursor passes them, or a read that names only such frames
          // would be made again forever and the frames after them never
          // delivered.
          if (vanished) this.ctx.metrics.durableVanished.inc(vanished);
          if (last !== undefined && (last > this.cursor || (batch.length === 0 && last < after))) this.cursor = last;
          if (!more) {
            // Caught up: the ACKs held go now, also when new frames keep the pump going (pumpAgain).
            this.scheduleAckFlush();
            break;
          }
        }
      } while (this.pumpAgain);
    } catch (err) {
      failed = true;
      this.ctx.metrics.redisErrors.labels('fetch').inc();
      this.ctx.log.warn('durable fetch failed; retrying', { err });
      clearTimeout(this.pumpRetryTimer);
      this.pumpRetryTimer = setTimeout(() => this.guard('timer', () => this.requestPump()), 1000);
    } finally {
      dropAhead();
      current = undefined;
      this.pumping = false;
      // Paused or stopped: the ACKs held meanwhile go now. Not after a failed
      // read: Redis is likely failing them too; they wait for the retry's pump.
      if (!failed) this.scheduleAckFlush();
    }
  }

  /** One read of the durable queue, within the node's fetch slots (PUMP_FETCH_CONCURRENCY). */
  private async readQueue(
    hint: Uint8Array,
    after: number,
    room: number,
    onNamed: (named: NamedFrames) => void,
  ): Promise<Fetched> {
    const slots = this.ctx.fetchSlots;
    // A free slot is taken at once, so a read ahead goes to Redis before the
    // batch is written, not a microtask after.
    if (slots !== undefined && !slots.tryAcquire()) await slots.acquire();
    try {
      return await this.ctx.store.fetchWithin(hint, after, PUMP_BATCH, room, undefined, onNamed);
    } finally {
      slots?.release();
    }
  }

  /** The pump may (re)start: the transport holds at most half the budget (hysteresis), or nothing. */
  private deliveryMayResume(): boolean {
    const buffered = this.transport.bufferedBytes();
    if (buffered === 0) return true;
    const c = this.ctx.config;
    return buffered <= c.RELAY_SEND_QUEUE_BYTES / 2 && this.backedUpFrames < c.RELAY_SEND_QUEUE_FRAMES;
  }

  /**
   * Stops durable delivery until the transport drains. Checked again once
   * this turn's writes are flushed (scheduled after the flush): if the kernel
   * took them all at once no drain event would come.
   */
  private pauseDelivery(): void {
    if (!this.pumpWaitsForDrain) {
      this.pumpWaitsForDrain = true;
      this.ctx.metrics.pausedDeliveries++;
      this.ctx.metrics.deliveryPauses++;
    }
    if (!this.drainCheckScheduled) {
      this.drainCheckScheduled = true;
      setImmediate(this.checkDrain);
    }
  }

  private readonly checkDrain = (): void => {
    this.drainCheckScheduled = false;
    if (this.state === 'open') this.onDrain();
  };

  /** A fast frame for this peer: written if the bounds allow, else dropped and counted. */
  deliverFast(frame: Buffer): boolean {
    try {
      return this.fast(frame);
    } catch (err) {
      this.internalError('deliver', err);
      return false;
    }
  }

  private fast(frame: Buffer): boolean {
    if (this.state !== 'open') return false;
    if (!this.hasRoom(frame.length)) {
      this.ctx.metrics.drop('send_queue_overflow');
      return false;
    }
    this.writeOut(frame);
    return true;
  }

  /** A fast SEND of this peer found its recipient connected nowhere. */
  sendPeerGone(hint: Uint8Array, messageId: Uint8Array): void {
    this.writeControl(this.encode({ type: 'PEER_GONE', hint, messageId }, this.version));
  }

  /** Tells the peer this node is going away, with where to go instead. */
  goAway(reconnectAfterMs: number, reconnectHint: string, reason: string): void {
    if (this.state === 'closed') return;
    this.writeControl(
      this.encode(
        { type: 'GOAWAY', reconnectAfterMs, reconnectHint: fitText(reconnectHint), reason: fitText(reason) },
        this.version,
      ),
    );
  }

  /** Graceful close: flush, then end. */
  close(): void {
    if (this.state === 'closed') return;
    // Sent now, not when the socket has closed: a draining node quits Redis soon after (it waits for this send).
    this.guard('close', () => this.flushAcks());
    this.transport.end();
  }

  // ---------------------------------------------------------------------------
  // Output

  private hasRoom(extraBytes: number): boolean {
    const c = this.ctx.config;
    const buffered = this.transport.bufferedBytes();
    if (buffered === 0) return true;
    return buffered + extraBytes <= c.RELAY_SEND_QUEUE_BYTES && this.backedUpFrames < c.RELAY_SEND_QUEUE_FRAMES;
  }

  private writeOut(frame: Buffer): void {
    // Data frames are forwarded as the sender's bytes, and durable ones as stored in Redis, maybe by
    // a relay of an older version: they go out in this connection's version (the layouts are the
    // same; every connection negotiates the one version, so a buffer shared by several is unharmed).
    frame[0] = this.version;
    if (this.transport.socketBufferedBytes() > 0) this.backedUpFrames++;
    this.ctx.metrics.frame(frame[1]!, 'out', frame.length);
    this.transport.write(frame);
  }

  private writeControl(bytes: Uint8Array | undefined): void {
    if (bytes === undefined || this.state === 'closed') return;
    if (this.transport.bufferedBytes() > this.ctx.config.RELAY_SEND_QUEUE_BYTES + CONTROL_SLACK_BYTES) {
      this.ctx.metrics.drop('send_queue_overflow');
      return;
    }
    this.ctx.metrics.frame(bytes[1]!, 'out', bytes.length);
    this.transport.write(bytes);
  }

  /** Sends ERROR with the FATAL flag and closes. */
  private fatal(code: ErrorCode, message: string): void {
    if (this.state === 'closed') return;
    try {
      this.writeControl(
        encodeFrame({ type: 'ERROR', code: errorCodeToWire(code), flags: ErrorFlags.FATAL, message: fitText(message) }),
      );
    } catch (err) {
      // Not through encode(): its failure path ends here again. The connection closes all the same.
      this.ctx.log.error('cannot encode the closing ERROR', { conn: this.id.toString('hex'), code, err });
    }
    this.state = 'closed';
    // Out of the router now, so nothing more is routed here while the goodbye flushes.
    this.release();
    this.transport.end();
  }

  describe(): string {
    if (this.hint === undefined) return 'unauthenticated';
    return `${this.anonymous ? 'anonymous' : this.did} (${hintToHex(this.hint)})`;
  }
}

/** One durable SEND on its way into Redis (storeAndAnnounceTo's handler): the store's answer goes to its connection. */
class DurableWrite extends AnnouncedWrite {
  constructor(
    private readonly conn: PeerConnection,
    router: DurableAnnouncer,
    frame: Buffer,
    readonly charge: Charge | undefined,
    /** performance.now() when the store was asked: relay_durable_store_seconds. */
    readonly started: number,
  ) {
    super(router, frame);
  }
  stored(result: EnqueueResult): void {
    this.conn.durableStored(this, result);
  }
  failed(err: LibertariaError): void {
    this.conn.durableFailed(this, err);
  }
}
