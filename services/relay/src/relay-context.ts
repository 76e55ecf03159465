import type { Ed25519Identity } from '@libertaria/identity';
import type { RelayConfig } from './config.js';
import type { DurableAdmission } from './durable-admission.js';
import type { DurableStore } from './durable-store.js';
import type { FederationHook } from './federation/index.js';
import type { InFlightCount } from './in-flight-count.js';
import type { Logger } from './log.js';
import type { Enforcer } from './membrane/enforcer.js';
import type { RelayMetrics } from './metrics.js';
import type { OnceStore } from './once-store.js';
import type { AckHoldBudget } from './pending-acks.js';
import type { PrekeyStore } from './prekey-store.js';
import type { ConcurrencyLimit, ConnectionsPerAddress, HandshakeFailureLimiter, WaitingSlots } from './rate-limits.js';
import type { Router } from './router.js';

/** What a connection needs from its node. One object, built once by RelayNode. */
export interface RelayContext {
  readonly config: RelayConfig;
  readonly nodeId: string;
  /** The node's relay identity key: it signs every CHALLENGE (docs/relay.md#relay-identity). */
  readonly identity: Ed25519Identity;
  readonly log: Logger;
  readonly metrics: RelayMetrics;
  readonly router: Router;
  readonly store: DurableStore;
  readonly prekeys: PrekeyStore;
  readonly once: OnceStore;
  /** The membrane's access decisions; undefined when RELAY_MEMBRANE_ENABLED is false. */
  readonly membrane: Enforcer | undefined;
  readonly authLimiter: HandshakeFailureLimiter;
  /** Anonymous connections held by this node (RELAY_ANON_MAX_CONNECTIONS). */
  readonly anonSlots: ConcurrencyLimit;
  /** Connections per source address on this node (RELAY_CONNECTIONS_PER_ADDRESS). */
  readonly connectionsPerAddress: ConnectionsPerAddress;
  /** Whether a durable SEND may be stored: Redis memory, recipient prekeys, sender and address budgets (budgets.ts). */
  readonly admission: DurableAdmission;
  /**
   * Durable fetches of this node's delivery pumps in flight at once
   * (PUMP_FETCH_CONCURRENCY); absent: unbounded (tests that build a context by hand).
   */
  readonly fetchSlots?: WaitingSlots;
  /**
   * ACKs this node's connections may hold back while their backlogs are
   * delivered (RELAY_DURABLE_ACK_HOLD, pending-acks.ts); absent: none held
   * (tests that build a context by hand).
   */
  readonly ackHold?: AckHoldBudget;
  /** Bridges and their queues (docs/bridges.md#federation); undefined when RELAY_FEDERATION_ENABLED is false. */
  readonly federation?: FederationHook;
  isDraining(): boolean;
  /** Registers a durable write (a durable SEND, a prekey publication) in flight, so a drain waits for it. */
  trackDurableWrite(work: Promise<unknown>): void;
  /** Durable SENDs in flight to Redis, counted without a promise each (the hot path's trackDurableWrite). */
  readonly durableWrites: InFlightCount;
}
