#!/usr/bin/env bash
# Builds the images the smoke scripts run, with podman, on machines with no
# image registry (docs/deploy.md#without-a-registry-our-machines):
#   the local base (make-base.sh, skipped when it exists),
#   the cluster image  $IMAGE (default localhost/libertaria/relay-cluster:dev),
#   with --stand-ins:  localhost/libertaria-redis:local and
#                      localhost/libertaria-prometheus:local (Debian packages
#                      in place of redis:7.2 and prom/prometheus).
# npm reaches the registry through the host's network; a TLS-inspecting
# proxy's CA bundle (npm's cafile, or NPM_CA_FILE) is handed to the build as a
# secret, never stored in a layer.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE="${IMAGE:-localhost/libertaria/relay-cluster:dev}"
NODE_VERSION="$(node --version | sed 's/^v//')"
BASE_IMAGE="${BASE_IMAGE:-localhost/libertaria-node-base:${NODE_VERSION}-bookworm}"
log="${TMPDIR:-/tmp}/libertaria-build-local.log"

if [[ "$BASE_IMAGE" == localhost/libertaria-node-base:* ]]; then
  NODE_VERSION="$NODE_VERSION" BASE_IMAGE_NAME="$BASE_IMAGE" bash deploy/image/make-base.sh
fi
secret=()
ca="${NPM_CA_FILE:-$(npm config get cafile 2>/dev/null || true)}"
if [ -n "$ca" ] && [ "$ca" != null ] && [ -r "$ca" ]; then secret=(--secret "id=npm_ca,src=$ca"); fi

build() { # tag, then podman build arguments
  local tag="$1" started
  shift
  started=$(date +%s)
  nice -n 10 podman build --format docker --network host --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$tag" "$@" >"$log" 2>&1 ||
    { tail -n 30 "$log"; echo "build-local: building $tag failed (log: $log)" >&2; exit 1; }
  echo "build-local: built $tag in $(($(date +%s) - started)) s, $(podman image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
}

build "$IMAGE" "${secret[@]}" \
  --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
if [ "${1:-}" = --stand-ins ]; then
  for name in redis prometheus; do
    if [ "${FORCE:-0}" = 1 ] || ! podman image exists "localhost/libertaria-$name:local"; then
      build "localhost/libertaria-$name:local" -f "deploy/image/local/$name.Dockerfile" deploy/image/local
    fi
  done
fi
