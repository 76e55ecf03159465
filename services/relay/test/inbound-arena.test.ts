/**
 * The recycled inbound buffers (src/transport/inbound-arena.ts): a copied
 * message stays intact for the turns the rule promises, its slab is reused
 * after them (no new buffer memory under steady traffic), retain() copies
 * exactly what lies in a slab, and the poison makes a kept, uncopied view
 * visible.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InboundArena } from '../src/transport/inbound-arena.js';

const SLAB = 64;

function message(fill: number, n = 24): ArrayBuffer {
  return new Uint8Array(n).fill(fill).buffer;
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await nextTurn();
}

describe('InboundArena', () => {
  it('copies a message into a slab it owns, and retain() copies only such bytes', () => {
    const arena = new InboundArena(SLAB, 32, 4);
    const copy = arena.copy(message(7));
    assert.deepEqual([...copy], new Array(24).fill(7));
    assert.ok(arena.owns(copy));
    const kept = arena.retain(copy);
    assert.notEqual(kept.buffer, copy.buffer);
    assert.ok(!arena.owns(kept));
    assert.deepEqual([...kept], [...copy]);
    const elsewhere = Buffer.from([1, 2, 3]);
    assert.equal(arena.retain(elsewhere), elsewhere, 'bytes outside the arena are kept as they are');
    const big = arena.copy(message(9, 40));
    assert.ok(!arena.owns(big), 'a message over maxPooled gets a buffer of its own');
    assert.deepEqual([...big], new Array(40).fill(9));
  });

  it('keeps a message intact for two more turns under steady traffic, then reuses its slab', async () => {
    const arena = new InboundArena(SLAB, 32, 4);
    const first = arena.copy(message(1));
    const kept = arena.retain(first);
    // Two turns of traffic: two messages per slab, so a slab fills every turn.
    for (let turn = 0; turn < 2; turn++) {
      arena.copy(message(100 + turn));
      arena.copy(message(100 + turn));
      await nextTurn();
      assert.deepEqual([...first], new Array(24).fill(1), `intact after ${turn + 1} turn(s)`);
    }
    assert.equal(arena.stats.reused, 0, 'no slab reused within the first turns');
    // Keep the traffic going: the first slab comes back and is written over.
    for (let turn = 0; turn < 4; turn++) {
      arena.copy(message(50));
      arena.copy(message(50));
      arena.copy(message(50));
      await nextTurn();
    }
    assert.ok(arena.stats.reused > 0, 'slabs are reused');
    assert.ok(arena.stats.allocated <= 7, `few slabs allocated for steady traffic (${arena.stats.allocated})`);
    assert.notDeepEqual([...first], new Array(24).fill(1), 'an uncopied view of a reused slab changed');
    assert.deepEqual([...kept], new Array(24).fill(1), 'the retained copy did not');
  });

  it('allocates nothing more once traffic is steady', async () => {
    const arena = new InboundArena(SLAB, 32, 8);
    for (let turn = 0; turn < 10; turn++) {
      for (let i = 0; i < 4; i++) arena.copy(message(turn));
      await nextTurn();
    }
    const settled = arena.stats.allocated;
    for (let turn = 0; turn < 50; turn++) {
      for (let i = 0; i < 4; i++) arena.copy(message(turn));
      await nextTurn();
    }
    assert.equal(arena.stats.allocated, settled, 'the same slabs go round');
    assert.ok(arena.stats.reused >= 50);
  });

  it('poisons a slab when it becomes reusable, even without new traffic', async () => {
    const arena = new InboundArena(SLAB, 32, 4);
    arena.poisonRecycled = true;
    const view = arena.copy(message(3));
    arena.copy(message(4));
    arena.copy(message(5)); // the first slab is full: retired now
    await turns(2);
    assert.deepEqual([...view], new Array(24).fill(3), 'not yet: the rule holds for these turns');
    await turns(2);
    assert.deepEqual([...view], new Array(24).fill(0xee), 'poisoned once reusable');
    // Both written slabs are free again (poisoning also retires a slab in use at every turn).
    assert.deepEqual(arena.slabs(), { inUse: 1, free: 2 });
  });

  it('leaves slabs beyond maxFree to the collector, and stops owning them', async () => {
    const arena = new InboundArena(SLAB, 32, 1);
    const views: Buffer[] = [];
    // One turn of a burst: six slabs filled at once.
    for (let i = 0; i < 12; i++) views.push(arena.copy(message(i)));
    await turns(4);
    assert.equal(arena.slabs().free, 1);
    const dropped = views.filter((v) => !arena.owns(v));
    assert.ok(dropped.length >= 8, `views of dropped slabs are no longer the arena's (${dropped.length})`);
    for (const v of dropped) assert.equal(arena.retain(v), v, 'and are kept without a copy');
  });
});
