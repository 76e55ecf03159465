/**
 * The membrane enforced by real relay processes on a private Redis: owners
 * set policies over the relay protocol, senders' fast and durable SENDs (and
 * PREKEY_FETCHes) are decided, every denial reaches the sender as a NACK with
 * its stable code, quotas hold exactly across two nodes, grant tokens are
 * verified at the relay, and the audit trail is complete and queryable
 * (relay protocol and admin API).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { RelayClient } from '@libertaria/client';
import { Ed25519Identity, hintFromDid } from '@libertaria/identity';
import {
  decodeGrant,
  delegateGrant,
  encodeGrant,
  type GrantPayload,
  issueGrant,
  DEFAULT_MEMBRANE_LIMITS as LIMITS,
  signGrantLink,
} from '@libertaria/membrane';
import { RedisRevocationStore, RedisTrustStore } from '@libertaria/membrane/redis';
import { errorCodeFromWire, HelloFeatures, RelayError, solvePowStamp } from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

let redis: RedisHandle;
let relayA: RelayHandle;
let relayB: RelayHandle;
let direct: Redis;
const clients: RelayClient[] = [];

async function connect(identity: Ed25519Identity, relay: RelayHandle): Promise<RelayClient> {
  const client = new RelayClient({ relays: [relay.wsUrl], identity, sealing: false, reconnect: { maxAttempts: 3 } });
  // Refused fast sends surface as 'error' events; the tests wait for them explicitly.
  client.events.on('error', () => {});
  await client.connect();
  clients.push(client);
  return client;
}

/** The code a refused durable send is rejected with, or 'OK'. */
async function durable(client: RelayClient, to: string, text = 'hi'): Promise<string> {
  try {
    await client.send(to, enc(text));
    return 'OK';
  } catch (err) {
    assert.ok(err instanceof RelayError, String(err));
    return `${err.code}: ${err.message}`;
  }
}

/** The code a fast send's NACK carries, or 'OK' when a PING after it came back without one. */
async function fast(client: RelayClient, to: string): Promise<string> {
  let refused: string | undefined;
  let messageId = '';
  const off = client.events.on('error', ({ error, messageId: id }) => {
    if (id !== undefined && Buffer.from(id).toString('hex') === messageId) {
      refused = `${(error as RelayError).code}: ${error.message}`;
    }
  });
  try {
    const sent = await client.send(to, enc('fast'), { durable: false });
    messageId = Buffer.from(sent.messageId).toString('hex');
    // PING is a barrier: the NACK for an earlier SEND arrives before its PONG.
    await client.ping();
    return refused ?? 'OK';
  } finally {
    off();
  }
}

function code(outcome: string): string {
  return outcome.split(':')[0]!;
}

const hhmm = (minutes: number): string =>
  `${String(Math.floor(minutes / 60) % 24).padStart(2, '0')}:${String(minutes % 60).padStart(2, '0')}`;

before(async () => {
  redis = await startRedis();
  const env = { RELAY_ADMIN_TOKEN: ADMIN_TOKEN };
  [relayA, relayB] = await Promise.all([
    startRelay({ redisUrl: redis.url, env }),
    startRelay({ redisUrl: redis.url, env }),
  ]);
  direct = new Redis(redis.url);
});

after(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  direct?.disconnect();
  await Promise.allSettled([relayA?.stop(), relayB?.stop()]);
  await redis?.stop();
});

describe('membrane enforcement in the relay', () => {
  const alice = Ed25519Identity.generate();
  const bob = Ed25519Identity.generate();
  const carol = Ed25519Identity.generate();

  it('lets everyone through to a recipient without a policy (RELAY_MEMBRANE_DEFAULT=open)', async () => {
    const b = await connect(bob, relayA);
    await connect(carol, relayA);
    assert.equal(await durable(b, carol.did), 'OK');
    assert.equal(await fast(b, carol.did), 'OK');
  });

  it('refuses with every denial code, fast and durable, naming the failing constraint', async () => {
    const a = await connect(alice, relayA);
    const b = await connect(bob, relayA);
    const nowS = Math.floor(Date.now() / 1000);
    const nowMinute = Math.floor(Date.now() / 60_000) % 1440;
    const send = { resource: alice.did, action: 'send' };
    const cases: [string, object, string, number][] = [
      // name, policy (without version), expected code, allowed sends before the denial
      ['nothing grants send', { capabilities: [{ resource: alice.did, action: 'open' }] }, 'ACCESS_NO_GRANT', 0],
      [
        'membership',
        {
          sets: { friends: [carol.did] },
          capabilities: [{ ...send, conditions: [{ type: 'member', set: 'friends' }] }],
        },
        'ACCESS_CONDITION_FAILED',
        0,
      ],
      ['expiry', { capabilities: [send], constraints: [{ type: 'expiry', at: nowS - 10 }] }, 'ACCESS_EXPIRED', 0],
      [
        'not before',
        { capabilities: [send], constraints: [{ type: 'notBefore', at: nowS + 3600 }] },
        'ACCESS_NOT_YET_VALID',
        0,
      ],
      ['trust', { capabilities: [send], constraints: [{ type: 'minTrust', score: 0.5 }] }, 'ACCESS_TRUST_TOO_LOW', 0],
      [
        'time window',
        {
          capabilities: [send],
          constraints: [{ type: 'timeWindow', from: hhmm(nowMinute + 720), to: hhmm(nowMinute + 721) }],
        },
        'ACCESS_OUTSIDE_TIME_WINDOW',
        0,
      ],
      [
        'rate',
        { capabilities: [send], constraints: [{ type: 'rate', limit: 2, windowSeconds: 3600 }] },
        'ACCESS_RATE_LIMITED',
        2,
      ],
      [
        'quota',
        { capabilities: [{ ...send, constraints: [{ type: 'quota', units: 3 }] }] },
        'ACCESS_QUOTA_EXHAUSTED',
        3,
      ],
    ];
    for (const [name, policy, expected, allowedFirst] of cases) {
      const stored = await a.setPolicy({ version: 1, ...policy });
      assert.ok(stored !== null && JSON.parse(stored).version === 1, name);
      for (let i = 0; i < allowedFirst; i++) assert.equal(await durable(b, alice.did), 'OK', `${name}: send ${i}`);
      const d = await durable(b, alice.did);
      assert.equal(code(d), expected, `${name} (durable): ${d}`);
      const f = await fast(b, alice.did);
      assert.equal(code(f), expected, `${name} (fast): ${f}`);
      if (expected.startsWith('ACCESS_') && expected !== 'ACCESS_NO_GRANT') {
        assert.match(d, /\((constraints|capabilities)\[\d\]/, `${name}: the message names the field`);
      }
    }
    // The trust score is the operator's: raised, the same policy lets Bob in.
    await a.setPolicy({ version: 1, capabilities: [send], constraints: [{ type: 'minTrust', score: 0.5 }] });
    // Through the admin API, as an operator sets it (PUT /membrane/trust/<did>, behind the token).
    const trustUrl = `${relayB.adminUrl}/membrane/trust/${encodeURIComponent(bob.did)}`;
    const put = (body: string, token = ADMIN_TOKEN) =>
      fetch(trustUrl, { method: 'PUT', body, headers: { authorization: `Bearer ${token}` } });
    assert.equal((await put('{"score":0.8}', 'wrong')).status, 401);
    assert.equal((await put('{"score":1.5}')).status, 400);
    assert.equal((await put('not json')).status, 400);
    assert.equal((await put('{"score":0.8}')).status, 200);
    assert.equal(await new RedisTrustStore(direct, 'lr').trustScore(bob.did), 0.8);
    assert.equal(await durable(b, alice.did), 'OK');
    await a.setPolicy(null);
    assert.equal(await a.getPolicy(), null);
    assert.equal(await fast(b, alice.did), 'OK');
  });

  it('drops cached allows when the owner changes its policy on another node', async () => {
    const owner = Ed25519Identity.generate();
    const o = await connect(owner, relayB);
    const b = await connect(bob, relayA);
    await o.setPolicy({ version: 1, capabilities: [{ resource: owner.did, action: 'send' }] });
    assert.equal(await durable(b, owner.did), 'OK');
    assert.equal(await fast(b, owner.did), 'OK', 'allowed (and now cached on the connection)');
    await o.setPolicy({ version: 1, capabilities: [{ resource: owner.did, action: 'open' }] });
    // The invalidation travels by pub/sub to node A: wait for it, bounded (for a loaded CI machine).
    const deadline = Date.now() + 20_000;
    let outcome = await fast(b, owner.did);
    while (outcome === 'OK' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      outcome = await fast(b, owner.did);
    }
    assert.equal(code(outcome), 'ACCESS_NO_GRANT');
  });

  it('does not decide (or charge) a durable retry of a frame already stored', async () => {
    const owner = Ed25519Identity.generate();
    const o = await connect(owner, relayA);
    const b = await connect(bob, relayB);
    await o.setPolicy({
      version: 1,
      capabilities: [{ resource: owner.did, action: 'send', constraints: [{ type: 'quota', units: 1 }] }],
    });
    const messageId = new Uint8Array(16).fill(7);
    const first = await b.send(owner.did, enc('once'), { messageId });
    // The sender did not see the ACK (say) and sends the same message again: stored already, so ACKed again.
    const again = await b.send(owner.did, enc('once'), { messageId });
    assert.equal(again.position, first.position);
    assert.equal(code(await durable(b, owner.did)), 'ACCESS_QUOTA_EXHAUSTED', 'a new message is charged');
  });

  it('gates session opening (PREKEY_FETCH, action open)', async () => {
    const owner = Ed25519Identity.generate();
    const o = await connect(owner, relayA);
    const b = await connect(bob, relayA);
    await o.setPolicy({ version: 1, capabilities: [{ resource: owner.did, action: 'send' }] });
    await assert.rejects(b.fetchPrekeys(owner.did), (err: RelayError) => err.code === 'ACCESS_NO_GRANT');
    await o.setPolicy({ version: 1, capabilities: [{ resource: owner.did, action: '*' }] });
    // Allowed: the fetch reaches the prekey store (the owner published none).
    await assert.rejects(b.fetchPrekeys(owner.did), (err: RelayError) => err.code === 'PREKEY_NOT_FOUND');
  });

  it('never lets parallel spends through two nodes exceed a quota', async () => {
    const owner = Ed25519Identity.generate();
    const dave = Ed25519Identity.generate();
    const o = await connect(owner, relayA);
    await o.setPolicy({
      version: 1,
      capabilities: [
        { resource: owner.did, action: 'send', constraints: [{ type: 'quota', units: 40, scope: 'all' }] },
      ],
    });
    const [b, d] = await Promise.all([connect(bob, relayA), connect(dave, relayB)]);
    const outcomes = await Promise.all([
      ...Array.from({ length: 30 }, () => durable(b, owner.did)),
      ...Array.from({ length: 30 }, () => durable(d, owner.did)),
    ]);
    const ok = outcomes.filter((x) => x === 'OK').length;
    assert.equal(ok, 40, outcomes.join('\n'));
    assert.ok(outcomes.every((x) => x === 'OK' || code(x) === 'ACCESS_QUOTA_EXHAUSTED'));
    const page = await o.queryAudit({ limit: 1000 });
    const sends = page.records.filter((r) => r.action === 'send');
    assert.equal(sends.filter((r) => r.allowed === true).length, 40);
    assert.equal(sends.filter((r) => r.code === 'ACCESS_QUOTA_EXHAUSTED').length, 20);
  });

  describe('grant tokens', () => {
    const owner = Ed25519Identity.generate();
    let o: RelayClient;
    let b: RelayClient;
    before(async () => {
      o = await connect(owner, relayA);
      b = await connect(bob, relayA);
      // The owner's policy lets nobody send: only a grant can.
      await o.setPolicy({ version: 1, capabilities: [{ resource: owner.did, action: 'open' }] });
    });
    const grantFor = (audience: Ed25519Identity, extra: object = {}) =>
      issueGrant(
        owner,
        {
          audience: audience.did,
          capabilities: [{ resource: owner.did, action: 'send' }],
          expiry: Math.floor(Date.now() / 1000) + 3600,
          ...extra,
        },
        LIMITS,
      );

    it('a presented grant decides the sends it covers, its quota included', async () => {
      assert.equal(code(await durable(b, owner.did)), 'ACCESS_NO_GRANT');
      const token = grantFor(bob, { constraints: [{ type: 'quota', units: 2, windowSeconds: 0 }] });
      const accepted = await b.presentGrant(token);
      assert.match(accepted.tokenId, /^[0-9a-f]{64}$/);
      assert.ok(accepted.expiresAt > Date.now());
      assert.equal(await durable(b, owner.did), 'OK');
      assert.equal(await fast(b, owner.did), 'OK');
      assert.equal(code(await durable(b, owner.did)), 'ACCESS_QUOTA_EXHAUSTED');
    });

    it('refuses forged, wrongly addressed, over-attenuated, expired and revoked tokens', async () => {
      const forged = grantFor(bob);
      forged[forged.length - 1]! ^= 1; // the root link's signature
      await assert.rejects(b.presentGrant(forged), (e: RelayError) => e.code === 'GRANT_BAD_SIGNATURE');
      await assert.rejects(b.presentGrant(grantFor(carol)), (e: RelayError) => e.code === 'GRANT_WRONG_AUDIENCE');

      // Carol re-delegates to Bob more than she holds (every action instead of send), built by hand.
      const parent = decodeGrant(grantFor(carol), LIMITS)[0]!;
      const payload: GrantPayload = {
        v: 1,
        iss: carol.did,
        aud: bob.did,
        att: [{ resource: owner.did, action: '*', conditions: [] }],
        cst: [],
        exp: parent.payload.exp!,
        nnc: '0'.repeat(32),
        prf: parent.cid,
      };
      const over = encodeGrant([parent, signGrantLink(carol, payload)]);
      await assert.rejects(b.presentGrant(over), (e: RelayError) => e.code === 'GRANT_OVER_ATTENUATED');

      const shortLived = grantFor(bob, { expiry: Math.floor(Date.now() / 1000) + 1 });
      await new Promise((r) => setTimeout(r, 2100));
      await assert.rejects(b.presentGrant(shortLived), (e: RelayError) => e.code === 'GRANT_EXPIRED');

      const revocations = new RedisRevocationStore(direct, 'lr');
      const revokedFirst = grantFor(bob);
      await revocations.revoke(decodeGrant(revokedFirst, LIMITS)[0]!.cid);
      await assert.rejects(b.presentGrant(revokedFirst), (e: RelayError) => e.code === 'GRANT_REVOKED');

      // Revoked after it was accepted: the next send is refused.
      const held = grantFor(bob);
      await b.presentGrant(held);
      assert.equal(await durable(b, owner.did), 'OK');
      // Through the admin API, as an operator revokes (POST /membrane/revocations).
      const revoked = await fetch(`${relayA.adminUrl}/membrane/revocations`, {
        method: 'POST',
        body: JSON.stringify({ cid: decodeGrant(held, LIMITS)[0]!.cid }),
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      assert.equal(revoked.status, 200, await revoked.text());
      assert.equal(code(await durable(b, owner.did)), 'GRANT_REVOKED');
      assert.equal(code(await fast(b, owner.did)), 'GRANT_REVOKED');
    });

    it('lets an issuer revoke its own links over the protocol, cluster-wide, and nobody else', async () => {
      // The owner grants Carol; Carol delegates a part to Bob. Each holds its token on node A.
      const toCarol = grantFor(carol);
      const toBob = delegateGrant(
        toCarol,
        carol,
        { audience: bob.did, capabilities: [{ resource: owner.did, action: 'send' }] },
        LIMITS,
      );
      const c = await connect(carol, relayA);
      const b2 = await connect(bob, relayA);
      try {
        await c.presentGrant(toCarol);
        await b2.presentGrant(toBob);
        assert.equal(await durable(b2, owner.did), 'OK');
        assert.equal(await durable(c, owner.did), 'OK');

        // Bob (no link of his) and Mallory cannot revoke; Bob holds the token but issued nothing in it.
        await assert.rejects(b2.revokeGrant(toBob), (e: RelayError) => e.code === 'GRANT_WRONG_ISSUER');

        // Carol takes back her delegation, from node B: Bob is refused on node A, Carol's own grant stands.
        const carolOnB = await connect(carol, relayB);
        try {
          const cids = await carolOnB.revokeGrant(toBob);
          assert.deepEqual(cids, [decodeGrant(toBob, LIMITS)[1]!.cid]);
        } finally {
          await carolOnB.close();
        }
        assert.equal(code(await durable(b2, owner.did)), 'GRANT_REVOKED');
        assert.equal(await durable(c, owner.did), 'OK');

        // The owner takes back the root from node B: Carol is refused too.
        const ownerOnB = await connect(owner, relayB);
        try {
          assert.deepEqual(await ownerOnB.revokeGrant(toCarol), [decodeGrant(toCarol, LIMITS)[0]!.cid]);
        } finally {
          await ownerOnB.close();
        }
        assert.equal(code(await durable(c, owner.did)), 'GRANT_REVOKED');
        await assert.rejects(c.presentGrant(toCarol), (e: RelayError) => e.code === 'GRANT_REVOKED');
      } finally {
        await Promise.all([c.close(), b2.close()]);
      }
    });
  });

  it('presents held grants again on a new connection (the relay keeps them per connection)', async () => {
    const owner = Ed25519Identity.generate();
    const sender = Ed25519Identity.generate();
    const o = await connect(owner, relayA);
    await o.setPolicy({ version: 1, capabilities: [{ resource: owner.did, action: 'open' }] });
    const leaving = await startRelay({ redisUrl: redis.url });
    const client = new RelayClient({ relays: [leaving.wsUrl, relayB.wsUrl], identity: sender, sealing: false });
    client.events.on('error', () => {});
    clients.push(client);
    await client.connect();
    await client.presentGrant(
      issueGrant(
        owner,
        {
          audience: sender.did,
          capabilities: [{ resource: owner.did, action: 'send' }],
          expiry: Math.floor(Date.now() / 1000) + 3600,
        },
        LIMITS,
      ),
    );
    assert.equal(await durable(client, owner.did), 'OK');
    // The node drains (GOAWAY): the client moves to relay B and presents its grant there first thing.
    const moved = new Promise<void>((resolve) => {
      const off = client.events.on('connected', ({ url }) => {
        if (url.startsWith(relayB.wsUrl)) {
          off();
          resolve();
        }
      });
    });
    await leaving.stop();
    await moved;
    assert.equal(await durable(client, owner.did), 'OK');
  });

  it('keeps a complete audit trail, readable by the owner (relay protocol) and the operator (admin API)', async () => {
    const owner = Ed25519Identity.generate();
    const dave = Ed25519Identity.generate();
    const o = await connect(owner, relayB);
    const d = await connect(dave, relayA);
    const since = Date.now();
    await o.setPolicy({
      version: 1,
      capabilities: [
        { resource: owner.did, action: 'send', constraints: [{ type: 'rate', limit: 1, windowSeconds: 3600 }] },
      ],
    });
    assert.equal(await durable(d, owner.did), 'OK');
    assert.equal(code(await durable(d, owner.did)), 'ACCESS_RATE_LIMITED');
    assert.equal(code(await fast(d, owner.did)), 'ACCESS_RATE_LIMITED');

    const own = await o.queryAudit({ sinceMs: since });
    assert.deepEqual(
      own.records.map((r) => [r.peer, r.owner, r.resource, r.action, r.allowed, r.code]),
      [
        [dave.did, owner.did, owner.did, 'send', true, 'OK'],
        [dave.did, owner.did, owner.did, 'send', false, 'ACCESS_RATE_LIMITED'],
        [dave.did, owner.did, owner.did, 'send', false, 'ACCESS_RATE_LIMITED'],
      ],
    );
    assert.equal(own.records[1]!.field, 'capabilities[0].constraints[0]');
    // Dave reads only decisions about his own resources: none.
    assert.deepEqual((await d.queryAudit({ sinceMs: since })).records, []);

    const url = `${relayA.adminUrl}/membrane/audit?peer=${encodeURIComponent(dave.did)}&since=${since}`;
    assert.equal((await fetch(url)).status, 401);
    assert.equal((await fetch(url, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status, 401);
    const res = await fetch(url, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { records: { code: string; resource: string }[]; next: string | null };
    assert.deepEqual(
      body.records.map((r) => r.code),
      ['OK', 'ACCESS_RATE_LIMITED', 'ACCESS_RATE_LIMITED'],
    );
    const denied = await fetch(
      `${relayB.adminUrl}/membrane/audit?resource=${encodeURIComponent(owner.did)}&allowed=false&limit=1`,
      { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } },
    );
    const page = (await denied.json()) as { records: { code: string }[]; next: string | null };
    assert.equal(page.records.length, 1);
    assert.ok(page.next !== null, 'a cursor to the next page');
    const bad = await fetch(`${relayA.adminUrl}/membrane/audit?limit=0`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(bad.status, 400);

    // The counters on /metrics: decisions by action and result, and the SENDs the cache allowed.
    const metrics = await (await fetch(`${relayA.adminUrl}/metrics`)).text();
    const value = (re: RegExp): number => Number(metrics.match(re)?.[1] ?? 0);
    assert.ok(value(/relay_membrane_decisions_total\{action="send",result="ACCESS_RATE_LIMITED"[^}]*\} (\d+)/) >= 2);
    assert.ok(value(/relay_membrane_decisions_total\{action="open",result="ACCESS_NO_GRANT"[^}]*\} (\d+)/) >= 1);
    assert.ok(value(/relay_membrane_cache_hits_total\{[^}]*\} (\d+)/) >= 1, 'cached allows counted');
  });

  it('decides anonymous connections too: the default for owners without a policy, refused by owners with one', async () => {
    const owner = Ed25519Identity.generate();
    const stranger = Ed25519Identity.generate();
    const o = await connect(owner, relayA);
    await o.setPolicy({ version: 1, capabilities: [{ resource: owner.did, action: '*' }] });
    const peer = await RawPeer.connect(relayA.tcpUrl);
    try {
      peer.hello(HelloFeatures.ANONYMOUS);
      const challenge = await peer.next('ANON_CHALLENGE');
      peer.send({ type: 'ANON_AUTH', stamp: solvePowStamp(challenge.nonce, challenge.powBits) });
      const welcome = await peer.next('WELCOME');
      const anonSend = (to: Ed25519Identity) => ({
        type: 'SEND' as const,
        dest: hintFromDid(to.did),
        source: welcome.hint,
        sessionId: randomBytes(16),
        messageId: randomBytes(16),
        flags: 0,
        ttl: 0,
        position: 0,
        payload: enc('anon'),
      });
      peer.send(anonSend(owner));
      const nack = await peer.next('NACK');
      assert.equal(errorCodeFromWire(nack.code), 'ACCESS_NO_GRANT');
      // A recipient without a policy: the relay default (open) lets the anonymous frame through.
      peer.send(anonSend(stranger));
      peer.send({ type: 'PING', data: new Uint8Array(8) });
      const next = await peer.next((f) => f.type === 'PEER_GONE' || f.type === 'NACK' || f.type === 'PONG');
      assert.equal(next.type, 'PEER_GONE', 'forwarded (and nobody was there), not refused');
    } finally {
      peer.close();
    }
  });

  it('refuses owners without a policy under RELAY_MEMBRANE_DEFAULT=allowlist, and checks nothing when disabled', async () => {
    const listed = await startRelay({ redisUrl: redis.url, env: { RELAY_MEMBRANE_DEFAULT: 'allowlist' } });
    const off = await startRelay({ redisUrl: redis.url, env: { RELAY_MEMBRANE_ENABLED: 'false' } });
    try {
      const owner = Ed25519Identity.generate();
      const stranger = Ed25519Identity.generate();
      const o = await connect(owner, listed);
      const b = await connect(bob, listed);
      assert.equal(code(await durable(b, stranger.did)), 'ACCESS_NO_GRANT');
      await o.setPolicy({ version: 1, capabilities: [{ resource: owner.did, action: 'send' }] });
      assert.equal(await durable(b, owner.did), 'OK');

      const b2 = await connect(carol, off);
      await o.setPolicy({ version: 1, capabilities: [{ resource: owner.did, action: 'open' }] });
      assert.equal(await durable(b2, owner.did), 'OK', 'no checks at all');
      await assert.rejects(b2.getPolicy(), (e: RelayError) => e.code === 'MEMBRANE_DISABLED');
    } finally {
      await Promise.allSettled([listed.stop(), off.stop()]);
    }
  });
});
