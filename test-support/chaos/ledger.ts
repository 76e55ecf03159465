/**
 * The chaos suite's bookkeeping: every durable frame a peer's application
 * sends, whether the relay ACKed it, and every time the receiving
 * application was handed it. From this alone the suite decides the two
 * guarantees (nothing ACKed is lost, nothing reaches an application twice),
 * independently of the client's own counters.
 *
 * A frame is identified twice, by its 16-byte message id and by
 * (sender index, sequence number) carried in the payload, so a duplicate
 * that somehow got a new id, or a payload delivered under another id or from
 * another DID, is caught too.
 */

export interface FrameRecord {
  readonly id: string;
  readonly from: number;
  readonly to: number;
  readonly seq: number;
  /** First time the application called send() for it. */
  readonly sentAt: number;
  /** When send() resolved: the relay had it in Redis. */
  ackedAt?: number;
  /** First time the receiving application got it. */
  deliveredAt?: number;
  /** Times the receiving application got it (1 is right). */
  deliveries: number;
  /** NACKs the sender got for it (it retries with the same id). */
  nacks: number;
}

/** Payload layout: magic, sender index, sequence, then padding; the bytes the ledger checks on receipt. */
export const PAYLOAD_MAGIC = 0xc4a05;
export const PAYLOAD_HEADER = 12;

export function encodePayload(from: number, seq: number, size: number): Uint8Array {
  const buf = Buffer.alloc(Math.max(PAYLOAD_HEADER, size));
  buf.writeUInt32BE(PAYLOAD_MAGIC, 0);
  buf.writeUInt32BE(from, 4);
  buf.writeUInt32BE(seq, 8);
  return buf;
}

export function decodePayload(payload: Uint8Array): { from: number; seq: number } | undefined {
  if (payload.length < PAYLOAD_HEADER) return undefined;
  const buf = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (buf.readUInt32BE(0) !== PAYLOAD_MAGIC) return undefined;
  return { from: buf.readUInt32BE(4), seq: buf.readUInt32BE(8) };
}

export interface LedgerSummary {
  /** Distinct frames the applications sent. */
  sent: number;
  /** Of those, ACKed by a relay (stored in Redis). */
  acked: number;
  /** Distinct frames the receiving applications got. */
  delivered: number;
  /** ACKed but never delivered: must be 0. */
  lost: number;
  /** Deliveries to an application beyond the first: must be 0. */
  duplicates: number;
  /** Sent, never ACKed (the sender gave up or the run ended first). */
  unacked: number;
  /** Delivered although its sender never saw the ACK (the ACK was lost with a connection): allowed. */
  deliveredUnacked: number;
  /** NACKs by code (each retried with the same message id). */
  nacks: Record<string, number>;
  /** Deliveries that contradict what was sent (wrong sender, recipient, id or payload): must be 0. */
  misdelivered: number;
  /** Send → first delivery, ms. */
  latency: { p50: number; p99: number; max: number };
}

export class Ledger {
  readonly frames = new Map<string, FrameRecord>();
  private readonly bySenderSeq = new Map<string, string>();
  private readonly nackCodes = new Map<string, number>();
  /** Per sender, the times its sends were ACKed, in order (Date.now() is appended as it happens). */
  private readonly ackTimes = new Map<number, number[]>();
  private misdeliveries = 0;
  private duplicateDeliveries = 0;
  /** The first few problems, for the failure message. */
  readonly problems: string[] = [];

  sent(record: Omit<FrameRecord, 'deliveries' | 'nacks'>): void {
    this.frames.set(record.id, { ...record, deliveries: 0, nacks: 0 });
    this.bySenderSeq.set(`${record.from}:${record.seq}`, record.id);
  }

  acked(id: string, at = Date.now()): void {
    const f = this.frames.get(id);
    if (f === undefined || f.ackedAt !== undefined) return;
    f.ackedAt = at;
    const times = this.ackTimes.get(f.from);
    if (times === undefined) this.ackTimes.set(f.from, [at]);
    else times.push(at);
  }

  nacked(id: string, code: string): void {
    const f = this.frames.get(id);
    if (f !== undefined) f.nacks++;
    this.nackCodes.set(code, (this.nackCodes.get(code) ?? 0) + 1);
  }

  /**
   * The receiving application got a message: `receiver` is its peer index,
   * `sender` the index of the peer whose DID the SDK verified as `from`.
   */
  delivered(receiver: number, sender: number | undefined, id: string, payload: Uint8Array, at = Date.now()): void {
    const fields = decodePayload(payload);
    const f = this.frames.get(id);
    if (f === undefined || fields === undefined) {
      return this.problem(`peer ${receiver} got unknown message ${id}`);
    }
    if (f.to !== receiver || f.from !== sender || fields.from !== f.from || fields.seq !== f.seq) {
      return this.problem(
        `message ${id} (from ${f.from} seq ${f.seq} to ${f.to}) reached peer ${receiver} as from ${sender}, payload ${fields.from}/${fields.seq}`,
      );
    }
    if (this.bySenderSeq.get(`${fields.from}:${fields.seq}`) !== id) {
      return this.problem(`payload ${fields.from}/${fields.seq} arrived under another id ${id}`);
    }
    f.deliveries++;
    if (f.deliveries === 1) f.deliveredAt = at;
    else {
      this.duplicateDeliveries++;
      if (this.problems.length < 20)
        this.problems.push(`duplicate: ${id} (from ${f.from} seq ${f.seq}) delivered ${f.deliveries} times`);
    }
  }

  private problem(text: string): void {
    this.misdeliveries++;
    if (this.problems.length < 20) this.problems.push(text);
  }

  /** ACKed frames not delivered yet. */
  pending(): number {
    let n = 0;
    for (const f of this.frames.values()) if (f.ackedAt !== undefined && f.deliveries === 0) n++;
    return n;
  }

  /** Frames not ACKed yet. */
  unacked(): number {
    let n = 0;
    for (const f of this.frames.values()) if (f.ackedAt === undefined) n++;
    return n;
  }

  /** Lost frames, for the failure message (the first `max`). */
  lostFrames(max = 10): FrameRecord[] {
    const out: FrameRecord[] = [];
    for (const f of this.frames.values()) {
      if (f.ackedAt !== undefined && f.deliveries === 0) out.push(f);
      if (out.length >= max) break;
    }
    return out;
  }

  /** Time of the first ACK of `peer`'s frames at or after `t` (undefined: none). */
  firstAckAfter(peer: number, t: number): number | undefined {
    const times = this.ackTimes.get(peer) ?? [];
    let lo = 0;
    let hi = times.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (times[mid]! < t) lo = mid + 1;
      else hi = mid;
    }
    return times[lo];
  }

  summary(): LedgerSummary {
    let acked = 0;
    let delivered = 0;
    let lost = 0;
    let deliveredUnacked = 0;
    const latencies: number[] = [];
    for (const f of this.frames.values()) {
      if (f.ackedAt !== undefined) acked++;
      if (f.deliveries > 0) {
        delivered++;
        if (f.deliveredAt !== undefined) latencies.push(f.deliveredAt - f.sentAt);
        if (f.ackedAt === undefined) deliveredUnacked++;
      } else if (f.ackedAt !== undefined) lost++;
    }
    const q = quantiles(latencies);
    return {
      sent: this.frames.size,
      acked,
      delivered,
      lost,
      duplicates: this.duplicateDeliveries,
      unacked: this.frames.size - acked,
      deliveredUnacked,
      nacks: Object.fromEntries(this.nackCodes),
      misdelivered: this.misdeliveries,
      latency: { p50: q.p50, p99: q.p99, max: q.max },
    };
  }
}

export interface Quantiles {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

export function quantiles(values: readonly number[]): Quantiles {
  if (values.length === 0) return { n: 0, p50: Number.NaN, p99: Number.NaN, max: Number.NaN };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { n: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1]! };
}
