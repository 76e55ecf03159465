import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { PerTurn } from '../src/per-turn.js';

describe('PerTurn (one turn of work, handed over at setImmediate)', () => {
  it('hands over one turn of work once, after the turn, however often it was scheduled', async () => {
    const flushed: string[][] = [];
    const turn = new PerTurn<string[]>(
      () => [],
      (batch) => flushed.push(batch),
    );
    turn.open.push('a');
    turn.schedule();
    turn.open.push('b');
    turn.schedule();
    assert.deepEqual(flushed, [], 'nothing is handed over inside the turn');
    await nextTurn();
    assert.deepEqual(flushed, [['a', 'b']]);
    await nextTurn();
    assert.equal(flushed.length, 1, 'nothing more without new work');
  });

  it('replaces the collection at each flush instead of emptying it, and never hands one out twice', async () => {
    const flushed: Array<Map<string, number>> = [];
    const turn = new PerTurn<Map<string, number>>(
      () => new Map(),
      (batch) => flushed.push(batch),
    );
    const first = turn.open;
    first.set('x', 1);
    turn.schedule();
    await nextTurn();
    assert.notEqual(turn.open, first, 'a new collection for the next turn');
    assert.deepEqual([...first], [['x', 1]], 'the one handed over keeps what it held (not cleared)');
    turn.open.set('y', 2);
    turn.schedule();
    await nextTurn();
    assert.equal(flushed.length, 2);
    assert.notEqual(flushed[0], flushed[1]);
    assert.deepEqual([...flushed[1]!], [['y', 2]]);
  });

  it('puts work added while flushing into the next turn, not into the batch being sent', async () => {
    const flushed: number[][] = [];
    const turn = new PerTurn<number[]>(
      () => [],
      (batch) => {
        flushed.push(batch);
        if (batch.includes(1)) {
          turn.open.push(2);
          turn.schedule();
        }
      },
    );
    turn.open.push(1);
    turn.schedule();
    await nextTurn();
    assert.deepEqual(flushed, [[1]], 'the batch being sent did not grow');
    await nextTurn();
    assert.deepEqual(flushed, [[1], [2]]);
  });
});
