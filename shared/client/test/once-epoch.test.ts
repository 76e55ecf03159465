/**
 * OnceEpochTracker (client/once-epoch.ts): the client's memory of the relay
 * cluster's single-use id epoch, with a controlled clock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InMemorySessionStore } from '@libertaria/client';
import { OnceEpochTracker } from '../src/once-epoch.js';

const E1 = new Uint8Array(16).fill(1);
const E2 = new Uint8Array(16).fill(2);
const MINUTE = 60_000;

function tracker(store = new InMemorySessionStore(), start = 1_700_000_000_000) {
  let now = start;
  const warnings: string[] = [];
  const t = new OnceEpochTracker(store, { warn: (m) => warnings.push(m) }, () => now);
  return { t, store, warnings, advance: (ms: number) => (now += ms), now: () => now };
}

describe('OnceEpochTracker', () => {
  it('adopts the first epoch it sees and passes the relay answer through while it stays', async () => {
    const { t, warnings } = tracker();
    assert.equal(await t.judge(true, E1, MINUTE), true);
    assert.equal(await t.judge(false, E1, MINUTE), false);
    assert.equal(await t.judge(true, E1, MINUTE), true);
    assert.equal(t.lossAt, 0);
    assert.deepEqual(warnings, []);
  });

  it('after an epoch change refuses every id for its own retention, then passes answers again', async () => {
    const { t, warnings, advance, now } = tracker();
    await t.judge(true, E1, MINUTE);
    advance(5 * MINUTE);
    assert.equal(await t.judge(true, E2, MINUTE), false, 'a replay answered fresh by the new data set');
    assert.equal(t.lossAt, now());
    assert.equal(warnings.length, 1);
    advance(30_000);
    assert.equal(await t.judge(true, E2, MINUTE), false, 'still within one retention');
    assert.equal(await t.judge(true, E2, 20_000), true, 'a shorter retention has passed already');
    advance(30_000);
    assert.equal(await t.judge(true, E2, MINUTE), true, 'one retention later');
    assert.equal(await t.judge(false, E2, MINUTE), false);
    assert.equal(warnings.length, 1, 'said once per change');
  });

  it('remembers the epoch and the loss in its store, across a restart', async () => {
    const first = tracker();
    await first.t.judge(true, E1, MINUTE);
    // A new process over the same store, before the loss.
    const second = tracker(first.store, first.now() + MINUTE);
    assert.equal(await second.t.judge(true, E2, 10 * MINUTE), false);
    // And another one in the middle of the window: still refusing.
    const third = tracker(first.store, second.now() + 5 * MINUTE);
    assert.equal(await third.t.judge(true, E2, 10 * MINUTE), false);
    assert.equal(third.t.lossAt, second.now());
    assert.deepEqual(third.warnings, [], 'the same epoch as stored: no new loss');
    const fourth = tracker(first.store, second.now() + 10 * MINUTE);
    assert.equal(await fourth.t.judge(true, E2, 10 * MINUTE), true);
  });

  it('fails closed on an unreadable record', async () => {
    const store = new InMemorySessionStore();
    await store.put('once-epoch', new Uint8Array([0, 0, 0, 9, 1]));
    const { t, warnings, advance } = tracker(store);
    assert.equal(await t.judge(true, E1, MINUTE), false);
    assert.equal(warnings.length, 1);
    advance(MINUTE);
    assert.equal(await t.judge(true, E1, MINUTE), true);
  });

  it('judges concurrent answers in order, so a change is noticed once', async () => {
    const { t, warnings } = tracker();
    await t.judge(true, E1, MINUTE);
    const answers = await Promise.all([
      t.judge(true, E2, MINUTE),
      t.judge(true, E2, MINUTE),
      t.judge(true, E1, MINUTE),
    ]);
    assert.deepEqual(answers, [false, false, false]);
    // E2 then back to E1: two changes, two warnings (a flapping epoch is itself a loss each time).
    assert.equal(warnings.length, 2);
  });
});
