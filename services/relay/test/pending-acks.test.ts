import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { AckHoldBudget, PendingAcks } from '../src/pending-acks.js';

describe('PendingAcks', () => {
  it('keeps ids and positions in arrival order across growth, copied, and starts empty after take', () => {
    const acks = new PendingAcks();
    const ids = Array.from({ length: 1000 }, () => randomBytes(16));
    for (let i = 0; i < ids.length; i++) assert.equal(acks.push(ids[i]!, 2 ** 40 + i), i + 1);
    // The caller's bytes may be a reused receive buffer: the list holds a copy.
    ids[0]!.fill(0);
    const taken = acks.take();
    assert.equal(taken.count, 1000);
    assert.equal(acks.count, 0);
    for (let i = 1; i < ids.length; i++) {
      assert.deepEqual(taken.ids.subarray(i * 16, (i + 1) * 16), ids[i], `id ${i}`);
      assert.equal(taken.positions[i], 2 ** 40 + i);
    }
    assert.notDeepEqual(taken.ids.subarray(0, 16), ids[0]);
    // What was taken stays as it was while the list fills again.
    const before = Buffer.from(taken.ids.subarray(0, 16 * 1000));
    for (let i = 0; i < 100; i++) acks.push(randomBytes(16), i);
    assert.deepEqual(taken.ids.subarray(0, 16 * 1000), before);
    assert.equal(acks.take().count, 100);
  });

  it('copies an id from inside a larger buffer (an ACK frame read in place), and appends what was taken', () => {
    const acks = new PendingAcks();
    const frame = randomBytes(30);
    acks.push(frame, 7, 6);
    acks.push(frame, 8, 14);
    const taken = acks.take();
    assert.deepEqual(taken.ids.subarray(0, 16), frame.subarray(6, 22));
    assert.deepEqual(taken.ids.subarray(16, 32), frame.subarray(14, 30));
    const again = new PendingAcks();
    again.push(randomBytes(16), 1);
    again.append(taken);
    const all = again.take();
    assert.equal(all.count, 3);
    assert.deepEqual(all.ids.subarray(16, 48), taken.ids.subarray(0, 32));
    assert.deepEqual([...all.positions.subarray(0, 3)].slice(1), [7, 8]);
  });
});

describe('AckHoldBudget', () => {
  it('holds up to its limit and takes back what is released', () => {
    const budget = new AckHoldBudget(3);
    assert.equal(budget.tryHold(), true);
    assert.equal(budget.tryHold(), true);
    assert.equal(budget.tryHold(), true);
    assert.equal(budget.tryHold(), false);
    assert.equal(budget.held, 3);
    budget.release(2);
    assert.equal(budget.held, 1);
    assert.equal(budget.tryHold(), true);
    budget.release(10);
    assert.equal(budget.held, 0, 'never below zero');
    assert.equal(new AckHoldBudget(0).tryHold(), false, '0 holds nothing');
  });
});
