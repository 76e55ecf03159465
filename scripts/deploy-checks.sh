#!/usr/bin/env bash
# Deployment checks that need tools outside npm, run by .ci/run after
# `npm test` (the plain-Node checks are in npm test: deploy/test/). Each check
# runs when its tool is installed and otherwise says it was skipped: CI stays
# green on a machine without them, and this script never installs anything.
#   promtool (Debian: prometheus)        check config, check rules, test rules
#   kubectl  (with built-in kustomize)    render both overlays
#   docker compose / docker-compose       `config` of docker-compose.yml
set -euo pipefail
cd "$(dirname "$0")/.."

ran=0
skipped=0
failed=0
check() { # name, command...
  local name="$1"
  shift
  if "$@" >/tmp/deploy-check.$$ 2>&1; then
    echo "deploy-checks: ok: $name"
    ran=$((ran + 1))
  else
    echo "deploy-checks: FAILED: $name"
    sed 's/^/  /' /tmp/deploy-check.$$
    failed=$((failed + 1))
  fi
  rm -f /tmp/deploy-check.$$
}
skip() {
  echo "deploy-checks: skipped: $1"
  skipped=$((skipped + 1))
}

promtool="$(command -v promtool || true)"
if [ -n "$promtool" ]; then
  # The compose config names the rules at their path inside the container.
  tmp="$(mktemp -d)"
  sed "s#/etc/prometheus/alerts.yml#$PWD/deploy/prometheus/alerts.yml#" deploy/prometheus/prometheus.yml >"$tmp/prometheus.yml"
  check "promtool check config deploy/prometheus/prometheus.yml" "$promtool" check config "$tmp/prometheus.yml"
  check "promtool check rules deploy/prometheus/alerts.yml" "$promtool" check rules deploy/prometheus/alerts.yml
  check "promtool test rules deploy/prometheus/alerts.test.yml" bash -c "cd deploy/prometheus && '$promtool' test rules alerts.test.yml"
  rm -rf "$tmp"
else
  skip "promtool is not installed (apt-get install prometheus, or its promtool): Prometheus config and rules not checked by promtool"
fi

if kubectl version --client >/dev/null 2>&1; then
  for overlay in dev prod; do
    check "kubectl kustomize deploy/k8s/overlays/$overlay" kubectl kustomize "deploy/k8s/overlays/$overlay"
  done
else
  skip "kubectl is not installed: overlays not rendered here (deploy/test/deploy-config.test.ts skips the same)"
fi

# `config` parses, validates against the compose schema and interpolates,
# without an engine. podman-compose 1.0 has no `config`.
if docker compose version >/dev/null 2>&1; then
  check "docker compose config" docker compose -f docker-compose.yml config -q
elif command -v docker-compose >/dev/null 2>&1; then
  check "docker-compose config" docker-compose -f docker-compose.yml config -q
else
  skip "neither docker compose nor docker-compose (Debian: docker-compose) is installed: docker-compose.yml checked by npm test's YAML checks only"
fi

echo "deploy-checks: done: $ran ran, $failed failed, $skipped skipped (tools not installed)"
[ "$failed" = 0 ]
