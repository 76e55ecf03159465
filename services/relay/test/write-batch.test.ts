import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { type Flushable, scheduleFlush } from '../src/transport/write-batch.js';

/** A transport that counts its flushes and may queue work elsewhere while flushing. */
class Transport implements Flushable {
  flushes = 0;
  onFlush: (() => void) | undefined;
  flush(): void {
    this.flushes++;
    this.onFlush?.();
  }
}

describe('write batch (once-per-turn flush)', () => {
  it('flushes each transport once per turn, after the turn, however often it was scheduled', async () => {
    const a = new Transport();
    const b = new Transport();
    scheduleFlush(a);
    scheduleFlush(b);
    scheduleFlush(a);
    assert.equal(a.flushes, 0, 'nothing is flushed inside the turn');
    await nextTurn();
    assert.deepEqual([a.flushes, b.flushes], [1, 1]);
    await nextTurn();
    assert.deepEqual([a.flushes, b.flushes], [1, 1], 'nothing more without new writes');
  });

  it('flushes a transport that queues again during the flush (next turn), instead of dropping it', async () => {
    // b is flushed first, then a's flush writes to b again (as a relay writing to another peer
    // from inside a flush would). A batch cleared after the flush lost b's second write.
    const a = new Transport();
    const b = new Transport();
    a.onFlush = () => {
      a.onFlush = undefined;
      scheduleFlush(b);
    };
    scheduleFlush(b);
    scheduleFlush(a);
    await nextTurn();
    assert.deepEqual([a.flushes, b.flushes], [1, 1]);
    await nextTurn();
    assert.equal(b.flushes, 2, "b's second write was flushed");
  });
});
