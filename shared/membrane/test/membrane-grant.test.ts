/**
 * Grant tokens: encoding, verification to the root, attenuation, and every
 * refusal with its own code: forged, expired, not yet valid, revoked,
 * over-attenuated, broken chains, wrong issuer or audience, too deep, too
 * large, malformed. Decisions go through checkAccess with in-memory state.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import {
  type AccessDecision,
  decodeGrant,
  delegateGrant,
  encodeGrant,
  type GrantPayload,
  grantPayloadJson,
  issueGrant,
  DEFAULT_MEMBRANE_LIMITS as LIMITS,
  MembraneError,
  membraneLimits,
  signGrantLink,
  verifyGrant,
} from '@libertaria/membrane';
import { harness, MONDAY_NOON_MS } from './support/membrane-fixtures.js';

const bob = Ed25519Identity.generate();
const carol = Ed25519Identity.generate();
const mallory = Ed25519Identity.generate();
const pay = { resource: 'service://payment', action: 'call' as const };

function refusedWith(fn: () => unknown, code: string, field?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MembraneError, String(err));
    assert.equal(err.code, code, err.message);
    if (field !== undefined) assert.equal(err.field, field, err.message);
    return true;
  });
}
function denied(d: AccessDecision, code: string, field?: string): void {
  assert.ok(!d.allowed, `expected ${code}, was allowed`);
  assert.equal(d.code, code, d.reason);
  if (field !== undefined) assert.equal(d.field, field);
}
function allowed(d: AccessDecision): void {
  assert.ok(d.allowed, d.allowed ? '' : `denied ${d.code} at ${d.field}: ${d.reason}`);
}

/** A root grant from h.owner to bob: call service://* up to 50 units, for an hour. */
function rootGrant(h: ReturnType<typeof harness>, extra: Partial<Parameters<typeof issueGrant>[1]> = {}) {
  return issueGrant(
    h.owner,
    {
      audience: bob.did,
      capabilities: [{ resource: 'service://*', action: 'call', conditions: [{ type: 'amount', max: 50 }] }],
      expiry: h.clock.seconds + 3600,
      ...extra,
    },
    LIMITS,
  );
}

/** A payload for a hand-made link (to build tokens the API refuses to build). */
function payload(p: Partial<GrantPayload> & Pick<GrantPayload, 'iss' | 'aud'>): GrantPayload {
  return {
    v: 1,
    att: [{ ...pay, conditions: [] }],
    cst: [],
    exp: Math.floor(MONDAY_NOON_MS / 1000) + 3600,
    nnc: '0'.repeat(32),
    ...p,
  };
}

describe('membrane grant tokens: encoding', () => {
  it('round-trips, canonical and with a content id per link', () => {
    const h = harness();
    const token = rootGrant(h);
    const [link] = decodeGrant(token, LIMITS);
    assert.equal(grantPayloadJson(link!.payload), new TextDecoder().decode(link!.payloadBytes));
    assert.match(link!.cid, /^[0-9a-f]{64}$/);
    assert.deepEqual(encodeGrant([link!]), token);
    const v = verifyGrant(token, LIMITS, { owner: h.owner.didKey, audience: bob.didKey, nowMs: h.clock.ms });
    assert.equal(v.root, h.owner.did);
    assert.equal(v.audience, bob.did);
    assert.equal(v.cid, link!.cid);
    assert.notEqual(rootGrant(h).toString(), token.toString(), 'a fresh nonce per grant: a fresh cid');
  });

  it('refuses a payload that is valid JSON but not canonical', () => {
    const h = harness();
    const link = decodeGrant(rootGrant(h), LIMITS)[0]!;
    const spaced = new TextEncoder().encode(grantPayloadJson(link.payload).replace(':', ': '));
    const reordered = new TextEncoder().encode(
      JSON.stringify({ iss: link.payload.iss, ...JSON.parse(grantPayloadJson(link.payload)) }),
    );
    for (const payloadBytes of [spaced, reordered]) {
      refusedWith(
        () => decodeGrant(encodeGrant([{ ...link, payloadBytes }]), LIMITS),
        'GRANT_MALFORMED',
        'links[0].payload',
      );
    }
  });

  it('refuses truncation at every byte and trailing bytes as GRANT_MALFORMED, never another error', () => {
    const h = harness();
    const token = delegateGrant(
      rootGrant(h),
      bob,
      {
        audience: carol.did,
        capabilities: [{ ...pay, conditions: [{ type: 'amount', max: 5 }] }],
        expiry: h.clock.seconds + 60,
      },
      LIMITS,
    );
    for (let n = 0; n < token.length; n++)
      refusedWith(() => verifyGrant(token.subarray(0, n), LIMITS), 'GRANT_MALFORMED');
    refusedWith(() => verifyGrant(Uint8Array.from([...token, 0]), LIMITS), 'GRANT_MALFORMED');
    const v2 = Uint8Array.from(token);
    v2[3] = 2;
    refusedWith(() => verifyGrant(v2, LIMITS), 'GRANT_MALFORMED');
  });

  it('refuses schema violations naming the field', () => {
    const h = harness();
    const sign = (p: GrantPayload) => encodeGrant([signGrantLink(h.owner, p)]);
    const base = { iss: h.owner.did, aud: bob.did };
    refusedWith(
      () => verifyGrant(sign(payload({ ...base, att: [] })), LIMITS),
      'GRANT_MALFORMED',
      'links[0].payload.att',
    );
    refusedWith(
      () => verifyGrant(sign(payload({ ...base, aud: bob.didKey })), LIMITS),
      'GRANT_MALFORMED',
      'links[0].payload.aud',
    );
    refusedWith(
      () =>
        verifyGrant(sign(payload({ ...base, att: [{ ...pay, conditions: [{ type: 'member', set: 'x' }] }] })), LIMITS),
      'GRANT_MALFORMED',
      'links[0].payload.att[0].conditions[0].type',
    );
    refusedWith(
      () => verifyGrant(sign(payload({ ...base, nnc: 'xyz' })), LIMITS),
      'GRANT_MALFORMED',
      'links[0].payload.nnc',
    );
    refusedWith(
      () => verifyGrant(sign(payload({ ...base, nbf: 10, exp: 10 })), LIMITS),
      'GRANT_MALFORMED',
      'links[0].payload.exp',
    );
  });

  it('bounds size and depth (configurable), before any signature is checked', () => {
    const h = harness();
    const token = rootGrant(h);
    refusedWith(() => verifyGrant(token, membraneLimits({ maxTokenBytes: token.length - 1 })), 'GRANT_TOO_LARGE');
    verifyGrant(token, membraneLimits({ maxTokenBytes: token.length }));
    let chain = token;
    let holder = bob;
    const people = [bob];
    for (let i = 0; i < 3; i++) {
      const next = Ed25519Identity.generate();
      people.push(next);
      chain = delegateGrant(
        chain,
        holder,
        {
          audience: next.did,
          capabilities: [{ ...pay, conditions: [{ type: 'amount', max: 5 }] }],
          expiry: h.clock.seconds + 60,
        },
        LIMITS,
      );
      holder = next;
    }
    assert.equal(decodeGrant(chain, LIMITS).length, 4);
    refusedWith(() => verifyGrant(chain, membraneLimits({ maxChainDepth: 3 })), 'GRANT_CHAIN_TOO_DEEP');
    verifyGrant(chain, membraneLimits({ maxChainDepth: 4 }));
    // Depth is read from the header: a token claiming 200 links is refused without parsing them.
    const deep = Uint8Array.from(chain);
    deep[4] = 200;
    refusedWith(() => verifyGrant(deep, LIMITS), 'GRANT_CHAIN_TOO_DEEP');
  });
});

describe('membrane grant tokens: forgery', () => {
  it('refuses an altered payload, a swapped key and a self-signed claim to be the owner', () => {
    const h = harness();
    const token = rootGrant(h);
    const link = decodeGrant(token, LIMITS)[0]!;
    // 1. Widen the amount in place: still canonical JSON, but the signature no longer covers it.
    const widened = new TextEncoder().encode(
      new TextDecoder().decode(link.payloadBytes).replace('"max":50', '"max":99'),
    );
    refusedWith(
      () => verifyGrant(encodeGrant([{ ...link, payloadBytes: widened }]), LIMITS),
      'GRANT_BAD_SIGNATURE',
      'links[0]',
    );
    // 2. Mallory re-signs the owner's payload with her own key.
    const resigned = signGrantLink(mallory, link.payload);
    refusedWith(() => verifyGrant(encodeGrant([resigned]), LIMITS), 'GRANT_BAD_SIGNATURE');
    // 3. A flipped signature bit.
    const sig = Uint8Array.from(link.signature);
    sig[10]! ^= 1;
    refusedWith(() => verifyGrant(encodeGrant([{ ...link, signature: sig }]), LIMITS), 'GRANT_BAD_SIGNATURE');
  });

  it('checks chain, audience and owner before any signature: a forged token for someone else costs no verification', () => {
    const h = harness();
    const link = decodeGrant(rootGrant(h), LIMITS)[0]!;
    const sig = Uint8Array.from(link.signature);
    sig[3]! ^= 1;
    const forged = encodeGrant([{ ...link, signature: sig }]);
    // Both wrong: the cheap check answers (signature verification comes last).
    refusedWith(() => verifyGrant(forged, LIMITS, { audience: carol.did }), 'GRANT_WRONG_AUDIENCE');
    refusedWith(() => verifyGrant(forged, LIMITS, { owner: mallory.did }), 'GRANT_WRONG_ISSUER');
    refusedWith(() => verifyGrant(forged, LIMITS, { audience: bob.did }), 'GRANT_BAD_SIGNATURE');
  });

  it('caches verification per token, owner and audience: a token verified for bob is not verified for carol', () => {
    const h = harness();
    const token = rootGrant(h);
    const first = h.membrane.verifiedGrant(token, { audience: bob.did });
    assert.ok(!(first instanceof Error), String(first));
    assert.equal(h.membrane.verifiedGrant(Uint8Array.from(token), { audience: bob.did }), first, 'cached');
    const forCarol = h.membrane.verifiedGrant(token, { audience: carol.did });
    assert.ok(forCarol instanceof Error && (forCarol as { code?: string }).code === 'GRANT_WRONG_AUDIENCE');
  });

  it('refuses a grant signed by someone other than the owner, and one presented by someone else', async () => {
    const h = harness();
    const byMallory = issueGrant(mallory, { audience: bob.did, capabilities: [pay] }, LIMITS);
    denied(await h.check(bob, { ...pay, grant: byMallory }), 'GRANT_WRONG_ISSUER');
    const token = rootGrant(h);
    denied(await h.check(carol, { ...pay, grant: token }), 'GRANT_WRONG_AUDIENCE');
    allowed(await h.check(bob, { ...pay, grant: token }));
  });
});

describe('membrane grant tokens: time and revocation', () => {
  it('GRANT_NOT_YET_VALID before nbf, GRANT_EXPIRED from exp on, for any link of the chain', async () => {
    const h = harness();
    const token = rootGrant(h, { notBefore: h.clock.seconds + 10, expiry: h.clock.seconds + 20 });
    denied(await h.check(bob, { ...pay, grant: token }), 'GRANT_NOT_YET_VALID');
    h.clock.advance(10_000);
    allowed(await h.check(bob, { ...pay, grant: token }));
    h.clock.advance(10_000);
    denied(await h.check(bob, { ...pay, grant: token }), 'GRANT_EXPIRED');
    assert.equal(h.lastRecord().code, 'GRANT_EXPIRED');
  });

  it('every link must expire (GRANT_MALFORMED at exp), and not further ahead than maxGrantLifetimeSeconds', async () => {
    const h = harness();
    const { exp: _dropped, ...noExp } = payload({ iss: h.owner.did, aud: bob.did });
    const forever = encodeGrant([signGrantLink(h.owner, noExp as GrantPayload)]);
    refusedWith(() => verifyGrant(forever, LIMITS), 'GRANT_MALFORMED', 'links[0].payload.exp');
    denied(await h.check(bob, { ...pay, grant: forever }), 'GRANT_MALFORMED');
    // A year and a day ahead: a relay refuses it as presented and as used (a decision).
    const far = rootGrant(h, { expiry: h.clock.seconds + 366 * 24 * 3600 });
    refusedWith(() => verifyGrant(far, LIMITS, { nowMs: h.clock.ms }), 'GRANT_LIFETIME_TOO_LONG');
    denied(await h.check(bob, { ...pay, grant: far }), 'GRANT_LIFETIME_TOO_LONG');
    // The same token becomes acceptable once it is within the bound (time passes), and a year exactly is fine.
    h.clock.advance(2 * 24 * 3600 * 1000);
    allowed(await h.check(bob, { ...pay, grant: far }));
    allowed(await h.check(bob, { ...pay, grant: rootGrant(h, { expiry: h.clock.seconds + 365 * 24 * 3600 }) }));
  });

  it('GRANT_REVOKED when any link is revoked: revoking a link revokes everything delegated under it', async () => {
    const h = harness();
    const root = rootGrant(h);
    const child = delegateGrant(
      root,
      bob,
      {
        audience: carol.did,
        capabilities: [{ ...pay, conditions: [{ type: 'amount', max: 5 }] }],
        expiry: h.clock.seconds + 60,
      },
      LIMITS,
    );
    allowed(await h.check(carol, { ...pay, grant: child }));
    h.revocations.revoke(decodeGrant(root, LIMITS)[0]!.cid);
    denied(await h.check(carol, { ...pay, grant: child }), 'GRANT_REVOKED', 'links[0]');
    denied(await h.check(bob, { ...pay, grant: root }), 'GRANT_REVOKED');
  });
});

describe('membrane grant tokens: delegation and attenuation', () => {
  it('a delegate gets at most what its delegator had, and the token only for what it names', async () => {
    const h = harness();
    const child = delegateGrant(
      rootGrant(h),
      bob,
      {
        audience: carol.did,
        capabilities: [{ ...pay, conditions: [{ type: 'amount', max: 5 }] }],
        expiry: h.clock.seconds + 60,
      },
      LIMITS,
    );
    allowed(await h.check(carol, { ...pay, amount: 5, grant: child }));
    denied(
      await h.check(carol, { ...pay, amount: 6, grant: child }),
      'ACCESS_CONDITION_FAILED',
      'links[1].att[0].conditions[0]',
    );
    denied(await h.check(carol, { resource: 'service://storage', action: 'call', grant: child }), 'ACCESS_NO_GRANT');
    denied(await h.check(carol, { resource: 'service://payment', action: 'read', grant: child }), 'ACCESS_NO_GRANT');
  });

  const over: [string, (h: ReturnType<typeof harness>) => Partial<GrantPayload>, string][] = [
    [
      'a wider resource',
      () => ({ att: [{ resource: 'feed://*', action: 'call', conditions: [{ type: 'amount', max: 1 }] }] }),
      'links[1].payload.att[0]',
    ],
    [
      'another action',
      () => ({ att: [{ resource: 'service://payment', action: 'read', conditions: [{ type: 'amount', max: 1 }] }] }),
      'links[1].payload.att[0]',
    ],
    [
      'every action',
      () => ({ att: [{ resource: 'service://payment', action: '*', conditions: [{ type: 'amount', max: 1 }] }] }),
      'links[1].payload.att[0]',
    ],
    [
      'a larger amount',
      () => ({ att: [{ ...pay, conditions: [{ type: 'amount', max: 51 }] }] }),
      'links[1].payload.att[0]',
    ],
    ['no amount limit', () => ({ att: [{ ...pay, conditions: [] }] }), 'links[1].payload.att[0]'],
    ['a later expiry', (h) => ({ exp: h.clock.seconds + 3601 }), 'links[1].payload.exp'],
  ];
  for (const [name, patch, field] of over) {
    it(`refuses a delegation with ${name}: GRANT_OVER_ATTENUATED at ${field}`, async () => {
      const h = harness();
      const root = rootGrant(h);
      const parent = decodeGrant(root, LIMITS)[0]!;
      const p = payload({
        iss: bob.did,
        aud: carol.did,
        att: [{ ...pay, conditions: [{ type: 'amount', max: 5 }] }],
        exp: h.clock.seconds + 60,
        prf: parent.cid,
        ...patch(h),
      });
      const token = encodeGrant([parent, signGrantLink(bob, p)]);
      refusedWith(() => verifyGrant(token, LIMITS), 'GRANT_OVER_ATTENUATED', field);
      denied(await h.check(carol, { ...pay, grant: token }), 'GRANT_OVER_ATTENUATED', field);
      // The API refuses to build it in the first place.
      refusedWith(
        () =>
          delegateGrant(
            root,
            bob,
            { audience: carol.did, capabilities: p.att, expiry: p.exp, ...(p.nbf ? { notBefore: p.nbf } : {}) },
            LIMITS,
          ),
        'GRANT_OVER_ATTENUATED',
      );
    });
  }

  it('refuses an earlier nbf than the delegator', () => {
    const h = harness();
    const root = rootGrant(h, { notBefore: h.clock.seconds });
    refusedWith(
      () =>
        delegateGrant(
          root,
          bob,
          {
            audience: carol.did,
            capabilities: [{ ...pay, conditions: [{ type: 'amount', max: 1 }] }],
            expiry: h.clock.seconds + 60,
            notBefore: h.clock.seconds - 1,
          },
          LIMITS,
        ),
      'GRANT_OVER_ATTENUATED',
      'links[1].payload.nbf',
    );
  });

  it('refuses broken chains: an issuer that is not the previous audience, a wrong proof, a proof on the root', () => {
    const h = harness();
    const root = rootGrant(h);
    const parent = decodeGrant(root, LIMITS)[0]!;
    const att = [{ ...pay, conditions: [{ type: 'amount' as const, max: 1 }] }];
    const byMallory = signGrantLink(
      mallory,
      payload({ iss: mallory.did, aud: carol.did, att, exp: h.clock.seconds + 1, prf: parent.cid }),
    );
    refusedWith(
      () => verifyGrant(encodeGrant([parent, byMallory]), LIMITS),
      'GRANT_CHAIN_BROKEN',
      'links[1].payload.iss',
    );
    const wrongProof = signGrantLink(
      bob,
      payload({ iss: bob.did, aud: carol.did, att, exp: h.clock.seconds + 1, prf: 'a'.repeat(64) }),
    );
    refusedWith(
      () => verifyGrant(encodeGrant([parent, wrongProof]), LIMITS),
      'GRANT_CHAIN_BROKEN',
      'links[1].payload.prf',
    );
    const rootWithProof = signGrantLink(h.owner, payload({ iss: h.owner.did, aud: bob.did, prf: 'a'.repeat(64) }));
    refusedWith(() => verifyGrant(encodeGrant([rootWithProof]), LIMITS), 'GRANT_CHAIN_BROKEN', 'links[0].payload.prf');
    refusedWith(
      () => delegateGrant(root, carol, { audience: mallory.did, capabilities: att }, LIMITS),
      'GRANT_WRONG_AUDIENCE',
    );
  });

  it("constraints accumulate down the chain; a delegator's quota is shared by all its delegates", async () => {
    const h = harness();
    const root = rootGrant(h, { constraints: [{ type: 'quota', units: 10, windowSeconds: 0 }] });
    const dave = Ed25519Identity.generate();
    const sub = {
      capabilities: [{ ...pay, conditions: [{ type: 'amount' as const, max: 50 }] }],
      expiry: h.clock.seconds + 60,
    };
    const toCarol = delegateGrant(root, bob, { audience: carol.did, ...sub }, LIMITS);
    const toDave = delegateGrant(
      root,
      bob,
      { audience: dave.did, ...sub, constraints: [{ type: 'rate', limit: 1, windowSeconds: 60 }] },
      LIMITS,
    );
    allowed(await h.check(carol, { ...pay, amount: 6, grant: toCarol }));
    allowed(await h.check(dave, { ...pay, amount: 4, grant: toDave }));
    denied(await h.check(dave, { ...pay, amount: 0, grant: toDave }), 'ACCESS_RATE_LIMITED', 'links[1].cst[0]');
    denied(await h.check(carol, { ...pay, amount: 1, grant: toCarol }), 'ACCESS_QUOTA_EXHAUSTED', 'links[0].cst[0]');
    denied(await h.check(bob, { ...pay, amount: 1, grant: root }), 'ACCESS_QUOTA_EXHAUSTED');
  });

  it('a presented grant decides even where the policy would not: the owner granted beyond it', async () => {
    const h = harness();
    h.setPolicy({ version: 1, capabilities: [] });
    denied(await h.check(bob, pay), 'ACCESS_NO_GRANT');
    const d = await h.check(bob, { ...pay, grant: rootGrant(h) });
    allowed(d);
    assert.equal(d.allowed && d.via, 'grant');
    assert.equal(h.lastRecord().basis, d.basis);
    assert.match(d.basis, /^[0-9a-f]{64}$/, 'the basis is the token cid');
  });

  it('verifies a token once: failures are cached too, within the cache bound', async () => {
    const h = harness({ grantCacheSize: 1 });
    const forged = Uint8Array.from(rootGrant(h));
    forged[forged.length - 1]! ^= 1;
    denied(await h.check(bob, { ...pay, grant: forged }), 'GRANT_BAD_SIGNATURE');
    denied(await h.check(bob, { ...pay, grant: forged }), 'GRANT_BAD_SIGNATURE');
    const good = rootGrant(h);
    allowed(await h.check(bob, { ...pay, grant: good }));
    allowed(await h.check(bob, { ...pay, grant: good }));
    assert.equal(h.audit.records.length, 4);
  });
});
