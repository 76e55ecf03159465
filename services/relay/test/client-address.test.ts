/**
 * Client addresses behind a trusted proxy (RELAY_TRUSTED_PROXIES,
 * transport/client-address.ts): the reading of X-Forwarded-For on its own,
 * then through a real relay process whose per-address connection limit
 * counts the forwarded addresses of a trusted proxy apart and ignores the
 * header from anyone else.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import { errorCodeFromWire } from '@libertaria/protocol';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';
import { unmapped } from '../src/ip-address.js';
import { TrustedProxies, TrustedProxiesError } from '../src/transport/client-address.js';

describe('TrustedProxies', () => {
  it('takes IPs and CIDRs of both families and refuses anything else', () => {
    const t = new TrustedProxies(' 10.0.0.0/8, 192.0.2.7 ,fd00::/8,2001:db8::1 ');
    assert.equal(t.size, 4);
    for (const yes of ['10.1.2.3', '192.0.2.7', 'fd12::5', '2001:db8::1', '::ffff:10.9.9.9'])
      assert.ok(t.trusts(yes), yes);
    for (const no of ['11.0.0.1', '192.0.2.8', 'fe80::1', '2001:db8::2', 'unknown', '']) assert.ok(!t.trusts(no), no);
    for (const bad of ['10.0.0.0/33', 'fd00::/129', '10.0.0.0/8/1', '10.0.0', 'example.org', '10.0.0.0/x']) {
      assert.throws(() => new TrustedProxies(bad), TrustedProxiesError, bad);
    }
    assert.equal(new TrustedProxies('').size, 0);
    assert.ok(!new TrustedProxies('').trusts('127.0.0.1'));
  });

  it('reads IPv4-mapped addresses in both forms uWS and sockets give', () => {
    assert.equal(unmapped('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(unmapped('0000:0000:0000:0000:0000:ffff:7f00:0001'), '127.0.0.1');
    assert.equal(unmapped('::ffff:7f00:1'), '127.0.0.1');
    assert.equal(unmapped('2001:db8::1'), '2001:db8::1');
    assert.equal(unmapped('10.0.0.1'), '10.0.0.1');
  });

  it('names the rightmost untrusted hop, and only for a trusted peer', () => {
    const t = new TrustedProxies('10.0.0.0/8');
    // A client straight behind one proxy.
    assert.equal(t.clientAddress('10.0.0.5', '203.0.113.9'), '203.0.113.9');
    // Through two proxies: the inner one appended the outer one's address.
    assert.equal(t.clientAddress('10.0.0.5', '203.0.113.9, 10.0.0.6'), '203.0.113.9');
    // Whatever the client wrote itself, left of the hop our proxy saw, is not believed.
    assert.equal(t.clientAddress('10.0.0.5', '1.1.1.1, 203.0.113.9'), '203.0.113.9');
    // A peer we do not trust: its header is ignored.
    assert.equal(t.clientAddress('198.51.100.4', '203.0.113.9'), '198.51.100.4');
    // No header, an empty one, garbage: the proxy's own address, never the garbage.
    assert.equal(t.clientAddress('10.0.0.5', ''), '10.0.0.5');
    assert.equal(t.clientAddress('10.0.0.5', 'not-an-ip'), '10.0.0.5');
    assert.equal(t.clientAddress('10.0.0.5', '203.0.113.9, <script>'), '10.0.0.5');
    // Every hop a trusted proxy: the leftmost one is what we know.
    assert.equal(t.clientAddress('10.0.0.5', '10.0.0.7, 10.0.0.6'), '10.0.0.7');
    // IPv6 and mapped forms.
    assert.equal(t.clientAddress('::ffff:10.0.0.5', '2001:db8::9'), '2001:db8::9');
    assert.equal(t.clientAddress('10.0.0.5', '::ffff:203.0.113.9'), '203.0.113.9');
    // At most 16 hops are read: a header of 1,000 trusted hops stops at a trusted address.
    const long = Array.from({ length: 1000 }, () => '10.0.0.8').join(',');
    assert.equal(t.clientAddress('10.0.0.5', `203.0.113.9,${long}`), '10.0.0.8');
  });
});

describe('client addresses through a relay', { timeout: 60_000 }, () => {
  let redis: RedisHandle;
  let trusting: RelayHandle;
  let plain: RelayHandle;
  const peers: RawPeer[] = [];
  // 127.0.0.9 stands for the ingress controller; 127.0.0.10 for anyone else.
  const PROXY = '127.0.0.9';
  const OTHER = '127.0.0.10';

  before(async () => {
    redis = await startRedis();
    const env = { RELAY_CONNECTIONS_PER_ADDRESS: '2' };
    [trusting, plain] = await Promise.all([
      startRelay({ redisUrl: redis.url, env: { ...env, RELAY_TRUSTED_PROXIES: `${PROXY}/32` } }),
      startRelay({ redisUrl: redis.url, env }),
    ]);
  });

  after(async () => {
    for (const p of peers) p.close();
    await Promise.all([trusting?.stop(), plain?.stop()]);
    await redis?.stop();
  });

  async function open(url: string, from: string, forwardedFor: string): Promise<RawPeer> {
    const peer = await RawPeer.connect(url, { localAddress: from, headers: { 'X-Forwarded-For': forwardedFor } });
    peers.push(peer);
    return peer;
  }

  /** Refused at once with the fatal per-address error, or let in (the handshake completes). */
  async function refused(peer: RawPeer): Promise<boolean> {
    const first = await Promise.race([
      peer.next('ERROR').then((e) => errorCodeFromWire(e.code)),
      peer.authenticate(Ed25519Identity.generate()).then(() => 'WELCOME'),
    ]);
    if (first !== 'WELCOME') assert.equal(first, 'ADDRESS_CONNECTION_LIMIT');
    return first !== 'WELCOME';
  }

  it('counts each forwarded client of a trusted proxy apart, and ignores the header from anyone else', async () => {
    // Two connections for client A through the proxy fill A's slots on the node.
    await open(trusting.wsUrl, PROXY, '198.51.100.1');
    await open(trusting.wsUrl, PROXY, '198.51.100.1');
    assert.equal(await refused(await open(trusting.wsUrl, PROXY, '198.51.100.1')), true, 'A is over its limit');
    // Client B through the same proxy has slots of its own, and so has the proxy address itself.
    assert.equal(await refused(await open(trusting.wsUrl, PROXY, '198.51.100.2')), false, 'B is let in');
    // A through two proxies (the outer one's hop appended by ours) is still A.
    assert.equal(await refused(await open(trusting.wsUrl, PROXY, `198.51.100.1, ${PROXY}`)), true);
    // A host we do not trust cannot pick its address: three connections with three headers are one address.
    await open(trusting.wsUrl, OTHER, '198.51.100.7');
    await open(trusting.wsUrl, OTHER, '198.51.100.8');
    assert.equal(await refused(await open(trusting.wsUrl, OTHER, '198.51.100.9')), true, 'the header was ignored');
  });

  it('a relay that trusts no proxy ignores the header', async () => {
    await open(plain.wsUrl, PROXY, '198.51.100.1');
    await open(plain.wsUrl, PROXY, '198.51.100.2');
    assert.equal(await refused(await open(plain.wsUrl, PROXY, '198.51.100.3')), true);
  });
});
