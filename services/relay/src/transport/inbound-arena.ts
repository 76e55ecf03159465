/**
 * Where inbound WebSocket messages live once uWS's callback has returned.
 *
 * uWS neuters the ArrayBuffer it hands to `message` when the callback
 * returns, so the bytes must be copied. They used to be copied into fresh
 * 256 KiB slabs, one after another: about 1.2 KB of new ArrayBuffer memory
 * per frame, which V8 counts against its old-generation limit, so at 10k
 * frames/s the relay ran a full mark-compact every ~0.8 s (issue 18,
 * docs/benchmarks.md "the relay's pauses, found"). The slabs here are
 * recycled instead, so the fast path allocates no buffer memory per frame.
 *
 * The rule that makes recycling safe: **a frame's bytes are valid until the
 * event loop has gone round twice more** (three `setImmediate` generations).
 * That covers everything a frame meets synchronously, the microtasks after
 * it, and the once-per-turn flushes (`setImmediate`) of the outbound batches
 * and the cross-node outbox, which copy them out. Code that keeps a frame
 * longer (a durable SEND waiting for Redis, the membrane holding a SEND, a
 * presence lookup, a send uWS refused, a control frame whose handling is
 * asynchronous) calls `retainFrame()`, which copies the bytes out of a slab
 * and leaves any other buffer as it is.
 *
 * A missed `retainFrame()` would let a later message overwrite a kept frame, so
 * the test harness runs relays with RELAY_DEBUG_POISON_RECYCLED: a slab is
 * filled with 0xEE the moment it becomes reusable (and retired after every
 * turn, full or not), so a frame kept three turns without a copy reads as
 * garbage (an unknown frame type) wherever it goes.
 */

/** Turns a slab waits, after its last write, before it is reused (see the rule above). */
const GENERATIONS_BEFORE_REUSE = 3;
const POISON = 0xee;

interface UsedSlab {
  slab: Buffer;
  /** The generation in which its last message was copied in. */
  generation: number;
}

export class InboundArena {
  private slab: Buffer;
  private offset = 0;
  private readonly used: UsedSlab[] = [];
  private usedHead = 0;
  private readonly free: Buffer[] = [];
  /** The backing stores of every slab this arena may still recycle: what retain() must copy from. */
  private readonly ours = new Set<ArrayBuffer>();
  private generation = 0;
  private ticking = false;
  /** Fill slabs with POISON when they become reusable (tests: a frame kept without retain() shows). */
  poisonRecycled = false;
  /** For metrics and tests: slabs allocated, and slabs taken again after being recycled. */
  readonly stats = { allocated: 0, reused: 0 };

  constructor(
    private readonly slabSize = 256 * 1024,
    /** Messages larger than this get a buffer of their own (not recycled: nothing to retain). */
    private readonly maxPooled = 16 * 1024,
    /** Reusable slabs kept beyond this many are left to the collector (a burst's slabs are not held forever). */
    private readonly maxFree = 32,
  ) {
    this.slab = this.allocate();
  }

  /** Copies a message out of uWS's buffer; the copy is valid under the rule above. */
  copy(source: ArrayBuffer): Buffer {
    const n = source.byteLength;
    if (n > this.maxPooled) return Buffer.from(source.slice(0));
    this.scheduleTick();
    if (this.offset + n > this.slabSize) this.nextSlab();
    const out = this.slab.subarray(this.offset, this.offset + n);
    out.set(new Uint8Array(source));
    // Keep the next message 8-byte aligned.
    this.offset += (n + 7) & ~7;
    return out;
  }

  /** True if `bytes` lie in a slab of this arena (and so are valid only under the rule above). */
  owns(bytes: Uint8Array): boolean {
    return this.ours.has(bytes.buffer as ArrayBuffer);
  }

  /** Bytes that stay valid as long as they are referenced: a copy if they lie in a slab, else the same bytes. */
  retain(bytes: Uint8Array): Buffer {
    if (this.owns(bytes)) return Buffer.from(bytes);
    return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Slabs in use or waiting to be reused, and reusable ones (bytes held: slabs × slab size). */
  slabs(): { inUse: number; free: number } {
    return { inUse: this.used.length - this.usedHead + 1, free: this.free.length };
  }

  private readonly tick = (): void => {
    this.ticking = false;
    // Poisoning, a slab in use is retired at every turn, so that a kept frame is poisoned three turns
    // later however little traffic there is (tests send little); in production slabs are retired only
    // when full.
    if (this.poisonRecycled && this.offset > 0) this.nextSlab();
    this.generation++;
    const used = this.used;
    while (this.usedHead < used.length) {
      const entry = used[this.usedHead]!;
      if (this.generation - entry.generation < GENERATIONS_BEFORE_REUSE) break;
      used[this.usedHead++] = undefined as unknown as UsedSlab;
      this.release(entry.slab);
    }
    if (this.usedHead === used.length) {
      used.length = 0;
      this.usedHead = 0;
    } else if (this.usedHead > 1024) {
      used.splice(0, this.usedHead);
      this.usedHead = 0;
    }
    // Slabs still waiting need more generations: keep the clock running even without new messages.
    if (this.usedHead < used.length) this.scheduleTick();
  };

  /** The generation clock: one tick per event-loop turn, while messages arrive or slabs wait. */
  private scheduleTick(): void {
    if (this.ticking) return;
    this.ticking = true;
    setImmediate(this.tick);
  }

  private nextSlab(): void {
    this.used.push({ slab: this.slab, generation: this.generation });
    const recycled = this.free.pop();
    if (recycled !== undefined) this.stats.reused++;
    this.slab = recycled ?? this.allocate();
    this.offset = 0;
  }

  private release(slab: Buffer): void {
    if (this.poisonRecycled) slab.fill(POISON);
    if (this.free.length < this.maxFree) {
      this.free.push(slab);
      return;
    }
    this.ours.delete(slab.buffer as ArrayBuffer);
  }

  private allocate(): Buffer {
    const slab = Buffer.allocUnsafeSlow(this.slabSize);
    this.ours.add(slab.buffer as ArrayBuffer);
    this.stats.allocated++;
    return slab;
  }
}

/**
 * The process's arena: every WebSocket listener copies into it, and every
 * module that keeps a frame past the rule above calls `retainFrame`.
 */
export const inboundArena = new InboundArena();

/** Bytes safe to keep: a copy of a frame that lies in a recycled inbound slab, the same bytes otherwise. */
export function retainFrame(bytes: Uint8Array): Buffer {
  return inboundArena.retain(bytes);
}
