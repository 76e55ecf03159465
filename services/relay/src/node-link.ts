/**
 * Node links: frames between relay nodes straight over TCP, with Redis
 * pub/sub as the fallback (docs/relay.md#node-links). Through pub/sub a
 * cross-node frame crosses loopback or the network twice more than on one
 * node, is copied by Redis and by ioredis on both sides, and waits for its
 * whole message at Redis and again at the receiving node; a link carries it
 * from one node's memory to the other's in one hop. Tailscale's DERP servers
 * mesh the same way. Redis stays what nodes find each other through: each
 * node lists its link address and a link key in its presence entry
 * (presence.ts), so a link is open to exactly those who can already publish
 * on the node's pub/sub channel.
 *
 * A link carries frames one way: the node that dials sends, the node that
 * accepts receives. Two nodes that send to each other hold two links.
 *
 *   accepting node → dialer   CHALLENGE  "LLNK" | version 0x01 | nonce (32 bytes)
 *   dialer → accepting node   HELLO      "LLNK" | version 0x01 | n (1 byte, 1-64) | dialer's node id (n bytes, ASCII) | mac (32)
 *                             mac = HMAC-SHA256(accepting node's link key,
 *                                   "libertaria node link v1" | nonce | n' | accepting node's id | n | dialer's id)
 *   accepting node → dialer   ACCEPT     0x00 | mac (32): HMAC-SHA256(the same key, "libertaria node link v1 accept" | nonce | the same ids)
 *   dialer → accepting node   relay frames back to back (DELIVER, PREKEY_STATUS, MIGRATE), as a pub/sub message holds them,
 *                             then END (a PING frame) before an orderly close
 *
 * Both sides prove the key: a process that took over a dead node's port
 * cannot accept a link in its name. The accepting node sends nothing after
 * ACCEPT. A close counts as clean only after END with no partial frame left;
 * otherwise the accepting node's connections re-read their queues. Anything that breaks these
 * rules (a wrong magic or version, a bad mac, a HELLO not complete within
 * RELAY_NODE_LINK_HANDSHAKE_TIMEOUT_MS, a frame the stream decoder refuses)
 * closes that link, counted in relay_node_link_failures_total; the frames
 * themselves are checked as pub/sub messages are (router.ts onRemoteFrame).
 *
 * What a link may lose: fast frames are best effort anyway; a durable
 * frame's announcement is a shortcut (the queue in Redis is the truth), and
 * a receiving node whose link closed other than cleanly has its connections
 * re-read their queues, as after a pub/sub reconnect. A sender whose link is
 * not ready, or whose unsent bytes would pass RELAY_NODE_LINK_BUFFER_BYTES
 * with this message (a link holding nothing takes any message), uses
 * pub/sub for that message: frames of one flow can then overtake each other
 * across the two paths, which fast frames may do and durable ones recover
 * from by position.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { encodeFrame, FrameStreamDecoder, FrameType } from '@libertaria/protocol';
import type { Logger } from './log.js';

export const LINK_MAGIC = Buffer.from('LLNK', 'latin1');
export const LINK_VERSION = 1;
export const LINK_NONCE_SIZE = 32;
export const LINK_MAC_SIZE = 32;
export const LINK_KEY_SIZE = 32;
export const LINK_MAX_NODE_ID = 64;
export const LINK_CHALLENGE_SIZE = LINK_MAGIC.length + 1 + LINK_NONCE_SIZE;
const LINK_ACCEPT = 0x00;
const MAC_LABEL = Buffer.from('libertaria node link v1', 'latin1');
const ACCEPT_MAC_LABEL = Buffer.from('libertaria node link v1 accept', 'latin1');
export const LINK_ACCEPT_SIZE = 1 + LINK_MAC_SIZE;
/** Longest a dialer waits before dialing a node again after a failure, and the first wait. */
const RETRY_MAX_MS = 30_000;
const RETRY_FIRST_MS = 500;
/** TCP keepalive on idle links, so a vanished peer machine is noticed. */
const KEEPALIVE_MS = 15_000;
/** Handshakes one address may have open at once: strangers cannot hold every place (RELAY_NODE_LINK_MAX_INBOUND) from one host. */
export const LINK_HANDSHAKES_PER_ADDRESS = 4;
/** A link that closes sooner than this after it was ready is redialed only after the back-off, like a failed dial. */
const LINK_STABLE_MS = 10_000;
/** The END marker: a PING frame, which nothing else sends on a link. */
export const LINK_END = Buffer.from(encodeFrame({ type: 'PING', data: new Uint8Array(8) }));

/** Where a node accepts links, as its presence entry lists it. */
export interface LinkAddress {
  host: string;
  port: number;
  /** The node's link key, base64url (32 bytes). */
  key: string;
}

export type LinkFailure =
  /** dialer: could not connect, or the link closed before its HELLO was sent */
  | 'dial'
  /** dialer: the accepting node closed the link after HELLO (a wrong key: the registry changed, or is not what that node holds) */
  | 'refused'
  /** dialer: the accepting node answered something other than the protocol */
  | 'protocol'
  /** an accepted link closed other than cleanly */
  | 'lost'
  /** accepting node: wrong magic or version, or a node id out of bounds */
  | 'bad_hello'
  /** accepting node: the mac did not match this node's key */
  | 'bad_mac'
  /** no complete handshake in time */
  | 'timeout'
  /** accepting node: RELAY_NODE_LINK_MAX_INBOUND links open already, or LINK_HANDSHAKES_PER_ADDRESS handshakes from that address */
  | 'full'
  /** dialer: unsent bytes waited a whole heartbeat without any being written (a peer that stopped reading, a partition) */
  | 'stalled'
  /** dialer: the registry lists another address or key for that node now (it restarted) */
  | 'moved'
  /** accepting node: a frame the stream decoder refused (length, size) */
  | 'bad_frame';

export interface LinkEvents {
  failure(side: 'in' | 'out', reason: LinkFailure): void;
  /** Links ready now, each way. */
  links(side: 'in' | 'out', count: number): void;
}

export function linkMac(key: Buffer, nonce: Uint8Array, acceptorId: string, dialerId: string, accept = false): Buffer {
  const hmac = createHmac('sha256', key);
  hmac.update(accept ? ACCEPT_MAC_LABEL : MAC_LABEL);
  hmac.update(nonce);
  hmac.update(Buffer.from([acceptorId.length]));
  hmac.update(acceptorId, 'latin1');
  hmac.update(Buffer.from([dialerId.length]));
  hmac.update(dialerId, 'latin1');
  return hmac.digest();
}

export function encodeChallenge(nonce: Uint8Array): Buffer {
  return Buffer.concat([LINK_MAGIC, Buffer.from([LINK_VERSION]), nonce]);
}

export function encodeHello(dialerId: string, mac: Uint8Array): Buffer {
  return Buffer.concat([
    LINK_MAGIC,
    Buffer.from([LINK_VERSION, dialerId.length]),
    Buffer.from(dialerId, 'latin1'),
    mac,
  ]);
}

/** Whether the bytes so far (however few) could open a CHALLENGE or HELLO: the magic, then this version. */
function opensLikeLink(bytes: Buffer): boolean {
  const known = Math.min(bytes.length, LINK_MAGIC.length);
  if (!bytes.subarray(0, known).equals(LINK_MAGIC.subarray(0, known))) return false;
  return bytes.length <= LINK_MAGIC.length || bytes[LINK_MAGIC.length] === LINK_VERSION;
}

export type HelloParse =
  | { kind: 'more' }
  | { kind: 'bad' }
  | { kind: 'hello'; dialerId: string; mac: Buffer; size: number };

/** Reads a HELLO from the start of `bytes`: more bytes needed, not a HELLO, or the HELLO and its size. */
export function parseHello(bytes: Buffer): HelloParse {
  const head = LINK_MAGIC.length + 2;
  if (!opensLikeLink(bytes)) return { kind: 'bad' };
  if (bytes.length < head) return { kind: 'more' };
  const n = bytes[head - 1]!;
  if (n < 1 || n > LINK_MAX_NODE_ID) return { kind: 'bad' };
  const size = head + n + LINK_MAC_SIZE;
  if (bytes.length < size) return { kind: 'more' };
  const dialerId = bytes.toString('latin1', head, head + n);
  if (!/^[A-Za-z0-9._-]+$/.test(dialerId)) return { kind: 'bad' };
  return { kind: 'hello', dialerId, mac: Buffer.from(bytes.subarray(head + n, size)), size };
}

export interface LinkListenerOptions {
  nodeId: string;
  key: Buffer;
  host: string;
  port: number;
  maxInbound: number;
  handshakeTimeoutMs: number;
  /** RELAY_MAX_PAYLOAD_BYTES: the stream decoder refuses larger frames. */
  maxPayload: number;
  log: Logger;
  events: LinkEvents;
  /** One whole frame from another node (a view of the received bytes, safe to keep). */
  onFrame(frame: Buffer): void;
  /** An accepted link closed other than cleanly: what it carried may be partly lost. */
  onLost(): void;
}

/** Accepts links from other nodes and hands their frames to the router. */
export class NodeLinkListener {
  private readonly sockets = new Set<Socket>();
  /** Handshakes in progress per remote address. */
  private readonly handshaking = new Map<string, number>();
  private ready = 0;
  private refusals = 0;
  private listenerErrors = 0;
  private server: Server | undefined;
  port = 0;

  constructor(private readonly options: LinkListenerOptions) {}

  async start(): Promise<number> {
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // A listener error after start (none expected) is logged, never thrown into the process.
    server.on('error', (err) => {
      if (this.listenerErrors++ < 5 || this.listenerErrors % 100 === 0) {
        this.options.log.warn('node link listener error', { err, errors: this.listenerErrors });
      }
    });
    const addr = server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : this.options.port;
    return this.port;
  }

  close(): void {
    this.server?.close();
    for (const s of this.sockets) s.destroy();
  }

  private accept(socket: Socket): void {
    const o = this.options;
    const from = socket.remoteAddress ?? 'unknown';
    const pending = this.handshaking.get(from) ?? 0;
    if (this.sockets.size >= o.maxInbound || pending >= LINK_HANDSHAKES_PER_ADDRESS) {
      o.events.failure('in', 'full');
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    this.handshaking.set(from, pending + 1);
    let handshakeDone = false;
    const endHandshake = (): void => {
      if (handshakeDone) return;
      handshakeDone = true;
      const n = (this.handshaking.get(from) ?? 1) - 1;
      if (n > 0) this.handshaking.set(from, n);
      else this.handshaking.delete(from);
    };
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_MS);
    const nonce = randomBytes(LINK_NONCE_SIZE);
    socket.write(encodeChallenge(nonce));
    let hello: Buffer | undefined = Buffer.alloc(0);
    let decoder: FrameStreamDecoder | undefined;
    let dialerId = '';
    let endSeen = false;
    let failed = false;
    const fail = (reason: LinkFailure): void => {
      if (failed) return;
      failed = true;
      o.events.failure('in', reason);
      // Strangers may knock often: the first few are logged, then every hundredth (all are counted).
      if (this.refusals++ < 5 || this.refusals % 100 === 0) {
        o.log.warn('node link refused or broken', {
          reason,
          from: socket.remoteAddress,
          dialer: dialerId || undefined,
          refusals: this.refusals,
        });
      }
      socket.destroy();
    };
    const timer = setTimeout(() => fail('timeout'), o.handshakeTimeoutMs);
    const deliver = (chunk: Buffer): void => {
      let frames: Uint8Array[];
      try {
        frames = decoder!.push(chunk);
      } catch {
        fail('bad_frame');
        return;
      }
      for (const f of frames) {
        // END: the dialer wrote everything it meant to before closing.
        if (f[1] === FrameType.PING) endSeen = true;
        else o.onFrame(Buffer.from(f.buffer, f.byteOffset, f.byteLength));
      }
    };
    socket.on('data', (chunk: Buffer) => {
      if (failed) return;
      if (decoder) {
        deliver(chunk);
        return;
      }
      hello = hello!.length === 0 ? chunk : Buffer.concat([hello!, chunk]);
      const parsed = parseHello(hello);
      if (parsed.kind === 'more') return;
      if (parsed.kind === 'bad') return fail('bad_hello');
      dialerId = parsed.dialerId;
      const expected = linkMac(o.key, nonce, o.nodeId, parsed.dialerId);
      if (!timingSafeEqual(expected, parsed.mac)) return fail('bad_mac');
      clearTimeout(timer);
      endHandshake();
      const rest = hello.subarray(parsed.size);
      hello = undefined;
      decoder = new FrameStreamDecoder({ maxPayload: o.maxPayload });
      this.ready++;
      o.events.links('in', this.ready);
      o.log.info('node link accepted', { dialer: dialerId });
      socket.write(Buffer.concat([Buffer.from([LINK_ACCEPT]), linkMac(o.key, nonce, o.nodeId, dialerId, true)]));
      if (rest.length > 0) deliver(rest);
    });
    socket.on('end', () => socket.end());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      clearTimeout(timer);
      endHandshake();
      this.sockets.delete(socket);
      if (!decoder) return;
      this.ready--;
      o.events.links('in', this.ready);
      // END with no partial frame after it lost nothing; anything else may have.
      if (!endSeen || failed || decoder.pendingBytes > 0) {
        if (!failed) o.events.failure('in', 'lost');
        o.log.info('node link lost', { dialer: dialerId });
        o.onLost();
      } else {
        o.log.info('node link closed', { dialer: dialerId });
      }
    });
  }
}

export interface LinkDialerOptions {
  nodeId: string;
  handshakeTimeoutMs: number;
  /** RELAY_NODE_LINK_BUFFER_BYTES: most bytes a link may hold unsent before messages take pub/sub (an empty link takes any one message). */
  bufferBytes: number;
  /** Where a node accepts links, if it does and is live. */
  addressOf(nodeId: string): LinkAddress | undefined;
  /** A dial failed: the address may be stale (a restarted node), so the caller may read the registry again. */
  onDialFailure?(nodeId: string): void;
  /** The first wait before dialing again after a failure (500 ms; tests set it). */
  retryFirstMs?: number;
  log: Logger;
  events: LinkEvents;
}

interface OutboundLink {
  socket: Socket;
  address: LinkAddress;
  ready: boolean;
  readyAt: number;
  /** Bytes handed to the kernel at the last prune, while some waited: no progress by the next one is a stall. */
  dispatchedAtPrune: number | undefined;
  /** Why this node closed it, if it did. */
  closedFor: LinkFailure | 'gone' | undefined;
}

/** Dials other nodes' links and sends on them. */
export class NodeLinkDialer {
  private readonly links = new Map<string, OutboundLink>();
  /** Node → when to dial again and how long the wait after the next failure is. */
  private readonly retry = new Map<string, { at: number; waitMs: number; address: LinkAddress }>();
  private ready = 0;
  private closed = false;

  constructor(private readonly options: LinkDialerOptions) {}

  /**
   * Writes `message` (whole frames, bytes the caller no longer touches) on
   * the link to `node` if one is ready and has room; false means the caller
   * sends it some other way. Without a link, starts dialing one.
   */
  send(node: string, message: Buffer): boolean {
    const link = this.links.get(node);
    if (link === undefined) {
      this.dial(node);
      return false;
    }
    const socket = link.socket;
    // Not writable: destroyed, or ended by close() (a write after end would only be lost).
    if (!link.ready || !socket.writable) return false;
    // Backed up: the bound is on what waits unsent. A link with nothing waiting takes any message,
    // so a message cut larger than the bound (RELAY_NODE_LINK_MESSAGE_BYTES) still goes over links.
    const unsent = socket.writableLength;
    if (unsent > 0 && unsent + message.length > this.options.bufferBytes) return false;
    socket.write(message);
    return true;
  }

  /**
   * Each heartbeat: closes links to nodes that are gone (`isLive` false),
   * that the registry now lists elsewhere (a node restarted under the same
   * id), and links whose unsent bytes made no progress since the last call
   * (the other side stopped reading, or the network between dropped it):
   * TCP alone would take minutes to give up, and what the link holds
   * meanwhile is lost; frames take pub/sub until a new link is up.
   */
  prune(isLive: (nodeId: string) => boolean): void {
    for (const [node, link] of this.links) {
      if (!isLive(node)) {
        this.closeLink(link, 'gone');
        continue;
      }
      if (!link.ready) continue;
      const listed = this.options.addressOf(node);
      if (listed !== undefined && !sameAddress(listed, link.address)) {
        this.closeLink(link, 'moved');
        continue;
      }
      const socket = link.socket;
      const dispatched = socket.bytesWritten - socket.writableLength;
      if (socket.writableLength > 0 && link.dispatchedAtPrune === dispatched) {
        this.closeLink(link, 'stalled');
        continue;
      }
      link.dispatchedAtPrune = socket.writableLength > 0 ? dispatched : undefined;
    }
    for (const node of this.retry.keys()) if (!isLive(node)) this.retry.delete(node);
  }

  private closeLink(link: OutboundLink, why: LinkFailure | 'gone'): void {
    link.closedFor ??= why;
    link.socket.destroy();
  }

  /** Ends every link after what it holds is written. */
  close(): void {
    this.closed = true;
    for (const link of this.links.values()) {
      // END tells the other side it got everything; without it (the timer below) it re-reads its queues.
      if (link.ready) link.socket.write(LINK_END);
      link.socket.end();
      setTimeout(() => link.socket.destroy(), 2000).unref();
    }
  }

  private dial(node: string): void {
    if (this.closed) return;
    const now = Date.now();
    const retry = this.retry.get(node);
    const address = this.options.addressOf(node);
    if (address === undefined) return;
    // The wait applies to the address that failed: a node restarted since lists a new one, dialed at once.
    if (retry && retry.at > now && sameAddress(retry.address, address)) return;
    const o = this.options;
    const key = Buffer.from(address.key, 'base64url');
    const socket = connect({ host: address.host, port: address.port });
    const link: OutboundLink = {
      socket,
      address,
      ready: false,
      readyAt: 0,
      dispatchedAtPrune: undefined,
      closedFor: undefined,
    };
    this.links.set(node, link);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_MS);
    let challenge: Buffer = Buffer.alloc(0);
    let helloSent = false;
    let nonce: Buffer | undefined;
    let failure: LinkFailure | undefined;
    const fail = (reason: LinkFailure): void => {
      failure ??= reason;
      socket.destroy();
    };
    const timer = setTimeout(() => fail('timeout'), o.handshakeTimeoutMs);
    socket.on('data', (chunk: Buffer) => {
      if (link.ready) return this.closeLink(link, 'protocol'); // nothing may follow ACCEPT
      challenge = challenge.length === 0 ? chunk : Buffer.concat([challenge, chunk]);
      if (!helloSent) {
        if (!opensLikeLink(challenge)) return fail('protocol');
        if (challenge.length < LINK_CHALLENGE_SIZE) return;
        nonce = Buffer.from(challenge.subarray(LINK_MAGIC.length + 1, LINK_CHALLENGE_SIZE));
        socket.write(encodeHello(o.nodeId, linkMac(key, nonce, node, o.nodeId)));
        helloSent = true;
        challenge = challenge.subarray(LINK_CHALLENGE_SIZE);
        if (challenge.length === 0) return;
      }
      if (challenge[0] !== LINK_ACCEPT || challenge.length > LINK_ACCEPT_SIZE) return fail('protocol');
      if (challenge.length < LINK_ACCEPT_SIZE) return;
      const expected = linkMac(key, nonce!, node, o.nodeId, true);
      // Whoever answers on that port must hold the key too: not a process that took a dead node's port.
      if (!timingSafeEqual(expected, challenge.subarray(1))) return fail('protocol');
      clearTimeout(timer);
      link.ready = true;
      link.readyAt = Date.now();
      this.ready++;
      o.events.links('out', this.ready);
      o.log.info('node link open', { to: node, host: address.host, port: address.port });
    });
    socket.on('error', (err) => {
      if (!link.ready && !helloSent) failure ??= 'dial';
      o.log.debug('node link error', { to: node, err });
    });
    socket.on('end', () => socket.end());
    socket.on('close', () => {
      clearTimeout(timer);
      if (this.links.get(node) === link) this.links.delete(node);
      const firstMs = o.retryFirstMs ?? RETRY_FIRST_MS;
      const backOff = (): number => {
        const waitMs = Math.min(Math.max(RETRY_MAX_MS, firstMs), (this.retry.get(node)?.waitMs ?? firstMs / 2) * 2);
        this.retry.set(node, { at: Date.now() + waitMs, waitMs, address });
        return waitMs;
      };
      if (link.ready) {
        this.ready--;
        o.events.links('out', this.ready);
        if (this.closed || link.closedFor === 'gone') return;
        o.events.failure('out', link.closedFor ?? 'lost');
        // A link that held is dialed again at the next message; one that keeps breaking at once waits.
        if (Date.now() - link.readyAt >= LINK_STABLE_MS) this.retry.delete(node);
        else backOff();
        o.log.info('node link to another node closed', { to: node, reason: link.closedFor ?? 'lost' });
        return;
      }
      if (this.closed) return;
      const reason = failure ?? (helloSent ? 'refused' : 'dial');
      o.events.failure('out', reason);
      const waitMs = backOff();
      o.onDialFailure?.(node);
      o.log.warn('node link not established; frames for that node take pub/sub', {
        to: node,
        host: address.host,
        port: address.port,
        reason,
        retryInMs: waitMs,
      });
    });
  }
}

function sameAddress(a: LinkAddress, b: LinkAddress): boolean {
  return a.host === b.host && a.port === b.port && a.key === b.key;
}
