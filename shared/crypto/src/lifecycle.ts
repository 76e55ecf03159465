/**
 * The session lifecycle of the seed (SessionState), with the degraded and
 * rotating steps of Libertaria's L2 spec, as one transition table:
 *
 *   state        event               next
 *   handshaking  established         active
 *   active       heartbeat_missed    degraded      (no traffic for longer than the heartbeat allows)
 *   degraded     heartbeat_ok        active
 *   active       rotation_started    rotating      (key rotation: a new handshake under way)
 *   rotating     rotation_done       active
 *   active       path_changed        migrating     (address, transport or relay node changes)
 *   degraded     path_changed        migrating
 *   suspended    path_changed        migrating
 *   migrating    migrated            active        (re-attached on the new path, same keys)
 *   any live     path_lost           suspended     (every path down: a partition, a dead node)
 *   suspended    reconnected         active        (back on the same path)
 *   any live     close               closing
 *   handshaking  failed              closed        (gave up)
 *   suspended    failed              closed
 *   closing      closed              closed
 *
 * "Live" is every state but closing and closed. Anything else is illegal:
 * `apply` throws SessionError ILLEGAL_TRANSITION (a bug in the caller, never
 * a network condition), so the table is the one place the rules live. Every
 * transition is logged and handed to the listeners, in order.
 */
import { SessionError } from './errors.js';

export type LifecycleState =
  | 'handshaking'
  | 'active'
  | 'degraded'
  | 'rotating'
  | 'migrating'
  | 'suspended'
  | 'closing'
  | 'closed';

export type LifecycleEvent =
  | 'established'
  | 'heartbeat_missed'
  | 'heartbeat_ok'
  | 'rotation_started'
  | 'rotation_done'
  | 'path_changed'
  | 'migrated'
  | 'path_lost'
  | 'reconnected'
  | 'close'
  | 'failed'
  | 'closed';

export interface LifecycleTransition {
  from: LifecycleState;
  to: LifecycleState;
  event: LifecycleEvent;
  /** Milliseconds since the epoch. */
  at: number;
  /** Why, for logs (e.g. the relay URL, the error code). */
  detail?: string;
}

const LIVE: readonly LifecycleState[] = ['handshaking', 'active', 'degraded', 'rotating', 'migrating', 'suspended'];

const TABLE: Readonly<Record<LifecycleState, Partial<Record<LifecycleEvent, LifecycleState>>>> = (() => {
  const t: Record<LifecycleState, Partial<Record<LifecycleEvent, LifecycleState>>> = {
    handshaking: { established: 'active', failed: 'closed' },
    active: { heartbeat_missed: 'degraded', rotation_started: 'rotating', path_changed: 'migrating' },
    degraded: { heartbeat_ok: 'active', path_changed: 'migrating' },
    rotating: { rotation_done: 'active' },
    migrating: { migrated: 'active' },
    suspended: { reconnected: 'active', path_changed: 'migrating', failed: 'closed' },
    closing: { closed: 'closed' },
    closed: {},
  };
  for (const state of LIVE) {
    t[state].close = 'closing';
    if (state !== 'suspended') t[state].path_lost = 'suspended';
  }
  return t;
})();

/** The next state, or undefined if `event` is not allowed in `state`. */
export function nextState(state: LifecycleState, event: LifecycleEvent): LifecycleState | undefined {
  return TABLE[state][event];
}

export interface LifecycleLogger {
  info?(message: string, fields?: Record<string, unknown>): void;
}

export class SessionLifecycle {
  #state: LifecycleState;
  readonly #listeners: Array<(t: LifecycleTransition) => void> = [];
  readonly #log: LifecycleLogger | undefined;
  readonly #name: string;
  readonly #clock: () => number;

  constructor(options: { name: string; log?: LifecycleLogger; initial?: LifecycleState; clock?: () => number }) {
    this.#state = options.initial ?? 'handshaking';
    this.#log = options.log;
    this.#name = options.name;
    this.#clock = options.clock ?? Date.now;
  }

  get state(): LifecycleState {
    return this.#state;
  }

  /** True if `event` is allowed now. */
  can(event: LifecycleEvent): boolean {
    return nextState(this.#state, event) !== undefined;
  }

  /** Moves on `event`; throws ILLEGAL_TRANSITION if the table does not allow it. */
  apply(event: LifecycleEvent, detail?: string): LifecycleTransition {
    const from = this.#state;
    const to = nextState(from, event);
    if (to === undefined) {
      throw new SessionError('ILLEGAL_TRANSITION', `${this.#name}: ${event} is not allowed in state ${from}`);
    }
    this.#state = to;
    const transition: LifecycleTransition = { from, to, event, at: this.#clock() };
    if (detail !== undefined) transition.detail = detail;
    this.#log?.info?.('session state', { session: this.#name, from, to, event, ...(detail ? { detail } : {}) });
    for (const listener of this.#listeners) listener(transition);
    return transition;
  }

  /** Applies `event` only if allowed (for events that may repeat or race, like heartbeat_ok); returns whether it did. */
  applyIfAllowed(event: LifecycleEvent, detail?: string): boolean {
    if (!this.can(event)) return false;
    this.apply(event, detail);
    return true;
  }

  onTransition(listener: (t: LifecycleTransition) => void): () => void {
    this.#listeners.push(listener);
    return () => {
      const i = this.#listeners.indexOf(listener);
      if (i >= 0) this.#listeners.splice(i, 1);
    };
  }
}
