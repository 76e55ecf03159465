/**
 * A membrane on in-memory state with a clock the test moves, and the seed's
 * three example capabilities as a policy.
 */

import { Ed25519Identity } from '@libertaria/identity';
import {
  type AccessDecision,
  type AccessRequest,
  type AuditRecord,
  DEFAULT_MEMBRANE_LIMITS,
  Membrane,
  type MembraneOptions,
  type MembranePolicy,
  MemoryAuditSink,
  MemoryConstraintState,
  MemoryPolicySource,
  MemoryRevocationList,
  MemoryTrustProvider,
  parsePolicy,
} from '@libertaria/membrane';

/** 2026-11-23 was a Monday; 12:00 UTC. */
export const MONDAY_NOON_MS = Date.UTC(2026, 10, 23, 12, 0, 0);

export class Clock {
  constructor(public ms = MONDAY_NOON_MS) {}
  readonly now = (): number => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
  get seconds(): number {
    return Math.floor(this.ms / 1000);
  }
}

/** Counts trust look-ups, to show they happen only when a constraint needs one. */
export class CountingTrust extends MemoryTrustProvider {
  lookups = 0;
  override trustScore(peer: string): number | undefined {
    this.lookups++;
    return super.trustScore(peer);
  }
}

export interface Harness {
  owner: Ed25519Identity;
  clock: Clock;
  policies: MemoryPolicySource;
  trust: CountingTrust;
  state: MemoryConstraintState;
  revocations: MemoryRevocationList;
  audit: MemoryAuditSink;
  membrane: Membrane;
  /** Sets the owner's policy from a JSON value (validated as an uploaded document would be). */
  setPolicy(policy: unknown): MembranePolicy;
  /** checkAccess for `peer` on the owner's resources. */
  check(peer: Ed25519Identity | string, request: Omit<AccessRequest, 'peer' | 'owner'>): Promise<AccessDecision>;
  lastRecord(): AuditRecord;
}

export function harness(options: Partial<MembraneOptions> = {}): Harness {
  const owner = Ed25519Identity.generate();
  const clock = new Clock();
  const policies = new MemoryPolicySource();
  const trust = new CountingTrust();
  const state = new MemoryConstraintState();
  const revocations = new MemoryRevocationList();
  const audit = new MemoryAuditSink();
  const membrane = new Membrane({
    policies,
    trust,
    state,
    revocations,
    audit,
    whenNoPolicy: 'deny',
    now: clock.now,
    ...options,
  });
  return {
    owner,
    clock,
    policies,
    trust,
    state,
    revocations,
    audit,
    membrane,
    setPolicy(policy) {
      const parsed = parsePolicy(JSON.stringify(policy), DEFAULT_MEMBRANE_LIMITS);
      policies.set(owner.did, parsed);
      return parsed;
    },
    check(peer, request) {
      return membrane.checkAccess({
        peer: typeof peer === 'string' ? peer : peer.did,
        owner: owner.did,
        ...request,
      });
    },
    lastRecord() {
      const r = audit.records.at(-1);
      if (!r) throw new Error('no audit record');
      return r;
    },
  };
}

/** The seed's examples: read feed://my-channel; write chapter://berlin/proposals (if member); call service://payment (up to 100 units). */
export function seedPolicy(members: string[]): unknown {
  return {
    version: 1,
    sets: { berlin: members },
    capabilities: [
      { resource: 'feed://my-channel', action: 'read' },
      { resource: 'chapter://berlin/proposals', action: 'write', conditions: [{ type: 'member', set: 'berlin' }] },
      { resource: 'service://payment', action: 'call', conditions: [{ type: 'amount', max: 100 }] },
    ],
  };
}
