#!/usr/bin/env bash
# `npm run image:smoke`: builds the image (on the local base when no registry
# is reachable) and runs the cluster from it, as production would: two relay
# containers with --network host, a read-only root filesystem, no
# capabilities, user 10001, tini as PID 1, against a private redis-server on a
# free port (never the machine's 6379). Then, with the image's own lrelay:
# Bob publishes prekeys on relay 1, Alice sends him a sealed durable message
# through relay 2, Bob receives it on relay 1; the image's HEALTHCHECK passes;
# SIGTERM drains relay 1 and it exits 0 within RELAY_DRAIN_TIMEOUT_MS.
#
# Skips (exit 0, says why) when podman is not installed, so CI without it
# stays green. Env: IMAGE (default localhost/libertaria/relay-cluster:dev),
# BASE_IMAGE (default: the local base, built by deploy/image/make-base.sh when
# missing), SKIP_BUILD=1 to use IMAGE as it is (deploy/image/build-local.sh
# builds it otherwise; cached layers make a rebuild quick).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "image:smoke: $*"; }
if ! command -v podman >/dev/null 2>&1; then
  say "skipped: podman is not installed (apt-get install podman runc debootstrap; docs/deploy.md#the-image)"
  exit 0
fi
command -v redis-server >/dev/null 2>&1 || { say "needs redis-server on the PATH (apt-get install redis-server)"; exit 1; }

IMAGE="${IMAGE:-localhost/libertaria/relay-cluster:dev}"
export IMAGE
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  bash deploy/image/build-local.sh
fi
say "image size: $(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"

work="$(mktemp -d)"
chmod 0777 "$work" # the containers' user (10001) writes the key files here
tag="smoke-$$"
containers=()
redis_pid=""
cleanup() {
  for c in "${containers[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_ports() {
  node -e '
    const net = require("node:net");
    const n = Number(process.argv[1]); const servers = []; const ports = [];
    (async () => {
      for (let i = 0; i < n; i++) {
        const s = net.createServer(); servers.push(s);
        await new Promise((r) => s.listen(0, "127.0.0.1", r)); ports.push(s.address().port);
      }
      for (const s of servers) s.close();
      console.log(ports.join(" "));
    })();' "$1"
}
read -r redis_port ws1 tcp1 admin1 ws2 tcp2 admin2 <<<"$(free_ports 7)"

redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$work" \
  --logfile "$work/redis.log" --maxmemory 256mb --maxmemory-policy noeviction &
redis_pid=$!
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

hardened=(--network host --read-only --tmpfs /tmp:size=16m --cap-drop ALL --security-opt no-new-privileges)
# One operator key for both relays (docs/relay.md#relay-identity), fresh per run.
relay_key="$(node -e "process.stdout.write(require('node:crypto').randomBytes(32).toString('base64url'))")"
run_relay() { # name ws tcp admin
  podman run -d --name "$tag-$1" "${hardened[@]}" \
    -e REDIS_URL="redis://127.0.0.1:$redis_port" -e RELAY_NODE_ID="$1" -e RELAY_HOST=127.0.0.1 \
    -e RELAY_WS_PORT="$2" -e RELAY_TCP_PORT="$3" -e RELAY_ADMIN_PORT="$4" \
    -e RELAY_PUBLIC_URLS="ws://127.0.0.1:$2,tcp://127.0.0.1:$3" -e RELAY_DRAIN_TIMEOUT_MS=10000 \
    -e RELAY_IDENTITY_KEY="$relay_key" \
    "$IMAGE" >/dev/null 2> >(grep -v 'systemd' >&2)
  containers+=("$tag-$1")
}
run_relay relay-1 "$ws1" "$tcp1" "$admin1"
run_relay relay-2 "$ws2" "$tcp2" "$admin2"

wait_ready() { # admin port
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz" 2>/dev/null || true)" = 200 ] && return 0
    sleep 0.2
  done
  return 1
}
for pair in "relay-1 $admin1" "relay-2 $admin2"; do
  set -- $pair
  wait_ready "$2" || { podman logs "$tag-$1" | tail -n 20; say "$1 did not become ready"; exit 1; }
done
if podman logs "$tag-relay-1" 2>&1 | grep -q 'Falling back to a NodeJS implementation'; then
  say "uWebSockets.js fell back to its JavaScript implementation: the native binary did not load"
  exit 1
fi
say "both relays ready (/readyz 200): ws $ws1/$ws2, tcp $tcp1/$tcp2, admin $admin1/$admin2"

say "PID 1 of relay-1: $(podman exec "$tag-relay-1" cat /proc/1/comm); user: $(podman exec "$tag-relay-1" id -u); root fs read-only: $(podman inspect "$tag-relay-1" --format '{{.HostConfig.ReadonlyRootfs}}')"
healthy=0
for _ in 1 2 3; do
  if podman healthcheck run "$tag-relay-1" >/dev/null 2>&1; then healthy=1 && break; fi
  sleep 2
done
[ "$healthy" = 1 ] || { say "the image's HEALTHCHECK did not pass for relay-1"; exit 1; }
say "HEALTHCHECK of relay-1: healthy"

# Without systemd podman cannot schedule HEALTHCHECK timers and says so on every run; `podman healthcheck run` works.
cli() { podman run --rm --no-healthcheck "${hardened[@]}" -v "$work:/keys" "$IMAGE" node shared/cli/bin/lrelay.js "$@"; }
cli keygen --out /keys/alice.key >/dev/null
cli keygen --out /keys/bob.key >/dev/null
bob="$(cli whoami --key /keys/bob.key)"
cli listen --relay "ws://127.0.0.1:$ws1" --key /keys/bob.key --timeout 1 >/dev/null
text="sealed hello through the image $(date +%s)"
cli send --relay "ws://127.0.0.1:$ws2,tcp://127.0.0.1:$tcp2" --key /keys/alice.key --to "$bob" --text "$text"
got="$(cli listen --relay "ws://127.0.0.1:$ws1" --key /keys/bob.key --count 1 --timeout 20)"
echo "$got"
echo "$got" | grep -qF "$text" || { say "Bob did not receive the message"; exit 1; }
say "sealed message relay-2 -> Redis -> relay-1 received by Bob"
podman exec "$tag-relay-1" node -e "fetch('http://127.0.0.1:$admin1/metrics').then(r=>r.text()).then(t=>console.log(t.split('\n').filter(l=>/^relay_(connections|frames_total\{type=\"(SEND|DELIVER)\"|durable_sends_total|redis_up)/.test(l)).join('\n')))"

# A peer connected to relay 1 while it drains: it gets GOAWAY and moves on to relay 2.
podman run -d --name "$tag-listener" --no-healthcheck "${hardened[@]}" -v "$work:/keys" "$IMAGE" \
  node shared/cli/bin/lrelay.js listen --relay "ws://127.0.0.1:$ws1,ws://127.0.0.1:$ws2" --key /keys/bob.key --timeout 30 >/dev/null
containers+=("$tag-listener")
connected=0
for _ in $(seq 1 50); do
  if podman exec "$tag-relay-1" node -e "fetch('http://127.0.0.1:$admin1/metrics').then(r=>r.text()).then(t=>process.exit(/^relay_connections\{transport=\"ws\"[^}]*\} [1-9]/m.test(t)?0:1))" 2>/dev/null; then
    connected=1 && break
  fi
  sleep 0.2
done
[ "$connected" = 1 ] || { say "the listening peer did not connect to relay-1"; exit 1; }
started=$(date +%s%N)
podman stop -t 15 "$tag-relay-1" >/dev/null 2> >(grep -v 'systemd' >&2)
code="$(podman inspect "$tag-relay-1" --format '{{.State.ExitCode}}')"
ms=$((($(date +%s%N) - started) / 1000000))
podman logs "$tag-relay-1" 2>&1 | grep -E '"msg":"(stopping|drain)' | head -n 3 || true
[ "$code" = 0 ] || { podman logs "$tag-relay-1" | tail -n 20; say "relay-1 exited $code after SIGTERM"; exit 1; }
say "SIGTERM through tini: relay-1 drained and exited 0 in ${ms} ms"
moved=0
for _ in $(seq 1 50); do
  if podman exec "$tag-relay-2" node -e "fetch('http://127.0.0.1:$admin2/metrics').then(r=>r.text()).then(t=>process.exit(/^relay_connections\{transport=\"ws\"[^}]*\} [1-9]/m.test(t)?0:1))" 2>/dev/null; then
    moved=1 && break
  fi
  sleep 0.2
done
[ "$moved" = 1 ] || { say "the peer on relay-1 did not reconnect to relay-2 after the drain"; exit 1; }
say "the peer connected to relay-1 during the drain is now on relay-2"
say "passed"
