/**
 * The bridge's Prometheus metrics, in a registry of its own. Relay URL labels
 * are the configured relays only; one-shot connections to recipients' inbox
 * relays share the label `inbox`, so labels stay bounded.
 */
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';

export type MalformedMetricReason =
  | 'too_large'
  | 'json'
  | 'shape'
  | 'event_shape'
  | 'signature'
  | 'not_for_us'
  | 'text_too_large'
  | 'not_a_private_message'
  | import('./nip59.js').UnwrapFailure;

export class BridgeNostrMetrics {
  readonly registry = new Registry();
  readonly eventsReceived: Counter<'kind'>;
  readonly duplicates: Counter;
  readonly malformed: Counter<'reason'>;
  readonly delivered: Counter<'type'>;
  readonly handlerFailures: Counter;
  readonly published: Counter<'relay' | 'result'>;
  readonly sends: Counter<'type' | 'result'>;
  readonly connects: Counter<'relay' | 'result'>;
  readonly relayUp: Gauge<'relay'>;
  readonly auth: Counter<'relay' | 'result'>;
  readonly inboxLookups: Counter<'result'>;
  readonly identities: Gauge;

  constructor(defaultMetrics = true) {
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.eventsReceived = new Counter({
      name: 'bridge_nostr_events_received_total',
      help: 'Events received from relays on subscriptions, by kind (1059, 1 or other), before any check',
      labelNames: ['kind'],
      registers,
    });
    this.duplicates = new Counter({
      name: 'bridge_nostr_duplicates_total',
      help: 'Events or messages dropped because they were already handed over (seen on another relay, or again)',
      registers,
    });
    this.malformed = new Counter({
      name: 'bridge_nostr_malformed_total',
      help: 'Relay messages and events ignored, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.delivered = new Counter({
      name: 'bridge_nostr_delivered_total',
      help: 'Inbound messages handed to the inbound handler, by type (private, mention)',
      labelNames: ['type'],
      registers,
    });
    this.handlerFailures = new Counter({
      name: 'bridge_nostr_handler_failures_total',
      help: 'Inbound messages the handler rejected (offered again if a relay sends them again)',
      registers,
    });
    this.published = new Counter({
      name: 'bridge_nostr_published_total',
      help: 'Events published, per relay and result (accepted, refused, failed)',
      labelNames: ['relay', 'result'],
      registers,
    });
    this.sends = new Counter({
      name: 'bridge_nostr_sends_total',
      help: 'Outbound messages by type and result (ok, or the error code)',
      labelNames: ['type', 'result'],
      registers,
    });
    this.connects = new Counter({
      name: 'bridge_nostr_relay_connects_total',
      help: 'Connection attempts to configured relays, by result (open, failed)',
      labelNames: ['relay', 'result'],
      registers,
    });
    this.relayUp = new Gauge({
      name: 'bridge_nostr_relay_up',
      help: '1 while the connection to a configured relay is open',
      labelNames: ['relay'],
      registers,
    });
    this.auth = new Counter({
      name: 'bridge_nostr_auth_total',
      help: 'NIP-42 AUTH answers, by relay and result (accepted, refused)',
      labelNames: ['relay', 'result'],
      registers,
    });
    this.inboxLookups = new Counter({
      name: 'bridge_nostr_inbox_lookups_total',
      help: 'Lookups of kind-10050 inbox relays, by result (found, none)',
      labelNames: ['result'],
      registers,
    });
    this.identities = new Gauge({
      name: 'bridge_nostr_identities',
      help: 'Bridged identities (Nostr keys) held',
      registers,
    });
  }
}
