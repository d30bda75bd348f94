#!/usr/bin/env bash
# Tells secretsync that keys of the store changed: a POST to the store's URL on the
# operator's event listener, signed with HMAC-SHA256 over "<unix time>.<body>".
#   notify.sh http://secretsync-events.secretsync:9444 payments vault app/db [key...]
# The signing key is read from $WEBHOOK_KEY (the value of the Secret webhook-key).
set -euo pipefail
listener=$1 namespace=$2 store=$3
shift 3
keys=$(printf '"%s",' "$@")
body="{\"keys\":[${keys%,}]}"
at=$(date +%s)
signature=$(printf '%s.%s' "$at" "$body" | openssl dgst -sha256 -hmac "$WEBHOOK_KEY" -hex | sed 's/^.* //')
curl -sS --fail-with-body -X POST \
  -H 'Content-Type: application/json' \
  -H "X-Secretsync-Signature: t=${at},v1=${signature}" \
  --data "$body" \
  "${listener}/events/v1/namespaces/${namespace}/secretstores/${store}"
