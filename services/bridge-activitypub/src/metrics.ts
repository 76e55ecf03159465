/**
 * The bridge's Prometheus metrics, in a registry of its own. Labels are
 * bounded: activity types outside the handled set count as `other`, reasons
 * are a fixed vocabulary, and no label carries a host or an account.
 */
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/** Activity types counted by name; every other type is `other`. */
export const COUNTED_TYPES = new Set([
  'Create',
  'Follow',
  'Undo',
  'Delete',
  'Update',
  'Accept',
  'Reject',
  'Announce',
  'Like',
]);

export function typeLabel(type: string): string {
  return COUNTED_TYPES.has(type) ? type : 'other';
}

/** Why a delivery failed, from the remote's answer. */
export function failureReason(status: number | undefined): string {
  if (status === undefined || status === 0) return 'network';
  if (status === 410) return 'gone';
  if (status === 404) return 'not_found';
  if (status === 429) return 'rate_limited';
  if (status === 401 || status === 403) return 'unauthorized';
  if (status >= 500) return 'server_error';
  return 'client_error';
}

export class BridgeActivityPubMetrics {
  readonly registry = new Registry();
  /** Deliveries the bridge made itself (direct messages) or queued (Accept, Reject, notes to followers), by activity and result. */
  readonly deliveries: Counter<'activity' | 'result'>;
  readonly deliveryFailures: Counter<'reason'>;
  readonly sends: Counter<'type' | 'result'>;
  readonly inbound: Counter<'type' | 'verdict'>;
  readonly refused: Counter<'reason'>;
  readonly signatureFailures: Counter<'reason'>;
  readonly lookups: Counter<'result'>;

  constructor(defaultMetrics = true) {
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.deliveries = new Counter({
      name: 'bridge_activitypub_deliveries_total',
      help: 'Activities delivered to remote inboxes, by activity type and result: delivered (2xx), failed (see failures), queued (handed to the Fedify queue)',
      labelNames: ['activity', 'result'],
      registers,
    });
    this.deliveryFailures = new Counter({
      name: 'bridge_activitypub_delivery_failures_total',
      help: 'Failed deliveries by reason: gone (410), not_found (404), rate_limited (429), unauthorized (401/403), server_error (5xx), client_error (other 4xx), network, unresolvable (no such account or not an actor)',
      labelNames: ['reason'],
      registers,
    });
    this.sends = new Counter({
      name: 'bridge_activitypub_sends_total',
      help: 'Outbound messages (Bridge.send) by type (private, public) and result (ok, or the error code)',
      labelNames: ['type', 'result'],
      registers,
    });
    this.inbound = new Counter({
      name: 'bridge_activitypub_inbound_total',
      help: 'Verified inbound activities by type and verdict: delivered (to a peer), accepted/rejected (Follow), removed (follower gone), denied (policy), ignored (not for a bridged actor, or nothing to do), invalid (content or account unusable), failed (handed over unsuccessfully; retried)',
      labelNames: ['type', 'verdict'],
      registers,
    });
    this.refused = new Counter({
      name: 'bridge_activitypub_inbox_refused_total',
      help: 'Inbox requests refused before any listener ran, by reason: too_large (413), content_type (415), json, shape, invalid_activity (400), unsigned, signature (401: the signature, its digest or its key did not verify, or the signer is not the actor)',
      labelNames: ['reason'],
      registers,
    });
    this.signatureFailures = new Counter({
      name: 'bridge_activitypub_signature_failures_total',
      help: "HTTP signatures Fedify could not verify, by Fedify's reason (noSignature, invalidSignature, keyFetchError, ...)",
      labelNames: ['reason'],
      registers,
    });
    this.lookups = new Counter({
      name: 'bridge_activitypub_account_lookups_total',
      help: 'Remote account resolutions (WebFinger and actor) by result: ok, or the failure',
      labelNames: ['result'],
      registers,
    });
  }

  /** A gauge read at scrape time (actors held, queue depth). */
  gauge(name: string, help: string, read: () => Promise<Record<string, number>>, label = 'state'): Gauge<string> {
    return new Gauge({
      name,
      help,
      labelNames: [label],
      registers: [this.registry],
      async collect() {
        try {
          for (const [key, value] of Object.entries(await read())) this.labels(key).set(value);
        } catch {
          // Redis down: the gauge keeps its last values; /health says so.
        }
      },
    });
  }

  /** Sum of a counter over the label sets that match: for tests and health output. */
  static async total(counter: Counter<string>, labels: Record<string, string> = {}): Promise<number> {
    const { values } = await counter.get();
    return values
      .filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want))
      .reduce((sum, v) => sum + v.value, 0);
  }
}
