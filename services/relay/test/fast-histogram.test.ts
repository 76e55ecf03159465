/**
 * FastHistogram (services/relay/src/fast-histogram.ts) exports exactly what
 * prom-client's own Histogram exports for the same observations.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import { FastHistogram } from '../src/fast-histogram.js';

describe('FastHistogram', () => {
  it("exports the same text as prom-client's Histogram for the same observations", async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const buckets = [0, 1, 10, 100, 1000];
    const fast = new FastHistogram({ name: 'h', help: 'a histogram', buckets, registers: [ours] });
    const reference = new Histogram({ name: 'h', help: 'a histogram', buckets, registers: [theirs] });
    for (const v of [0, 0.5, 1, 1, 7, 10, 11, 99.5, 1000, 1001, 5e6, -3]) {
      fast.observe(v);
      reference.observe(v);
    }
    assert.equal(await ours.metrics(), await theirs.metrics());
    assert.match(await ours.metrics(), /^h_bucket\{le="\+Inf"\} 12$/m);
    fast.reset();
    reference.reset();
    reference.zero({});
    assert.equal(await ours.metrics(), await theirs.metrics());
  });

  it('ignores values that are not finite, and refuses buckets that do not increase', () => {
    const fast = new FastHistogram({ name: 'g', help: 'g', buckets: [1, 2], registers: [] });
    fast.observe(Number.NaN);
    fast.observe(Number.POSITIVE_INFINITY);
    assert.throws(() => new FastHistogram({ name: 'x', help: 'x', buckets: [2, 1], registers: [] }), /increase/);
  });
});
