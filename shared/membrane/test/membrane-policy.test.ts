/**
 * The policy model: the JSON format (strict, typed errors naming the field),
 * resources and patterns, the compiler and its matcher.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import {
  CompiledPolicy,
  canonicalDid,
  insideTimeWindow,
  DEFAULT_MEMBRANE_LIMITS as LIMITS,
  MembraneError,
  membraneLimits,
  parsePolicy,
  parseResource,
  patternCovers,
  policyToJson,
  validatePolicy,
} from '@libertaria/membrane';
import { repoPath } from '../../../test-support/paths.js';
import { MONDAY_NOON_MS, seedPolicy } from './support/membrane-fixtures.js';

const alice = Ed25519Identity.generate();
const owner = Ed25519Identity.generate();

function refused(fn: () => unknown, code: string, field: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MembraneError, `expected MembraneError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.field, field, err.message);
    assert.ok(err.message.startsWith(`${field}: `), err.message);
    return true;
  });
}

const policyWith = (patch: Record<string, unknown>) => ({ version: 1, capabilities: [], ...patch });
const capWith = (patch: Record<string, unknown>) =>
  policyWith({ capabilities: [{ resource: 'feed://x', action: 'read', ...patch }] });

describe('membrane policy JSON', () => {
  it("expresses the seed's three examples, normalized", () => {
    const policy = parsePolicy(JSON.stringify(seedPolicy([alice.didKey])), LIMITS);
    assert.deepEqual(policy.sets.berlin, [alice.did], 'did:key normalized to did:libertaria');
    assert.deepEqual(
      policy.capabilities.map((c) => [c.action, c.resource, c.conditions]),
      [
        ['read', 'feed://my-channel', []],
        ['write', 'chapter://berlin/proposals', [{ type: 'member', set: 'berlin' }]],
        ['call', 'service://payment', [{ type: 'amount', max: 100 }]],
      ],
    );
    assert.equal(policy.expiry, null);
    // Normalized output parses back to itself: one policy, one serialization.
    assert.deepEqual(parsePolicy(policyToJson(policy), LIMITS), policy);
  });

  it('accepts every constraint kind and fills defaults', () => {
    const policy = validatePolicy(
      policyWith({
        expiry: 2_000_000_000,
        constraints: [
          { type: 'expiry', at: 1_900_000_000 },
          { type: 'notBefore', at: 1_700_000_000 },
          { type: 'rate', limit: 10, windowSeconds: 60 },
          { type: 'rate', limit: 1000, windowSeconds: 60, scope: 'all' },
          { type: 'quota', units: 500 },
          { type: 'quota', units: 50, windowSeconds: 86400, scope: 'peer' },
          { type: 'minTrust', score: 0.5 },
          { type: 'timeWindow', from: '22:00', to: '06:00', days: [7, 6], utcOffsetMinutes: 60 },
        ],
      }),
      LIMITS,
    );
    assert.deepEqual(policy.constraints[2], { type: 'rate', limit: 10, windowSeconds: 60, scope: 'peer' });
    assert.deepEqual(policy.constraints[4], { type: 'quota', units: 500, windowSeconds: 0, scope: 'peer' });
    assert.deepEqual(policy.constraints[7], {
      type: 'timeWindow',
      from: '22:00',
      to: '06:00',
      days: [6, 7],
      utcOffsetMinutes: 60,
    });
    assert.equal(policy.expiry, 2_000_000_000);
  });

  const bad: [string, unknown, string, string?][] = [
    ['not an object', [], '$'],
    ['unknown top-level key', policyWith({ owner: 'x' }), 'owner'],
    ['missing version', { capabilities: [] }, 'version'],
    ['wrong version', policyWith({ version: 2 }), 'version'],
    ['capabilities not an array', policyWith({ capabilities: {} }), 'capabilities'],
    ['capability not an object', policyWith({ capabilities: ['read feed://x'] }), 'capabilities[0]'],
    ['capability missing action', policyWith({ capabilities: [{ resource: 'feed://x' }] }), 'capabilities[0].action'],
    ['unknown action', capWith({ action: 'delete' }), 'capabilities[0].action'],
    ['unknown scheme', capWith({ resource: 'http://x' }), 'capabilities[0].resource'],
    ['dot-dot segment', capWith({ resource: 'feed://a/../b' }), 'capabilities[0].resource'],
    ['empty segment', capWith({ resource: 'feed://a//b' }), 'capabilities[0].resource'],
    ['space in path', capWith({ resource: 'feed://a b' }), 'capabilities[0].resource'],
    ['bad percent escape', capWith({ resource: 'feed://a%zz' }), 'capabilities[0].resource'],
    ['wildcard inside', capWith({ resource: 'feed://*/x' }), 'capabilities[0].resource'],
    ['bad DID resource', capWith({ resource: 'did:libertaria:z0OIl' }), 'capabilities[0].resource'],
    ['unknown condition', capWith({ conditions: [{ type: 'peer' }] }), 'capabilities[0].conditions[0].type'],
    ['member of no set', capWith({ conditions: [{ type: 'member', set: 'x' }] }), 'capabilities[0].conditions[0].set'],
    ['negative amount', capWith({ conditions: [{ type: 'amount', max: -1 }] }), 'capabilities[0].conditions[0].max'],
    ['fractional amount', capWith({ conditions: [{ type: 'amount', max: 1.5 }] }), 'capabilities[0].conditions[0].max'],
    [
      'two amounts',
      capWith({
        conditions: [
          { type: 'amount', max: 1 },
          { type: 'amount', max: 2 },
        ],
      }),
      'capabilities[0].conditions',
    ],
    [
      'extra key in condition',
      capWith({ conditions: [{ type: 'amount', max: 1, min: 0 }] }),
      'capabilities[0].conditions[0].min',
    ],
    ['unknown constraint', policyWith({ constraints: [{ type: 'budget' }] }), 'constraints[0].type'],
    ['rate without window', policyWith({ constraints: [{ type: 'rate', limit: 1 }] }), 'constraints[0].windowSeconds'],
    [
      'rate limit 0',
      policyWith({ constraints: [{ type: 'rate', limit: 0, windowSeconds: 1 }] }),
      'constraints[0].limit',
    ],
    [
      'rate window too long',
      policyWith({ constraints: [{ type: 'rate', limit: 1, windowSeconds: 1e9 }] }),
      'constraints[0].windowSeconds',
    ],
    ['bad scope', policyWith({ constraints: [{ type: 'quota', units: 1, scope: 'node' }] }), 'constraints[0].scope'],
    ['quota units as string', policyWith({ constraints: [{ type: 'quota', units: '5' }] }), 'constraints[0].units'],
    ['trust above 1', policyWith({ constraints: [{ type: 'minTrust', score: 1.5 }] }), 'constraints[0].score'],
    [
      'bad HH:MM',
      policyWith({ constraints: [{ type: 'timeWindow', from: '24:00', to: '06:00' }] }),
      'constraints[0].from',
    ],
    [
      'empty window',
      policyWith({ constraints: [{ type: 'timeWindow', from: '06:00', to: '06:00' }] }),
      'constraints[0].to',
    ],
    [
      'day 0',
      policyWith({ constraints: [{ type: 'timeWindow', from: '06:00', to: '07:00', days: [0] }] }),
      'constraints[0].days[0]',
    ],
    [
      'no days',
      policyWith({ constraints: [{ type: 'timeWindow', from: '06:00', to: '07:00', days: [] }] }),
      'constraints[0].days',
    ],
    [
      'repeated day',
      policyWith({ constraints: [{ type: 'timeWindow', from: '06:00', to: '07:00', days: [1, 1] }] }),
      'constraints[0].days',
    ],
    [
      'offset too large',
      policyWith({ constraints: [{ type: 'timeWindow', from: '06:00', to: '07:00', utcOffsetMinutes: 900 }] }),
      'constraints[0].utcOffsetMinutes',
    ],
    ['capability constraint', capWith({ constraints: [{ type: 'expiry' }] }), 'capabilities[0].constraints[0].at'],
    ['expiry not an integer', policyWith({ expiry: '2027' }), 'expiry'],
    ['set member not a DID', policyWith({ sets: { a: ['bob'] } }), 'sets.a[0]'],
    ['bad set name', policyWith({ sets: { 'a b': [] } }), 'sets.a b'],
    ['array with a prototype trick', JSON.parse('{"version":1,"capabilities":[],"__proto__":{"x":1}}'), '__proto__'],
  ];
  for (const [name, value, field] of bad) {
    it(`refuses ${name}, naming ${field}`, () => {
      refused(() => validatePolicy(value, LIMITS), 'POLICY_INVALID', field);
    });
  }

  it('refuses text that is not JSON or not UTF-8', () => {
    refused(() => parsePolicy('{"version":1,', LIMITS), 'POLICY_INVALID', '$');
    refused(() => parsePolicy(Uint8Array.of(0x7b, 0xff, 0x7d), LIMITS), 'POLICY_INVALID', '$');
  });

  it('enforces every size limit, each configurable', () => {
    const limits = membraneLimits({
      maxPolicyBytes: 300,
      maxCapabilities: 2,
      maxConditions: 1,
      maxConstraints: 1,
      maxSets: 1,
      maxSetMembers: 2,
      maxResourceLength: 20,
    });
    const cap = { resource: 'feed://x', action: 'read' };
    refused(() => parsePolicy(JSON.stringify(policyWith({ pad: 'x'.repeat(300) })), limits), 'POLICY_INVALID', '$');
    refused(
      () => validatePolicy(policyWith({ capabilities: [cap, cap, cap] }), limits),
      'POLICY_INVALID',
      'capabilities',
    );
    const amount = { type: 'amount', max: 1 };
    refused(
      () => validatePolicy(policyWith({ capabilities: [{ ...cap, conditions: [amount, amount] }] }), limits),
      'POLICY_INVALID',
      'capabilities[0].conditions',
    );
    const exp = { type: 'expiry', at: 1 };
    refused(() => validatePolicy(policyWith({ constraints: [exp, exp] }), limits), 'POLICY_INVALID', 'constraints');
    refused(() => validatePolicy(policyWith({ sets: { a: [], b: [] } }), limits), 'POLICY_INVALID', 'sets');
    const dids = [0, 1, 2].map(() => Ed25519Identity.generate().did);
    refused(() => validatePolicy(policyWith({ sets: { a: dids } }), limits), 'POLICY_INVALID', 'sets.a');
    refused(
      () => validatePolicy(policyWith({ capabilities: [{ ...cap, resource: `feed://${'x'.repeat(20)}` }] }), limits),
      'POLICY_INVALID',
      'capabilities[0].resource',
    );
    // The same documents pass under the defaults.
    validatePolicy(policyWith({ capabilities: [cap, cap, cap], sets: { a: dids } }), LIMITS);
    assert.throws(() => membraneLimits({ maxChainDepth: 0 }), { code: 'BAD_FIELD' });
  });

  it("refuses a did: resource that is not the owner's, when compiled for that owner", () => {
    const policy = validatePolicy(capWith({ resource: alice.did, action: 'send' }), LIMITS);
    refused(() => new CompiledPolicy(owner.did, policy), 'POLICY_INVALID', 'capabilities[0].resource');
    assert.ok(new CompiledPolicy(alice.didKey, policy), 'did:key form of the same owner');
  });
});

describe('membrane resources', () => {
  const opts = { maxLength: 256, allowPattern: true };
  const p = (uri: string) => parseResource(uri, 'r', opts);

  it('canonicalizes DIDs, so both forms of one key are one resource', () => {
    assert.equal(canonicalDid(alice.didKey), alice.did);
    assert.deepEqual(p(alice.didKey), { kind: 'exact', uri: alice.did });
  });

  it('covers strictly below a /* pattern, and scheme://* covers the scheme', () => {
    const berlin = p('chapter://berlin/*');
    assert.ok(patternCovers(berlin, p('chapter://berlin/proposals')));
    assert.ok(patternCovers(berlin, p('chapter://berlin/proposals/*')));
    assert.ok(patternCovers(berlin, berlin));
    assert.ok(!patternCovers(berlin, p('chapter://berlin')), 'the prefix itself is not below it');
    assert.ok(!patternCovers(berlin, p('chapter://berlinx/a')), 'segment boundaries hold');
    assert.ok(!patternCovers(berlin, p('chapter://*')));
    assert.ok(patternCovers(p('chapter://*'), berlin));
    assert.ok(!patternCovers(p('feed://*'), berlin));
    assert.ok(!patternCovers(p('chapter://berlin/proposals'), berlin), 'exact never covers a pattern');
  });

  it('refuses patterns where one exact resource is required', () => {
    assert.throws(() => parseResource('feed://*', 'r', { maxLength: 256, allowPattern: false }), {
      code: 'POLICY_INVALID',
    });
  });
});

describe('membrane compiled matcher', () => {
  const policy = new CompiledPolicy(
    owner.did,
    validatePolicy(
      {
        version: 1,
        sets: { friends: [alice.did] },
        capabilities: [
          { resource: owner.did, action: 'send', conditions: [{ type: 'member', set: 'friends' }] },
          { resource: 'chapter://berlin/*', action: '*', conditions: [{ type: 'amount', max: 10 }] },
          { resource: 'chapter://berlin/proposals', action: 'write' },
        ],
      },
      LIMITS,
    ),
  );
  const stranger = Ed25519Identity.generate().did;

  it('matches exact resources, patterns, actions and conditions in policy order', () => {
    assert.equal((policy.match(alice.did, owner.did, 'send', 1) as { field: string }).field, 'capabilities[0]');
    assert.equal(policy.match(alice.did, owner.did, 'read', 1), undefined, 'action differs');
    assert.deepEqual(policy.match(stranger, owner.did, 'send', 1), {
      matched: false,
      field: 'capabilities[0].conditions[0]',
      reason: 'the peer is not in set "friends"',
    });
    const small = policy.match(stranger, 'chapter://berlin/proposals', 'write', 5);
    assert.equal((small as { field: string }).field, 'capabilities[1]', 'the earlier pattern wins');
    const large = policy.match(stranger, 'chapter://berlin/proposals', 'write', 50);
    assert.equal((large as { field: string }).field, 'capabilities[2]', 'a later exact capability still applies');
    const miss = policy.match(stranger, 'chapter://berlin/minutes', 'read', 50);
    assert.equal((miss as { field: string }).field, 'capabilities[1].conditions[0]');
    assert.equal(policy.match(stranger, 'chapter://hamburg/x', 'read', 1), undefined);
  });

  it('returns the same static objects on every call (nothing allocated per match)', () => {
    const a = policy.match(alice.did, owner.did, 'send', 1);
    assert.equal(policy.match(alice.did, owner.did, 'send', 1), a);
    assert.equal(policy.match(stranger, owner.did, 'send', 1), policy.match(stranger, owner.did, 'send', 1));
  });
});

describe('membrane time windows', () => {
  const check = (from: number, to: number, days: number[], offsetMinutes = 0) => ({
    kind: 'timeWindow' as const,
    fromMinute: from,
    toMinute: to,
    daysMask: days.reduce((m, d) => m | (1 << d), 0),
    offsetMs: offsetMinutes * 60_000,
    field: 'f',
  });
  const at = (hours: number) => MONDAY_NOON_MS + (hours - 12) * 3_600_000;

  it('knows the ISO weekday, wraps past midnight and applies the offset', () => {
    const weekdays9to17 = check(9 * 60, 17 * 60, [1, 2, 3, 4, 5]);
    assert.ok(insideTimeWindow(weekdays9to17, at(12)));
    assert.ok(insideTimeWindow(weekdays9to17, at(9)));
    assert.ok(!insideTimeWindow(weekdays9to17, at(17)), 'the end is exclusive');
    assert.ok(!insideTimeWindow(weekdays9to17, at(12) - 2 * 86_400_000), 'Saturday');
    const nights = check(22 * 60, 6 * 60, [1, 2, 3, 4, 5, 6, 7]);
    assert.ok(insideTimeWindow(nights, at(23)));
    assert.ok(insideTimeWindow(nights, at(24 + 3)));
    assert.ok(!insideTimeWindow(nights, at(12)));
    // 12:00 UTC is 13:00 at +60: inside 13:00-14:00 local, not at UTC.
    assert.ok(insideTimeWindow(check(13 * 60, 14 * 60, [1], 60), at(12)));
    assert.ok(!insideTimeWindow(check(13 * 60, 14 * 60, [1]), at(12)));
    // 23:30 UTC Monday is 00:30 Tuesday at +60.
    assert.ok(insideTimeWindow(check(0, 60, [2], 60), at(23.5)));
    assert.ok(!insideTimeWindow(check(0, 60, [1], 60), at(23.5)));
  });
});

describe('docs/membrane.md', () => {
  it('its policy example is a valid policy (with real DIDs for the placeholders)', () => {
    const doc = readFileSync(repoPath('docs/membrane.md'), 'utf8');
    const block = /```json\n([\s\S]*?)```/.exec(doc)?.[1];
    assert.ok(block, 'docs/membrane.md has a json example');
    const text = block
      .replaceAll('"did:libertaria:z…"', JSON.stringify(Ed25519Identity.generate().did))
      .replaceAll('"did:key:z…"', JSON.stringify(Ed25519Identity.generate().didKey));
    const policy = parsePolicy(text, LIMITS);
    assert.deepEqual(
      policy.capabilities.map((c) => `${c.action} ${c.resource}`),
      ['read feed://my-channel', 'write chapter://berlin/proposals', 'call service://payment'],
    );
  });
});
