/** The in-memory limits of one relay node (rate-limits.ts), on a clock the test drives. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HandshakeFailureLimiter, WaitingSlots } from '../src/rate-limits.js';

describe('HandshakeFailureLimiter', () => {
  const NAT = '198.51.100.7';
  const t0 = 1_000_000;

  it('refuses a DID at an address after its failures, not the other DIDs behind the address', () => {
    const l = new HandshakeFailureLimiter({ perPeer: 3, perAddress: 100 });
    for (let i = 0; i < 3; i++) {
      assert.equal(l.peerBlocked(NAT, 'did:x:attacker', t0), false);
      l.recordFailure(NAT, 'did:x:attacker', t0);
    }
    assert.equal(l.peerBlocked(NAT, 'did:x:attacker', t0), true);
    assert.equal(l.peerBlocked(NAT, 'did:x:honest', t0), false, 'another peer behind the NAT');
    assert.equal(l.peerBlocked('203.0.113.9', 'did:x:attacker', t0), false, 'the same DID elsewhere');
    assert.equal(l.addressBlocked(NAT, t0), false);
    // A fixed one-minute window.
    assert.equal(l.peerBlocked(NAT, 'did:x:attacker', t0 + 59_999), true);
    assert.equal(l.peerBlocked(NAT, 'did:x:attacker', t0 + 60_000), false);
  });

  it('over the per-address bound, refuses new DIDs and anonymous peers but keeps the ones that logged in from there', () => {
    const l = new HandshakeFailureLimiter({ perPeer: 3, perAddress: 5 });
    l.recordSuccess(NAT, 'did:x:resident', t0);
    for (let i = 0; i < 5; i++) l.recordFailure(NAT, `did:x:rotating-${i}`, t0 + i);
    l.recordFailure(NAT, undefined, t0 + 10); // a timeout or bad stamp: the address only
    assert.equal(l.addressBlocked(NAT, t0 + 10), true);
    assert.equal(l.peerBlocked(NAT, 'did:x:newcomer', t0 + 10), true);
    assert.equal(l.peerBlocked(NAT, 'did:x:resident', t0 + 10), false);
    // The resident itself failing too often is refused like anyone.
    for (let i = 0; i < 3; i++) l.recordFailure(NAT, 'did:x:resident', t0 + 20);
    assert.equal(l.peerBlocked(NAT, 'did:x:resident', t0 + 20), true);
    // Known for the window it logged in and the next one, not longer (the
    // address over its bound again in a later window).
    for (let i = 0; i < 5; i++) l.recordFailure(NAT, undefined, t0 + 119_000);
    assert.equal(l.peerBlocked(NAT, 'did:x:resident', t0 + 119_999), false);
    assert.equal(l.peerBlocked(NAT, 'did:x:resident', t0 + 120_000), true);
  });

  it('keeps a resident known across windows while it keeps logging in', () => {
    const l = new HandshakeFailureLimiter({ perPeer: 3, perAddress: 1 });
    l.recordSuccess(NAT, 'did:x:resident', t0);
    l.recordSuccess(NAT, 'did:x:resident', t0 + 70_000);
    l.recordFailure(NAT, undefined, t0 + 150_000);
    assert.equal(l.addressBlocked(NAT, t0 + 150_000), true);
    assert.equal(l.peerBlocked(NAT, 'did:x:resident', t0 + 150_000), false);
  });

  it('is bounded: the oldest addresses are forgotten first, and at most so many DIDs per address are remembered', () => {
    const l = new HandshakeFailureLimiter({ perPeer: 1, perAddress: 1, maxAddresses: 3, knownPeersPerAddress: 2 });
    for (const a of ['a1', 'a2', 'a3', 'a4']) l.recordFailure(a, undefined, t0);
    assert.equal(l.trackedAddresses, 3);
    assert.equal(l.addressBlocked('a1', t0), false, 'forgotten');
    assert.equal(l.addressBlocked('a4', t0), true);
    for (const d of ['d1', 'd2', 'd3']) l.recordSuccess('a4', d, t0);
    assert.equal(l.peerBlocked('a4', 'd1', t0), false);
    assert.equal(l.peerBlocked('a4', 'd2', t0), false);
    assert.equal(l.peerBlocked('a4', 'd3', t0), true, 'beyond the remembered DIDs of one address');
  });
});

describe('WaitingSlots (durable fetches of one node)', () => {
  it('lets `max` holders in at once, queues the others in order, and passes each freed slot on', async () => {
    const slots = new WaitingSlots(2);
    const order: number[] = [];
    const holders = [0, 1, 2, 3, 4].map((i) => slots.acquire().then(() => order.push(i)));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, [0, 1]);
    assert.equal(slots.active, 2);
    assert.equal(slots.queued, 3);
    slots.release();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, [0, 1, 2], 'one released, one more in');
    slots.release();
    slots.release();
    slots.release();
    await Promise.all(holders);
    assert.deepEqual(order, [0, 1, 2, 3, 4]);
    assert.equal(slots.queued, 0);
    slots.release();
    slots.release();
    assert.equal(slots.active, 0);
    slots.release();
    assert.equal(slots.active, 0, 'never below zero');
  });
});
