/**
 * Reconnection schedule: exponential backoff with proportional jitter.
 *
 * The delay before retry number `attempt` (0-based) is drawn uniformly from
 *
 *     [base * (1 - jitter), min(maxDelayMs, base * (1 + jitter))]
 *     where base = min(maxDelayMs, initialDelayMs * multiplier^attempt)
 *
 * Jitter spreads the reconnects of many clients whose relay went away at the
 * same moment, so they do not all come back in the same millisecond; the cap
 * keeps even the jittered delay at or below maxDelayMs.
 */
import { RelayError } from '@libertaria/protocol';
import { ClientErrorCode } from './codes.js';

export interface ReconnectOptions {
  /** Delay before the first retry (default 250 ms). */
  initialDelayMs: number;
  /** Largest delay (default 10 s). */
  maxDelayMs: number;
  /** Growth factor per retry (default 2). */
  multiplier: number;
  /** Fraction of the delay drawn at random on either side, 0..1 (default 0.2). */
  jitter: number;
  /** Rounds over the whole relay list before giving up; 0 = never give up (default). */
  maxAttempts: number;
}

export const DEFAULT_RECONNECT: Readonly<ReconnectOptions> = Object.freeze({
  initialDelayMs: 250,
  maxDelayMs: 10_000,
  multiplier: 2,
  jitter: 0.2,
  maxAttempts: 0,
});

function check(ok: boolean, message: string): void {
  if (!ok) throw new RelayError(ClientErrorCode.invalidArgument, `reconnect: ${message}`);
}

/** Fills in defaults and validates; throws RelayError BAD_FIELD for values that make no schedule. */
export function resolveReconnectOptions(options: Partial<ReconnectOptions> = {}): ReconnectOptions {
  const o: ReconnectOptions = { ...DEFAULT_RECONNECT };
  for (const key of Object.keys(DEFAULT_RECONNECT) as (keyof ReconnectOptions)[]) {
    const value = options[key];
    if (value !== undefined) o[key] = value;
  }
  check(Number.isFinite(o.initialDelayMs) && o.initialDelayMs >= 0, 'initialDelayMs must be a number ≥ 0');
  check(Number.isFinite(o.maxDelayMs) && o.maxDelayMs >= o.initialDelayMs, 'maxDelayMs must be ≥ initialDelayMs');
  check(Number.isFinite(o.multiplier) && o.multiplier >= 1, 'multiplier must be ≥ 1');
  check(Number.isFinite(o.jitter) && o.jitter >= 0 && o.jitter <= 1, 'jitter must be within 0..1');
  check(Number.isInteger(o.maxAttempts) && o.maxAttempts >= 0, 'maxAttempts must be an integer ≥ 0');
  return o;
}

/** The range the delay of retry `attempt` is drawn from. */
export function backoffBounds(attempt: number, o: ReconnectOptions): { min: number; max: number } {
  // Math.pow overflows to Infinity for huge attempts, which the min() then caps.
  const base = Math.min(o.maxDelayMs, o.initialDelayMs * o.multiplier ** Math.max(0, attempt));
  return { min: base * (1 - o.jitter), max: Math.min(o.maxDelayMs, base * (1 + o.jitter)) };
}

/** The delay in whole milliseconds before retry `attempt` (0-based); `random` returns values in [0, 1). */
export function backoffDelay(attempt: number, o: ReconnectOptions, random: () => number = Math.random): number {
  const { min, max } = backoffBounds(attempt, o);
  return Math.round(min + (max - min) * random());
}

/**
 * The seed's ReconnectionPolicy, in its own names: `{maxAttempts (0 =
 * infinite), initialDelay, maxDelay, backoffMultiplier}`, durations in ms.
 * The seed's example (1 s, 2 s, 4 s, 8 s, 16 s, 30 s, 30 s, …) is
 * `{ maxAttempts: 0, initialDelay: 1000, maxDelay: 30000, backoffMultiplier: 2 }`.
 */
export interface ReconnectionPolicy {
  maxAttempts: number;
  initialDelay: number;
  maxDelay: number;
  backoffMultiplier: number;
  /** Not in the seed: the random spread around each delay, 0..1 (default 0.2; 0 reproduces the schedule exactly). */
  jitter?: number;
}

/** The RelayClient `reconnect` options for a ReconnectionPolicy; validated like any other. */
export function fromReconnectionPolicy(policy: ReconnectionPolicy): ReconnectOptions {
  return resolveReconnectOptions({
    maxAttempts: policy.maxAttempts,
    initialDelayMs: policy.initialDelay,
    maxDelayMs: policy.maxDelay,
    multiplier: policy.backoffMultiplier,
    jitter: policy.jitter ?? DEFAULT_RECONNECT.jitter,
  });
}
