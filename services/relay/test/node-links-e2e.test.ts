/**
 * Node links between real relay processes on one real Redis: frames across
 * nodes skip Redis once a link is up, cut at the link's size (and cut again
 * at pub/sub's when they fall back), a node with links off still gets its
 * frames by pub/sub, and a stranger at the link port is refused while the
 * honest traffic goes on.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import { encodeFrame } from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { RawPeer, sendFrameOf as sendFrame } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { encodeHello, LINK_CHALLENGE_SIZE } from '../src/node-link.js';

const DEADLINE_MS = 20_000;
/** The defaults of RELAY_NODE_LINK_MESSAGE_BYTES and RELAY_CROSS_NODE_MESSAGE_BYTES. */
const LINK_CUT = 256 * 1024;
const PUBSUB_CUT = 64 * 1024;

/** Groups of `n` frames of `size` bytes as a sender cuts them: a group leaves once it holds `cut` bytes. */
function cutInto(n: number, size: number, cut: number): number[] {
  const perGroup = Math.ceil(cut / size);
  const groups: number[] = [];
  for (let left = n; left > 0; left -= perGroup) groups.push(Math.min(perGroup, left));
  return groups;
}

async function peer(url: string, id = Ed25519Identity.generate()): Promise<{ id: Ed25519Identity; p: RawPeer }> {
  const p = await RawPeer.connect(url);
  await p.authenticate(id);
  return { id, p };
}

/** The sum of a metric's series on a relay's /metrics whose labels contain `labels`. */
async function metric(relay: RelayHandle, name: string, labels = ''): Promise<number> {
  const body = await (await fetch(`${relay.adminUrl}/metrics`)).text();
  let n = 0;
  for (const m of body.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))) {
    if (m[1]!.includes(labels)) n += Number(m[2]);
  }
  return n;
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`not within ${DEADLINE_MS} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('node links between relay processes', () => {
  let redis: RedisHandle;
  let r: Redis;
  let a: RelayHandle;
  let b: RelayHandle;
  let off: RelayHandle;
  const open: RawPeer[] = [];

  before(async () => {
    redis = await startRedis();
    r = new Redis(redis.url);
    [a, b, off] = await Promise.all([
      startRelay({ redisUrl: redis.url }),
      startRelay({ redisUrl: redis.url, env: { RELAY_NODE_LINK_HANDSHAKE_TIMEOUT_MS: '500' } }),
      startRelay({ redisUrl: redis.url, env: { RELAY_NODE_LINKS: 'false' } }),
    ]);
  });
  after(async () => {
    for (const p of open) p.close();
    r?.disconnect();
    await Promise.all([a?.stop(), b?.stop(), off?.stop()]);
    await redis?.stop();
  });

  const publishes = async () => Number(/cmdstat_publish:calls=(\d+)/.exec(await r.info('commandstats'))?.[1] ?? 0);

  it('sends fast and durable frames for another node over a link, not through Redis, in order', async () => {
    const alice = await peer(a.wsUrl);
    const bob = await peer(b.tcpUrl);
    open.push(alice.p, bob.p);
    // Durable delivery starts at RESUME.
    bob.p.send({ type: 'RESUME', lastAcked: 0 });
    // The first frames for B take pub/sub while A learns B's link address and dials it.
    await until(async () => {
      alice.p.send(sendFrame(alice.id, bob.id, Buffer.from('warm')));
      await bob.p.next('DELIVER');
      return (await metric(a, 'relay_node_links', 'direction="out"')) === 1;
    }, 'A dialed a link');
    assert.equal(await metric(b, 'relay_node_links', 'direction="in"'), 1);
    const before = await publishes();
    const linkMessages = await metric(a, 'relay_cross_node_messages_total', 'path="link"');
    for (let i = 0; i < 300; i++) alice.p.send(sendFrame(alice.id, bob.id, Buffer.alloc(700, i % 251)));
    for (let i = 0; i < 300; i++) assert.equal((await bob.p.next('DELIVER')).payload[0], i % 251, `frame ${i}`);
    // A durable frame: stored in Redis, announced to B over the link.
    alice.p.send(sendFrame(alice.id, bob.id, Buffer.from('kept'), true));
    const ack = await alice.p.next('ACK');
    const kept = await bob.p.next('DELIVER');
    assert.equal(Buffer.from(kept.payload).toString(), 'kept');
    assert.equal(kept.position, ack.position);
    assert.equal((await publishes()) - before, 0, 'no PUBLISH while the link is up');
    assert.ok((await metric(a, 'relay_cross_node_messages_total', 'path="link"')) > linkMessages);
    assert.equal(await metric(a, 'relay_node_link_failures_total'), 0);
  });

  it('cuts one turn of frames for a linked node at RELAY_NODE_LINK_MESSAGE_BYTES, in order', async () => {
    const alice = await peer(a.wsUrl);
    const bob = await peer(b.wsUrl);
    open.push(alice.p, bob.p);
    await until(async () => {
      alice.p.send(sendFrame(alice.id, bob.id, Buffer.from('warm')));
      await bob.p.next('DELIVER');
      return (await metric(a, 'relay_node_links', 'direction="out"')) === 1;
    }, 'A has a link to B');
    const frames = Array.from({ length: 300 }, (_, i) =>
      encodeFrame(sendFrame(alice.id, bob.id, Buffer.alloc(1000, i % 251))),
    );
    const link = await metric(a, 'relay_cross_node_messages_total', 'path="link"');
    const pubsub = await metric(a, 'relay_cross_node_messages_total', 'path="pubsub"');
    // One WebSocket message: relay A reads all 300 frames (330 KB) in one turn.
    alice.p.send(Buffer.concat(frames));
    for (let i = 0; i < frames.length; i++)
      assert.equal((await bob.p.next('DELIVER')).payload[0], i % 251, `frame ${i}`);
    // Two socket writes (256 KiB, then the rest), where pub/sub's cut would have made five messages.
    assert.equal(
      (await metric(a, 'relay_cross_node_messages_total', 'path="link"')) - link,
      cutInto(frames.length, frames[0]!.length, LINK_CUT).length,
    );
    assert.equal(await metric(a, 'relay_cross_node_messages_total', 'path="pubsub"'), pubsub);
  });

  it('cuts a message that falls back from a link to pub/sub again at RELAY_CROSS_NODE_MESSAGE_BYTES, in order', async () => {
    // A sends with links on, cutting at the link size; the node with links off can only be reached by pub/sub.
    const alice = await peer(a.wsUrl);
    const carol = await peer(off.wsUrl);
    open.push(alice.p, carol.p);
    alice.p.send(sendFrame(alice.id, carol.id, Buffer.from('warm')));
    await carol.p.next('DELIVER');
    const frames = Array.from({ length: 300 }, (_, i) =>
      encodeFrame(sendFrame(alice.id, carol.id, Buffer.alloc(1000, i % 251))),
    );
    const pubsub = await metric(a, 'relay_cross_node_messages_total', 'path="pubsub"');
    const before = await publishes();
    alice.p.send(Buffer.concat(frames));
    for (let i = 0; i < frames.length; i++)
      assert.equal((await carol.p.next('DELIVER')).payload[0], i % 251, `frame ${i}`);
    // 239 frames, then 61, cut for the link; each cut again for pub/sub: 60 + 60 + 60 + 59, then 60 + 1.
    const size = frames[0]!.length;
    const expected = cutInto(frames.length, size, LINK_CUT).reduce(
      (n, group) => n + cutInto(group, size, PUBSUB_CUT).length,
      0,
    );
    assert.equal(expected, 6);
    assert.equal((await metric(a, 'relay_cross_node_messages_total', 'path="pubsub"')) - pubsub, expected);
    assert.equal((await publishes()) - before, expected);
  });

  it('reaches a node with links off through pub/sub', async () => {
    const alice = await peer(a.wsUrl);
    const carol = await peer(off.wsUrl);
    open.push(alice.p, carol.p);
    const before = await publishes();
    for (let i = 0; i < 50; i++) alice.p.send(sendFrame(alice.id, carol.id, Buffer.from([i])));
    for (let i = 0; i < 50; i++) assert.equal((await carol.p.next('DELIVER')).payload[0], i);
    carol.p.send(sendFrame(carol.id, alice.id, Buffer.from('back')));
    assert.equal(Buffer.from((await alice.p.next('DELIVER')).payload).toString(), 'back');
    assert.ok((await publishes()) > before);
    assert.equal(await metric(off, 'relay_node_links'), 0);
    // The node with links off lists no link address; A does not try to dial it.
    const entry = JSON.parse((await r.hget('lr:nodes', off.nodeId))!) as { link?: unknown };
    assert.equal(entry.link, undefined);
    assert.equal(await metric(a, 'relay_node_link_failures_total'), 0);
  });

  it('carries on through pub/sub when the other node is killed, and links to it again after its restart', async () => {
    const nodeId = `links-restart-${process.pid}`;
    // D keeps the default lease: A (heartbeat 5 s) must not see the live D as expired between its reads.
    let d = await startRelay({ redisUrl: redis.url, nodeId });
    const stopD = () => d.stop();
    try {
      const alice = await peer(a.wsUrl);
      open.push(alice.p);
      let dave = await peer(d.wsUrl);
      const linksOut = async () => metric(a, 'relay_node_links', 'direction="out"');
      const before = await linksOut();
      // Frames for D take pub/sub until A has dialed D's link.
      await until(async () => {
        alice.p.send(sendFrame(alice.id, dave.id, Buffer.from('warm')));
        await dave.p.next('DELIVER');
        return (await linksOut()) === before + 1;
      }, 'A dialed a link to D');
      const lost = await metric(a, 'relay_node_link_failures_total', 'reason="lost"');
      d.kill('SIGKILL');
      await d.exited;
      await until(
        async () => (await metric(a, 'relay_node_link_failures_total', 'reason="lost"')) === lost + 1,
        'A saw the link go',
      );
      dave.p.close();
      // The same node id comes back: another process, another link port and key.
      d = await startRelay({ redisUrl: redis.url, nodeId });
      dave = await peer(d.wsUrl, dave.id);
      open.push(dave.p);
      await until(async () => {
        alice.p.send(sendFrame(alice.id, dave.id, Buffer.from('again')));
        assert.equal(Buffer.from((await dave.p.next('DELIVER')).payload).toString(), 'again');
        return (await linksOut()) === before + 1;
      }, 'A linked to the restarted D');
      for (let i = 0; i < 100; i++) alice.p.send(sendFrame(alice.id, dave.id, Buffer.from([i])));
      for (let i = 0; i < 100; i++) assert.equal((await dave.p.next('DELIVER')).payload[0], i);
    } finally {
      await stopD();
    }
  });

  it('refuses a stranger at the link port and keeps the honest link going', async () => {
    const entry = JSON.parse((await r.hget('lr:nodes', b.nodeId))!) as { link: { host: string; port: number } };
    const alice = await peer(a.wsUrl);
    const bob = await peer(b.wsUrl);
    open.push(alice.p, bob.p);
    const strangers = [
      (s: ReturnType<typeof connect>) => s.write(encodeHello(a.nodeId, randomBytes(32))), // a forged mac
      (s: ReturnType<typeof connect>) => s.write(randomBytes(64)), // noise
      () => {}, // silence
    ];
    for (const act of strangers) {
      const s = connect({ host: entry.link.host, port: entry.link.port });
      s.on('error', () => {});
      let got = 0;
      s.on('data', (c: Buffer) => {
        got += c.length;
        if (got >= LINK_CHALLENGE_SIZE) act(s);
      });
      await new Promise<void>((resolve) => s.on('close', () => resolve()));
      const overLink = await metric(a, 'relay_cross_node_messages_total', 'path="link"');
      alice.p.send(sendFrame(alice.id, bob.id, Buffer.from('still here')));
      assert.equal(Buffer.from((await bob.p.next('DELIVER')).payload).toString(), 'still here');
      assert.equal(await metric(a, 'relay_cross_node_messages_total', 'path="link"'), overLink + 1, 'over the link');
    }
    assert.equal(await metric(b, 'relay_node_link_failures_total', 'reason="bad_mac"'), 1);
    assert.equal(await metric(b, 'relay_node_link_failures_total', 'reason="bad_hello"'), 1);
    assert.equal(await metric(b, 'relay_node_link_failures_total', 'reason="timeout"'), 1);
    assert.equal(await metric(b, 'relay_node_links', 'direction="in"'), 1);
  });
});
