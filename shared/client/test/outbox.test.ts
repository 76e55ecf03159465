/**
 * Offline-first outbox: the dedupe tracker's snapshot/restore rules, and
 * RelayClient with an `outbox` store against a real relay and Redis: sends
 * made while the relay is dead survive the application's exit and go out on
 * the next run; messages acknowledged while the ACK could not reach the relay
 * are not shown again after a restart (and are, without the outbox: the
 * control that shows the test can fail).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  DedupeTracker,
  type InboundMessage,
  InMemorySessionStore,
  RelayClient,
  type RelayClientEvents,
  SessionManager,
  type SessionStore,
} from '@libertaria/client';
import { FileSessionStore } from '@libertaria/client/node';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import { clientState, iteratorOf, str, text, within } from '../../../test-support/client-harness.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

describe('dedupe tracker snapshot and restore', () => {
  it('never yields again what was acknowledged, and yields again what was not', () => {
    const t = new DedupeTracker();
    for (let p = 1; p <= 6; p++) t.accept(`id${p}`, p);
    for (const p of [1, 2, 4, 6]) t.ack(`id${p}`, p);
    const snap = t.snapshot();
    assert.deepEqual(snap, { watermark: 2, highestAcked: 6, outstanding: [3, 5] });

    const r = new DedupeTracker();
    r.restore(JSON.parse(JSON.stringify(snap)));
    assert.equal(r.lastAcked, 2);
    // Redelivered after the restart (new ids in this process): acknowledged ones are acked again, not shown.
    assert.equal(r.check('id1', 1), 'ack-again');
    assert.equal(r.check('id3', 3), 'new');
    assert.equal(r.check('id4', 4), 'ack-again');
    assert.equal(r.check('id5', 5), 'new');
    assert.equal(r.check('id6', 6), 'ack-again');
    assert.equal(r.check('id7', 7), 'new');
    // The watermark waits for the outstanding ones.
    r.accept('id3', 3);
    r.ack('id3', 3);
    assert.equal(r.lastAcked, 4);
    r.accept('id5', 5);
    r.ack('id5', 5);
    assert.equal(r.lastAcked, 6);
    assert.throws(() => r.restore({ watermark: -1, highestAcked: 0, outstanding: [] }), RangeError);
  });
});

describe('RelayClient outbox against a real relay', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let dir: string;
  const clients: RelayClient[] = [];

  function client(
    identity: Ed25519Identity,
    extra: { outbox?: SessionStore; sessions?: SessionManager } = {},
  ): RelayClient {
    const c = new RelayClient({
      relays: [relay.tcpUrl],
      identity,
      reconnect: { initialDelayMs: 50, maxDelayMs: 300 },
      ...(extra.sessions ? { sessions: extra.sessions } : { sealing: false }),
      ...(extra.outbox ? { outbox: extra.outbox } : {}),
    });
    clients.push(c);
    return c;
  }

  async function restartRelay(): Promise<void> {
    relay.kill('SIGKILL');
    await relay.exited;
    relay = await startRelay({ redisUrl: redis.url });
  }

  before(async () => {
    redis = await startRedis();
    relay = await startRelay({ redisUrl: redis.url });
    dir = await mkdtemp(join(tmpdir(), 'lrelay-outbox-'));
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await relay?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('sends queued while the relay is dead survive the application exit and go out, sealed, on the next run', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const aliceStore = new FileSessionStore(join(dir, 'alice.state'));
    const manager = (id: Ed25519Identity, store: SessionStore) =>
      new SessionManager({ identity: id, store, provider: nodeCrypto, verify: verifyEd25519, oneTimePrekeys: 2 });
    const bobSessions = manager(bobId, new InMemorySessionStore());
    const bob = client(bobId, { sessions: bobSessions });
    const bobErrors: string[] = [];
    bob.events.on('error', (e) => bobErrors.push(`${e.error.code}: ${e.error.message}`));
    await bob.connect();
    await bobSessions.ensurePublished(bob);

    const alice1 = client(aliceId, { outbox: aliceStore, sessions: manager(aliceId, aliceStore) });
    await alice1.connect();
    await alice1.send(bobId.did, text('before the crash'));
    // The relay dies; Alice keeps sending (her session with Bob exists, so sealing needs no relay).
    relay.kill('SIGKILL');
    await relay.exited;
    const pending = [0, 1, 2, 3, 4].map((i) => alice1.send(bobId.did, text(`queued ${i}`)));
    for (const p of pending) p.catch(() => {});
    // Wait for the five records to be written (not a fixed time: a loaded CI
    // machine writes them late), then the application exits with them unacknowledged.
    const written = Date.now() + 20_000;
    while ((await aliceStore.list('outbox-send-')).length < 5) {
      assert.ok(Date.now() < written, `outbox records: ${(await aliceStore.list('outbox-send-')).length} of 5`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await alice1.close();
    assert.equal((await aliceStore.list('outbox-send-')).length, 5);

    await bob.close(); // its relay URL died with the node; Bob comes back on the new one
    relay = await startRelay({ redisUrl: redis.url });
    const bob2 = client(bobId, { sessions: bobSessions });
    bob2.events.on('error', (e) => bobErrors.push(`${e.error.code}: ${e.error.message}`));
    await bob2.connect();
    const alice2 = client(aliceId, { outbox: aliceStore, sessions: manager(aliceId, aliceStore) });
    const restored: RelayClientEvents['outbox'][] = [];
    alice2.events.on('outbox', (e) => restored.push(e));
    await alice2.connect();
    // One deadline for the resends and their removal, sized for a loaded CI machine.
    const deadline = Date.now() + 30_000;
    while (restored.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(restored.length, 5, `outbox events: ${JSON.stringify(restored)}; ${JSON.stringify(alice2.stats)}`);
    assert.ok(restored.every((e) => e.error === undefined && (e.position ?? 0) > 0));
    // Removal follows the ACK asynchronously.
    while ((await aliceStore.list('outbox-send-')).length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal((await aliceStore.list('outbox-send-')).length, 0, 'acknowledged sends leave the outbox');

    const got: string[] = [];
    const it = iteratorOf(bob2);
    while (got.length < 6) {
      const m = (
        await within(
          it.next(),
          20_000,
          `message after ${got.join(',')}; errors ${bobErrors.join('; ')}`,
          clientState(bob2),
        )
      ).value as InboundMessage;
      got.push(str(m.payload));
      await m.ack();
    }
    assert.deepEqual(got, ['before the crash', 'queued 0', 'queued 1', 'queued 2', 'queued 3', 'queued 4']);
  });

  it('a queue that restarted (Redis lost it) is not mistaken for one already acknowledged', async () => {
    // Bob's persisted state remembers position 1000 of a queue Redis no longer has.
    const bobId = Ed25519Identity.generate();
    const bobStore = new FileSessionStore(join(dir, 'bob-reset.state'));
    await bobStore.put(
      'outbox-inbound',
      text(JSON.stringify({ v: 1, watermark: 1000, highestAcked: 1000, outstanding: [] })),
    );
    const sender = client(Ed25519Identity.generate());
    await sender.connect();
    for (let i = 0; i < 3; i++) await sender.send(bobId.did, text(`new ${i}`));
    const bob = client(bobId, { outbox: bobStore });
    await bob.connect();
    const it = iteratorOf(bob);
    const got: string[] = [];
    for (let i = 0; i < 3; i++) {
      const m = (await within(it.next(), 20_000, `message after ${got.join(',')}`, clientState(bob)))
        .value as InboundMessage;
      got.push(str(m.payload));
      await m.ack();
    }
    assert.deepEqual(got, ['new 0', 'new 1', 'new 2']);
    assert.equal(bob.stats.lastAcked, 3);
  });

  it('messages acknowledged while the ACK could not reach the relay are not shown again after a restart', async () => {
    const senderId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const sender = client(senderId);
    await sender.connect();
    for (let i = 0; i < 10; i++) await sender.send(bobId.did, text(`m${i}`));

    const bobStore = new FileSessionStore(join(dir, 'bob.state'));
    const bob1 = client(bobId, { outbox: bobStore });
    await bob1.connect();
    const it = iteratorOf(bob1);
    const first: InboundMessage[] = [];
    for (let i = 0; i < 10; i++) {
      first.push((await within(it.next(), 20_000, `message ${i}`, clientState(bob1))).value as InboundMessage);
    }
    // The relay dies before Bob acknowledges; he acknowledges 0-3, 6 and 8 anyway (persisted, not sent).
    relay.kill('SIGKILL');
    await relay.exited;
    for (const i of [0, 1, 2, 3, 6, 8]) await first[i]!.ack();
    await bob1.close();
    relay = await startRelay({ redisUrl: redis.url });

    // Without the outbox (the control), all ten come back.
    const control = client(bobId);
    await control.connect();
    const cit = iteratorOf(control);
    const again: string[] = [];
    for (let i = 0; i < 10; i++)
      again.push(
        str(((await within(cit.next(), 20_000, `message ${i}`, clientState(control))).value as InboundMessage).payload),
      );
    assert.equal(again.length, 10);
    await control.close();

    // With it, only the four he never acknowledged.
    const bob2 = client(bobId, { outbox: bobStore });
    await bob2.connect();
    const it2 = iteratorOf(bob2);
    const shown: string[] = [];
    for (let i = 0; i < 4; i++) {
      const m = (await within(it2.next(), 20_000, `message after ${shown.join(',')}`, clientState(bob2)))
        .value as InboundMessage;
      shown.push(str(m.payload));
      await m.ack();
    }
    assert.deepEqual(shown, ['m4', 'm5', 'm7', 'm9']);
    const extra = await Promise.race([
      it2.next().then(() => 'more'),
      new Promise((r) => setTimeout(() => r('none'), 1000)),
    ]);
    assert.equal(extra, 'none');
    // 0-3 were below the persisted watermark (RESUME told the relay: never redelivered); 6 and 8 came back, hidden.
    assert.equal(bob2.stats.duplicates, 2);
    await restartRelay();
  });
});
