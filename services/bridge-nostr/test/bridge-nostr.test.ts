/**
 * The Nostr-specific behaviour beyond the shared contract, against real
 * Nostr relays on loopback: kind-10050 inbox relays, NIP-42 AUTH, a relay that
 * is down, malformed events, the key store and the HTTP listener.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { type BridgeInboundMessage, nostrIdentity } from '@libertaria/bridge-kit';
import { Ed25519Identity } from '@libertaria/identity';
import { LibertariaError } from '@libertaria/protocol';
import * as nip17 from 'nostr-tools/nip17';
import * as nip44 from 'nostr-tools/nip44';
import { finalizeEvent, generateSecretKey, getPublicKey } from 'nostr-tools/pure';
import { WebSocketServer } from 'ws';
import { counterTotal } from '../../../test-support/metrics.js';
import { freePort } from '../../../test-support/redis.js';
import { startBridgeHttpServer } from '../src/http-server.js';
import { NostrKeyStore } from '../src/key-store.js';
import { makeBridge } from './support/bridge.js';
import { NostrUser } from './support/nostr-client.js';
import { startNostrRelay } from './support/nostr-relay.js';

const now = (): number => Math.floor(Date.now() / 1000);
const frameId = (): string => randomBytes(16).toString('hex');

/**
 * Polls `check`. The default deadline is sized for a loaded 2-core CI machine
 * (these events take well under a second on a quiet one); `seen` says what
 * the test observed instead, in the timeout error.
 */
async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  seen?: () => unknown,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      const saw = seen === undefined ? '' : `; saw: ${JSON.stringify(seen())}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${saw}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('bridge-nostr with real relays', () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('a conversation: a Nostr user reads the bridged DM and answers on two relays; the bridge delivers it once', async () => {
    const relayA = await startNostrRelay();
    const relayB = await startNostrRelay();
    cleanups.push(relayA.stop, relayB.stop);
    const { bridge, metrics } = await makeBridge([relayA.url, relayB.url]);
    cleanups.push(() => bridge.close());
    const inbound: BridgeInboundMessage[] = [];
    bridge.onInbound(async (m) => {
      inbound.push(m);
    });
    await bridge.start();
    const alice = Ed25519Identity.generate().did;
    const aliceNpub = await bridge.bridgeIdentity(alice);
    const bob = new NostrUser([relayA.url, relayB.url]);
    const incoming = bob.nextRumor(aliceNpub, 20_000, [relayB.url]);
    const sent = await bridge.send({
      type: 'private',
      id: frameId(),
      from: alice,
      to: bob.identity,
      text: 'hi bob, from libertaria',
    });
    assert.deepEqual([...sent.acceptedBy].sort(), [relayA.url, relayB.url].sort());
    const question = await incoming;
    assert.equal(question.content, 'hi bob, from libertaria');
    // Bob answers as a Nostr app does: a NIP-17 reply (e tag) in one gift wrap, published to both relays.
    const reply = nip17.wrapEvent(bob.secret, { publicKey: question.pubkey }, 'hi alice, from nostr', undefined, {
      eventId: question.id,
    });
    await bob.publishEverywhere(reply);
    await until(
      'the answer',
      () => inbound.some((m) => m.text === 'hi alice, from nostr'),
      () => ({ inbound: inbound.map((m) => m.text), health: bridge.health() }),
    );
    await until('the second copy seen', async () => (await counterTotal(metrics.duplicates)) >= 1);
    const answers = inbound.filter((m) => m.text === 'hi alice, from nostr');
    assert.equal(answers.length, 1);
    assert.deepEqual(
      { type: answers[0]!.type, to: answers[0]!.to, from: answers[0]!.from.uri },
      { type: 'private', to: alice, from: bob.identity.uri },
    );
    assert.equal(await counterTotal(metrics.delivered, { type: 'private' }), 1);
  });

  it('drops and reconnects a relay that stops answering pings (half-open connection)', async () => {
    // A relay that accepts the WebSocket but never answers pings, as a dead peer behind a NAT would.
    const silent = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong: false });
    cleanups.push(() => new Promise((r) => silent.close(() => r())));
    await new Promise((r) => silent.once('listening', r));
    let connections = 0;
    silent.on('connection', () => {
      connections += 1;
    });
    const url = `ws://127.0.0.1:${(silent.address() as { port: number }).port}/`;
    const { bridge, metrics } = await makeBridge([url], { pingIntervalMs: 100 });
    cleanups.push(() => bridge.close());
    await bridge.start();
    // The server counts a connection before the bridge sees it open: wait for both sides.
    await until(
      'three connections',
      () => connections >= 3,
      () => ({ connections }),
    );
    await until(
      'three opens counted by the bridge',
      async () => (await counterTotal(metrics.connects, { result: 'open' })) >= 3,
      () => ({ connections, health: bridge.health() }),
    );
  });

  it('tries a failing inbound handler again with backoff, and delivers once it accepts', async () => {
    const relay = await startNostrRelay();
    cleanups.push(relay.stop);
    const { bridge, metrics } = await makeBridge([relay.url]);
    cleanups.push(() => bridge.close());
    let calls = 0;
    const accepted: BridgeInboundMessage[] = [];
    bridge.onInbound(async (m) => {
      calls += 1;
      if (calls < 3) throw new Error('queue unavailable');
      accepted.push(m);
    });
    const to = await bridge.bridgeIdentity(Ed25519Identity.generate().did);
    await bridge.start();
    await new NostrUser([relay.url]).sendPrivate(to, 'third time lucky');
    await until(
      'delivery',
      () => accepted.length === 1,
      () => ({ calls }),
    );
    assert.equal(calls, 3);
    assert.equal(await counterTotal(metrics.handlerFailures), 2);
    assert.equal(await counterTotal(metrics.delivered), 1);
  });

  it('sends to the kind-10050 inbox relays a recipient publishes, not to the configured ones', async () => {
    const configured = await startNostrRelay();
    const inbox = await startNostrRelay();
    cleanups.push(configured.stop, inbox.stop);
    const { bridge } = await makeBridge([configured.url]);
    cleanups.push(() => bridge.close());
    await bridge.start();
    const alice = Ed25519Identity.generate().did;
    const from = await bridge.bridgeIdentity(alice);
    const bob = new NostrUser([inbox.url]);
    // Bob's inbox list, published where the bridge looks it up.
    const list = finalizeEvent(
      { kind: 10050, created_at: now(), tags: [['relay', inbox.url]], content: '' },
      bob.secret,
    );
    await new NostrUser([configured.url]).publishEverywhere(list);
    const received = bob.nextPrivateMessage(from, 20_000);
    const result = await bridge.send({
      type: 'private',
      id: frameId(),
      from: alice,
      to: bob.identity,
      text: 'to your inbox',
    });
    assert.deepEqual(result.acceptedBy, [inbox.url]);
    assert.equal(await received, 'to your inbox');
    assert.equal(await counterTotal(bridge.metrics.inboxLookups, { result: 'found' }), 1);
  });

  it('answers NIP-42 AUTH and then receives gift wraps the relay keeps for authenticated readers', async () => {
    const relay = await startNostrRelay({ auth: true });
    cleanups.push(relay.stop);
    const { bridge } = await makeBridge([relay.url]);
    cleanups.push(() => bridge.close());
    const inbound: BridgeInboundMessage[] = [];
    bridge.onInbound(async (m) => {
      inbound.push(m);
    });
    const alice = Ed25519Identity.generate().did;
    const to = await bridge.bridgeIdentity(alice);
    await bridge.start();
    assert.equal(to.type, 'nostr');
    await until(
      'AUTH accepted',
      () => relay.authenticated.includes(to.type === 'nostr' ? to.pubkeyHex : ''),
      () => ({ authenticated: relay.authenticated, health: bridge.health() }),
    );
    const bob = new NostrUser([relay.url]);
    await bob.sendPrivate(to, 'behind auth');
    await until(
      'the message',
      () => inbound.some((m) => m.text === 'behind auth'),
      () => ({ inbound: inbound.map((m) => m.text), health: bridge.health() }),
    );
    assert.equal(await counterTotal(bridge.metrics.auth, { result: 'accepted' }), 1);
  });

  it('retries a relay that is down with backoff, reports it, refuses sends as retryable, and recovers', async () => {
    const port = await freePort();
    const { bridge } = await makeBridge([`ws://127.0.0.1:${port}/`], { publishTimeoutMs: 300 });
    cleanups.push(() => bridge.close());
    await bridge.start();
    const alice = Ed25519Identity.generate().did;
    await bridge.bridgeIdentity(alice);
    await until(
      'three failed attempts',
      () => (bridge.health().upstreams[0]?.attempts ?? 0) >= 3,
      () => bridge.health(),
    );
    assert.equal(bridge.health().status, 'down');
    assert.ok((await counterTotal(bridge.metrics.connects, { result: 'failed' })) >= 3);
    const bob = new NostrUser([]);
    await assert.rejects(
      bridge.send({ type: 'private', id: frameId(), from: alice, to: bob.identity, text: 'nobody listens' }),
      (err: unknown) =>
        err instanceof LibertariaError &&
        err.code === 'BRIDGE_UNAVAILABLE' &&
        (err as { retryable?: boolean }).retryable === true,
    );
    const relay = await startNostrRelay({ port });
    cleanups.push(relay.stop);
    await until(
      'reconnected',
      () => bridge.health().status === 'ok',
      () => bridge.health(),
    );
    assert.equal(bridge.health().upstreams[0]?.attempts, 0);
    const result = await bridge.send({ type: 'private', id: frameId(), from: alice, to: bob.identity, text: 'now' });
    assert.deepEqual(result.acceptedBy, [relay.url]);
  });

  it('ignores and counts malformed events: undecryptable wraps, forged seals, garbage from a hostile relay', async () => {
    const relay = await startNostrRelay();
    cleanups.push(relay.stop);
    // A hostile "relay": answers every REQ with non-JSON, a bad signature and an event of the wrong shape.
    const hostile = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    cleanups.push(() => new Promise((r) => hostile.close(() => r())));
    hostile.on('connection', (ws) => {
      ws.on('message', (data) => {
        const msg = JSON.parse(String(data));
        if (msg[0] !== 'REQ') return;
        const good = finalizeEvent({ kind: 1, created_at: now(), tags: [], content: 'x' }, generateSecretKey());
        ws.send('this is not json');
        ws.send(JSON.stringify(['EVENT', msg[1], { ...good, content: 'tampered' }]));
        ws.send(JSON.stringify(['EVENT', msg[1], { id: 'nope' }]));
      });
    });
    await new Promise((r) => hostile.once('listening', r));
    const hostileUrl = `ws://127.0.0.1:${(hostile.address() as { port: number }).port}/`;
    const { bridge, metrics } = await makeBridge([relay.url, hostileUrl]);
    cleanups.push(() => bridge.close());
    const inbound: BridgeInboundMessage[] = [];
    bridge.onInbound(async (m) => {
      inbound.push(m);
    });
    const alice = Ed25519Identity.generate().did;
    const to = await bridge.bridgeIdentity(alice);
    await bridge.start();
    if (to.type !== 'nostr') throw new Error('expected nostr');
    const mallory = new NostrUser([relay.url]);
    // 1. A well-signed gift wrap whose content is not NIP-44.
    const ephemeral = generateSecretKey();
    const garbage = finalizeEvent(
      { kind: 1059, created_at: now(), tags: [['p', to.pubkeyHex]], content: 'A'.repeat(200) },
      ephemeral,
    );
    // 2. A seal signed by mallory around a rumor claiming to be from someone else.
    const victim = getPublicKey(generateSecretKey());
    const rumor = { kind: 14, created_at: now(), tags: [['p', to.pubkeyHex]], content: 'forged', pubkey: victim };
    const { getEventHash } = await import('nostr-tools/pure');
    const fullRumor = { ...rumor, id: getEventHash(rumor) };
    const seal = finalizeEvent(
      {
        kind: 13,
        created_at: now(),
        tags: [],
        content: nip44.encrypt(JSON.stringify(fullRumor), nip44.getConversationKey(mallory.secret, to.pubkeyHex)),
      },
      mallory.secret,
    );
    const wrapKey = generateSecretKey();
    const forged = finalizeEvent(
      {
        kind: 1059,
        created_at: now(),
        tags: [['p', to.pubkeyHex]],
        content: nip44.encrypt(JSON.stringify(seal), nip44.getConversationKey(wrapKey, to.pubkeyHex)),
      },
      wrapKey,
    );
    await mallory.publishEverywhere(garbage);
    await mallory.publishEverywhere(forged);
    // 3. Then a real message, which must still arrive.
    await mallory.sendPrivate(to, 'real one');
    await until(
      'the real message',
      () => inbound.some((m) => m.text === 'real one'),
      () => ({ inbound: inbound.map((m) => m.text), health: bridge.health() }),
    );
    const count = (reason: string) => counterTotal(metrics.malformed, { reason });
    await until('malformed counts', async () => (await count('json')) >= 1 && (await count('signature')) >= 1);
    assert.ok((await count('wrap_payload')) + (await count('wrap_decrypt')) >= 1, 'undecryptable wrap counted');
    assert.equal(await count('sender_mismatch'), 1);
    assert.ok((await count('event_shape')) >= 1);
    assert.deepEqual(
      inbound.map((m) => m.text),
      ['real one'],
    );
    assert.equal(inbound[0]?.from.uri, nostrIdentity(mallory.pubkey).uri);
  });

  it('receives mentions in public notes, and publishes public notes signed by the bridged key', async () => {
    const relay = await startNostrRelay();
    cleanups.push(relay.stop);
    const { bridge } = await makeBridge([relay.url]);
    cleanups.push(() => bridge.close());
    const inbound: BridgeInboundMessage[] = [];
    bridge.onInbound(async (m) => {
      inbound.push(m);
    });
    const alice = Ed25519Identity.generate().did;
    const me = await bridge.bridgeIdentity(alice);
    await bridge.start();
    if (me.type !== 'nostr') throw new Error('expected nostr');
    const bob = new NostrUser([relay.url]);
    const note = finalizeEvent(
      { kind: 1, created_at: now(), tags: [['p', me.pubkeyHex]], content: 'hi @alice' },
      bob.secret,
    );
    await bob.publishEverywhere(note);
    await until(
      'the mention',
      () => inbound.some((m) => m.type === 'mention' && m.id === note.id),
      () => ({ inbound: inbound.map((m) => [m.type, m.id]), health: bridge.health() }),
    );
    const sent = await bridge.send({ type: 'public', id: frameId(), from: alice, text: 'hello nostr' });
    assert.deepEqual(sent.acceptedBy, [relay.url]);
  });
});

describe('key store and HTTP listener', () => {
  it('keeps keys sealed under the KEK: same keys after reopening, refused under another KEK', async () => {
    const { keys, keyFile, kek } = await makeBridge(['ws://127.0.0.1:1/']);
    const did = Ed25519Identity.generate().did;
    const first = await keys.bridge(did, 'alice');
    const { readFileSync } = await import('node:fs');
    const onDisk = readFileSync(keyFile, 'utf8');
    const secretHex = await keys.withSecretKey(did, (s) => Buffer.from(s).toString('hex'));
    assert.ok(!onDisk.includes(secretHex), 'the secret key is not on disk in clear');
    const reopened = await NostrKeyStore.open(keyFile, kek, { maxIdentities: 10 });
    assert.equal(reopened.get(did)?.pubkey, first.pubkey);
    assert.equal(reopened.byName('alice')?.did, did);
    await assert.rejects(NostrKeyStore.open(keyFile, new Uint8Array(32).fill(7), { maxIdentities: 10 }), {
      code: 'BRIDGE_KEY_STORE',
    });
    await assert.rejects(keys.bridge(Ed25519Identity.generate().did, 'alice'), { code: 'BRIDGE_NAME_TAKEN' });
    await assert.rejects(keys.bridge(Ed25519Identity.generate().did, 'Not Valid'), { code: 'BRIDGE_NAME_INVALID' });
    const full = await NostrKeyStore.open(keyFile, kek, { maxIdentities: 1 });
    await assert.rejects(full.bridge(Ed25519Identity.generate().did), { code: 'BRIDGE_IDENTITY_LIMIT' });
  });

  it('serves NIP-05 names, health and metrics', async () => {
    const relay = await startNostrRelay();
    const { bridge, keys, metrics } = await makeBridge([relay.url]);
    await bridge.start();
    const did = Ed25519Identity.generate().did;
    await bridge.bridgeIdentity(did, { name: 'alice' });
    const http = await startBridgeHttpServer({ host: '127.0.0.1', port: 0, bridge, keys, metrics });
    try {
      const base = `http://127.0.0.1:${http.port}`;
      const res = await fetch(`${base}/.well-known/nostr.json?name=alice`);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      const doc = (await res.json()) as { names: Record<string, string>; relays: Record<string, string[]> };
      const pubkey = keys.get(did)!.pubkey;
      assert.deepEqual(doc, { names: { alice: pubkey }, relays: { [pubkey]: [relay.url] } });
      assert.deepEqual(await (await fetch(`${base}/.well-known/nostr.json?name=nobody`)).json(), {
        names: {},
        relays: {},
      });
      await until(
        'relay open',
        () => bridge.health().status === 'ok',
        () => bridge.health(),
      );
      const health = await fetch(`${base}/health`);
      assert.equal(health.status, 200);
      assert.equal(((await health.json()) as { status: string }).status, 'ok');
      const text = await (await fetch(`${base}/metrics`)).text();
      assert.match(text, /bridge_nostr_identities 1/);
      assert.match(text, /bridge_nostr_relay_up\{relay="ws:\/\/127\.0\.0\.1:\d+\/"\} 1/);
      await bridge.close();
      assert.equal((await fetch(`${base}/health`)).status, 503);
    } finally {
      await http.close();
      await bridge.close();
      await relay.stop();
    }
  });
});
