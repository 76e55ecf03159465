// The image's HEALTHCHECK: exits 0 when the service in this container answers
// its liveness endpoint, 1 otherwise. Which service runs is told by the
// environment it was given: the Nostr bridge has BRIDGE_NOSTR_RELAYS (its one
// required variable) and serves GET /health on BRIDGE_NOSTR_HTTP_PORT, the XMTP
// bridge has BRIDGE_XMTP_ENV and serves it on BRIDGE_XMTP_HTTP_PORT, the
// ActivityPub bridge BRIDGE_AP_ORIGIN and BRIDGE_AP_HTTP_PORT; a relay
// serves GET /healthz on RELAY_ADMIN_PORT. Liveness, not readiness: a relay
// whose Redis is down is alive (its /readyz says 503) and must not be
// restarted for it. Plain node, no curl in the image.
const set = (name) => process.env[name] !== undefined && process.env[name] !== '';
const nostr = set('BRIDGE_NOSTR_RELAYS');
// The XMTP bridge's one required variable without a secret: BRIDGE_XMTP_ENV; it serves /health on BRIDGE_XMTP_HTTP_PORT.
const xmtp = set('BRIDGE_XMTP_ENV');
// The ActivityPub bridge's: BRIDGE_AP_ORIGIN; it serves /health on BRIDGE_AP_HTTP_PORT.
const activitypub = set('BRIDGE_AP_ORIGIN');
const port = nostr
  ? (process.env.BRIDGE_NOSTR_HTTP_PORT ?? '8090')
  : xmtp
    ? (process.env.BRIDGE_XMTP_HTTP_PORT ?? '8091')
    : activitypub
      ? (process.env.BRIDGE_AP_HTTP_PORT ?? '8091')
      : (process.env.RELAY_ADMIN_PORT ?? '9090');
const path = nostr || xmtp || activitypub ? '/health' : '/healthz';
const url = `http://127.0.0.1:${port.trim()}${path}`;
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(2500) });
  if (res.status !== 200) {
    console.error(`healthcheck: ${url} answered ${res.status}`);
    process.exit(1);
  }
  process.exit(0);
} catch (err) {
  console.error(`healthcheck: ${url}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
