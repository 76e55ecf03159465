/**
 * Sealed by default: RelayClient with a SessionManager against real relay
 * processes on a private Redis. Sealed durable and fast messages both ways,
 * the first message to an offline peer, sessions across restarts of both
 * peers (file store), poison frames, the CLI (two runs reuse the session),
 * and a scan of every key and value in Redis for plaintext.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type InboundMessage,
  InMemorySessionStore,
  RelayClient,
  SessionManager,
  type SessionStore,
} from '@libertaria/client';
import { FileSessionStore, stateDirForKeyFile } from '@libertaria/client/node';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { Redis } from 'ioredis';
import {
  nextMessage,
  cli as runCli,
  type SealedPeer,
  sealedPeer,
  str,
  text,
} from '../../../test-support/client-harness.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const cli = (args: string[], input = '') => runCli(args, input).done;

/** Resolves once the relay holds this client's prekeys (its SessionManager publishes on connect). */
async function waitPublished(client: RelayClient): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await client.prekeyStatus()).published) {
    if (Date.now() > deadline) assert.fail('prekeys not published within 30 s');
    await new Promise((r) => setTimeout(r, 50));
  }
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

/** Every key and every value in Redis, whatever its type, as buffers. */
async function dumpRedis(url: string): Promise<Buffer[]> {
  const redis = new Redis(url);
  try {
    const out: Buffer[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await redis.scanBuffer(cursor, 'COUNT', 1000);
      cursor = String(next);
      for (const key of keys) {
        out.push(key);
        const type = await redis.type(key);
        if (type === 'string') {
          const v = await redis.getBuffer(key);
          if (v) out.push(v);
        } else if (type === 'list') out.push(...(await redis.lrangeBuffer(key, 0, -1)));
        else if (type === 'hash') {
          const h = await redis.hgetallBuffer(key);
          for (const [k, v] of Object.entries(h)) out.push(Buffer.from(k), v);
        } else if (type === 'set') out.push(...(await redis.smembersBuffer(key)));
        else if (type === 'zset') out.push(...(await redis.zrangeBuffer(key, 0, -1)));
        else if (type === 'stream') {
          for (const [id, fields] of await redis.xrangeBuffer(key, '-', '+')) out.push(id, ...fields);
        } else assert.fail(`unexpected Redis type ${type} for ${key.toString('hex')}`);
      }
    } while (cursor !== '0');
    return out;
  } finally {
    redis.disconnect();
  }
}

describe('sealed sessions against a real relay', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  let dir: string;
  const clients: RelayClient[] = [];

  function _manager(identity: Ed25519Identity, store: SessionStore): SessionManager {
    return new SessionManager({ identity, store, provider: nodeCrypto, verify: verifyEd25519, oneTimePrekeys: 5 });
  }

  function peer(identity: Ed25519Identity, store: SessionStore, url: string = relay.wsUrl): Promise<SealedPeer> {
    return sealedPeer({ url, identity, store, track: clients });
  }

  before(async () => {
    redis = await startRedis();
    relay = await startRelay({ redisUrl: redis.url });
    dir = await mkdtemp(join(tmpdir(), 'lrelay-sealed-'));
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await relay?.stop();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('two clients exchange sealed durable and fast messages both ways', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const alice = await peer(aliceId, new InMemorySessionStore(), relay.wsUrl);
    const bob = await peer(bobId, new InMemorySessionStore(), relay.tcpUrl);
    assert.ok(alice.client.sealed);

    await alice.client.send(bobId.did, text('hello bob'));
    const [first] = await receive(bob.client, 1);
    assert.equal(str(first!.payload), 'hello bob');
    assert.equal(first!.from, aliceId.did);

    await bob.client.send(aliceId.did, text('hello alice'));
    await bob.client.send(aliceId.did, text('fast to alice'), { durable: false });
    const replies = await receive(alice.client, 2);
    assert.deepEqual(
      replies.map((m) => [str(m.payload), m.durable]),
      [
        ['hello alice', true],
        ['fast to alice', false],
      ],
    );
    await alice.client.send(bobId.did, text('fast to bob'), { durable: false });
    for (let i = 0; i < 5; i++) await alice.client.send(bobId.did, text(`durable ${i}`));
    const more = await receive(bob.client, 6);
    assert.deepEqual(
      more.map((m) => str(m.payload)),
      ['fast to bob', 'durable 0', 'durable 1', 'durable 2', 'durable 3', 'durable 4'],
    );
    // One session each way: the sealed frames carry its id.
    assert.deepEqual(more[1]!.sessionId, replies[0]!.sessionId);
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  });

  it('seals the first messages to an offline peer; Redis holds no plaintext; the peer opens them later', async () => {
    const marker = `PLAINTEXT-MARKER-${Date.now()}-zq8`;
    const control = `CONTROL-MARKER-${Date.now()}-zq8`;
    const aliceId = Ed25519Identity.generate();
    const carolId = Ed25519Identity.generate();
    const carolStore = new InMemorySessionStore();
    // Carol publishes once, then goes offline.
    const carolOnce = await peer(carolId, carolStore);
    await carolOnce.client.close();
    const oneTimeBefore = (await carolStore.list('otk-')).length;

    const alice = await peer(aliceId, new InMemorySessionStore());
    for (let i = 0; i < 3; i++) await alice.client.send(carolId.did, text(`${marker} #${i}`));
    // The scan is able to find plaintext: an unsealed message carrying the control marker.
    const plain = new RelayClient({ relays: [relay.wsUrl], identity: Ed25519Identity.generate(), sealing: false });
    clients.push(plain);
    await plain.connect();
    await plain.send(Ed25519Identity.generate().did, text(control));

    const values = await dumpRedis(redis.url);
    assert.ok(values.length > 10, 'Redis holds the queues');
    assert.ok(
      values.some((v) => v.includes(control)),
      'the scan finds an unsealed payload',
    );
    for (const v of values) assert.ok(!v.includes(marker), 'a sealed payload was found in plaintext in Redis');
    assert.ok(!values.some((v) => v.includes('PLAINTEXT-MARKER')));

    // Carol restarts with her stored prekeys and opens all three.
    const carol = await peer(carolId, carolStore);
    const got = await receive(carol.client, 3);
    assert.deepEqual(
      got.map((m) => str(m.payload)),
      [0, 1, 2].map((i) => `${marker} #${i}`),
    );
    // Exactly one one-time prekey of each kind was consumed (then refilled to the target count on connect).
    assert.equal(oneTimeBefore, 10);
    assert.deepEqual(carol.errors, []);
    // And she can answer in the same session.
    await carol.client.send(aliceId.did, text('got them'));
    const [answer] = await receive(alice.client, 1);
    assert.equal(str(answer!.payload), 'got them');
  });

  it('reports and acknowledges a frame that does not open, and delivers the next one', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const bob = await peer(bobId, new InMemorySessionStore());
    const alice = await peer(aliceId, new InMemorySessionStore());
    const raw = new RelayClient({ relays: [relay.wsUrl], identity: aliceId, sealing: false });
    clients.push(raw);
    await raw.connect();
    // Under a session id, as a sealed frame comes, but bytes that open under no session.
    await raw.send(bobId.did, text('not sealed at all'), { sessionId: new Uint8Array(16).fill(7) });
    await alice.client.send(bobId.did, text('sealed one'));
    const [m] = await receive(bob.client, 1);
    assert.equal(str(m!.payload), 'sealed one');
    assert.equal(bob.errors.length, 1);
    assert.equal(bob.errors[0]!.error.code, 'BAD_FIELD');
    // Acknowledged: after a reconnect nothing comes back.
    assert.equal(bob.client.stats.unackedInbound, 0);
    assert.equal(bob.client.stats.pendingSends, 0);
  });

  it('keeps sessions and prekeys across a restart of both peers (file store)', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const aliceDir = join(dir, 'alice.state');
    const bobDir = join(dir, 'bob.state');
    let alice = await peer(aliceId, new FileSessionStore(aliceDir));
    let bob = await peer(bobId, new FileSessionStore(bobDir));
    await alice.client.send(bobId.did, text('before restart'));
    assert.equal(str((await receive(bob.client, 1))[0]!.payload), 'before restart');
    await bob.client.send(aliceId.did, text('reply before restart'));
    assert.equal(str((await receive(alice.client, 1))[0]!.payload), 'reply before restart');
    await Promise.all([alice.client.close(), bob.client.close()]);

    const files = await readdir(bobDir);
    assert.ok(files.some((f) => f.startsWith('session-')));
    assert.ok(files.includes('prekeys'));
    for (const f of files) assert.equal((await stat(join(bobDir, f))).mode & 0o777, 0o600, f);
    const bobOneTime = files.filter((f) => f.startsWith('otk-')).sort();

    alice = await peer(aliceId, new FileSessionStore(aliceDir));
    bob = await peer(bobId, new FileSessionStore(bobDir));
    await alice.client.send(bobId.did, text('after restart'));
    await alice.client.send(bobId.did, text('after restart, fast'), { durable: false });
    assert.deepEqual(
      (await receive(bob.client, 2)).map((m) => str(m.payload)),
      ['after restart', 'after restart, fast'],
    );
    await bob.client.send(aliceId.did, text('reply after restart'));
    assert.equal(str((await receive(alice.client, 1))[0]!.payload), 'reply after restart');
    // No new handshake: none of Bob's one-time prekeys was used.
    assert.deepEqual((await readdir(bobDir)).filter((f) => f.startsWith('otk-')).sort(), bobOneTime);
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  });

  it('hands an unsealed message to a sealed client marked sealed: false, in order, and acknowledges it only when the application does', async () => {
    const aliceId = Ed25519Identity.generate();
    const bobId = Ed25519Identity.generate();
    const warnings: string[] = [];
    const bob = await sealedPeer({
      url: relay.wsUrl,
      identity: bobId,
      store: new InMemorySessionStore(),
      track: clients,
      client: { logger: { warn: (msg: string) => void warnings.push(msg) } },
    });
    const alice = await peer(aliceId, new InMemorySessionStore());
    const raw = new RelayClient({ relays: [relay.tcpUrl], identity: aliceId, sealing: false });
    clients.push(raw);
    await raw.connect();
    await alice.client.send(bobId.did, text('sealed first'));
    await raw.send(bobId.did, text('in the clear'));
    await raw.send(bobId.did, text('in the clear again'));
    await alice.client.send(bobId.did, text('sealed last'));
    const got: InboundMessage[] = [];
    for (let i = 0; i < 4; i++) got.push(await nextMessage(bob.client));
    assert.deepEqual(
      got.map((m) => [str(m.payload), m.sealed, m.from]),
      [
        ['sealed first', true, aliceId.did],
        ['in the clear', false, aliceId.did],
        ['in the clear again', false, aliceId.did],
        ['sealed last', true, aliceId.did],
      ],
    );
    assert.deepEqual(bob.errors, []);
    assert.equal(warnings.filter((w) => /unsealed message/.test(w)).length, 1, 'one warning per sender');
    // Not acknowledged before the application does: all four are still owed to the relay.
    assert.equal(bob.client.stats.unackedInbound, 4);
    for (const m of got) await m.ack();
    assert.equal(bob.client.stats.unackedInbound, 0);
  });

  it('lrelay listen (sealed) shows an unsealed message marked "sealed": false instead of dropping it', async () => {
    const alice = Ed25519Identity.generate();
    const bob = Ed25519Identity.generate();
    const aliceKey = join(dir, 'mixed-alice.json');
    const bobKey = join(dir, 'mixed-bob.json');
    await writeKeyFile(aliceKey, alice);
    await writeKeyFile(bobKey, bob);
    const sent = await cli([
      'send',
      '--unsealed',
      '--relay',
      relay.tcpUrl,
      '--key',
      aliceKey,
      '--to',
      bob.did,
      '--text',
      'plain',
    ]);
    assert.equal(sent.code, 0, sent.stderr);
    const heard = await cli(['listen', '--relay', relay.wsUrl, '--key', bobKey, '--count', '1', '--timeout', '30']);
    assert.equal(heard.code, 0, heard.stderr);
    const line = JSON.parse(heard.stdout) as Record<string, unknown>;
    assert.equal(line['text'], 'plain');
    assert.equal(line['from'], alice.did);
    assert.equal(line['sealed'], false);
    // Printed, then acknowledged: a second listen finds nothing.
    const again = await cli(['listen', '--unsealed', '--relay', relay.wsUrl, '--key', bobKey, '--timeout', '3']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, '');
  });

  it('lrelay send → listen is sealed by default, and a second run reuses the session', async () => {
    const alice = Ed25519Identity.generate();
    const bob = Ed25519Identity.generate();
    const aliceKey = join(dir, 'cli-alice.json');
    const bobKey = join(dir, 'cli-bob.json');
    await writeKeyFile(aliceKey, alice);
    await writeKeyFile(bobKey, bob);
    // Bob listens once: that publishes his prekeys.
    const publish = await cli(['listen', '--relay', relay.wsUrl, '--key', bobKey, '--timeout', '5']);
    assert.equal(publish.code, 0, publish.stderr);
    const bobState = stateDirForKeyFile(bobKey);
    const oneTimeAfterPublish = (await readdir(bobState)).filter((f) => f.startsWith('otk-'));
    assert.ok(oneTimeAfterPublish.length > 0);

    const sentTexts: string[] = [];
    for (const round of [1, 2]) {
      const message = `sealed cli round ${round}`;
      sentTexts.push(message);
      const sent = await cli(['send', '--relay', relay.tcpUrl, '--key', aliceKey, '--to', bob.did, '--text', message]);
      assert.equal(sent.code, 0, sent.stderr);
      const heard = await cli(['listen', '--relay', relay.wsUrl, '--key', bobKey, '--count', '1', '--timeout', '20']);
      assert.equal(heard.code, 0, heard.stderr);
      const line = JSON.parse(heard.stdout) as Record<string, unknown>;
      assert.equal(line['text'], message);
      assert.equal(line['from'], alice.did);
      assert.equal(line['durable'], true);
      assert.equal(line['sealed'], true);
      const aliceState = await readdir(stateDirForKeyFile(aliceKey));
      assert.equal(aliceState.filter((f) => f.startsWith('session-')).length, 1, `round ${round}`);
      assert.equal((await readdir(bobState)).filter((f) => f.startsWith('session-')).length, 1);
    }
    // Only the first run made a handshake: exactly one X25519 and one KEM one-time prekey of Bob's are gone.
    const left = (await readdir(bobState)).filter((f) => f.startsWith('otk-'));
    assert.equal(left.length, oneTimeAfterPublish.length - 2);
    assert.deepEqual(sentTexts.length, 2);
  });

  it('a RelayClient given no sessions seals by default: nothing readable in Redis, opened by the recipient, a warning about memory-only sessions once per logger', async () => {
    const marker = `DEFAULT-SEALED-${Date.now()}-k3`;
    const warnings: string[] = [];
    const logger = { warn: (message: string) => warnings.push(message) };
    const bobId = Ed25519Identity.generate();
    const bobStore = new InMemorySessionStore();
    // Bob (a store of his own, so a later run opens what came meanwhile) publishes once, then goes offline.
    const bobOnce = new RelayClient({ relays: [relay.tcpUrl], identity: bobId, sessionStore: bobStore, logger });
    clients.push(bobOnce);
    await bobOnce.connect();
    assert.ok(bobOnce.sealed);
    await waitPublished(bobOnce);
    await bobOnce.close();
    assert.deepEqual(warnings, [], 'a client with a sessionStore says nothing');

    // Alice: relays and identity, nothing else.
    const alice = new RelayClient({ relays: [relay.wsUrl], identity: Ed25519Identity.generate(), logger });
    const alice2 = new RelayClient({ relays: [relay.wsUrl], identity: Ed25519Identity.generate(), logger });
    clients.push(alice, alice2);
    assert.ok(alice.sealed && alice2.sealed);
    assert.equal(warnings.length, 1, 'one warning for two clients on one logger');
    assert.match(warnings[0]!, /in memory only.*sessionStore/);
    await alice.connect();
    await alice.send(bobId.did, text(marker));
    for (const v of await dumpRedis(redis.url))
      assert.ok(!v.includes(marker), 'plaintext of a default client in Redis');

    const bob = new RelayClient({ relays: [relay.tcpUrl], identity: bobId, sessionStore: bobStore, logger });
    clients.push(bob);
    await bob.connect();
    const [m] = await receive(bob, 1);
    assert.equal(str(m!.payload), marker);
    assert.equal(m!.sealed, true);
    assert.equal(m!.from, alice.did);
    assert.equal(warnings.length, 1);
  });

  it('sealing: false warns once per logger, at the first clear payload, not before', async () => {
    const warnings: string[] = [];
    const logger = { warn: (message: string) => warnings.push(message) };
    const toId = Ed25519Identity.generate();
    const plain = new RelayClient({
      relays: [relay.wsUrl],
      identity: Ed25519Identity.generate(),
      sealing: false,
      logger,
    });
    clients.push(plain);
    assert.equal(plain.sealed, false);
    await plain.connect();
    await plain.prekeyStatus();
    assert.deepEqual(warnings, [], 'no payload yet, no warning');
    // A payload sealed by the caller (MultipathSession does this) names its session: no warning.
    await plain.send(toId.did, text('sealed elsewhere'), { sessionId: new Uint8Array(16).fill(3) });
    assert.deepEqual(warnings, []);
    await plain.send(toId.did, text('clear 1'));
    await plain.send(toId.did, text('clear 2'));
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /sealing: false.*readable by every relay/);
  });
});
