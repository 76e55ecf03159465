/**
 * checkAccess: an allow/deny matrix over every condition and constraint,
 * the relay default, trust look-ups, all-or-nothing counters, and the audit
 * trail (every decision recorded, with its reason). In-memory state and a
 * clock the test moves; services/relay/test/membrane-*.test.ts runs the
 * Redis implementations.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import { type AccessDecision, MemoryAuditSink } from '@libertaria/membrane';
import { harness, seedPolicy } from './support/membrane-fixtures.js';

const alice = Ed25519Identity.generate();
const bob = Ed25519Identity.generate();

function allowed(d: AccessDecision, field?: string): void {
  assert.ok(d.allowed, d.allowed ? '' : `denied ${d.code} at ${d.field}: ${d.reason}`);
  if (field !== undefined) assert.equal(d.field, field);
}
function denied(d: AccessDecision, code: string, field?: string): void {
  assert.ok(!d.allowed, `expected ${code}, was allowed`);
  assert.equal(d.code, code, d.reason);
  if (field !== undefined) assert.equal(d.field, field);
}

const feed = { resource: 'feed://my-channel', action: 'read' as const };
/** One capability on feed://my-channel with these policy-level constraints. */
const constrained = (constraints: unknown[], extra: Record<string, unknown> = {}) => ({
  version: 1,
  capabilities: [{ resource: 'feed://my-channel', action: 'read' }],
  constraints,
  ...extra,
});

describe('membrane checkAccess: the seed examples', () => {
  it('read feed://my-channel: anyone', async () => {
    const h = harness();
    h.setPolicy(seedPolicy([alice.did]));
    allowed(await h.check(bob, feed), 'capabilities[0]');
    denied(await h.check(bob, { resource: 'feed://my-channel', action: 'write' }), 'ACCESS_NO_GRANT');
    denied(await h.check(bob, { resource: 'feed://other', action: 'read' }), 'ACCESS_NO_GRANT');
  });
  it('write chapter://berlin/proposals: members only', async () => {
    const h = harness();
    h.setPolicy(seedPolicy([alice.didKey]));
    const write = { resource: 'chapter://berlin/proposals', action: 'write' as const };
    allowed(await h.check(alice, write), 'capabilities[1]');
    denied(await h.check(bob, write), 'ACCESS_CONDITION_FAILED', 'capabilities[1].conditions[0]');
  });
  it('call service://payment: up to 100 units', async () => {
    const h = harness();
    h.setPolicy(seedPolicy([]));
    const call = (amount: number) => h.check(bob, { resource: 'service://payment', action: 'call', amount });
    allowed(await call(100));
    allowed(await call(0));
    denied(await call(101), 'ACCESS_CONDITION_FAILED', 'capabilities[2].conditions[0]');
  });
});

describe('membrane checkAccess: constraints', () => {
  it('policy expiry and expiry constraints: allowed before, ACCESS_EXPIRED from the instant on', async () => {
    for (const [policy, field] of [
      [(at: number) => constrained([], { expiry: at }), 'expiry'],
      [(at: number) => constrained([{ type: 'expiry', at }]), 'constraints[0]'],
    ] as const) {
      const h = harness();
      h.setPolicy(policy(h.clock.seconds + 10));
      allowed(await h.check(bob, feed));
      h.clock.advance(9_999);
      allowed(await h.check(bob, feed));
      h.clock.advance(1);
      denied(await h.check(bob, feed), 'ACCESS_EXPIRED', field);
    }
  });

  it('notBefore: ACCESS_NOT_YET_VALID until the instant', async () => {
    const h = harness();
    h.setPolicy(constrained([{ type: 'notBefore', at: h.clock.seconds + 5 }]));
    denied(await h.check(bob, feed), 'ACCESS_NOT_YET_VALID', 'constraints[0]');
    h.clock.advance(5_000);
    allowed(await h.check(bob, feed));
  });

  it('rate per peer: the limit in each aligned window, other peers apart', async () => {
    const h = harness();
    h.clock.ms = Math.ceil(h.clock.ms / 60_000) * 60_000; // the start of a window
    h.setPolicy(constrained([{ type: 'rate', limit: 3, windowSeconds: 60 }]));
    for (let i = 0; i < 3; i++) allowed(await h.check(bob, feed));
    denied(await h.check(bob, feed), 'ACCESS_RATE_LIMITED', 'constraints[0]');
    allowed(await h.check(alice, feed)); // another peer has its own window
    h.clock.advance(59_999);
    denied(await h.check(bob, feed), 'ACCESS_RATE_LIMITED');
    h.clock.advance(1);
    allowed(await h.check(bob, feed)); // a new window
  });

  it('rate for all peers together (scope "all")', async () => {
    const h = harness();
    h.clock.ms = Math.ceil(h.clock.ms / 60_000) * 60_000;
    h.setPolicy(constrained([{ type: 'rate', limit: 2, windowSeconds: 60, scope: 'all' }]));
    allowed(await h.check(bob, feed));
    allowed(await h.check(alice, feed));
    denied(await h.check(Ed25519Identity.generate(), feed), 'ACCESS_RATE_LIMITED');
  });

  it('quota: spends the request amount atomically; exact to the last unit; lifetime unless windowed', async () => {
    const h = harness();
    h.setPolicy({
      version: 1,
      capabilities: [{ resource: 'service://payment', action: 'call' }],
      constraints: [{ type: 'quota', units: 100 }],
    });
    const call = (amount: number) => h.check(bob, { resource: 'service://payment', action: 'call', amount });
    allowed(await call(60));
    denied(await call(41), 'ACCESS_QUOTA_EXHAUSTED', 'constraints[0]');
    allowed(await call(40)); // a refused spend spent nothing
    denied(await call(1), 'ACCESS_QUOTA_EXHAUSTED');
    allowed(await call(0));
    h.clock.advance(365 * 86_400_000);
    denied(await call(1), 'ACCESS_QUOTA_EXHAUSTED'); // a lifetime quota never resets
    allowed(await h.check(alice, { resource: 'service://payment', action: 'call', amount: 100 })); // per peer
  });

  it('quota per window resets in the next window', async () => {
    const h = harness();
    h.clock.ms = Math.ceil(h.clock.ms / 86_400_000) * 86_400_000;
    h.setPolicy(constrained([{ type: 'quota', units: 2, windowSeconds: 86_400 }]));
    allowed(await h.check(bob, feed));
    allowed(await h.check(bob, feed));
    denied(await h.check(bob, feed), 'ACCESS_QUOTA_EXHAUSTED');
    h.clock.advance(86_400_000);
    allowed(await h.check(bob, feed));
  });

  it('minTrust: at or above allowed, below or unknown denied (unknownTrust configurable)', async () => {
    const h = harness();
    h.setPolicy(constrained([{ type: 'minTrust', score: 0.5 }]));
    h.trust.set(alice.did, 0.5);
    h.trust.set(bob.did, 0.49);
    allowed(await h.check(alice, feed));
    denied(await h.check(bob, feed), 'ACCESS_TRUST_TOO_LOW', 'constraints[0]');
    denied(await h.check(Ed25519Identity.generate(), feed), 'ACCESS_TRUST_TOO_LOW');
    const lenient = harness({ unknownTrust: 0.6 });
    lenient.setPolicy(constrained([{ type: 'minTrust', score: 0.5 }]));
    allowed(await lenient.check(Ed25519Identity.generate(), feed));
  });

  it('asks the TrustProvider only when a minTrust constraint applies', async () => {
    const h = harness();
    h.setPolicy(constrained([{ type: 'rate', limit: 100, windowSeconds: 1 }]));
    allowed(await h.check(bob, feed));
    assert.equal(h.trust.lookups, 0);
    h.setPolicy(constrained([{ type: 'minTrust', score: 0 }]));
    allowed(await h.check(bob, feed));
    assert.equal(h.trust.lookups, 1);
  });

  it('timeWindow: inside allowed, outside ACCESS_OUTSIDE_TIME_WINDOW', async () => {
    const h = harness(); // Monday 12:00 UTC
    h.setPolicy(constrained([{ type: 'timeWindow', from: '09:00', to: '17:00', days: [1, 2, 3, 4, 5] }]));
    allowed(await h.check(bob, feed));
    h.clock.advance(5 * 3_600_000);
    denied(await h.check(bob, feed), 'ACCESS_OUTSIDE_TIME_WINDOW', 'constraints[0]');
    h.clock.advance(4 * 86_400_000 - 5 * 3_600_000); // Friday noon
    allowed(await h.check(bob, feed));
    h.clock.advance(86_400_000); // Saturday noon
    denied(await h.check(bob, feed), 'ACCESS_OUTSIDE_TIME_WINDOW');
  });

  it('capability constraints apply after the policy constraints, to that capability only', async () => {
    const h = harness();
    h.setPolicy({
      version: 1,
      capabilities: [
        { resource: 'feed://a', action: 'read', constraints: [{ type: 'rate', limit: 1, windowSeconds: 60 }] },
        { resource: 'feed://b', action: 'read' },
      ],
      constraints: [{ type: 'quota', units: 3 }],
    });
    allowed(await h.check(bob, { resource: 'feed://a', action: 'read' }));
    denied(
      await h.check(bob, { resource: 'feed://a', action: 'read' }),
      'ACCESS_RATE_LIMITED',
      'capabilities[0].constraints[0]',
    );
    allowed(await h.check(bob, { resource: 'feed://b', action: 'read' }));
    allowed(await h.check(bob, { resource: 'feed://b', action: 'read' }));
    denied(await h.check(bob, { resource: 'feed://b', action: 'read' }), 'ACCESS_QUOTA_EXHAUSTED', 'constraints[0]');
  });

  it('reports the first failing constraint in declared order; stateless ones before counters', async () => {
    const h = harness();
    h.setPolicy(
      constrained([
        { type: 'quota', units: 1 },
        { type: 'minTrust', score: 0.9 },
        { type: 'expiry', at: h.clock.seconds - 1 },
      ]),
    );
    denied(await h.check(bob, feed), 'ACCESS_TRUST_TOO_LOW', 'constraints[1]');
    h.trust.set(bob.did, 1);
    denied(await h.check(bob, feed), 'ACCESS_EXPIRED', 'constraints[2]');
  });

  it('counters are all-or-nothing: a quota refusal takes no rate slot, a rate refusal spends no units', async () => {
    const h = harness();
    h.clock.ms = Math.ceil(h.clock.ms / 60_000) * 60_000;
    h.setPolicy({
      version: 1,
      capabilities: [{ resource: 'service://payment', action: 'call' }],
      constraints: [
        { type: 'quota', units: 10 },
        { type: 'rate', limit: 2, windowSeconds: 60 },
      ],
    });
    const call = (amount: number) => h.check(bob, { resource: 'service://payment', action: 'call', amount });
    denied(await call(11), 'ACCESS_QUOTA_EXHAUSTED');
    allowed(await call(4));
    allowed(await call(4));
    denied(await call(1), 'ACCESS_RATE_LIMITED', 'constraints[1]');
    h.clock.advance(60_000);
    allowed(await call(2)); // the refused call spent nothing: 2 units were left
    denied(await call(1), 'ACCESS_QUOTA_EXHAUSTED');
  });
});

describe('membrane checkAccess: defaults and bad requests', () => {
  it("an owner without a policy gets the relay's default", async () => {
    const closed = harness({ whenNoPolicy: 'deny' });
    denied(await closed.check(bob, feed), 'ACCESS_NO_GRANT');
    assert.equal(closed.lastRecord().via, 'default');
    const open = harness({ whenNoPolicy: 'allow' });
    const d = await open.check(bob, feed);
    allowed(d);
    assert.equal(d.allowed && d.via, 'default');
  });

  it('"may message me": did: resources, action "*"', async () => {
    const h = harness();
    h.setPolicy({ version: 1, capabilities: [{ resource: h.owner.didKey, action: '*' }] });
    allowed(await h.check(bob, { resource: h.owner.did, action: 'send' }));
    allowed(await h.check(bob, { resource: h.owner.did, action: 'open' }));
    denied(await h.check(bob, { resource: bob.did, action: 'send' }), 'ACCESS_NO_GRANT');
  });

  it('refuses malformed requests with BAD_FIELD, and audits them', async () => {
    const h = harness({ whenNoPolicy: 'allow' });
    denied(await h.check(bob, { resource: 'feed://a/../b', action: 'read' }), 'BAD_FIELD', 'resource');
    denied(await h.check(bob, { resource: 'feed://*', action: 'read' }), 'BAD_FIELD', 'resource');
    denied(await h.check(bob, { resource: `feed://${'a'.repeat(300)}`, action: 'read' }), 'BAD_FIELD', 'resource');
    denied(await h.check(bob, { ...feed, amount: -1 }), 'BAD_FIELD', 'amount');
    denied(await h.check(bob, { ...feed, amount: 0.5 }), 'BAD_FIELD', 'amount');
    denied(await h.check(bob, { resource: 'feed://a', action: 'delete' as 'read' }), 'BAD_FIELD');
    assert.equal(h.audit.records.length, 6);
  });
});

describe('membrane audit trail', () => {
  it('records every decision, allowed and denied, with code, reason, field and basis', async () => {
    const h = harness();
    const policy = h.setPolicy(constrained([{ type: 'rate', limit: 1, windowSeconds: 3600 }]));
    const decisions: AccessDecision[] = [];
    decisions.push(await h.check(bob, feed));
    decisions.push(await h.check(bob, feed));
    decisions.push(await h.check(bob, { resource: 'feed://x', action: 'read' }));
    assert.equal(h.audit.records.length, decisions.length);
    const [ok, limited, none] = h.audit.records;
    assert.deepEqual(ok, {
      at: h.clock.ms,
      peer: bob.did,
      owner: h.owner.did,
      resource: 'feed://my-channel',
      action: 'read',
      amount: 1,
      allowed: true,
      code: 'OK',
      via: 'policy',
      field: 'capabilities[0]',
      reason: '',
      basis: decisions[0]!.basis,
    });
    assert.equal(policy.version, 1);
    assert.equal(limited!.code, 'ACCESS_RATE_LIMITED');
    assert.equal(limited!.field, 'constraints[0]');
    assert.match(limited!.reason, /more than 1 requests/);
    assert.equal(none!.code, 'ACCESS_NO_GRANT');
    for (const r of h.audit.records) assert.ok(r.allowed || r.reason.length > 0, 'every denial says why');
  });

  it('fails closed: when the trail refuses a record, the request is denied', async () => {
    class BrokenSink extends MemoryAuditSink {
      override record(): void {
        throw new Error('disk full');
      }
    }
    const h = harness({ audit: new BrokenSink(), whenNoPolicy: 'allow' });
    denied(await h.check(bob, feed), 'STORE_UNAVAILABLE');
  });

  it('a store failure denies with its code and is audited', async () => {
    const h = harness({
      trust: {
        trustScore: () => {
          throw new Error('QVL unreachable');
        },
      },
    });
    h.setPolicy(constrained([{ type: 'minTrust', score: 0.1 }]));
    denied(await h.check(bob, feed), 'STORE_UNAVAILABLE');
    assert.equal(h.lastRecord().code, 'STORE_UNAVAILABLE');
    assert.match(h.lastRecord().reason, /QVL unreachable/);
  });

  it('keeps the newest records within its bound', () => {
    const sink = new MemoryAuditSink(3);
    for (let i = 0; i < 5; i++) sink.record({ at: i } as never);
    assert.deepEqual(
      sink.records.map((r) => r.at),
      [2, 3, 4],
    );
  });
});
