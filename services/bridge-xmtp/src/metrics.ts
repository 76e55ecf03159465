/**
 * The XMTP bridge's Prometheus metrics, in a registry of its own (the
 * federation worker adds its `bridge_federation_*` metrics to it). Labels are
 * bounded: results and reasons are fixed sets, never ids or addresses.
 */
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/** Why an inbound XMTP message was not handed over. */
export type SkipReason =
  | 'own' // sent by the bridged inbox itself (another installation, or the bridge's own send)
  | 'denied' // the conversation's consent is denied
  | 'refused' // an unknown sender the owner's membrane policy refused
  | 'too_large'
  | 'unsupported' // a content type without text or fallback (read receipt, group update…)
  | 'reaction_removed'
  | 'malformed'; // a sender that is no inbox id, an id that is not hex, a message the federated format refuses

export class BridgeXmtpMetrics {
  readonly registry = new Registry();
  readonly sends: Counter<'result'>;
  readonly published: Counter<'result'>;
  readonly inbound: Counter<'type'>;
  readonly skipped: Counter<'reason'>;
  readonly consent: Counter<'result'>;
  readonly syncs: Counter<'kind' | 'result'>;
  readonly rateLimited: Counter<'direction'>;
  readonly clients: Gauge<'state'>;
  readonly identities: Gauge;
  readonly installations: Counter<'result'>;
  readonly handlerFailures: Counter;

  constructor(defaultMetrics = true) {
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.sends = new Counter({
      name: 'bridge_xmtp_sends_total',
      help: 'Outbound messages by result: ok, duplicate (a retried frame whose message was already published), or the error code',
      labelNames: ['result'],
      registers,
    });
    this.published = new Counter({
      name: 'bridge_xmtp_publish_total',
      help: 'Publications of prepared messages to the network, by result (ok, failed)',
      labelNames: ['result'],
      registers,
    });
    this.inbound = new Counter({
      name: 'bridge_xmtp_inbound_total',
      help: 'Inbound XMTP messages handed to the federation, by content type (text, reply, reaction, fallback)',
      labelNames: ['type'],
      registers,
    });
    this.skipped = new Counter({
      name: 'bridge_xmtp_inbound_skipped_total',
      help: 'Inbound XMTP messages not handed over, by reason (own, denied, refused, too_large, unsupported, reaction_removed, malformed)',
      labelNames: ['reason'],
      registers,
    });
    this.consent = new Counter({
      name: 'bridge_xmtp_consent_decisions_total',
      help: "Decisions on conversations with unknown consent, by the owner's membrane policy: allowed, refused",
      labelNames: ['result'],
      registers,
    });
    this.syncs = new Counter({
      name: 'bridge_xmtp_sync_jobs_total',
      help: 'Inbound sync jobs by kind (network: syncs from XMTP then reads; local: reads what the stream stored) and result (ok, retry, failed, rate_limited)',
      labelNames: ['kind', 'result'],
      registers,
    });
    this.rateLimited = new Counter({
      name: 'bridge_xmtp_rate_limited_total',
      help: 'Times the XMTP network asked the bridge to slow down, by direction (read, write)',
      labelNames: ['direction'],
      registers,
    });
    this.clients = new Gauge({
      name: 'bridge_xmtp_clients',
      help: 'XMTP clients (one installation each) by state: open, failed (could not open; retried at the next sync)',
      labelNames: ['state'],
      registers,
    });
    this.identities = new Gauge({
      name: 'bridge_xmtp_identities',
      help: 'Bridged identities (XMTP accounts) recorded in Redis',
      registers,
    });
    this.installations = new Counter({
      name: 'bridge_xmtp_installations_total',
      help: 'Client opens by result: reused (the local database and its installation), created (a new installation registered), missing (refused: the database is gone), changed (the installation differs from the one recorded)',
      labelNames: ['result'],
      registers,
    });
    this.handlerFailures = new Counter({
      name: 'bridge_xmtp_handler_failures_total',
      help: 'Inbound messages the federation could not take (the sync job retries from the same cursor)',
      registers,
    });
  }
}
