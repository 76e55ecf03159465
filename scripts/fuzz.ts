/**
 * Long fuzz run of the wire decoders: `npm run fuzz [-- ITERATIONS [SEED]]`.
 * Defaults to 5,000,000 inputs with a random seed; prints the seed so a
 * failure can be replayed (FUZZ_SEED=… for the CI test, or pass it here).
 */
import { fuzzFrames } from '../test-support/fuzz-frames.js';

const iterations = Number(process.argv[2] ?? 5_000_000);
const seed = Number(process.argv[3] ?? Math.floor(Math.random() * 2 ** 32));
const batch = 250_000;
console.log(`fuzzing ${iterations} inputs, seed ${seed}`);
const started = Date.now();
let done = 0;
let decoded = 0;
for (let i = 0; done < iterations; i++) {
  const n = Math.min(batch, iterations - done);
  const stats = fuzzFrames(n, (seed + i) >>> 0);
  done += n;
  decoded += stats.decoded;
  const rss = Math.round(process.memoryUsage().rss / 2 ** 20);
  console.log(
    `${done} inputs, ${decoded} decoded, rss ${rss} MiB, ${Math.round((done / (Date.now() - started)) * 1000)}/s`,
  );
}
console.log('fuzz: no crash, no untyped exception, canonical re-encoding held');
