/**
 * Node links in one process: a real listener and a real dialer on loopback
 * sockets (port 0), the handshake byte for byte, and hostile dialers.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, describe, it } from 'node:test';
import { encodeFrame, FRAME_HEADER_SIZE, FrameType } from '@libertaria/protocol';
import { silentLogger } from '../src/log.js';
import {
  encodeHello,
  LINK_ACCEPT_SIZE,
  LINK_CHALLENGE_SIZE,
  LINK_HANDSHAKES_PER_ADDRESS,
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

  it('bounds what a link holds unsent, but writes a message larger than the bound to a link holding nothing', async () => {
    const b = await acceptor();
    const { d, ev } = dialer((node) => (node === 'node-b' ? b.address : undefined), 64 * 1024);
    d.send('node-b', deliver(0));
    await until(() => ev.links.out === 1, 'the link is ready');
    // 100 frames of about 2 KiB: three times the bound, in one message (a cut larger than the bound).
    const frames = Array.from({ length: 100 }, (_, i) => deliver(i, 2000));
    const large = Buffer.concat(frames);
    assert.ok(large.length > 3 * 64 * 1024);
    // Nothing was written yet (the first frame found no link): the link holds nothing unsent.
    assert.equal(d.send('node-b', large), true);
    await until(() => b.frames.length === frames.length, 'every frame arrived');
    for (let i = 0; i < frames.length; i++) assert.deepEqual(b.frames[i], frames[i], `frame ${i}`);
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
      // A wait no slow moment of the machine can outlast: no second dial to the same address here.
      retryFirstMs: 60_000,
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

  it('falls back while the link is backed up, and closes it once it makes no progress for a heartbeat', async () => {
    // An acceptor that completes the handshake, then stops reading (a node stuck, or a partition).
    const key = randomBytes(32);
    let stuck: Socket | undefined;
    const server = createServer((socket) => {
      stuck = socket;
      const nonce = randomBytes(32);
      socket.write(Buffer.concat([Buffer.from('LLNK\x01', 'latin1'), nonce]));
      socket.once('data', (hello: Buffer) => {
        const parsed = parseHello(hello);
        assert.equal(parsed.kind, 'hello');
        socket.write(Buffer.concat([Buffer.from([0]), linkMac(key, nonce, 'node-b', 'node-a', true)]));
        socket.pause();
      });
      socket.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    open.push({ close: () => server.close() });
    const port = (server.address() as { port: number }).port;
    const { d, ev } = dialer(() => ({ host: '127.0.0.1', port, key: key.toString('base64url') }), 1 << 20);
    d.send('node-b', deliver(0));
    await until(() => ev.links.out === 1, 'the link is ready');
    // Messages go on the link until it holds a buffer's worth the kernel could not take.
    let accepted = 0;
    const message = Buffer.concat(Array.from({ length: 50 }, (_, i) => deliver(i)));
    while (d.send('node-b', message)) {
      accepted++;
      assert.ok(accepted < 10_000, 'the link never backed up');
      if (accepted % 20 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(accepted > 0);
    // Two heartbeats without progress: closed as stalled, and the caller falls back until a new link is up.
    d.prune(() => true);
    assert.equal(ev.links.out, 1);
    d.prune(() => true);
    await until(() => ev.links.out === 0, 'the stalled link closed');
    assert.deepEqual(ev.failures, ['out:stalled']);
    assert.equal(d.send('node-b', message), false);
    stuck?.destroy();
  });

  it('accepts no link from a process that answers on the port without the key', async () => {
    // A stranger that took over a dead node's port answers CHALLENGE and ACCEPT without knowing the key.
    const received: Buffer[] = [];
    const server = createServer((socket) => {
      socket.write(
        Buffer.concat([Buffer.from('LLNK\x01', 'latin1'), randomBytes(32), Buffer.from([0]), randomBytes(32)]),
      );
      socket.on('data', (c: Buffer) => received.push(c));
      socket.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    open.push({ close: () => server.close() });
    const port = (server.address() as { port: number }).port;
    const { d, ev } = dialer(() => ({ host: '127.0.0.1', port, key: randomBytes(32).toString('base64url') }));
    d.send('node-b', deliver(0));
    await until(() => ev.failures.length === 1, 'the dialer gave up');
    assert.deepEqual(ev.failures, ['out:protocol']);
    assert.equal(ev.links.out, 0);
    assert.equal(d.send('node-b', deliver(1)), false);
    // It got the HELLO (which proves nothing to it without the key), and not one frame.
    assert.ok(Buffer.concat(received).length <= 6 + 'node-a'.length + 32);
  });

  it('counts a dial to a closed port as a dial failure', async () => {
    const b = await acceptor();
    const address = b.address;
    b.listener.close();
    const { d, ev } = dialer(() => address);
    d.send('node-b', deliver(0));
    await until(() => ev.failures.length === 1, 'the dial failed');
    assert.deepEqual(ev.failures, ['out:dial']);
  });

  it('has the acceptor re-read queues when a link closes without END, mid-frame or between frames', async () => {
    for (const cut of ['mid-frame', 'between frames'] as const) {
      const b = await acceptor();
      const { d, ev } = dialer(() => b.address);
      d.send('node-b', deliver(0));
      await until(() => ev.links.out === 1, 'the link is ready');
      const frame = deliver(1);
      assert.equal(d.send('node-b', cut === 'mid-frame' ? frame.subarray(0, 500) : frame), true);
      await until(() => b.frames.length === (cut === 'mid-frame' ? 0 : 1), 'the bytes arrived');
      await new Promise((r) => setTimeout(r, 50));
      // The dialer's side goes away without END (its node is gone): an orderly FIN, but not a clean close.
      d.prune(() => false);
      await until(() => b.lost === 1, `the acceptor noticed the loss (${cut})`);
      assert.ok(b.ev.failures.includes('in:lost'));
    }
  });

  it('closes hostile dialers with a counted reason and keeps serving an honest one', async () => {
    const b = await acceptor({ maxInbound: 4, handshakeTimeoutMs: 1000 });
    const honest = dialer(() => b.address);
    honest.d.send('node-b', deliver(0));
    await until(() => {
      // A slow moment may time the first handshake out: the dialer tries again after its wait.
      if (honest.ev.links.out === 0) honest.d.send('node-b', deliver(0));
      return honest.ev.links.out === 1;
    }, 'the honest link is ready');
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
    await until(() => x.got().length === LINK_CHALLENGE_SIZE + LINK_ACCEPT_SIZE, 'ACCEPT');
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

  it(`lets one address hold at most ${LINK_HANDSHAKES_PER_ADDRESS} handshakes at once`, async () => {
    const b = await acceptor({ maxInbound: 64, handshakeTimeoutMs: 20_000 });
    const idle = await Promise.all(
      Array.from({ length: LINK_HANDSHAKES_PER_ADDRESS }, () => rawSocket(b.address.port)),
    );
    await until(() => idle.every((x) => x.got().length >= LINK_CHALLENGE_SIZE), 'every challenge');
    const over = await rawSocket(b.address.port);
    await over.closed;
    assert.equal(over.got().length, 0);
    assert.deepEqual(b.ev.failures, ['in:full']);
    // A handshake that ended frees its place (once the listener has seen the close).
    idle[0]!.s.destroy();
    const deadline = Date.now() + DEADLINE_MS;
    let next: Awaited<ReturnType<typeof rawSocket>>;
    for (;;) {
      next = await rawSocket(b.address.port);
      const candidate = next;
      const got = await new Promise<boolean>((resolve) => {
        const poll = setInterval(() => {
          if (candidate.got().length < LINK_CHALLENGE_SIZE) return;
          clearInterval(poll);
          resolve(true);
        }, 10);
        void candidate.closed.then(() => {
          clearInterval(poll);
          resolve(false);
        });
      });
      if (got) break;
      assert.ok(Date.now() < deadline, 'the freed place was never given to the next socket');
    }
    for (const x of [...idle, next]) x.s.destroy();
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
