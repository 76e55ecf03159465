/**
 * The membrane's boundaries: where trust scores, policies, counters,
 * revocations and audit records come from and go to. The evaluator
 * (membrane.ts) is pure logic over these; memory.ts implements them for
 * tests and single-process use, services/relay/src/membrane/ on Redis.
 * Each may answer synchronously or with a promise.
 */
import type { ErrorCode } from '@libertaria/protocol';
import type { CompiledPolicy, ConsumeOp } from './compile.js';
import type { Action } from './resource.js';

/** Trust scores (0..1) per DID; Libertaria's QVL plugs in here. undefined: the peer is unknown. */
export interface TrustProvider {
  trustScore(peer: string): number | undefined | Promise<number | undefined>;
}

/** The owner's compiled policy, or null when the owner has none. */
export interface PolicySource {
  policyFor(owner: string): CompiledPolicy | null | Promise<CompiledPolicy | null>;
}

/**
 * Rate windows and quota spends. `consume` applies every op or none,
 * atomically with respect to every other consume on the same state (across
 * processes, for a shared store): a rate op counts 1 request, a quota op
 * `amount` units, in the aligned window containing `nowMs` (windowMs 0: one
 * window forever). Returns -1 when all were applied, else the index of the
 * first op whose limit would be exceeded (then nothing was applied).
 * `scope` groups the ops of one policy or token chain (a Redis Cluster hash tag).
 */
export interface ConstraintState {
  consume(
    scope: string,
    ops: readonly ConsumeOp[],
    peer: string,
    amount: number,
    nowMs: number,
  ): number | Promise<number>;
}

/** Revoked grant links by cid. Returns the first revoked cid of `cids`, or undefined. */
export interface RevocationList {
  firstRevoked(cids: readonly string[]): string | undefined | Promise<string | undefined>;
}

/** One decision, as the audit trail keeps it. */
export interface AuditRecord {
  /** When the decision was taken (ms since the epoch). */
  at: number;
  peer: string;
  owner: string;
  resource: string;
  action: Action;
  amount: number;
  allowed: boolean;
  /** 'OK' when allowed, else the denial's stable code. */
  code: ErrorCode | 'OK';
  /** What decided: the owner's policy, a presented grant token, or the relay default (no policy). */
  via: 'policy' | 'grant' | 'default' | 'none';
  /** The matched capability, or what failed (`constraints[1]`, `links[0].payload.exp`); '' when nothing applies. */
  field: string;
  reason: string;
  /** The policy's id or the token's leaf cid; '' for none. */
  basis: string;
}

/** Where decisions go. A decision is returned only after its record is accepted (fail closed). */
export interface AuditSink {
  record(entry: AuditRecord): void | Promise<void>;
}
