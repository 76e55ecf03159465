#!/bin/sh
# Starts the Nostr bridge in the image (docker-compose.yml): makes the bridge's
# Libertaria identity on first start (lrelay keygen into
# BRIDGE_NOSTR_IDENTITY_FILE, kept in the bridge's volume) and, when no
# BRIDGE_NOSTR_KEK is given (unset, empty or `dev-generate`), a development KEK beside the key store, with a
# warning: a KEK next to the keys it seals protects nothing
# (docs/bridges.md#run-it). Production (Kubernetes) gives both from Secrets and
# runs node services/bridge-nostr/dist/main.js directly.
set -eu
: "${BRIDGE_NOSTR_IDENTITY_FILE:?BRIDGE_NOSTR_IDENTITY_FILE is required}"
: "${BRIDGE_NOSTR_KEY_STORE_FILE:?BRIDGE_NOSTR_KEY_STORE_FILE is required}"
mkdir -p "$(dirname "$BRIDGE_NOSTR_IDENTITY_FILE")" "$(dirname "$BRIDGE_NOSTR_KEY_STORE_FILE")"
if [ ! -s "$BRIDGE_NOSTR_IDENTITY_FILE" ]; then
  node /app/shared/cli/bin/lrelay.js keygen --out "$BRIDGE_NOSTR_IDENTITY_FILE" >/dev/null
fi
echo "{\"level\":\"info\",\"msg\":\"bridge identity\",\"did\":\"$(node /app/shared/cli/bin/lrelay.js whoami --key "$BRIDGE_NOSTR_IDENTITY_FILE")\"}"
if [ -z "${BRIDGE_NOSTR_KEK:-}" ] || [ "$BRIDGE_NOSTR_KEK" = dev-generate ]; then
  kek_file="$(dirname "$BRIDGE_NOSTR_KEY_STORE_FILE")/dev-kek"
  if [ ! -s "$kek_file" ]; then
    (umask 077 && node -e "process.stdout.write(require('node:crypto').randomBytes(32).toString('hex'))" >"$kek_file")
  fi
  echo '{"level":"warn","msg":"BRIDGE_NOSTR_KEK is not set: using a development KEK stored beside the key store; set BRIDGE_NOSTR_KEK from a secret store in production"}'
  BRIDGE_NOSTR_KEK="$(cat "$kek_file")"
  export BRIDGE_NOSTR_KEK
fi
exec node /app/services/bridge-nostr/dist/main.js
