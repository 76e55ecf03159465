/**
 * A connection's durable ACKs on their way to Redis, and how many of them a
 * node may hold back while their recipients' backlogs are delivered.
 *
 * Why hold ACKs at all: removing an acknowledged frame is most of what a
 * drain costs Redis (about 4–8 µs per frame of an ACK script against 2–3 µs
 * of reading it; docs/benchmarks.md, "Reads before clean-up"), and Redis runs
 * one thing at a time, so each batch of ACKs made the next read of the same
 * backlog wait. Nothing waits on the removal: the sender had its ACK when the
 * frame was stored, the recipient already has the frame, and a RESUME after a
 * lost connection carries the recipient's own cumulative ACK. So while a
 * delivery pump is reading a backlog, its connection's ACKs are kept (packed,
 * 24 bytes each) and sent once a read finds nothing after it (caught up, even
 * if new frames keep the pump going), the pump pauses, or the connection
 * closes; a node holds (or is sending) at most RELAY_DURABLE_ACK_HOLD of them
 * at once, past which ACKs go to Redis each turn as before, and a draining
 * node holds none.
 *
 * What holding changes: acknowledged frames stay queued (and count against
 * the queue's and their senders' caps) until the pump catches up; a relay
 * killed meanwhile forgets the ACKs it held, and the recipient's next RESUME
 * removes them (its lastAcked), as for ACKs in flight when a relay dies. A
 * send Redis fails is kept by its (open) connection and tried again.
 */

import { ID_SIZE } from '@libertaria/protocol';

const INITIAL_CAPACITY = 64;

/** ACKs packed: `count` 16-byte messageIds back to back in `ids`, their positions in `positions`. */
export interface PackedAcks {
  readonly ids: Buffer;
  readonly positions: Float64Array;
  readonly count: number;
}

/** ACKs of one connection, in arrival order; grows as needed, handed over whole by take(). */
export class PendingAcks {
  private ids = Buffer.allocUnsafe(0);
  private positions = new Float64Array(0);
  private n = 0;

  get count(): number {
    return this.n;
  }

  /**
   * Copies the messageId at `idOffset` of `bytes` (they may point into a
   * reused receive buffer: an ACK frame itself, read in place). Returns the new count.
   */
  push(bytes: Uint8Array, position: number, idOffset = 0): number {
    if (this.n === this.positions.length) this.grow();
    // Byte by byte: a subarray() of the id would be an object per ACK.
    const ids = this.ids;
    const at = this.n * ID_SIZE;
    for (let i = 0; i < ID_SIZE; i++) ids[at + i] = bytes[idOffset + i]!;
    this.positions[this.n] = position;
    return ++this.n;
  }

  /** Adds ACKs handed over before (a send Redis failed), after those kept since. */
  append(acks: PackedAcks): void {
    for (let i = 0; i < acks.count; i++) this.push(acks.ids, acks.positions[i]!, i * ID_SIZE);
  }

  /** The ACKs so far, handed over; this list starts empty again (new storage, so they stay as handed). */
  take(): PackedAcks {
    const taken: PackedAcks = { ids: this.ids, positions: this.positions, count: this.n };
    this.ids = Buffer.allocUnsafe(0);
    this.positions = new Float64Array(0);
    this.n = 0;
    return taken;
  }

  private grow(): void {
    const capacity = Math.max(INITIAL_CAPACITY, this.positions.length * 2);
    const ids = Buffer.allocUnsafe(capacity * ID_SIZE);
    this.ids.copy(ids, 0, 0, this.n * ID_SIZE);
    const positions = new Float64Array(capacity);
    positions.set(this.positions.subarray(0, this.n));
    this.ids = ids;
    this.positions = positions;
  }
}

/** How many ACKs the connections of a node hold back at once (RELAY_DURABLE_ACK_HOLD). */
export class AckHoldBudget {
  private heldNow = 0;

  constructor(readonly limit: number) {}

  /** ACKs held by this node's connections now, or being sent (relay_durable_acks_held). */
  get held(): number {
    return this.heldNow;
  }

  /** Takes room for one ACK more: false when the node holds `limit` already. */
  tryHold(): boolean {
    if (this.heldNow >= this.limit) return false;
    this.heldNow++;
    return true;
  }

  /** Gives back the room of `n` ACKs held (they went to Redis, or their connection closed). */
  release(n: number): void {
    this.heldNow = Math.max(0, this.heldNow - n);
  }
}
