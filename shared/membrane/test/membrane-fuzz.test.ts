/**
 * Bounded fuzzing of the membrane's two decoders of untrusted input: grant
 * tokens (bytes from a requester) and policy documents (JSON from an owner).
 * Every input must either be accepted or be refused with a MembraneError
 * carrying one of the decoder's codes: never another exception, never a hang;
 * and no token other than the unchanged original may verify.
 * FUZZ_SEED replays a run.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import {
  delegateGrant,
  issueGrant,
  DEFAULT_MEMBRANE_LIMITS as LIMITS,
  MembraneError,
  parsePolicy,
  verifyGrant,
} from '@libertaria/membrane';
import { seedPolicy } from './support/membrane-fixtures.js';

const seed = Number(process.env.FUZZ_SEED ?? 0x6d62);

function rng(s: number): () => number {
  let x = s >>> 0 || 1;
  return () => {
    // xorshift32: deterministic and fast; quality is ample for mutation choices.
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

function mutate(input: Uint8Array, r: () => number): Uint8Array {
  const bytes = Array.from(input);
  const edits = 1 + Math.floor(r() * 4);
  for (let e = 0; e < edits; e++) {
    const at = Math.floor(r() * (bytes.length + 1));
    const kind = r();
    if (kind < 0.4 && bytes.length > 0) bytes[at % bytes.length] = Math.floor(r() * 256);
    else if (kind < 0.6) bytes.splice(at, 1);
    else if (kind < 0.8) bytes.splice(at, 0, Math.floor(r() * 256));
    else if (kind < 0.9) bytes.splice(at, Math.floor(r() * 40));
    // A printable character, so JSON stays JSON more often and reaches the schema checks.
    else bytes.splice(at, 0, 0x20 + Math.floor(r() * 95));
  }
  return Uint8Array.from(bytes);
}

function tally(counts: Record<string, number>, fn: () => unknown, allowed: RegExp): void {
  try {
    fn();
    counts.OK = (counts.OK ?? 0) + 1;
  } catch (err) {
    if (!(err instanceof MembraneError) || !allowed.test(err.code)) {
      assert.fail(`untyped or unexpected refusal (seed ${seed}): ${String(err)}`);
    }
    counts[err.code] = (counts[err.code] ?? 0) + 1;
  }
}

it('grant token decoding survives 4,000 mutated tokens with typed refusals', () => {
  const r = rng(seed);
  // Keys from the seed too, so FUZZ_SEED replays the very same inputs (nonces aside, which mutations do not target).
  const key = () => Ed25519Identity.fromSeed(Uint8Array.from({ length: 32 }, () => Math.floor(r() * 256)));
  const [owner, bob, carol] = [key(), key(), key()];
  const root = issueGrant(
    owner,
    {
      audience: bob.did,
      capabilities: [{ resource: 'service://*', action: 'call', conditions: [{ type: 'amount', max: 50 }] }],
      constraints: [{ type: 'rate', limit: 5, windowSeconds: 60 }],
      expiry: 2_000_000_000,
    },
    LIMITS,
  );
  const chain = delegateGrant(
    root,
    bob,
    {
      audience: carol.did,
      capabilities: [{ resource: 'service://pay', action: 'call', conditions: [{ type: 'amount', max: 5 }] }],
      expiry: 1_999_999_999,
    },
    LIMITS,
  );
  const counts: Record<string, number> = {};
  let accepted = 0;
  for (let i = 0; i < 4000; i++) {
    const original = i % 2 ? chain : root;
    const input = mutate(original, r);
    tally(counts, () => verifyGrant(input, LIMITS), /^GRANT_/);
    // A mutation can be a no-op (a zero-length cut, a byte replaced by itself); anything else that
    // verifies would be a forgery or a second encoding of one grant.
    if (counts.OK !== undefined && counts.OK > accepted) {
      accepted = counts.OK;
      assert.deepEqual(input, original, `a changed token verified (seed ${seed}, input ${i})`);
    }
  }
  console.log(`grant fuzz seed=${seed} ${JSON.stringify(counts)}`);
  assert.ok((counts.GRANT_MALFORMED ?? 0) > 1000, 'the fuzzer reaches the decoder');
  assert.ok((counts.GRANT_BAD_SIGNATURE ?? 0) > 0, 'some mutations decode and reach the signature check');
});

it('policy parsing survives 20,000 mutated documents with typed refusals', () => {
  const r = rng(seed + 1);
  const doc = new TextEncoder().encode(
    JSON.stringify({
      ...(seedPolicy([Ed25519Identity.generate().did]) as object),
      constraints: [
        { type: 'rate', limit: 10, windowSeconds: 60, scope: 'all' },
        { type: 'quota', units: 100, windowSeconds: 3600 },
        { type: 'minTrust', score: 0.25 },
        { type: 'timeWindow', from: '08:00', to: '20:00', days: [1, 2, 3], utcOffsetMinutes: 120 },
      ],
      expiry: 2_000_000_000,
    }),
  );
  const counts: Record<string, number> = {};
  for (let i = 0; i < 20_000; i++) tally(counts, () => parsePolicy(mutate(doc, r), LIMITS), /^(POLICY_INVALID)$/);
  console.log(`policy fuzz seed=${seed} ${JSON.stringify(counts)}`);
  assert.ok((counts.OK ?? 0) > 100, 'some mutations still parse: the fuzzer reaches the schema');
  assert.ok((counts.POLICY_INVALID ?? 0) > 10_000);
});
