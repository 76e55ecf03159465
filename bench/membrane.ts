/**
 * Membrane benchmark: `node --import tsx bench/membrane.ts` (imports the built
 * `@libertaria/shared`: run `npm run build` first) (about 25 s;
 * BENCH_QUICK=1 about 8 s). Decisions per second, one process, one core:
 *
 *  - match: CompiledPolicy.match alone (the compiled matcher: a policy of
 *    64 capabilities, a member set of 1,000 DIDs; requests cycle over exact,
 *    pattern, member and miss cases);
 *  - checkAccess on in-memory state: an open capability without constraints;
 *    the same with a rate and a quota constraint (counters consumed); through
 *    a presented two-link grant token (verification cached);
 *  - verifyGrant cold: a two-link token verified from bytes (2 Ed25519 verifies);
 *  - checkAccess on Redis (a private redis-server): the rate+quota policy, 64
 *    decisions in flight on one connection (trust, counters and audit record
 *    in Redis; policy from the node's cache);
 *  - the relay's per-frame cost (services/relay/src/membrane/enforcer.ts):
 *    ConnectionGate.admit of a SEND whose recipient's allow is cached (what a
 *    fast frame pays with the membrane on), and one SEND decided through Redis
 *    per frame (the allow cache off: owner lookup cached, audit XADD), 64 in flight.
 * Each figure is the median of BENCH_MEMBRANE_TRIALS trials (default 5, quick 3)
 * of BENCH_MEMBRANE_TRIAL_MS (default 500, quick 200). Writes
 * bench/results/membrane-latest.json (membrane-latest-quick.json when quick).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { Ed25519Identity, routingHint } from '@libertaria/identity';
import {
  type AccessRequest,
  CompiledPolicy,
  delegateGrant,
  issueGrant,
  DEFAULT_MEMBRANE_LIMITS as LIMITS,
  Membrane,
  type MembranePolicy,
  MemoryAuditSink,
  MemoryConstraintState,
  MemoryPolicySource,
  MemoryRevocationList,
  MemoryTrustProvider,
  validatePolicy,
  verifyGrant,
} from '@libertaria/membrane';
import {
  createRedisMembrane,
  RedisAuditLog,
  RedisConstraintState,
  RedisPolicyStore,
  RedisRevocationStore,
  RedisTrustStore,
} from '@libertaria/membrane/redis';
import { encodeFrame } from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { Enforcer } from '../services/relay/src/membrane/enforcer.js';
import { startRedis } from '../test-support/redis.js';
import { human, round, type Summary, summarize } from './stats.js';

const QUICK = process.env.BENCH_QUICK === '1';
const envInt = (name: string, fallback: number): number => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};
const trials = envInt('BENCH_MEMBRANE_TRIALS', QUICK ? 3 : 5);
const trialMs = envInt('BENCH_MEMBRANE_TRIAL_MS', QUICK ? 200 : 500);

const owner = Ed25519Identity.generate();
const members = Array.from({ length: 1000 }, () => Ed25519Identity.generate().did);
const peers = [members[3]!, members[700]!, Ed25519Identity.generate().did];

function policyJson(constraints: unknown[]): MembranePolicy {
  const caps: unknown[] = [];
  for (let i = 0; i < 60; i++) caps.push({ resource: `feed://channel-${i}`, action: 'read' });
  caps.push({ resource: 'chapter://berlin/*', action: 'write', conditions: [{ type: 'member', set: 'berlin' }] });
  caps.push({ resource: 'service://payment', action: 'call', conditions: [{ type: 'amount', max: 100 }] });
  caps.push({ resource: owner.did, action: 'send' });
  caps.push({ resource: 'federated://nostr', action: 'open', conditions: [{ type: 'member', set: 'berlin' }] });
  return validatePolicy({ version: 1, sets: { berlin: members }, capabilities: caps, constraints }, LIMITS);
}

const requests: Omit<AccessRequest, 'peer'>[] = [
  { owner: owner.did, resource: owner.did, action: 'send' },
  { owner: owner.did, resource: 'feed://channel-42', action: 'read' },
  { owner: owner.did, resource: 'chapter://berlin/proposals', action: 'write' },
  { owner: owner.did, resource: 'service://payment', action: 'call', amount: 5 },
  { owner: owner.did, resource: 'feed://nope', action: 'read' },
];

/** Runs `op` in a tight loop for `ms`; returns operations per second. */
function rateSync(ms: number, op: (i: number) => unknown, batch = 256): number {
  const end = performance.now() + ms;
  let n = 0;
  let sink = 0;
  while (performance.now() < end) {
    for (let k = 0; k < batch; k++) if (op(n++)) sink++;
  }
  if (sink < 0) console.log(sink);
  return (n / ms) * 1000;
}

/** Keeps `inFlight` calls of `op` outstanding for `ms`; returns completions per second. */
async function rateAsync(ms: number, inFlight: number, op: (i: number) => Promise<unknown>): Promise<number> {
  const start = performance.now();
  const end = start + ms;
  let n = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) await op(n++);
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return (n / (performance.now() - start)) * 1000;
}

async function measure(name: string, run: () => number | Promise<number>): Promise<[string, Summary]> {
  await run(); // warm-up
  const values: number[] = [];
  for (let t = 0; t < trials; t++) values.push(await run());
  const s = summarize(values.map((v) => round(v)));
  console.log(`${name.padEnd(44)} ${human(s.median).padStart(8)}/s  (${human(s.min)}–${human(s.max)})`);
  return [name, s];
}

function memoryMembrane(policy: MembranePolicy): Membrane {
  const policies = new MemoryPolicySource();
  policies.set(owner.did, policy);
  return new Membrane({
    policies,
    trust: new MemoryTrustProvider(),
    state: new MemoryConstraintState(),
    revocations: new MemoryRevocationList(),
    // A small bound: the benchmark measures decisions, not an ever-growing array.
    audit: new MemoryAuditSink(10_000),
    whenNoPolicy: 'deny',
  });
}

const results: [string, Summary][] = [];
console.log(`membrane benchmark: ${trials} trials × ${trialMs} ms${QUICK ? ' (quick)' : ''}`);

const open = validatePolicy(policyJson([]), LIMITS);
const limited = policyJson([
  { type: 'rate', limit: 1e12, windowSeconds: 60 },
  { type: 'quota', units: 1e15 },
]);
const compiled = new CompiledPolicy(owner.did, open);
results.push(
  await measure('match (compiled matcher only)', () =>
    rateSync(trialMs, (i) => {
      const r = requests[i % requests.length]!;
      return compiled.match(peers[i % peers.length]!, r.resource, r.action, r.amount ?? 1);
    }),
  ),
);

const openMembrane = memoryMembrane(open);
results.push(
  await measure('checkAccess, memory, no constraints', () =>
    rateAsync(trialMs, 1, (i) =>
      openMembrane.checkAccess({ peer: peers[i % peers.length]!, ...requests[i % requests.length]! }),
    ),
  ),
);
const limitedMembrane = memoryMembrane(limited);
results.push(
  await measure('checkAccess, memory, rate + quota', () =>
    rateAsync(trialMs, 1, (i) =>
      limitedMembrane.checkAccess({ peer: peers[i % peers.length]!, ...requests[i % requests.length]! }),
    ),
  ),
);

const bob = Ed25519Identity.generate();
const carol = Ed25519Identity.generate();
const root = issueGrant(
  owner,
  {
    audience: bob.did,
    capabilities: [{ resource: 'service://*', action: 'call' }],
    constraints: [{ type: 'quota', units: 1e15, windowSeconds: 0 }],
  },
  LIMITS,
);
const token = delegateGrant(
  root,
  bob,
  { audience: carol.did, capabilities: [{ resource: 'service://payment', action: 'call' }] },
  LIMITS,
);
results.push(
  await measure('checkAccess, memory, 2-link grant (cached)', () =>
    rateAsync(trialMs, 1, () =>
      openMembrane.checkAccess({
        peer: carol.did,
        owner: owner.did,
        resource: 'service://payment',
        action: 'call',
        grant: token,
      }),
    ),
  ),
);
results.push(
  await measure('verifyGrant cold, 2 links', () => rateSync(trialMs / 2, () => verifyGrant(token, LIMITS), 1)),
);

if (process.env.BENCH_MEMBRANE_REDIS !== '0') {
  const redis = await startRedis();
  const c = new Redis(redis.url);
  const sub = new Redis(redis.url);
  const prefix = 'bench';
  const policies = new RedisPolicyStore(c, sub, { prefix, limits: LIMITS });
  await policies.start();
  await policies.put(owner.did, limited);
  const redisMembrane = new Membrane({
    policies,
    trust: new RedisTrustStore(c, prefix),
    state: new RedisConstraintState(c, prefix),
    revocations: new RedisRevocationStore(c, prefix),
    audit: new RedisAuditLog(c, { prefix, maxEntries: 100_000 }),
    whenNoPolicy: 'deny',
  });
  results.push(
    await measure('checkAccess, Redis, rate + quota, 64 in flight', () =>
      rateAsync(trialMs, 64, (i) =>
        redisMembrane.checkAccess({ peer: peers[i % peers.length]!, ...requests[i % requests.length]! }),
      ),
    ),
  );
  await policies.stop();

  // The relay's gate, as a connection uses it: a SEND frame to a recipient without a policy (relay default open).
  const sub2 = new Redis(redis.url);
  const rm = createRedisMembrane(c, sub2, { prefix: 'bench-gate', whenNoPolicy: 'allow' });
  await rm.start();
  const enforcerOptions = {
    whenNoPolicy: 'allow' as const,
    cacheMaxAgeMs: 60_000,
    ownerCacheEntries: 10_000,
    pendingSends: 1_000_000,
    grantsPerConnection: 64,
  };
  const cached = new Enforcer(rm, { ...enforcerOptions, connectionCacheEntries: 1024 });
  const uncached = new Enforcer(rm, { ...enforcerOptions, connectionCacheEntries: 0 });
  const sender = Ed25519Identity.generate();
  const frame = Buffer.from(
    encodeFrame({
      type: 'SEND',
      dest: routingHint(Ed25519Identity.generate().publicKey),
      source: routingHint(sender.publicKey),
      sessionId: new Uint8Array(16),
      messageId: new Uint8Array(16),
      flags: 0,
      ttl: 0,
      position: 0,
      payload: new Uint8Array(1024),
    }),
  );
  let passed = 0;
  let settle: (() => void) | undefined;
  const host = {
    membraneDid: sender.did,
    isOpen: () => true,
    passSend: () => {
      passed++;
      settle?.();
    },
    refuseSend: () => {
      throw new Error('refused');
    },
    beginAsync: () => {},
    endAsync: () => {},
    internalError: (_where: string, err: unknown) => {
      throw err;
    },
  };
  const hitGate = cached.gate(host);
  hitGate.admit(frame, 0); // the first decision, then cached
  await new Promise<void>((r) => {
    settle = r;
  });
  settle = undefined;
  results.push(
    await measure('relay gate: SEND with a cached allow', () => rateSync(trialMs, () => hitGate.admit(frame, 0))),
  );
  const missGate = uncached.gate(host);
  results.push(
    await measure('relay gate: SEND decided in Redis, 64 in flight', async () => {
      const start = performance.now();
      const before = passed;
      while (performance.now() - start < trialMs) {
        const target = passed + 64;
        const done = new Promise<void>((r) => {
          settle = () => {
            if (passed >= target) r();
          };
        });
        for (let k = 0; k < 64; k++) missGate.admit(frame, 0);
        await done;
      }
      settle = undefined;
      return ((passed - before) / (performance.now() - start)) * 1000;
    }),
  );
  cached.stop();
  uncached.stop();
  await rm.stop();
  sub2.disconnect();
  c.disconnect();
  sub.disconnect();
  await redis.stop();
}

mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
const file = new URL(`./results/membrane-latest${QUICK ? '-quick' : ''}.json`, import.meta.url);
writeFileSync(
  file,
  `${JSON.stringify(
    {
      when: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, loadavg: loadavg().map((l) => round(l, 2)) },
      node: process.version,
      trials,
      trialMs,
      decisionsPerSecond: Object.fromEntries(results),
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote ${file.pathname}`);
