/**
 * Node links in one process: a real listener and a real dialer on loopback
 * sockets (port 0), the handshake byte for byte, and hostile dialers.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, describe, it } from 'node:test';
import { encodeFrame, FRAME_HEADER_SIZE, FrameType } from '@libertaria/protocol';
import { silentLogger } from '../src/log.js';
import {
  encodeHello,
  LINK_CHALLENGE_SIZE,
  type LinkAddress,
  type LinkFailure,
  linkMac,
  NodeLinkDialer,
  NodeLinkListener,
  parseHello,
} from '../src/node-link.js';
import { nodeLinkHost } from '../src/relay-node.js';

const DEADLINE_MS = 20_000;

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`not within ${DEADLINE_MS} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function events() {
  const failures: string[] = [];
  const links = { in: 0, out: 0 };
  return {
    failures,
    links,
    sink: {
      failure: (side: 'in' | 'out', reason: LinkFailure) => failures.push(`${side}:${reason}`),
      links: (side: 'in' | 'out', n: number) => {
        links[side] = n;
      },
    },
  };
}

function deliver(n: number, size = 1000): Buffer {
  return Buffer.from(
    encodeFrame({
      type: 'DELIVER',
      dest: new Uint8Array(24).fill(1),
      source: new Uint8Array(24).fill(2),
      sessionId: new Uint8Array(16),
      messageId: randomBytes(16),
      flags: 0,
      ttl: 0,
      position: n,
      payload: Buffer.alloc(size, n % 251),
    }),
  );
}

interface Acceptor {
  listener: NodeLinkListener;
  address: LinkAddress;
  frames: Buffer[];
  lost: number;
  ev: ReturnType<typeof events>;
}

const open: Array<{ close(): void }> = [];
after(() => {
  for (const o of open) o.close();
});

async function acceptor(overrides: { maxInbound?: number; handshakeTimeoutMs?: number } = {}): Promise<Acceptor> {
  const key = randomBytes(32);
  const ev = events();
  const a: Acceptor = { frames: [], lost: 0, ev } as unknown as Acceptor;
  a.listener = new NodeLinkListener({
    nodeId: 'node-b',
    key,
    host: '127.0.0.1',
    port: 0,
    maxInbound: overrides.maxInbound ?? 16,
    handshakeTimeoutMs: overrides.handshakeTimeoutMs ?? 5000,
    maxPayload: 65536,
    log: silentLogger,
    events: ev.sink,
    onFrame: (f) => a.frames.push(f),
    onLost: () => a.lost++,
  });
  const port = await a.listener.start();
  open.push(a.listener);
  a.address = { host: '127.0.0.1', port, key: key.toString('base64url') };
  return a;
}

function dialer(addressOf: (node: string) => LinkAddress | undefined, bufferBytes = 1 << 20) {
  const ev = events();
  const d = new NodeLinkDialer({
    nodeId: 'node-a',
    handshakeTimeoutMs: 5000,
    bufferBytes,
    addressOf,
    log: silentLogger,
    events: ev.sink,
  });
  open.push(d);
  return { d, ev };
}

/** A raw socket to a listener, with what it has received so far. */
async function rawSocket(port: number): Promise<{ s: Socket; got: () => Buffer; closed: Promise<void> }> {
  const s = connect({ host: '127.0.0.1', port });
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('error', () => {});
  const closed = new Promise<void>((r) => s.on('close', () => r()));
  await new Promise<void>((r, j) => {
    s.once('connect', () => r());
    s.once('error', j);
  });
  return { s, got: () => Buffer.concat(chunks), closed };
}

describe('node links', () => {
  it('carries frames from the dialer to the acceptor in order, once the handshake is done', async () => {
    const b = await acceptor();
    const { d, ev } = dialer((node) => (node === 'node-b' ? b.address : undefined));
    // No link yet: the caller falls back, and a dial starts.
    assert.equal(d.send('node-b', deliver(0)), false);
    await until(() => ev.links.out === 1, 'the link is ready');
    assert.equal(b.ev.links.in, 1);
    const frames = Array.from({ length: 500 }, (_, i) => deliver(i, 1 + ((i * 37) % 3000)));
    // Messages of several frames, written as the router does; the kernel cuts them where it likes.
    for (let i = 0; i < frames.length; i += 7) {
      assert.equal(d.send('node-b', Buffer.concat(frames.slice(i, i + 7))), true);
    }
    await until(() => b.frames.length === frames.length, 'every frame arrived');
    for (let i = 0; i < frames.length; i++) assert.deepEqual(b.frames[i], frames[i], `frame ${i}`);
    assert.deepEqual(ev.failures, []);
    assert.deepEqual(b.ev.failures, []);
    // A node without a link address is not dialed.
    assert.equal(d.send('node-x', deliver(1)), false);
    // A clean close loses nothing: no resync on the acceptor's side.
    d.close();
    // Closing: nothing more is written (the caller takes pub/sub), and nothing is dialed again.
    assert.equal(d.send('node-b', deliver(2)), false);
    await until(() => b.ev.links.in === 0, 'the acceptor saw the close');
    assert.equal(d.send('node-b', deliver(3)), false);
    assert.equal(b.frames.length, frames.length);
    assert.equal(b.lost, 0);
  });

  it('refuses a dialer with the wrong key, and dials again only after a wait', async () => {
    const b = await acceptor();
    const wrong = { ...b.address, key: randomBytes(32).toString('base64url') };
    let listed = wrong;
    let refreshes = 0;
    const ev = events();
    const d = new NodeLinkDialer({
      nodeId: 'node-a',
      handshakeTimeoutMs: 5000,
      bufferBytes: 1 << 20,
      addressOf: () => listed,
      onDialFailure: () => refreshes++,
      log: silentLogger,
      events: ev.sink,
    });
    open.push(d);
    assert.equal(d.send('node-b', deliver(0)), false);
    await until(() => ev.failures.length === 1, 'the dial failed');
    assert.deepEqual(ev.failures, ['out:refused']);
    assert.deepEqual(b.ev.failures, ['in:bad_mac']);
    // Within the back-off, sends fall back without dialing again.
    for (let i = 0; i < 20; i++) assert.equal(d.send('node-b', deliver(i)), false);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(ev.failures.length, 1);
    assert.equal(b.frames.length, 0);
    assert.equal(refreshes, 1, 'a failed dial asks for the registry again');
    // The registry now lists another address (a restarted node): dialed at once, the wait notwithstanding.
    listed = b.address;
    assert.equal(d.send('node-b', deliver(0)), false);
    await until(() => ev.links.out === 1, 'the link to the new address is ready');
    assert.equal(d.send('node-b', deliver(1)), true);
    await until(() => b.frames.length === 1, 'the frame arrived');
  });

  it('falls back while the link is backed up past its buffer', async () => {
    const b = await acceptor();
    const { d, ev } = dialer(() => b.address, 65536);
    d.send('node-b', deliver(0));
    await until(() => ev.links.out === 1, 'the link is ready');
    // One message larger than the buffer is refused; the caller sends it another way.
    assert.equal(d.send('node-b', Buffer.alloc(65537)), false);
  });

  it('counts a dial to a closed port and retries it later', async () => {
    const b = await acceptor();
    const address = b.address;
    b.listener.close();
    const { d, ev } = dialer(() => address);
    d.send('node-b', deliver(0));
    await until(() => ev.failures.length === 1, 'the dial failed');
    assert.deepEqual(ev.failures, ['out:dial']);
  });

  it('has the acceptor re-read queues when a link breaks mid-frame', async () => {
    const b = await acceptor();
    const { d, ev } = dialer(() => b.address);
    d.send('node-b', deliver(0));
    await until(() => ev.links.out === 1, 'the link is ready');
    const frame = deliver(1);
    // Half a frame, then the dialer's process is gone (its socket reset).
    d.send('node-b', frame.subarray(0, 500));
    await new Promise((r) => setTimeout(r, 50));
    d.prune(() => false);
    await until(() => b.lost === 1, 'the acceptor noticed the loss');
    assert.ok(b.ev.failures.includes('in:lost'));
    assert.equal(b.frames.length, 0);
  });

  it('closes hostile dialers with a counted reason and keeps serving an honest one', async () => {
    const b = await acceptor({ maxInbound: 4, handshakeTimeoutMs: 300 });
    const honest = dialer(() => b.address);
    honest.d.send('node-b', deliver(0));
    await until(() => honest.ev.links.out === 1, 'the honest link is ready');
    let sent = 0;
    const honestFrame = async () => {
      const n = b.frames.length;
      assert.equal(honest.d.send('node-b', deliver(++sent)), true);
      await until(() => b.frames.length === n + 1, 'the honest frame arrived');
    };

    // Garbage instead of a HELLO.
    let x = await rawSocket(b.address.port);
    x.s.write('GET / HTTP/1.1\r\n\r\n');
    await x.closed;
    await honestFrame();

    // A well-formed HELLO with a made-up mac.
    x = await rawSocket(b.address.port);
    await until(() => x.got().length >= LINK_CHALLENGE_SIZE, 'the challenge');
    x.s.write(encodeHello('intruder', randomBytes(32)));
    await x.closed;
    await honestFrame();

    // Silence: closed at the handshake timeout.
    x = await rawSocket(b.address.port);
    await x.closed;
    await honestFrame();

    // A node id longer than allowed.
    x = await rawSocket(b.address.port);
    x.s.write(Buffer.concat([Buffer.from('LLNK\x01'), Buffer.from([200])]));
    await x.closed;

    // An authenticated dialer (it read the key from Redis) that sends a frame header claiming 4 GiB.
    x = await rawSocket(b.address.port);
    await until(() => x.got().length >= LINK_CHALLENGE_SIZE, 'the challenge');
    const nonce = x.got().subarray(5, LINK_CHALLENGE_SIZE);
    x.s.write(encodeHello('node-c', linkMac(Buffer.from(b.address.key, 'base64url'), nonce, 'node-b', 'node-c')));
    await until(() => x.got().length === LINK_CHALLENGE_SIZE + 1, 'ACCEPT');
    const huge = Buffer.alloc(FRAME_HEADER_SIZE);
    huge[0] = 1;
    huge[1] = FrameType.DELIVER;
    huge.writeUInt32BE(0xffffffff, 2);
    x.s.write(huge);
    await x.closed;
    await honestFrame();

    assert.deepEqual(b.ev.failures.sort(), [
      'in:bad_frame',
      'in:bad_hello',
      'in:bad_hello',
      'in:bad_mac',
      'in:timeout',
    ]);
    assert.equal(b.lost, 1, 'the broken authenticated link counts as lost: queues are re-read');

    // Full: the honest link and three idle sockets take the four places; a fifth is closed at once.
    const idle = await Promise.all([1, 2, 3].map(() => rawSocket(b.address.port)));
    const fifth = await rawSocket(b.address.port);
    await fifth.closed;
    assert.equal(fifth.got().length, 0, 'no challenge for a connection over the limit');
    assert.ok(b.ev.failures.includes('in:full'));
    await honestFrame();
    for (const s of idle) s.s.destroy();
    assert.deepEqual(honest.ev.failures, []);
  });

  it('announces RELAY_NODE_LINK_HOST, else RELAY_HOST when it names one address, else a non-internal IPv4 address', () => {
    assert.equal(nodeLinkHost({ RELAY_NODE_LINK_HOST: '10.1.2.3', RELAY_HOST: '127.0.0.1' }), '10.1.2.3');
    assert.equal(nodeLinkHost({ RELAY_NODE_LINK_HOST: undefined, RELAY_HOST: '127.0.0.1' }), '127.0.0.1');
    const external = Object.values(networkInterfaces())
      .flatMap((a) => a ?? [])
      .find((a) => a.family === 'IPv4' && !a.internal);
    for (const any of ['0.0.0.0', '::']) {
      assert.equal(
        nodeLinkHost({ RELAY_NODE_LINK_HOST: undefined, RELAY_HOST: any }),
        external?.address ?? '127.0.0.1',
      );
    }
  });

  it('parses any bytes as a HELLO without throwing (fuzz)', () => {
    const valid = encodeHello('node-a', randomBytes(32));
    let hellos = 0;
    for (let i = 0; i < 20_000; i++) {
      let bytes: Buffer;
      if (i % 3 === 0) bytes = randomBytes(i % 120);
      else {
        // Mutations of a valid HELLO: cut short, a byte flipped, bytes appended.
        bytes = Buffer.from(valid.subarray(0, (i * 7) % (valid.length + 1)));
        if (i % 2 === 0 && bytes.length > 0) bytes[(i * 13) % bytes.length]! ^= 1 << (i % 8);
        if (i % 5 === 0) bytes = Buffer.concat([bytes, randomBytes(i % 40)]);
      }
      const parsed = parseHello(bytes);
      assert.ok(['more', 'bad', 'hello'].includes(parsed.kind));
      if (parsed.kind === 'hello') {
        hellos++;
        assert.ok(parsed.size <= bytes.length);
        assert.ok(parsed.dialerId.length >= 1 && parsed.dialerId.length <= 64);
        assert.equal(parsed.mac.length, 32);
      }
    }
    assert.ok(hellos > 100, `${hellos} inputs parsed as a HELLO`);
  });
});
