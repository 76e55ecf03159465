import assert from 'node:assert/strict';
import { it } from 'node:test';
import { fuzzFrames } from '../../../test-support/fuzz-frames.js';

// The bounded CI variant; `npm run fuzz` runs the same harness for longer.
it('frame decoders survive 100,000 random and mutated inputs', () => {
  const seed = Number(process.env.FUZZ_SEED ?? 0x5eed);
  const stats = fuzzFrames(100_000, seed);
  assert.equal(stats.inputs, 100_000);
  // Both outcomes must be exercised, or the fuzzer is not reaching the decoders.
  assert.ok(stats.decoded > 1000, `only ${stats.decoded} inputs decoded`);
  assert.ok(
    stats.routedChecked > 1000,
    `only ${stats.routedChecked} SEND/DELIVER inputs compared with the hot-path check`,
  );
  assert.ok(stats.ackChecked > 200, `only ${stats.ackChecked} ACK inputs compared with the in-place ACK read`);
  for (const code of [
    'TRUNCATED',
    'BAD_LENGTH',
    'BAD_FIELD',
    'TRAILING_BYTES',
    'UNKNOWN_FRAME_TYPE',
    'FRAME_TOO_LARGE',
  ]) {
    assert.ok((stats.errors[code] ?? 0) > 0, `no input produced ${code}`);
  }
  // Bounded memory: nothing retained across inputs (generous bound; the heap is noisy without --expose-gc).
  assert.ok(stats.heapGrowthBytes < 64 * 1024 * 1024, `heap grew by ${stats.heapGrowthBytes} bytes`);
  console.log(`fuzz seed=${seed} ${JSON.stringify(stats)}`);
});
