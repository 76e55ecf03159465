/**
 * SDK-driven session rotation (docs/client.md#rotation) against real relay
 * processes on a private Redis, with real crypto: after N messages or the
 * age (an injected clock) the next seal runs a fresh PQXDH; messages sealed
 * under the old session still open when delivered after the switch; the
 * responder accepts the new session and answers in it; a responder whose
 * session is due rotates too; a rotation whose bundle fetch is refused keeps
 * the current session; the CLI flags.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type InboundMessage,
  InMemorySessionStore,
  RelayClient,
  type RelayClientEvents,
  type RotationEvent,
  SessionManager,
  type SessionManagerOptions,
  type SessionStore,
  toHex,
} from '@libertaria/client';
import { stateDirForKeyFile } from '@libertaria/client/node';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { LibertariaError } from '@libertaria/protocol';
import { nextMessage, cli as runCli, sealedPeer, str, text } from '../../../test-support/client-harness.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

interface Peer {
  client: RelayClient;
  sessions: SessionManager;
  errors: RelayClientEvents['error'][];
  rotations: RotationEvent[];
}

async function receive(client: RelayClient, n: number): Promise<InboundMessage[]> {
  const out: InboundMessage[] = [];
  for (let i = 0; i < n; i++) {
    const m = await nextMessage(client);
    await m.ack();
    out.push(m);
  }
  return out;
}

const ids = (messages: InboundMessage[]): string[] => messages.map((m) => toHex(m.sessionId));

describe('session rotation against a real relay', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let dir: string;
  const clients: RelayClient[] = [];

  async function peer(
    identity: Ed25519Identity,
    options: Partial<SessionManagerOptions> = {},
    store: SessionStore = new InMemorySessionStore(),
    url: string = relay.wsUrl,
  ): Promise<Peer> {
    const rotations: RotationEvent[] = [];
    const sessions = { onRotation: (e: RotationEvent) => rotations.push(e), ...options };
    return { ...(await sealedPeer({ url, identity, store, sessions, track: clients })), rotations };
  }

  before(async () => {
    redis = await startRedis();
    relay = await startRelay({ redisUrl: redis.url });
    dir = await mkdtemp(join(tmpdir(), 'lrelay-rotation-'));
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await relay?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses a rotation policy that is not positive integers', () => {
    for (const rotation of [{ maxMessages: 0 }, { maxAgeMs: -1 }, { maxMessages: 1.5 }, { maxAgeMs: Number.NaN }]) {
      assert.throws(
        () =>
          new SessionManager({
            identity: Ed25519Identity.generate(),
            store: new InMemorySessionStore(),
            provider: nodeCrypto,
            verify: verifyEd25519,
            rotation,
          }),
        (e: unknown) => e instanceof LibertariaError && e.code === 'BAD_FIELD',
      );
    }
  });

  it('drives each peer session through the lifecycle: handshaking, active, rotating, active', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const aliceStates: string[] = [];
    const bobStates: string[] = [];
    const bob = await peer(bobId, {
      onSessionState: (did, t) => did === aliceId.did && bobStates.push(`${t.from}>${t.to}`),
    });
    const alice = await peer(aliceId, {
      rotation: { maxMessages: 2 },
      onSessionState: (did, t) => did === bobId.did && aliceStates.push(`${t.from}>${t.to}`),
    });
    await alice.client.send(bobId.did, text('m0'));
    assert.equal(alice.sessions.sessionState(bobId.did), 'handshaking');
    await receive(bob.client, 1);
    assert.equal(bob.sessions.sessionState(aliceId.did), 'active');
    await bob.client.send(aliceId.did, text('r0'));
    await receive(alice.client, 1);
    assert.equal(alice.sessions.sessionState(bobId.did), 'active');
    // Two messages on the session: the next send rotates.
    await alice.client.send(bobId.did, text('m1'));
    assert.equal(alice.sessions.sessionState(bobId.did), 'rotating');
    await receive(bob.client, 1);
    await bob.client.send(aliceId.did, text('r1'));
    await receive(alice.client, 1);
    assert.equal(alice.sessions.sessionState(bobId.did), 'active');
    assert.deepEqual(aliceStates, ['handshaking>active', 'active>rotating', 'rotating>active']);
    assert.deepEqual(bobStates, ['handshaking>active', 'active>rotating', 'rotating>active']);
  });

  it('after N messages the next send starts a new session, which the responder accepts and answers in', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const bob = await peer(bobId);
    const alice = await peer(aliceId, { rotation: { maxMessages: 3 } });
    assert.equal(alice.sessions.rotation.maxMessages, 3);

    for (let i = 0; i < 7; i++) await alice.client.send(bobId.did, text(`m${i}`));
    const got = await receive(bob.client, 7);
    assert.deepEqual(
      got.map((m) => str(m.payload)),
      ['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6'],
    );
    const [a, b, c] = [ids(got)[0], ids(got)[3], ids(got)[6]];
    assert.deepEqual(ids(got), [a, a, a, b, b, b, c]);
    assert.equal(new Set([a, b, c]).size, 3, 'three distinct sessions');
    assert.deepEqual(
      alice.rotations.map((e) => [e.reason, toHex(e.previousSessionId), toHex(e.sessionId)]),
      [
        ['messages', a, b],
        ['messages', b, c],
      ],
    );

    // Bob answers in the newest session, and Alice opens it.
    await bob.client.send(aliceId.did, text('answer'));
    const [answer] = await receive(alice.client, 1);
    assert.equal(str(answer!.payload), 'answer');
    assert.equal(toHex(answer!.sessionId), c);
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  });

  it('after the age (injected clock) the next send starts a new session', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    let now = Date.now();
    const bob = await peer(bobId);
    const alice = await peer(aliceId, { rotation: { maxAgeMs: 60_000 }, clock: () => now });

    await alice.client.send(bobId.did, text('young'));
    now += 59_999;
    await alice.client.send(bobId.did, text('still young'));
    now += 1;
    await alice.client.send(bobId.did, text('old enough'));
    const got = await receive(bob.client, 3);
    assert.deepEqual(
      got.map((m) => str(m.payload)),
      ['young', 'still young', 'old enough'],
    );
    const [a, b] = [ids(got)[0], ids(got)[2]];
    assert.notEqual(a, b);
    assert.deepEqual(ids(got), [a, a, b]);
    assert.deepEqual(
      alice.rotations.map((e) => e.reason),
      ['age'],
    );
    await bob.client.send(aliceId.did, text('answer'));
    const [answer] = await receive(alice.client, 1);
    assert.equal(toHex(answer!.sessionId), b);
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  });

  it('messages sealed under the old session open when delivered after the switch', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    // Bob publishes once and goes offline: everything below waits in his durable queue.
    const bobStore = new InMemorySessionStore();
    await (await peer(bobId, {}, bobStore)).client.close();
    const alice = await peer(aliceId, { rotation: { maxMessages: 2 } });
    for (let i = 0; i < 5; i++) await alice.client.send(bobId.did, text(`queued ${i}`));

    // A message sealed under the current session now but sent only after the rotation
    // (a slow sender, a retry through another path): it must still open.
    const late = await alice.sessions.seal(alice.client, bobId.did, text('sealed before, sent after'));
    for (let i = 5; i < 8; i++) await alice.client.send(bobId.did, text(`queued ${i}`));
    const raw = new RelayClient({ relays: [relay.wsUrl], identity: aliceId, sealing: false });
    clients.push(raw);
    await raw.connect();
    await raw.send(bobId.did, late.body, { sessionId: late.sessionId });

    const bob = await peer(bobId, {}, bobStore);
    const got = await receive(bob.client, 9);
    assert.deepEqual(
      got.map((m) => str(m.payload)),
      [0, 1, 2, 3, 4, 5, 6, 7].map((i) => `queued ${i}`).concat('sealed before, sent after'),
    );
    const s = ids(got);
    // 2 per session: queued 4 and the late one share the third session; queued 5 starts a fourth.
    assert.deepEqual(s.slice(0, 8), [s[0], s[0], s[2], s[2], s[4], s[5], s[5], s[7]]);
    assert.equal(new Set(s.slice(0, 8)).size, 5);
    assert.equal(toHex(late.sessionId), s[4]);
    assert.equal(s[8], s[4]);
    assert.deepEqual(bob.errors, []);
  });

  it('a responder whose session is due starts the next one itself', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const alice = await peer(aliceId);
    const bob = await peer(bobId, { rotation: { maxMessages: 2 } });
    await alice.client.send(bobId.did, text('hi bob'));
    const [first] = await receive(bob.client, 1);
    const a = toHex(first!.sessionId);
    await bob.client.send(aliceId.did, text('reply in the same session'));
    await bob.client.send(aliceId.did, text('reply in a new session'));
    const replies = await receive(alice.client, 2);
    assert.deepEqual(
      replies.map((m) => str(m.payload)),
      ['reply in the same session', 'reply in a new session'],
    );
    assert.equal(toHex(replies[0]!.sessionId), a);
    const b = toHex(replies[1]!.sessionId);
    assert.notEqual(b, a);
    // Alice adopted Bob's new session and sends in it.
    await alice.client.send(bobId.did, text('in your session'));
    const [back] = await receive(bob.client, 1);
    assert.equal(toHex(back!.sessionId), b);
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  });

  it('a rotation whose bundle fetch is refused keeps the current session, and retries after rotationRetryMs', async () => {
    // One prekey fetch per minute per connection: the first handshake uses it, the rotations are refused.
    const strict = await startRelay({ redisUrl: redis.url, env: { RELAY_PREKEY_FETCHES_PER_MINUTE: '1' } });
    const refused = async (): Promise<number> => {
      const text = await (await fetch(`${strict.adminUrl}/metrics`)).text();
      const line = text
        .split('\n')
        .find((l) => l.startsWith('relay_prekey_fetches_total{') && l.includes('result="PREKEY_RATE_LIMITED"'));
      return line === undefined ? 0 : Number(line.split(' ').pop());
    };
    try {
      const aliceId = Ed25519Identity.generate();
      const bobId = Ed25519Identity.generate();
      let now = Date.now();
      const bob = await peer(bobId);
      const alice = await peer(
        aliceId,
        { rotation: { maxMessages: 1 }, rotationRetryMs: 60_000, clock: () => now },
        new InMemorySessionStore(),
        strict.wsUrl,
      );
      await alice.client.send(bobId.did, text('first'));
      assert.equal(await refused(), 0);
      await alice.client.send(bobId.did, text('second: rotation refused'));
      assert.equal(await refused(), 1);
      now += 59_999;
      await alice.client.send(bobId.did, text('third: no new attempt yet'));
      assert.equal(await refused(), 1);
      now += 1;
      await alice.client.send(bobId.did, text('fourth: tried again'));
      assert.equal(await refused(), 2);
      const got = await receive(bob.client, 4);
      assert.deepEqual(
        got.map((m) => str(m.payload).split(':')[0]),
        ['first', 'second', 'third', 'fourth'],
      );
      assert.equal(new Set(ids(got)).size, 1, 'all in the first session');
      assert.deepEqual(alice.rotations, []);
      assert.deepEqual([...alice.errors, ...bob.errors], []);
      await alice.client.close();
      assert.throws(
        () =>
          new SessionManager({
            identity: aliceId,
            store: new InMemorySessionStore(),
            provider: nodeCrypto,
            verify: verifyEd25519,
            rotationRetryMs: -1,
          }),
        { code: 'BAD_FIELD' },
      );
    } finally {
      await strict.stop();
    }
  });

  it('lrelay send --rotate-messages 1: the second run starts a new session', async () => {
    const alice = Ed25519Identity.generate();
    const bob = Ed25519Identity.generate();
    const aliceKey = join(dir, 'alice.json');
    const bobKey = join(dir, 'bob.json');
    await writeKeyFile(aliceKey, alice);
    await writeKeyFile(bobKey, bob);
    const publish = await runCli(['listen', '--relay', relay.wsUrl, '--key', bobKey, '--timeout', '5']).done;
    assert.equal(publish.code, 0, publish.stderr);
    const bobState = stateDirForKeyFile(bobKey);
    const oneTimeBefore = (await readdir(bobState)).filter((f) => f.startsWith('otk-')).length;
    for (const round of [1, 2]) {
      const sent = await runCli([
        'send',
        '--relay',
        relay.wsUrl,
        '--key',
        aliceKey,
        '--to',
        bob.did,
        '--rotate-messages',
        '1',
        '--text',
        `round ${round}`,
      ]).done;
      assert.equal(sent.code, 0, sent.stderr);
    }
    const heard = await runCli(['listen', '--relay', relay.wsUrl, '--key', bobKey, '--count', '2', '--timeout', '20'])
      .done;
    assert.equal(heard.code, 0, heard.stderr);
    assert.deepEqual(
      heard.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { text: string }).text),
      ['round 1', 'round 2'],
    );
    // Two handshakes: two one-time prekeys of each kind were used (listen refills only below half).
    assert.equal((await readdir(bobState)).filter((f) => f.startsWith('otk-')).length, oneTimeBefore - 4);

    const bad = await runCli([
      'send',
      '--relay',
      relay.wsUrl,
      '--key',
      aliceKey,
      '--to',
      bob.did,
      '--rotate-seconds',
      '0',
      '--text',
      'x',
    ]).done;
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error: USAGE: --rotate-seconds must be a positive number of seconds/);
  });
});
