/**
 * The chaos suite's TCP proxy (test-support/tcp-proxy.ts) on real loopback
 * sockets: forwarding with half-close, partitions that hold and then deliver
 * everything in order, per-direction delay, throttling, resets, refusals and
 * backpressure while partitioned.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { TcpProxy } from '../../../test-support/tcp-proxy.js';

interface Target {
  server: Server;
  port: number;
  /** Server-side sockets, in accept order. */
  accepted: Socket[];
  nextSocket(): Promise<Socket>;
}

/** A target that hands its accepted sockets to the test, in order (no echo: the test drives both ends). */
async function startTarget(): Promise<Target> {
  const accepted: Socket[] = [];
  const unclaimed: Socket[] = [];
  const waiters: Array<(s: Socket) => void> = [];
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    accepted.push(s);
    const waiter = waiters.shift();
    if (waiter !== undefined) waiter(s);
    else unclaimed.push(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return {
    server,
    port: address.port,
    accepted,
    nextSocket: () =>
      new Promise<Socket>((resolve) => {
        const ready = unclaimed.shift();
        if (ready !== undefined) resolve(ready);
        else waiters.push(resolve);
      }),
  };
}

/** Everything a test opens, closed in after() even when an assertion failed half-way. */
const opened: { proxies: TcpProxy[]; sockets: Socket[] } = { proxies: [], sockets: [] };

async function startProxy(options: Parameters<typeof TcpProxy.start>[0]): Promise<TcpProxy> {
  const proxy = await TcpProxy.start(options);
  opened.proxies.push(proxy);
  return proxy;
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(s));
    opened.sockets.push(s);
    s.once('error', reject);
  });
}

/** Collects everything a socket reads until `n` bytes (resolves with them); the deadline is sized for loaded CI. */
function readBytes(s: Socket, n: number, ms = 20_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => reject(new Error(`read ${got}/${n} bytes in ${ms} ms`)), ms);
    const onData = (d: Buffer) => {
      parts.push(d);
      got += d.length;
      if (got >= n) {
        clearTimeout(timer);
        s.off('data', onData);
        resolve(Buffer.concat(parts));
      }
    };
    s.on('data', onData);
  });
}

/** Bytes that arrive within `ms` (none expected in a partition). */
async function bytesWithin(s: Socket, ms: number): Promise<number> {
  let got = 0;
  const onData = (d: Buffer) => {
    got += d.length;
  };
  s.on('data', onData);
  await new Promise((r) => setTimeout(r, ms));
  s.off('data', onData);
  return got;
}

function closed(s: Socket): Promise<{ error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    let error: NodeJS.ErrnoException | undefined;
    s.on('error', (e) => {
      error = e;
    });
    s.once('close', () => resolve(error === undefined ? {} : { error }));
  });
}

function ended(s: Socket): Promise<void> {
  return new Promise((resolve) => s.once('end', () => resolve()));
}

describe('TcpProxy', { timeout: 60_000 }, () => {
  let target: Target;
  let proxy: TcpProxy;
  before(async () => {
    target = await startTarget();
  });
  after(async () => {
    for (const s of opened.sockets) s.destroy();
    await Promise.all(opened.proxies.map((p) => p.close()));
    for (const s of target.accepted) s.destroy();
    await new Promise<void>((r) => target.server.close(() => r()));
  });

  it('forwards both ways on 127.0.0.1 and passes a half-close through', async () => {
    proxy = await startProxy({ port: target.port });
    assert.match(proxy.url('ws'), /^ws:\/\/127\.0\.0\.1:\d+$/);
    const client = await dial(proxy.port);
    const server = await target.nextSocket();
    client.write('hello');
    assert.equal((await readBytes(server, 5)).toString(), 'hello');
    server.write('world');
    assert.equal((await readBytes(client, 5)).toString(), 'world');
    const serverSawEnd = ended(server);
    client.end();
    await serverSawEnd;
    // Half-open: the other direction still works after the client's FIN.
    server.write('late');
    assert.equal((await readBytes(client, 4)).toString(), 'late');
    const clientSawEnd = ended(client);
    server.end();
    await clientSawEnd;
    assert.equal(proxy.stats.bytesUp, 5);
    assert.equal(proxy.stats.bytesDown, 9);
    await proxy.close();
  });

  it('partition holds bytes both ways without closing, and heal delivers them in order', async () => {
    proxy = await startProxy({ port: target.port });
    const client = await dial(proxy.port);
    const server = await target.nextSocket();
    let closes = 0;
    client.on('close', () => closes++);
    server.on('close', () => closes++);
    proxy.partition();
    for (let i = 0; i < 50; i++) client.write(`u${i};`);
    server.write('d1;');
    server.write('d2;');
    assert.equal(await bytesWithin(server, 300), 0, 'nothing reaches the target while partitioned');
    assert.equal(await bytesWithin(client, 50), 0, 'nothing reaches the client while partitioned');
    const expectedUp = Array.from({ length: 50 }, (_, i) => `u${i};`).join('');
    const up = readBytes(server, expectedUp.length);
    const down = readBytes(client, 6);
    proxy.heal();
    assert.equal((await up).toString(), expectedUp);
    assert.equal((await down).toString(), 'd1;d2;');
    assert.equal(closes, 0, 'a partition closes nothing');
    client.destroy();
    await proxy.close();
  });

  it('a connection opened during a partition reaches the target only after heal', async () => {
    proxy = await startProxy({ port: target.port });
    const before = target.accepted.length;
    proxy.partition();
    const client = await dial(proxy.port);
    client.write('syn-lost');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(target.accepted.length, before, 'the target saw no connection');
    const next = target.nextSocket();
    proxy.heal();
    const server = await next;
    assert.equal((await readBytes(server, 8)).toString(), 'syn-lost');
    client.destroy();
    await proxy.close();
  });

  it('delays each direction independently, preserving byte order and delaying the FIN too', async () => {
    proxy = await startProxy({ port: target.port });
    const client = await dial(proxy.port);
    const server = await target.nextSocket();
    proxy.setDelay({ up: 400 });
    let t0 = Date.now();
    const upChunks = Array.from({ length: 100 }, (_, i) => `${i},`);
    const up = readBytes(server, upChunks.join('').length);
    for (const c of upChunks) client.write(c);
    assert.equal((await up).toString(), upChunks.join(''), 'order preserved');
    const upMs = Date.now() - t0;
    assert.ok(upMs >= 390, `up delayed ${upMs} ms`);
    t0 = Date.now();
    server.write('fast');
    await readBytes(client, 4);
    assert.ok(Date.now() - t0 < 200, 'down is not delayed');

    proxy.setDelay({ up: 0, down: 400 });
    t0 = Date.now();
    server.write('slow');
    await readBytes(client, 4);
    assert.ok(Date.now() - t0 >= 390, 'down delayed');
    t0 = Date.now();
    const clientEnded = ended(client);
    server.end();
    await clientEnded;
    assert.ok(Date.now() - t0 >= 390, 'the FIN waits behind the delay like the bytes');
    client.destroy();
    await proxy.close();
  });

  it('lowering the delay never reorders bytes already delayed', async () => {
    proxy = await startProxy({ port: target.port });
    const client = await dial(proxy.port);
    const server = await target.nextSocket();
    proxy.setDelay({ up: 500 });
    client.write('first;');
    await new Promise((r) => setTimeout(r, 50));
    proxy.setDelay({ up: 0 });
    client.write('second;');
    assert.equal((await readBytes(server, 13)).toString(), 'first;second;');
    client.destroy();
    await proxy.close();
  });

  it('throttles a direction to the configured bytes per second', async () => {
    proxy = await startProxy({ port: target.port });
    const client = await dial(proxy.port);
    const server = await target.nextSocket();
    proxy.setBandwidth({ down: 40_000 });
    const payload = randomBytes(40_000);
    const t0 = Date.now();
    const got = readBytes(client, payload.length);
    server.write(payload);
    assert.ok((await got).equals(payload));
    const ms = Date.now() - t0;
    // 40 kB at 40 kB/s: about one second (a 50 ms burst allowance), never much faster.
    assert.ok(ms >= 850 && ms < 3000, `took ${ms} ms`);
    const t1 = Date.now();
    client.write(payload);
    await readBytes(server, payload.length);
    assert.ok(Date.now() - t1 < 500, 'the other direction is not throttled');
    proxy.setBandwidth({ down: null });
    const t2 = Date.now();
    server.write(payload);
    await readBytes(client, payload.length);
    assert.ok(Date.now() - t2 < 500, 'the limit is lifted');
    client.destroy();
    await proxy.close();
  });

  it('resetAll() resets both ends at once; reject() also refuses new connections until heal', async () => {
    proxy = await startProxy({ port: target.port });
    const client = await dial(proxy.port);
    const server = await target.nextSocket();
    const clientClosed = closed(client);
    const serverClosed = closed(server);
    proxy.resetAll();
    assert.equal((await clientClosed).error?.code, 'ECONNRESET');
    assert.equal((await serverClosed).error?.code, 'ECONNRESET');
    assert.equal(proxy.stats.resets, 1);

    proxy.reject();
    const refused = await dial(proxy.port).then(
      (s) => closed(s),
      (error: NodeJS.ErrnoException) => ({ error }),
    );
    assert.equal(refused.error?.code, 'ECONNRESET');
    proxy.heal();
    const again = await dial(proxy.port);
    const server2 = await target.nextSocket();
    again.write('ok');
    assert.equal((await readBytes(server2, 2)).toString(), 'ok');
    again.destroy();
    await proxy.close();
  });

  it('a target that refuses reaches the client as a reset; setTarget() moves new connections', async () => {
    const dead = await startTarget();
    const deadPort = dead.port;
    await new Promise<void>((r) => dead.server.close(() => r()));
    proxy = await startProxy({ port: deadPort });
    const client = await dial(proxy.port);
    assert.equal((await closed(client)).error?.code, 'ECONNRESET');
    proxy.setTarget(target.port);
    const moved = await dial(proxy.port);
    const server = await target.nextSocket();
    moved.write('moved');
    assert.equal((await readBytes(server, 5)).toString(), 'moved');
    moved.destroy();
    await proxy.close();
  });

  it('stops reading a partitioned sender past maxBufferedBytes, then delivers every byte intact', async () => {
    proxy = await startProxy({ port: target.port, maxBufferedBytes: 64 * 1024 });
    const client = await dial(proxy.port);
    const server = await target.nextSocket();
    proxy.partition();
    const payload = randomBytes(8 * 1024 * 1024);
    client.write(payload);
    await new Promise((r) => setTimeout(r, 300));
    // Kernel buffers hold a few MB at most; the rest must still sit in the client, unread by the proxy.
    assert.ok(client.writableLength > 2 * 1024 * 1024, `client still holds ${client.writableLength} bytes`);
    const got = readBytes(server, payload.length, 20_000);
    proxy.heal();
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    assert.equal(sha(await got), sha(payload));
    client.destroy();
    await proxy.close();
  });

  it('refuses a non-loopback target and bad settings', async () => {
    await assert.rejects(TcpProxy.start({ port: 80, host: '10.0.0.1' }), /not loopback/);
    proxy = await startProxy({ port: target.port });
    assert.throws(() => proxy.setDelay({ up: -1 }), RangeError);
    assert.throws(() => proxy.setBandwidth({ down: 0 }), RangeError);
    await proxy.close();
  });
});
