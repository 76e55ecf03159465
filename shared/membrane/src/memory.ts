/**
 * In-memory implementations of the membrane's interfaces: for tests, the
 * benchmark and a single process. They have the same semantics as the Redis
 * ones in services/relay/src/membrane/ (a test suite runs against both).
 */
import { type CompiledPolicy, type ConsumeOp, CompiledPolicy as Policy } from './compile.js';
import type {
  AuditRecord,
  AuditSink,
  ConstraintState,
  PolicySource,
  RevocationList,
  TrustProvider,
} from './interfaces.js';
import type { MembranePolicy } from './policy.js';
import { canonicalDid } from './resource.js';

export class MemoryTrustProvider implements TrustProvider {
  private readonly scores = new Map<string, number>();
  set(peer: string, score: number): void {
    if (typeof score !== 'number' || !(score >= 0 && score <= 1)) throw new RangeError('a trust score is 0..1');
    this.scores.set(canonicalDid(peer), score);
  }
  trustScore(peer: string): number | undefined {
    return this.scores.get(peer);
  }
}

export class MemoryPolicySource implements PolicySource {
  private readonly policies = new Map<string, CompiledPolicy>();
  set(owner: string, policy: MembranePolicy): CompiledPolicy {
    const compiled = new Policy(owner, policy);
    this.policies.set(compiled.owner, compiled);
    return compiled;
  }
  delete(owner: string): void {
    this.policies.delete(canonicalDid(owner));
  }
  policyFor(owner: string): CompiledPolicy | null {
    return this.policies.get(owner) ?? null;
  }
}

interface Counter {
  window: number;
  used: number;
}

/** The counter key of an op: scope, op id and, per peer, the peer. Redis uses the same layout. */
export function counterKey(scope: string, op: ConsumeOp, peer: string): string {
  return op.perPeer ? `{${scope}}:${op.id}:${peer}` : `{${scope}}:${op.id}`;
}

/** Aligned window index of `nowMs`; 0 for a lifetime quota. */
export function windowIndex(op: ConsumeOp, nowMs: number): number {
  return op.windowMs === 0 ? 0 : Math.floor(nowMs / op.windowMs);
}

export class MemoryConstraintState implements ConstraintState {
  private readonly counters = new Map<string, Counter>();

  consume(scope: string, ops: readonly ConsumeOp[], peer: string, amount: number, nowMs: number): number {
    // Check every op first, then apply: all or nothing, as the Redis script does.
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      const c = this.counters.get(counterKey(scope, op, peer));
      const used = c !== undefined && c.window === windowIndex(op, nowMs) ? c.used : 0;
      if (used + (op.kind === 'rate' ? 1 : amount) > op.limit) return i;
    }
    for (const op of ops) {
      const key = counterKey(scope, op, peer);
      const w = windowIndex(op, nowMs);
      const c = this.counters.get(key);
      const spend = op.kind === 'rate' ? 1 : amount;
      if (c === undefined) this.counters.set(key, { window: w, used: spend });
      else if (c.window !== w) {
        c.window = w;
        c.used = spend;
      } else c.used += spend;
    }
    return -1;
  }

  /** Units or requests used in the current window (for tests and operators). */
  used(scope: string, op: ConsumeOp, peer: string, nowMs: number): number {
    const c = this.counters.get(counterKey(scope, op, peer));
    return c !== undefined && c.window === windowIndex(op, nowMs) ? c.used : 0;
  }
}

export class MemoryRevocationList implements RevocationList {
  private readonly revoked = new Set<string>();
  revoke(cid: string): void {
    this.revoked.add(cid);
  }
  firstRevoked(cids: readonly string[]): string | undefined {
    for (const cid of cids) if (this.revoked.has(cid)) return cid;
    return undefined;
  }
}

/** Keeps the newest `max` records, like the Redis stream's MAXLEN. */
export class MemoryAuditSink implements AuditSink {
  private buffer: AuditRecord[] = [];
  constructor(private readonly max = 100_000) {}
  record(entry: AuditRecord): void {
    this.buffer.push(entry);
    // Trimmed in bulk once twice the bound is reached: amortized O(1), where trimming one by one is O(max).
    if (this.buffer.length >= this.max * 2) this.buffer = this.buffer.slice(-this.max);
  }
  /** The newest `max` records, oldest first. */
  get records(): readonly AuditRecord[] {
    return this.buffer.length > this.max ? this.buffer.slice(-this.max) : this.buffer;
  }
}
