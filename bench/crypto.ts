/**
 * Session-crypto benchmark: `node --import tsx bench/crypto.ts` (about 35 s).
 *
 * For each provider (node:crypto and pure-JS noble), in one process and one
 * run so the ratios see the same machine state:
 * The ratchet figures run first, on a small heap; then the handshakes.
 *  - PQXDH initiator handshakes/s: verify the bundle (4 signatures), 4 DH,
 *    ML-KEM-768 encapsulation, ratchet start, first message sealed;
 *  - PQXDH responder handshakes/s: the same checks from the other side,
 *    including consuming a one-time X25519 and a one-time ML-KEM prekey
 *    and opening the first message;
 *  - ratchet seal and open, 1 KiB frames/s, one direction (the steady state:
 *    one HMAC chain step, one HKDF, one AEAD per frame);
 *  - ratchet ping-pong, 1 KiB messages/s alternating direction, so every
 *    message carries a DH ratchet step (keygen + 2 DH + 2 HKDF).
 * Each figure is the median of BENCH_CRYPTO_TRIALS (default 5) trials of
 * BENCH_CRYPTO_TRIAL_MS (default 400 ms) each, after a warm-up. Prints a
 * table and writes bench/results/crypto-latest.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import {
  acceptPersistentSession,
  type CryptoProvider,
  DoubleRatchet,
  initiatePersistentSession,
  nobleCrypto,
  sessionAssociatedData,
} from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { bundleOf, makePeer, makeResponder } from '../test-support/session-fixtures.js';
import { human, median, round, type Summary, summarize } from './stats.js';

const envInt = (name: string, fallback: number): number => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};

const config = {
  trials: envInt('BENCH_CRYPTO_TRIALS', 5),
  trialMs: envInt('BENCH_CRYPTO_TRIAL_MS', 400),
  warmupMs: 200,
  payloadBytes: 1024,
};

const started = Date.now();
const log = (msg: string) =>
  process.stderr.write(`[crypto-bench ${((Date.now() - started) / 1000).toFixed(0)}s] ${msg}\n`);

/** Runs `op` for about `ms`, returns operations per second. */
function rate(op: () => void, ms: number): number {
  const end = performance.now() + ms;
  let n = 0;
  let now = performance.now();
  const t0 = now;
  while (now < end) {
    op();
    n++;
    now = performance.now();
  }
  return n / ((now - t0) / 1000);
}

async function trials(run: () => number | Promise<number>): Promise<Summary> {
  const values: number[] = [];
  for (let i = 0; i < config.trials; i++) values.push(await run());
  return summarize(values);
}

function ratchetPair(p: CryptoProvider): { alice: DoubleRatchet; bob: DoubleRatchet } {
  const sk = p.randomBytes(32);
  const spk = p.x25519Generate();
  const ad = sessionAssociatedData(
    { identityKey: p.randomBytes(32), identityDhKey: p.randomBytes(32) },
    { identityKey: p.randomBytes(32), identityDhKey: p.randomBytes(32) },
  );
  const alice = DoubleRatchet.initiator(p, sk, ad, spk.publicKey);
  const bob = DoubleRatchet.responder(p, sk, ad, spk);
  bob.decrypt(alice.encrypt(new Uint8Array(1)));
  return { alice, bob };
}

async function benchProvider(p: CryptoProvider): Promise<Record<string, Summary>> {
  const payload = p.randomBytes(config.payloadBytes);
  const alice = makePeer(p);
  const figures: Record<string, Summary> = {};

  // Ratchet, one direction: seal, then open what was sealed in order.
  figures['ratchetSeal1KiB'] = await trials(() => {
    const { alice: a } = ratchetPair(p);
    return rate(() => a.encrypt(payload), config.trialMs);
  });
  figures['ratchetOpen1KiB'] = await trials(() => {
    const { alice: a, bob: b } = ratchetPair(p);
    const sealed: Uint8Array[] = [];
    const count = Math.ceil(figures['ratchetSeal1KiB']!.median * (config.trialMs / 1000));
    for (let i = 0; i < count; i++) sealed.push(a.encrypt(payload));
    const t0 = performance.now();
    for (const m of sealed) b.decrypt(m);
    return count / ((performance.now() - t0) / 1000);
  });
  log(
    `${p.name}: seal ${human(figures['ratchetSeal1KiB'].median)}/s, open ${human(figures['ratchetOpen1KiB'].median)}/s`,
  );

  // Ping-pong: every message crosses a DH ratchet step on the receiving side and the next send.
  figures['ratchetPingPong1KiB'] = await trials(() => {
    const { alice: a, bob: b } = ratchetPair(p);
    let turn = 0;
    return rate(() => {
      const [from, to] = turn++ % 2 === 0 ? [a, b] : [b, a];
      to.decrypt(from.encrypt(payload));
    }, config.trialMs);
  });
  log(`${p.name}: ping-pong ${human(figures['ratchetPingPong1KiB'].median)}/s`);
  // Initiator: a fresh handshake per operation against one verified-and-fetched bundle shape.
  const bobForInit = makeResponder(p, 1, 1);
  const fullBundle = bundleOf(bobForInit.publication, { oneTime: 0, oneTimeKem: 0 });
  const initiate = () => {
    initiatePersistentSession({
      provider: p,
      identity: alice.identity,
      peerDid: bobForInit.did,
      bundle: fullBundle,
      payload,
    });
  };
  rate(initiate, config.warmupMs);
  figures['handshakeInitiator'] = await trials(() => rate(initiate, config.trialMs));
  log(`${p.name}: initiator ${human(figures['handshakeInitiator'].median)}/s`);

  // Responder: every handshake consumes its own one-time X25519 and ML-KEM prekeys, so the
  // initial messages (and the prekeys) are made before the clock starts.
  const perTrial = Math.max(20, Math.ceil(figures['handshakeInitiator'].median * (config.trialMs / 1000) * 1.2));
  const total = perTrial * (config.trials + 1);
  log(`${p.name}: preparing ${total} initial messages for the responder`);
  const bob = makeResponder(p, total, total);
  const messages: Uint8Array[] = [];
  for (let i = 0; i < total; i++) {
    const bundle = bundleOf(bob.publication, { oneTime: i, oneTimeKem: i });
    messages.push(
      initiatePersistentSession({ provider: p, identity: alice.identity, peerDid: bob.did, bundle, payload })
        .initialMessage,
    );
  }
  let next = 0;
  const respond = async () => {
    await acceptPersistentSession({ provider: p, prekeys: bob.prekeys, initialMessage: messages[next++]! });
  };
  for (let i = 0; i < perTrial; i++) await respond(); // warm-up uses the first batch
  figures['handshakeResponder'] = await trials(async () => {
    const t0 = performance.now();
    for (let i = 0; i < perTrial; i++) await respond();
    return perTrial / ((performance.now() - t0) / 1000);
  });
  log(`${p.name}: responder ${human(figures['handshakeResponder'].median)}/s`);

  messages.length = 0; // release before the next provider runs
  return figures;
}

async function main(): Promise<void> {
  log(`trials ${config.trials} × ${config.trialMs} ms per figure and provider`);
  const results: Record<string, Record<string, Summary>> = {};
  for (const p of [nodeCrypto, nobleCrypto]) results[p.name] = await benchProvider(p);
  const node = results['node']!;
  const noble = results['noble']!;
  const names: [string, string][] = [
    ['handshakeInitiator', 'PQXDH handshakes/s, initiator'],
    ['handshakeResponder', 'PQXDH handshakes/s, responder'],
    ['ratchetSeal1KiB', 'ratchet seal, 1 KiB frames/s'],
    ['ratchetOpen1KiB', 'ratchet open, 1 KiB frames/s'],
    ['ratchetPingPong1KiB', 'ratchet ping-pong (DH step each), msgs/s'],
  ];
  const ratios: Record<string, number> = {};
  const rows = names.map(([key, label]) => {
    const a = node[key]!;
    const b = noble[key]!;
    ratios[key] = round(a.median / b.median, 2);
    const span = (s: Summary) => `${human(s.median)} (${human(s.min)}–${human(s.max)})`;
    return `| ${label} | ${span(a)} | ${span(b)} | ${ratios[key]}× |`;
  });
  const table = ['| figure | node:crypto | noble (pure JS) | node / noble |', '| --- | --- | --- | --- |', ...rows];
  console.log(table.join('\n'));
  const report = {
    date: new Date().toISOString(),
    machine: {
      cores: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown',
      memoryGiB: round(totalmem() / 2 ** 30, 1),
      loadAverageAtEnd: loadavg().map((v) => round(v, 2)),
    },
    node: process.version,
    config,
    figures: results,
    ratios,
    medianOfRatios: round(median(Object.values(ratios)), 2),
    durationS: round((Date.now() - started) / 1000, 1),
  };
  const outDir = new URL('./results/', import.meta.url);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(new URL('crypto-latest.json', outDir), `${JSON.stringify(report, null, 2)}\n`);
  log(`wrote bench/results/crypto-latest.json in ${report.durationS} s`);
}

await main();
