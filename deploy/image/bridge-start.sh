#!/bin/sh
# Starts the ActivityPub or XMTP bridge in the image for docker-compose.yml:
#   bridge-start.sh BRIDGE_AP   services/bridge-activitypub/dist/main.js
#   bridge-start.sh BRIDGE_XMTP services/bridge-xmtp/dist/main.js
# Makes the bridge's Libertaria identity on first start (lrelay keygen into
# <PREFIX>_IDENTITY_FILE, kept in the bridge's volume) and, when no
# <PREFIX>_KEK is given (unset, empty or `dev-generate`), a development KEK
# beside it, with a warning: a KEK next to what it seals protects nothing.
# Production (Kubernetes) gives both from Secrets and runs main.js directly.
set -eu
prefix="$1"
main="$2"
eval "identity_file=\${${prefix}_IDENTITY_FILE:-}"
eval "kek=\${${prefix}_KEK:-}"
[ -n "$identity_file" ] || { echo "${prefix}_IDENTITY_FILE is required" >&2; exit 1; }
mkdir -p "$(dirname "$identity_file")"
if [ ! -s "$identity_file" ]; then
  node /app/shared/cli/bin/lrelay.js keygen --out "$identity_file" >/dev/null
fi
echo "{\"level\":\"info\",\"msg\":\"bridge identity\",\"did\":\"$(node /app/shared/cli/bin/lrelay.js whoami --key "$identity_file")\"}"
if [ -z "$kek" ] || [ "$kek" = dev-generate ]; then
  kek_file="$(dirname "$identity_file")/dev-kek"
  if [ ! -s "$kek_file" ]; then
    (umask 077 && node -e "process.stdout.write(require('node:crypto').randomBytes(32).toString('hex'))" >"$kek_file")
  fi
  echo "{\"level\":\"warn\",\"msg\":\"${prefix}_KEK is not set: using a development KEK stored beside the bridge's identity; set ${prefix}_KEK from a secret store in production\"}"
  eval "${prefix}_KEK=\"\$(cat \"\$kek_file\")\""
  eval "export ${prefix}_KEK"
fi
exec node "/app/$main"
