import assert from 'node:assert/strict';
import { it } from 'node:test';
import { fuzzSession } from './support/fuzz-session.js';

// The bounded CI variant; support/fuzz-session.ts documents a longer run.
it('session decoders survive 200,000 random and mutated inputs', async () => {
  const seed = Number(process.env.FUZZ_SEED ?? 0x5e55);
  const stats = await fuzzSession(200_000, seed);
  assert.equal(stats.inputs, 210_000);
  // Every decoder must both accept mutated inputs and refuse others, or the fuzzer is not reaching it.
  for (const name of ['initial', 'ratchet', 'zeroRtt', 'ephemeralRequest', 'ephemeralResponse', 'state']) {
    assert.ok((stats.decoded[name] ?? 0) > 0, `no ${name} input decoded`);
  }
  for (const code of ['TRUNCATED', 'BAD_FIELD', 'UNSUPPORTED_VERSION', 'SESSION_STATE_INVALID']) {
    assert.ok((stats.errors[code] ?? 0) > 0, `no input produced ${code}`);
  }
  assert.ok(stats.heapGrowthBytes < 64 * 1024 * 1024, `heap grew by ${stats.heapGrowthBytes} bytes`);
  console.log(`session fuzz seed=${seed} ${JSON.stringify(stats)}`);
});

it('is reproducible from its seed: same corpus, same inputs, same counts', async () => {
  const [a, b] = [await fuzzSession(20_000, 7), await fuzzSession(20_000, 7)];
  assert.deepEqual([a.decoded, a.errors], [b.decoded, b.errors]);
  const other = await fuzzSession(20_000, 8);
  assert.notDeepEqual([other.decoded, other.errors], [a.decoded, a.errors]);
});
