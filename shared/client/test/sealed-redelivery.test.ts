/**
 * Sealed durable messages survive a crash between opening and acknowledging
 * (docs/client.md, "Opened, not yet acknowledged"), against real relay
 * processes on a private Redis, with real crypto and the file store: a
 * listener process that opens a message and is SIGKILLed before acking; the
 * next instance with the same state directory gets the redelivery exactly
 * once. Replays under a new message id are still refused; the per-peer
 * bound; the record format the store held before.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  type InboundMessage,
  InMemorySessionStore,
  packFields,
  RelayClient,
  SessionManager,
  type SessionManagerOptions,
  type SessionStore,
  toHex,
  unpackFields,
} from '@libertaria/client';
import { FileSessionStore } from '@libertaria/client/node';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { nextMessage, sealedPeer, str, text, within } from '../../../test-support/client-harness.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { decodePeerRecord, encodePeerRecord } from '../src/peer-record.js';

const crashScript = fileURLToPath(new URL('./support/open-then-crash.js', import.meta.url));

function runCrashingListener(
  relayUrl: string,
  keyFile: string,
  stateDir: string,
): Promise<{ signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [crashScript, relayUrl, keyFile, stateDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const done = new Promise<{ signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (_code, signal) => resolve({ signal, stdout, stderr }));
  });
  // A process start, a connect and one message: 60 s is several times that on a loaded CI machine.
  return within(done, 60_000, 'the crashing listener', () => ({ stdout, stderr })).finally(() => child.kill('SIGKILL'));
}

/** Waits until `errors` holds `n` entries (errors arrive asynchronously, after the frame is opened). */
async function errorsReach(errors: unknown[], n: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (errors.length < n) {
    if (Date.now() > deadline)
      assert.fail(
        `expected ${n} error(s), got ${errors.length}: ${errors.map((e) => String((e as { error?: unknown }).error ?? e)).join('; ')}`,
      );
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('sealed durable messages: opened, crashed, redelivered', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let dir: string;
  const clients: RelayClient[] = [];

  function peer(identity: Ed25519Identity, store: SessionStore, options: Partial<SessionManagerOptions> = {}) {
    return sealedPeer({ url: relay.wsUrl, identity, store, sessions: options, track: clients });
  }

  /** A fresh manager over the same store, to read what is stored. */
  function reader(identity: Ed25519Identity, store: SessionStore): SessionManager {
    return new SessionManager({ identity, store, provider: nodeCrypto, verify: verifyEd25519 });
  }

  before(async () => {
    redis = await startRedis();
    relay = await startRelay({ redisUrl: redis.url });
    dir = await mkdtemp(join(tmpdir(), 'lrelay-redelivery-'));
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await relay?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a listener killed after opening, before acking: the next instance gets the message exactly once', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const bobKey = join(dir, 'bob.json');
    const bobDir = join(dir, 'bob.state');
    await writeKeyFile(bobKey, bobId);
    // Bob publishes his prekeys once, then goes offline.
    await (await peer(bobId, new FileSessionStore(bobDir))).client.close();
    const alice = await peer(aliceId, new InMemorySessionStore());
    await alice.client.send(bobId.did, text('first, opened then crashed'));
    await alice.client.send(bobId.did, text('second'));

    const crashed = await runCrashingListener(relay.wsUrl, bobKey, bobDir);
    assert.equal(crashed.signal, 'SIGKILL', crashed.stderr);
    const line = JSON.parse(crashed.stdout) as { text: string; id: string };
    assert.equal(line.text, 'first, opened then crashed');
    assert.equal(crashed.stderr, '');
    // What the crash left: the advanced state and the one kept plaintext (the second was
    // either not opened or opened and kept too, depending on timing).
    const kept = await reader(bobId, new FileSessionStore(bobDir)).openedUnacknowledged(aliceId.did);
    assert.ok(kept >= 1 && kept <= 2, `kept ${kept}`);

    await alice.client.send(bobId.did, text('third, after the crash'));
    const bob = await peer(bobId, new FileSessionStore(bobDir));
    const got: InboundMessage[] = [];
    for (let i = 0; i < 3; i++) {
      const m = await nextMessage(bob.client);
      await m.ack();
      got.push(m);
    }
    assert.deepEqual(
      got.map((m) => str(m.payload)),
      ['first, opened then crashed', 'second', 'third, after the crash'],
    );
    assert.equal(toHex(got[0]!.messageId), line.id);
    assert.deepEqual(bob.errors, []);
    assert.equal(await bob.sessions.openedUnacknowledged(aliceId.did), 0);
    assert.equal(await reader(bobId, new FileSessionStore(bobDir)).openedUnacknowledged(aliceId.did), 0);

    // Nothing comes back on the next start: the next message Bob sees is a new one.
    await bob.client.close();
    const again = await peer(bobId, new FileSessionStore(bobDir));
    await alice.client.send(bobId.did, text('fourth'));
    assert.equal(str((await nextMessage(again.client)).payload), 'fourth');
    assert.deepEqual(again.errors, []);
  });

  it('forgotten but not yet acked to the relay: the redelivery is refused, not delivered again', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const bobStore = new InMemorySessionStore();
    let bob = await peer(bobId, bobStore);
    const alice = await peer(aliceId, new InMemorySessionStore());
    await alice.client.send(bobId.did, text('handled'));
    const m = await nextMessage(bob.client);
    // The first half of ack(): the plaintext is forgotten; then the process "dies" before the ACK.
    await bob.sessions.acknowledge(aliceId.did, m.messageId);
    await bob.client.close();

    bob = await peer(bobId, bobStore);
    await alice.client.send(bobId.did, text('next'));
    const n = await nextMessage(bob.client);
    assert.equal(str(n.payload), 'next');
    await errorsReach(bob.errors, 1);
    assert.equal(bob.errors[0]!.error.code, 'DUPLICATE_MESSAGE');
    assert.equal(toHex(bob.errors[0]!.messageId!), toHex(m.messageId));
  });

  it('a sealed frame replayed under a new message id is refused, kept or not', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const bob = await peer(bobId, new InMemorySessionStore());
    const alice = await peer(aliceId, new InMemorySessionStore());
    await alice.client.send(bobId.did, text('start'));
    await (await nextMessage(bob.client)).ack();
    await bob.client.send(aliceId.did, text('confirm'));
    await (await nextMessage(alice.client)).ack();

    // Alice's own sealed frame, written by an unsealed client (same identity) under three message ids.
    const { body, sessionId } = await alice.sessions.seal(alice.client, bobId.did, text('once only'));
    const raw = new RelayClient({ relays: [relay.wsUrl], identity: aliceId, sealing: false });
    clients.push(raw);
    await raw.connect();
    const first = await raw.send(bobId.did, body, { sessionId });
    const original = await nextMessage(bob.client);
    assert.equal(str(original.payload), 'once only');
    assert.deepEqual(original.messageId, first.messageId);
    assert.equal(await bob.sessions.openedUnacknowledged(aliceId.did), 1);

    const replayWhileKept = await raw.send(bobId.did, body, { sessionId });
    await errorsReach(bob.errors, 1);
    await original.ack();
    const replayAfterAck = await raw.send(bobId.did, body, { sessionId });
    await errorsReach(bob.errors, 2);
    assert.deepEqual(
      bob.errors.map((e) => [e.error.code, toHex(e.messageId!)]),
      [
        ['DUPLICATE_MESSAGE', toHex(replayWhileKept.messageId)],
        ['DUPLICATE_MESSAGE', toHex(replayAfterAck.messageId)],
      ],
    );
    // Refused frames are acknowledged: the queue moves on.
    await alice.client.send(bobId.did, text('after the replays'));
    assert.equal(str((await nextMessage(bob.client)).payload), 'after the replays');
    assert.equal(bob.client.stats.bufferedInbound, 0);
  });

  it('the kept plaintext answers only the same bytes under the same id', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const bob = await peer(bobId, new InMemorySessionStore());
    const alice = await peer(aliceId, new InMemorySessionStore());
    const x = await alice.sessions.seal(alice.client, bobId.did, text('x'));
    const y = await alice.sessions.seal(alice.client, bobId.did, text('y'));
    const id = new Uint8Array(16).fill(7);
    assert.equal(str(await bob.sessions.open(aliceId.did, x.sessionId, x.body, id)), 'x');
    // The redelivery of x: from the kept copy (its key is spent).
    assert.equal(str(await bob.sessions.open(aliceId.did, x.sessionId, x.body, id)), 'x');
    // Other bytes under x's id are decrypted as themselves, never answered with x.
    assert.equal(str(await bob.sessions.open(aliceId.did, y.sessionId, y.body, id)), 'y');
    const tampered = Uint8Array.from(y.body);
    tampered[tampered.length - 1]! ^= 1;
    await assert.rejects(bob.sessions.open(aliceId.did, y.sessionId, tampered, id), {
      code: /^(DUPLICATE_MESSAGE|DECRYPT_FAILED)$/,
    });
    // Without a message id (fast frames) nothing is kept.
    const z = await alice.sessions.seal(alice.client, bobId.did, text('z'));
    assert.equal(str(await bob.sessions.open(aliceId.did, z.sessionId, z.body)), 'z');
    await assert.rejects(bob.sessions.open(aliceId.did, z.sessionId, z.body), { code: 'DUPLICATE_MESSAGE' });
    assert.equal(await bob.sessions.openedUnacknowledged(aliceId.did), 1);
  });

  it('keeps at most maxOpenedPerPeer plaintexts per peer; the oldest is forgotten', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const bobStore = new InMemorySessionStore();
    let bob = await peer(bobId, bobStore, { maxOpenedPerPeer: 2 });
    const alice = await peer(aliceId, new InMemorySessionStore());
    for (let i = 0; i < 3; i++) await alice.client.send(bobId.did, text(`m${i}`));
    for (let i = 0; i < 3; i++) assert.equal(str((await nextMessage(bob.client)).payload), `m${i}`);
    assert.equal(await bob.sessions.openedUnacknowledged(aliceId.did), 2);
    await bob.client.close();
    // None was acked: all three come back; the oldest no longer opens.
    bob = await peer(bobId, bobStore, { maxOpenedPerPeer: 2 });
    const got = [await nextMessage(bob.client), await nextMessage(bob.client)];
    assert.deepEqual(
      got.map((m) => str(m.payload)),
      ['m1', 'm2'],
    );
    await errorsReach(bob.errors, 1);
    assert.equal(bob.errors[0]!.error.code, 'DUPLICATE_MESSAGE');
    assert.throws(
      () =>
        new SessionManager({
          identity: bobId,
          store: bobStore,
          provider: nodeCrypto,
          verify: verifyEd25519,
          maxOpenedPerPeer: 0,
        }),
      { code: 'BAD_FIELD' },
    );
  });

  it('reads the peer record format written before the opened set existed', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const bobStore = new InMemorySessionStore();
    const bob = await peer(bobId, bobStore);
    const alice = await peer(aliceId, new InMemorySessionStore());
    await alice.client.send(bobId.did, text('one'));
    await (await nextMessage(bob.client)).ack();
    const [name] = await bobStore.list('session-');
    const current = decodePeerRecord(nodeCrypto, (await bobStore.get(name!))!, {});
    // Format 1: session triples only.
    const fields = unpackFields(encodePeerRecord(current)).slice(2);
    await bobStore.put(name!, packFields(fields));
    await bob.client.close();
    const restarted = await peer(bobId, bobStore);
    await alice.client.send(bobId.did, text('two'));
    const m = await nextMessage(restarted.client);
    assert.equal(str(m.payload), 'two');
    assert.equal(toHex(m.sessionId), toHex(current.entries[0]!.session.sessionId));
    assert.deepEqual(restarted.errors, []);
    assert.throws(() => decodePeerRecord(nodeCrypto, packFields([Uint8Array.of(9)]), {}), {
      code: 'SESSION_STATE_INVALID',
    });
  });
});
