/**
 * Migration: a peer's new connection replaces its old path with MIGRATE
 * (a signature over both connection ids). Raw protocol: the old connection is
 * closed with GOAWAY "migrated" on the same node and across nodes, a bad
 * proof is refused without closing anything. SDK: a client whose path goes
 * dark (a black-holed proxy: the relay still sees the old socket open)
 * reconnects on another node, and a fast frame from a sender on the old node
 * reaches it at once, because the old path was closed instead of swallowing
 * it until a timeout.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type InboundMessage, RelayClient } from '@libertaria/client';
import { Ed25519Identity, hintFromDid, migrationTranscript } from '@libertaria/identity';
import { errorCodeFromWire } from '@libertaria/protocol';
import { metric } from '../../../test-support/metrics.js';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

/** A TCP proxy whose path can go dark: bytes stop flowing both ways, sockets stay open. */
async function darkableProxy(targetPort: number): Promise<{ port: number; dark(): void; close(): void }> {
  let isDark = false;
  const sockets: Socket[] = [];
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(targetPort, '127.0.0.1');
    sockets.push(client, upstream);
    client.on('data', (d) => !isDark && upstream.write(d));
    upstream.on('data', (d) => !isDark && client.write(d));
    const end = () => {
      if (isDark) return; // a dark path never tells either side
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', () => {});
    upstream.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    dark: () => {
      isDark = true;
    },
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

describe('MIGRATE', { timeout: 90_000 }, () => {
  let redis: RedisHandle;
  let a: RelayHandle;
  let b: RelayHandle;
  const peers: RawPeer[] = [];

  before(async () => {
    redis = await startRedis();
    const env = { RELAY_HEARTBEAT_MS: '500', RELAY_PRESENCE_TTL_MS: '3000' };
    [a, b] = await Promise.all([startRelay({ redisUrl: redis.url, env }), startRelay({ redisUrl: redis.url, env })]);
  });
  after(async () => {
    for (const p of peers) p.close();
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  async function connection(url: string, id: Ed25519Identity) {
    const peer = await RawPeer.connect(url);
    peers.push(peer);
    const welcome = await peer.authenticate(id);
    return { peer, welcome };
  }

  it('closes the replaced connection on the same node and on another one; refuses a bad proof', async () => {
    const id = Ed25519Identity.generate();
    const old1 = await connection(a.wsUrl, id);
    const new1 = await connection(a.tcpUrl, id);
    // A proof signed for another connection (or by another key) does not verify: nothing is closed.
    new1.peer.send({
      type: 'MIGRATE',
      previousConnectionId: old1.welcome.connectionId,
      proof: id.sign(migrationTranscript(randomBytes(16), old1.welcome.connectionId)),
    });
    const refused = await new1.peer.next('ERROR');
    assert.equal(errorCodeFromWire(refused.code), 'AUTH_FAILED');
    assert.equal(refused.flags, 0);
    new1.peer.send({ type: 'PING', data: new Uint8Array(8) });
    await new1.peer.next('PONG');
    assert.ok(!old1.peer.closed);

    new1.peer.send({
      type: 'MIGRATE',
      previousConnectionId: old1.welcome.connectionId,
      proof: id.sign(migrationTranscript(new1.welcome.connectionId, old1.welcome.connectionId)),
    });
    assert.equal((await old1.peer.next('GOAWAY')).reason, 'migrated');
    await old1.peer.closedPromise;
    assert.ok(!new1.peer.closed);

    // Across nodes: the old path on A, the new one on B.
    const new2 = await connection(b.wsUrl, id);
    new2.peer.send({
      type: 'MIGRATE',
      previousConnectionId: new1.welcome.connectionId,
      proof: id.sign(migrationTranscript(new2.welcome.connectionId, new1.welcome.connectionId)),
    });
    assert.equal((await new1.peer.next('GOAWAY')).reason, 'migrated');
    await new1.peer.closedPromise;
    assert.ok(!new2.peer.closed);
    assert.equal(await metric(b, 'relay_migrations_total', { result: 'announced' }), 1);
    assert.equal(await metric(a, 'relay_migrations_total', { result: 'closed_local' }), 1);
    assert.equal(await metric(a, 'relay_migrations_total', { result: 'bad_proof' }), 1);
  });

  it('a client whose path goes dark migrates to another node and fast frames follow it at once', async () => {
    const proxy = await darkableProxy(Number(new URL(a.tcpUrl).port));
    const peerId = Ed25519Identity.generate();
    const client = new RelayClient({
      relays: [`tcp://127.0.0.1:${proxy.port}`, b.tcpUrl],
      identity: peerId,
      sealing: false,
      ackTimeoutMs: 1000,
      reconnect: { initialDelayMs: 20, maxDelayMs: 100 },
    });
    const senderId = Ed25519Identity.generate();
    const sender = new RelayClient({ relays: [a.wsUrl], identity: senderId, sealing: false });
    let proxy2: Awaited<ReturnType<typeof darkableProxy>> | undefined;
    let moving: RelayClient | undefined;
    try {
      await client.connect();
      await sender.connect();
      const connectedB = new Promise<void>((resolve) =>
        client.events.on('connected', (e) => e.nodeId === b.nodeId && resolve()),
      );
      proxy.dark();
      // The client notices the silence, reconnects (its first URL is dark: it lands on B) and MIGRATEs.
      await connectedB;
      const deadline = Date.now() + 5000;
      while ((await metric(b, 'relay_migrations_total', { result: 'announced' })) < 2 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      // A's stale connection is gone, so A routes the sender's fast frame to B.
      const iterator = client.messages()[Symbol.asyncIterator]();
      let delivered = false;
      for (let i = 0; i < 20 && !delivered; i++) {
        await sender.send(hintFromDid(peerId.did), new TextEncoder().encode(`fast ${i}`), { durable: false });
        const next = await Promise.race([
          iterator.next(),
          new Promise<'none'>((r) => setTimeout(() => r('none'), 200)),
        ]);
        delivered = next !== 'none' && (next as IteratorResult<InboundMessage>).value !== undefined;
      }
      assert.ok(delivered, 'a fast frame reached the migrated client');
      assert.equal(client.lifecycle.state, 'active');
      // The far peer learns of the move: a path update once the migrated client talks to it.
      const moved = new Promise<{ did: string; nodeId: string }>((resolve) => sender.events.on('peer-moved', resolve));
      await client.send(senderId.did, new TextEncoder().encode('hello from the new path'));
      proxy2 = await darkableProxy(Number(new URL(b.tcpUrl).port));
      // A second move (B → A over a fresh path) makes the client announce it to the sender it now knows.
      await client.close();
      const again = new RelayClient({
        relays: [`tcp://127.0.0.1:${proxy2.port}`, a.tcpUrl],
        identity: peerId,
        sealing: false,
        ackTimeoutMs: 1000,
        reconnect: { initialDelayMs: 20, maxDelayMs: 100 },
      });
      moving = again;
      await again.connect();
      await again.send(senderId.did, new TextEncoder().encode('known peer'));
      const backOnA = new Promise<void>((resolve, reject) => {
        again.events.on('connected', (e) => e.nodeId === a.nodeId && resolve());
        setTimeout(
          () => reject(new Error(`not back on node A within 30 s; client stats ${JSON.stringify(again.stats)}`)),
          30_000,
        ).unref();
      });
      proxy2.dark();
      await backOnA;
      // Pub/sub between the nodes: a deadline for a loaded CI machine (unref'd: it must not hold the process).
      const notice = await Promise.race([
        moved,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 20_000).unref()),
      ]);
      assert.ok(notice !== undefined, 'the far peer heard of the move');
      assert.equal(notice.did, peerId.did);
      assert.equal(notice.nodeId, a.nodeId);
      assert.equal(sender.peerLocation(peerId.did)?.nodeId, a.nodeId);
    } finally {
      await Promise.all([client.close(), sender.close(), moving?.close()]);
      proxy.close();
      proxy2?.close();
    }
  });
});
