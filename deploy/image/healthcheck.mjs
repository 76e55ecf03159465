// The image's HEALTHCHECK: exits 0 when the service in this container answers
// its liveness endpoint, 1 otherwise. Which service runs is told by the
// environment it was given: the Nostr bridge has BRIDGE_NOSTR_RELAYS (its one
// required variable) and serves GET /health on BRIDGE_NOSTR_HTTP_PORT; a relay
// serves GET /healthz on RELAY_ADMIN_PORT. Liveness, not readiness: a relay
// whose Redis is down is alive (its /readyz says 503) and must not be
// restarted for it. Plain node, no curl in the image.
const bridge = process.env.BRIDGE_NOSTR_RELAYS !== undefined && process.env.BRIDGE_NOSTR_RELAYS !== '';
const port = bridge ? (process.env.BRIDGE_NOSTR_HTTP_PORT ?? '8090') : (process.env.RELAY_ADMIN_PORT ?? '9090');
const path = bridge ? '/health' : '/healthz';
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
