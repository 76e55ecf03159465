/**
 * Fuzzes the session layer's decoders (initial message, ratchet message,
 * 0-RTT message, ephemeral request and response, serialized session state)
 * with random and mutated inputs. Used by shared/crypto/test/session-fuzz.test.ts
 * (bounded) and runnable for longer:
 *
 *   node --import tsx -e "import('./shared/crypto/test/support/fuzz-session.ts').then(m => console.log(m.fuzzSession(1e6, 1)))"
 *
 * Properties on every input:
 *  - each decoder returns or throws a typed error with a known code
 *    (ProtocolError for wire messages, SessionError SESSION_STATE_INVALID for state);
 *  - whatever decodes re-encodes to exactly the input (one encoding per message);
 *  - memory does not grow with the number of inputs.
 *  - no single input takes long (SLOW_INPUT_MS): a decoder that loops on
 *    some input fails with that input instead of timing the run out.
 * Everything is seeded, the corpus too (its keys come from a DRBG on the
 * seed and its clock is fixed), so a run is reproducible from the seed:
 * same inputs, same counts.
 */

import {
  acceptPersistentSession,
  type CryptoProvider,
  decodeInitialMessage,
  decodeZeroRttMessage,
  encodeInitialMessage,
  initiatePersistentSession,
  PersistentSession,
  seal0Rtt,
} from '@libertaria/crypto';
import { nodeCrypto } from '@libertaria/crypto/node';
import { isErrorCode, LibertariaError, ProtocolError } from '@libertaria/protocol';
import { sha256 } from '@noble/hashes/sha2.js';
import { bundleOf, makePeer, makeResponder } from '../../../../test-support/session-fixtures.js';
import {
  acceptEphemeralRequest,
  decodeEphemeralRequest,
  decodeEphemeralResponse,
  EPHEMERAL_VERSION,
  EphemeralSession,
} from '../../src/ephemeral.js';
import { decodeRatchetMessage, encodeRatchetMessage } from '../../src/ratchet-message.js';

export interface SessionFuzzStats {
  inputs: number;
  decoded: Record<string, number>;
  errors: Record<string, number>;
  heapGrowthBytes: number;
}

/** xorshift32. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

type Decoder = (input: Uint8Array) => Uint8Array;

/** Each decoder returns its re-encoding, so the fuzzer can check canonical form. */
const decoders: Record<string, Decoder> = {
  initial: (b) => encodeInitialMessage(decodeInitialMessage(b)),
  ratchet: (b) => {
    const m = decodeRatchetMessage(b);
    return encodeRatchetMessage(m.headerBytes, m.sealed);
  },
  zeroRtt: (b) => {
    const m = decodeZeroRttMessage(b);
    return concat(m.headerBytes, m.sealed);
  },
  ephemeralRequest: (b) => {
    const m = decodeEphemeralRequest(b);
    return concat(m.header, m.sealed);
  },
  ephemeralResponse: (b) => {
    const m = decodeEphemeralResponse(b);
    return concat(concat(Uint8Array.of(EPHEMERAL_VERSION), m.random), m.sealed);
  },
};

/** A wall-clock bound per input: decoding takes microseconds, so this is a loop, not a loaded machine. */
const SLOW_INPUT_MS = 2_000;
/** The corpus' clock: session state carries its creation time. */
const FIXED_CLOCK = () => 1_767_225_600_000;

/** SHA-256 in counter mode over the seed: the corpus' keys, reproducible (never use this outside tests). */
function drbg(seed: number): (length: number) => Uint8Array {
  let counter = 0;
  return (length) => {
    const out = new Uint8Array(length);
    for (let at = 0; at < length; at += 32) {
      const block = sha256(new TextEncoder().encode(`fuzz-session ${seed} ${counter++}`));
      out.set(block.subarray(0, Math.min(32, length - at)), at);
    }
    return out;
  };
}

/** nodeCrypto with every random choice (keys, KEM seeds, nonces) drawn from `random`. */
function seededProvider(random: (length: number) => Uint8Array): CryptoProvider {
  return {
    ...nodeCrypto,
    name: 'node-seeded',
    randomBytes: random,
    x25519Generate: () => {
      const privateKey = random(32);
      return { privateKey, publicKey: nodeCrypto.x25519PublicKey(privateKey) };
    },
    kemGenerate: (seed) => nodeCrypto.kemGenerate(seed ?? random(64)),
    kemEncapsulate: (publicKey, seed) => nodeCrypto.kemEncapsulate(publicKey, seed ?? random(32)),
  };
}

/** Real messages of every kind, made once per seed, as mutation seeds. */
async function corpus(seed: number): Promise<{ wire: Record<string, Uint8Array[]>; state: Uint8Array[] }> {
  const random = drbg(seed);
  const p = seededProvider(random);
  const alice = makePeer(p, random(32));
  const bob = makeResponder(p, 4, 2, random(32));
  const { session: a, initialMessage } = initiatePersistentSession({
    clock: FIXED_CLOCK,
    provider: p,
    identity: alice.identity,
    peerDid: bob.did,
    bundle: bundleOf(bob.publication, { oneTime: 0 }),
    payload: new Uint8Array(20),
  });
  const noOtp = initiatePersistentSession({
    clock: FIXED_CLOCK,
    provider: p,
    identity: alice.identity,
    peerDid: bob.did,
    bundle: bundleOf(bob.publication, { oneTimeKem: 0 }),
    payload: new Uint8Array(3),
  }).initialMessage;
  const { session: b } = await acceptPersistentSession({
    clock: FIXED_CLOCK,
    provider: p,
    prekeys: bob.prekeys,
    initialMessage,
  });
  const r1 = a.encrypt(new Uint8Array(5));
  a.encrypt(new Uint8Array(1)); // skipped on Bob's side
  b.decrypt(a.encrypt(new Uint8Array(0)));
  const r2 = b.encrypt(new Uint8Array(100));
  const zero = seal0Rtt(p, a.issueResumptionTicket(), new Uint8Array(7), { now: FIXED_CLOCK() });
  const { request, session: e } = EphemeralSession.request({
    clock: FIXED_CLOCK,
    provider: p,
    peerDid: bob.did,
    bundle: bundleOf(bob.publication),
    payload: new Uint8Array(9),
  });
  const response = (await acceptEphemeralRequest({ provider: p, prekeys: bob.prekeys, request })).sealResponse(
    new Uint8Array(4),
  );
  e.destroy();
  return {
    wire: {
      initial: [initialMessage, noOtp],
      ratchet: [r1, r2],
      zeroRtt: [zero],
      ephemeralRequest: [request],
      ephemeralResponse: [response],
    },
    state: [a.serialize(), b.serialize()],
  };
}

function mutate(seed: Uint8Array, rnd: () => number): Uint8Array {
  let out: Uint8Array = Uint8Array.from(seed);
  const ops = 1 + (rnd() % 4);
  for (let i = 0; i < ops; i++) {
    switch (rnd() % 6) {
      case 0:
        if (out.length) out[rnd() % out.length]! ^= 1 << (rnd() % 8);
        break;
      case 1:
        if (out.length) out[rnd() % out.length] = [0, 1, 0x7f, 0x80, 0xff][rnd() % 5]!;
        break;
      case 2:
        out = out.subarray(0, rnd() % (out.length + 1));
        break;
      case 3: {
        const extra = new Uint8Array(rnd() % 40);
        for (let k = 0; k < extra.length; k++) extra[k] = rnd() & 0xff;
        out = concat(out, extra);
        break;
      }
      case 4: // version and flag bytes are the first two of every message
        if (out.length >= 2) out[rnd() % 2] = rnd() & 0xff;
        break;
      default:
        if (out.length > 2) {
          const a = rnd() % out.length;
          out.copyWithin(rnd() % out.length, a, a + (rnd() % (out.length - a)));
        }
    }
  }
  return out;
}

function randomInput(rnd: () => number): Uint8Array {
  const out = new Uint8Array(rnd() % 300);
  for (let i = 0; i < out.length; i++) out[i] = rnd() & 0xff;
  if (out.length && rnd() % 2 === 0) out[0] = 1; // a valid version byte reaches the body decoders
  return out;
}

function hexOf(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

function record(
  stats: SessionFuzzStats,
  err: unknown,
  what: string,
  input: Uint8Array,
  allowed: (e: LibertariaError) => boolean,
): void {
  if (!(err instanceof LibertariaError) || !isErrorCode(err.code) || !allowed(err)) {
    throw new Error(`${what}: untyped or unexpected error for input ${hexOf(input)}: ${String(err)}`);
  }
  stats.errors[err.code] = (stats.errors[err.code] ?? 0) + 1;
}

function checkTime(started: number, what: string, input: Uint8Array): void {
  const ms = performance.now() - started;
  if (ms > SLOW_INPUT_MS) throw new Error(`${what}: one input took ${Math.round(ms)} ms: ${hexOf(input)}`);
}

/** `iterations` wire inputs (spread over the five decoders) plus iterations/20 state inputs. */
export async function fuzzSession(iterations: number, seed: number): Promise<SessionFuzzStats> {
  const rnd = prng(seed);
  const seeds = await corpus(seed);
  const stats: SessionFuzzStats = { inputs: 0, decoded: {}, errors: {}, heapGrowthBytes: 0 };
  const names = Object.keys(decoders);
  globalThis.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  for (let i = 0; i < iterations; i++) {
    const name = names[i % names.length]!;
    const pool = seeds.wire[name]!;
    const input = i % 3 === 2 ? randomInput(rnd) : mutate(pool[rnd() % pool.length]!, rnd);
    let again: Uint8Array | undefined;
    const started = performance.now();
    try {
      again = decoders[name]!(input);
    } catch (err) {
      record(stats, err, name, input, (e) => e instanceof ProtocolError);
    }
    checkTime(started, name, input);
    if (again !== undefined) {
      if (!same(again, input)) throw new Error(`${name}: re-encoding differs for input ${hexOf(input)}`);
      stats.decoded[name] = (stats.decoded[name] ?? 0) + 1;
    }
    stats.inputs++;
  }
  // Session state: fewer inputs, because a state that parses costs an X25519 key derivation to cross-check.
  for (let i = 0; i < Math.ceil(iterations / 20); i++) {
    const input = i % 4 === 3 ? randomInput(rnd) : mutate(seeds.state[rnd() % seeds.state.length]!, rnd);
    let restored: PersistentSession | undefined;
    const started = performance.now();
    try {
      restored = PersistentSession.restore(nodeCrypto, input);
    } catch (err) {
      record(stats, err, 'state', input, (e) => e.code === 'SESSION_STATE_INVALID');
    }
    checkTime(started, 'state', input);
    if (restored !== undefined) {
      if (!same(restored.serialize(), input)) throw new Error(`state: re-serialization differs for ${hexOf(input)}`);
      stats.decoded['state'] = (stats.decoded['state'] ?? 0) + 1;
    }
    stats.inputs++;
  }
  globalThis.gc?.();
  stats.heapGrowthBytes = process.memoryUsage().heapUsed - heapBefore;
  return stats;
}
