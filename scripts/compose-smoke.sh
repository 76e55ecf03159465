#!/usr/bin/env bash
# `npm run compose:smoke`: brings docker-compose.yml up for real with
# podman-compose on podman's own network (docs/deploy.md#one-host-docker-composeyml):
# Redis (AOF), relay-1, relay-2, the Nostr, ActivityPub and XMTP bridges and
# Prometheus; Grafana is
# left out (no registry here, and Debian has no Grafana package). Redis and
# Prometheus are stand-ins built from Debian's packages
# (deploy/image/build-local.sh --stand-ins). Host ports are free ones, so
# nothing on the machine is disturbed. Then: the host's lrelay sends a sealed
# durable message through relay-2 to a recipient on relay-1, Prometheus must
# report every scrape target up and the shipped rules loaded, and the stack is
# taken down with its volumes.
#
# Skips (exit 0, says why) without podman-compose. SKIP_BUILD=1 uses the
# images as they are. KEEP=1 leaves the stack running.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "compose:smoke: $*"; }
if ! command -v podman-compose >/dev/null 2>&1 || ! command -v podman >/dev/null 2>&1; then
  say "skipped: podman-compose is not installed (apt-get install podman runc podman-compose; docs/deploy.md)"
  exit 0
fi
export CLUSTER_IMAGE="${IMAGE:-localhost/libertaria/relay-cluster:dev}"
export REDIS_IMAGE=localhost/libertaria-redis:local
export PROMETHEUS_IMAGE=localhost/libertaria-prometheus:local
# One operator key for both relays (docs/relay.md#relay-identity), fresh per run.
RELAY_IDENTITY_KEY="$(node -e "process.stdout.write(require('node:crypto').randomBytes(32).toString('base64url'))")"
export RELAY_IDENTITY_KEY
if [ "${SKIP_BUILD:-0}" != 1 ]; then IMAGE="$CLUSTER_IMAGE" bash deploy/image/build-local.sh --stand-ins; fi

read -r RELAY1_WS_PORT RELAY1_TCP_PORT RELAY1_ADMIN_PORT RELAY2_WS_PORT RELAY2_TCP_PORT RELAY2_ADMIN_PORT \
  BRIDGE_HTTP_PORT PROMETHEUS_PORT GRAFANA_PORT BRIDGE_AP_PORT BRIDGE_XMTP_PORT <<<"$(node -e '
    const net = require("node:net"); const servers = []; const ports = [];
    (async () => {
      for (let i = 0; i < 11; i++) {
        const s = net.createServer(); servers.push(s);
        await new Promise((r) => s.listen(0, "0.0.0.0", r)); ports.push(s.address().port);
      }
      for (const s of servers) s.close();
      console.log(ports.join(" "));
    })();')"
export RELAY1_WS_PORT RELAY1_TCP_PORT RELAY1_ADMIN_PORT RELAY2_WS_PORT RELAY2_TCP_PORT RELAY2_ADMIN_PORT \
  BRIDGE_HTTP_PORT PROMETHEUS_PORT GRAFANA_PORT BRIDGE_AP_PORT BRIDGE_XMTP_PORT
project="libertaria-smoke-$$"
compose() { podman-compose -p "$project" -f docker-compose.yml "$@"; }
work="$(mktemp -d)"
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    say "KEEP=1: the stack stays up (podman-compose -p $project down -v)"
  else
    compose down -v -t 15 >"$work/down.log" 2>&1 || { tail -n 20 "$work/down.log"; }
    # podman-compose 1.0 leaves the project's network behind.
    podman network rm "${project}_default" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

started=$(date +%s)
compose up -d redis relay-1 relay-2 bridge-nostr bridge-activitypub bridge-xmtp prometheus >"$work/up.log" 2>&1 ||
  { grep -v systemd "$work/up.log" | tail -n 30; say "podman-compose up failed"; exit 1; }
podman ps --filter "label=io.podman.compose.project=$project" --format '{{.Names}}  {{.Status}}  {{.Ports}}'

wait_ready() { # url
  for _ in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true)" = 200 ] && return 0
    sleep 0.2
  done
  return 1
}
for admin in "$RELAY1_ADMIN_PORT" "$RELAY2_ADMIN_PORT"; do
  wait_ready "http://127.0.0.1:$admin/readyz" ||
    { compose logs relay-1 relay-2 2>&1 | grep -v systemd | tail -n 30; say "a relay did not become ready"; exit 1; }
done
redis_container="$(podman ps --filter "label=io.podman.compose.project=$project" --filter "label=com.docker.compose.service=redis" --format '{{.Names}}')"
say "Redis: appendonly=$(podman exec "$redis_container" redis-cli config get appendonly | tail -n 1), maxmemory-policy=$(podman exec "$redis_container" redis-cli config get maxmemory-policy | tail -n 1)"
say "relays ready in $(($(date +%s) - started)) s (ws $RELAY1_WS_PORT and $RELAY2_WS_PORT on the host)"

lrelay() { node shared/cli/bin/lrelay.js "$@"; }
lrelay keygen --out "$work/alice.key" >/dev/null
lrelay keygen --out "$work/bob.key" >/dev/null
bob="$(lrelay whoami --key "$work/bob.key")"
lrelay listen --relay "ws://127.0.0.1:$RELAY1_WS_PORT" --key "$work/bob.key" --timeout 1 >/dev/null
text="sealed hello through compose $(date +%s)"
lrelay send --relay "ws://127.0.0.1:$RELAY2_WS_PORT,tcp://127.0.0.1:$RELAY2_TCP_PORT" --key "$work/alice.key" --to "$bob" --text "$text"
got="$(lrelay listen --relay "ws://127.0.0.1:$RELAY1_WS_PORT" --key "$work/bob.key" --count 1 --timeout 20)"
echo "$got"
echo "$got" | grep -qF "$text" || { say "Bob did not receive the message"; exit 1; }
say "sealed message: relay-2 -> Redis (container) -> relay-1 -> Bob"

# Prometheus: wait for a full round of scrapes (15 s interval), then read targets and rules.
prom="http://127.0.0.1:$PROMETHEUS_PORT"
wait_ready "$prom/-/ready" || { compose logs prometheus 2>&1 | tail -n 20; say "Prometheus not ready"; exit 1; }
ok=0
for _ in $(seq 1 30); do
  targets="$(curl -s "$prom/api/v1/targets")"
  if node -e '
    const t = JSON.parse(process.argv[1]).data.activeTargets;
    const want = ["relay-1:9090", "relay-2:9090", "bridge-nostr:8090", "bridge-activitypub:8091", "bridge-xmtp:8092"];
    process.exit(want.every((w) => t.some((x) => x.labels.instance === w && x.health === "up")) ? 0 : 1);' "$targets"; then
    ok=1
    break
  fi
  sleep 2
done
node -e '
  for (const x of JSON.parse(process.argv[1]).data.activeTargets)
    console.log(`prometheus target ${x.labels.job}/${x.labels.instance}: ${x.health}${x.lastError ? ` (${x.lastError})` : ""}`);' "$targets"
[ "$ok" = 1 ] || { say "not every target is up"; exit 1; }
rules="$(curl -s "$prom/api/v1/rules" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const g=JSON.parse(s).data.groups;console.log(g.length+" groups, "+g.reduce((n,x)=>n+x.rules.length,0)+" rules")})')"
say "Prometheus loaded the shipped rules: $rules"
q() { curl -s "$prom/api/v1/query" --data-urlencode "query=$1" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const r of JSON.parse(s).data.result)console.log("  "+JSON.stringify(r.metric)+" "+r.value[1])})'; }
say "relay_redis_used_memory_bytes / relay_redis_maxmemory_bytes (through Prometheus):"
q 'relay_redis_used_memory_bytes / relay_redis_maxmemory_bytes'
say "bridge health: $(curl -s "http://127.0.0.1:$BRIDGE_HTTP_PORT/health" | head -c 400)"
say "ActivityPub bridge health: $(curl -s "http://127.0.0.1:$BRIDGE_AP_PORT/health" | head -c 400)"
say "XMTP bridge health: $(curl -s "http://127.0.0.1:$BRIDGE_XMTP_PORT/health" | head -c 400)"
say "passed in $(($(date +%s) - started)) s"
