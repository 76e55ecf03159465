/**
 * Admission of a durable SEND: the three checks of budgets.ts in order,
 * cheapest first (Redis memory, recipient prekeys, the sender's and its
 * address's budgets through the node's reserves, budget-reserves.ts), each
 * refusal with its NACK code and the budget it is counted under
 * (docs/relay.md#durable-budgets).
 */
import { RelayError } from '@libertaria/protocol';
import { BudgetReserves } from './budget-reserves.js';
import type {
  BudgetName,
  Charge,
  ChargeResult,
  DurableBudgets,
  KnownRecipients,
  RedisMemoryGuard,
  Refusal,
} from './budgets.js';

export type Admission = { ok: true; charge: Charge | undefined } | { ok: false; refusal: Refusal };

const ADMITTED: Admission = { ok: true, charge: undefined };

/** A frame's charge (never a reservation, so never declined) as an admission. */
function admissionOf(c: ChargeResult): Admission {
  if ('charge' in c) return { ok: true, charge: c.charge };
  if ('refused' in c) return { ok: false, refusal: refusal(c.refused) };
  throw new RelayError('INTERNAL', 'a single frame charge was declined');
}

export interface DurableAdmissionParts {
  guard: RedisMemoryGuard | undefined;
  budgets: DurableBudgets | undefined;
  /** Set when RELAY_DURABLE_REQUIRE_PREKEYS is on. */
  recipients: KnownRecipients | undefined;
  /** Largest budget reservation of a connection (RELAY_DURABLE_BUDGET_RESERVE_FRAMES; budget-reserves.ts); 0: none. */
  reserveFrames?: number;
}

function refusal(budget: BudgetName): Refusal {
  switch (budget) {
    case 'redis_memory':
      return {
        code: 'STORE_FULL',
        budget,
        message:
          'Redis is at the memory reserved for durable frames (RELAY_DURABLE_MAX_REDIS_MEMORY_PERCENT); not stored',
      };
    case 'recipient_prekeys':
      return {
        code: 'RECIPIENT_UNKNOWN',
        budget,
        message: 'the recipient has published no prekeys; this relay stores durable frames only for known recipients',
      };
    default: {
      const [who, what] = budget.split('_') as ['sender' | 'address', 'frames' | 'bytes'];
      const variable = `RELAY_DURABLE_${what.toUpperCase()}_PER_${who.toUpperCase()}_PER_HOUR`;
      return {
        code: 'DURABLE_BUDGET_EXCEEDED',
        budget,
        message: `durable ${what} budget of this ${who === 'sender' ? 'sender DID' : 'source address'} for the last hour is used (${variable}); retry later`,
      };
    }
  }
}

/** A refusal for an OOM answer from Redis (the guard had not seen it coming). */
export const OOM_REFUSAL: Refusal = {
  code: 'STORE_FULL',
  budget: 'redis_memory',
  message: 'Redis is at maxmemory; not stored',
};

/**
 * Decides whether a durable SEND may be stored: synchronously when no Redis
 * call is needed (memory full, a held refusal, budgets off and the recipient
 * known or not required), else a promise (one round trip: the budget
 * charges and, on a cache miss, the prekey lookup, issued together).
 */
export class DurableAdmission {
  /** The node's budget reserves (budget-reserves.ts); set when budgets are on. */
  readonly reserves: BudgetReserves | undefined;

  constructor(private readonly parts: DurableAdmissionParts) {
    const { budgets } = parts;
    this.reserves =
      budgets?.enabled === true
        ? new BudgetReserves(budgets, parts.reserveFrames ?? 0, budgets.windowLengthMs)
        : undefined;
  }

  /** Gives the node's reserves back to Redis. */
  close(): Promise<void> {
    return this.reserves?.close() ?? Promise.resolve();
  }

  get guard(): RedisMemoryGuard | undefined {
    return this.parts.guard;
  }

  /**
   * The refusals known without a Redis call (memory full, a recipient known
   * to have no prekeys, a budget held refused). Checked before the
   * membrane, so a frame that will be refused anyway costs no access
   * decision and no audit record (which Redis would have to store).
   */
  precheck(sender: Uint8Array, address: string, dest: Uint8Array | undefined, now = Date.now()): Refusal | undefined {
    const { guard, budgets, recipients } = this.parts;
    if (guard?.full) return refusal('redis_memory');
    if (dest !== undefined && recipients?.isKnown(dest, now) === false) return refusal('recipient_prekeys');
    const held = budgets?.enabled ? budgets.heldRefusal(sender, address, now) : undefined;
    return held === undefined ? undefined : refusal(held);
  }

  /** `dest` undefined: the frame goes to a bridge, which needs no prekeys. */
  admit(
    sender: Uint8Array,
    address: string,
    dest: Uint8Array | undefined,
    bytes: number,
    now = Date.now(),
  ): Admission | Promise<Admission> {
    const { guard, budgets, recipients } = this.parts;
    if (guard?.full) return { ok: false, refusal: refusal('redis_memory') };
    const known = dest === undefined || recipients === undefined ? true : recipients.isKnown(dest, now);
    if (known === false) return { ok: false, refusal: refusal('recipient_prekeys') };
    const budgeted = budgets?.enabled === true;
    if (budgeted) {
      const held = budgets.heldRefusal(sender, address, now);
      if (held !== undefined) return { ok: false, refusal: refusal(held) };
    }
    if (!budgeted && known === true) return ADMITTED;
    const charging = budgeted ? this.reserves!.charge(sender, address, bytes, now) : undefined;
    if (known === true && charging !== undefined) {
      // The common case: from the connection's reserve, at once; else one promise on top of the charge.
      return charging instanceof Promise ? charging.then(admissionOf) : admissionOf(charging);
    }
    return Promise.allSettled([known, charging]).then(([k, c]): Admission => {
      const charged =
        c.status === 'fulfilled' && c.value !== undefined && 'charge' in c.value ? c.value.charge : undefined;
      const giveBack = (): void => {
        if (charged !== undefined) this.reserves?.refund(charged);
      };
      if (k.status === 'rejected') {
        giveBack();
        throw k.reason;
      }
      if (!k.value) {
        giveBack();
        return { ok: false, refusal: refusal('recipient_prekeys') };
      }
      if (c.status === 'rejected') throw c.reason;
      if (c.value !== undefined && 'refused' in c.value) return { ok: false, refusal: refusal(c.value.refused) };
      return { ok: true, charge: charged };
    });
  }

  /** Gives back what an admitted frame was charged, when it was not stored after all. */
  refund(charge: Charge | undefined): void {
    if (charge !== undefined) this.reserves?.refund(charge);
  }

  /** The recipient published prekeys through this node. */
  recipientPublished(hint: Uint8Array): void {
    this.parts.recipients?.markKnown(hint);
  }
}
