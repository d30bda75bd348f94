#!/usr/bin/env bash
# The secretsync demo, end to end on an embedded default: the sandbox API server, the fake
# backend, the operator binary and real kubectl. `--real` runs it on a real Kubernetes
# control plane instead (scripts/control-plane.sh). Everything runs on 127.0.0.1 and is
# stopped when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/demo-lib.sh

if [ "${1:-}" = --real ]; then
  bold "starting a real Kubernetes control plane and installing the CRDs"
else
  bold "starting the sandbox API server and installing the CRDs"
fi
start_cluster "$@"

bold "starting the operator"
start_operator

wait_version() { # sync version
  kubectl wait -n demo --for=jsonpath='{.status.currentVersion}'="$2" "secretsync/$1" --timeout=60s >/dev/null
}
show() {
  kubectl secretsync status db -n demo
  echo
  printf 'app Deployment references: '
  kubectl get -n demo deployment app -o jsonpath='{.spec.template.spec.volumes[0].secret.secretName}'
  echo
  kubectl get -n demo secrets -l secretsync.io/sync=db \
    -o custom-columns='SECRET:.metadata.name,VERSION:.metadata.labels.secretsync\.io/version,IMMUTABLE:.immutable,HASH:.metadata.annotations.secretsync\.io/content-hash'
}

bold "1. sync: a SecretStore (fake backend), a SecretSync and an app that uses it"
run kubectl apply -n demo -f examples/fake/
run kubectl wait -n demo --for=condition=Ready secretsync/db --timeout=60s
run kubectl rollout status -n demo deployment/app --timeout=60s
show
printf 'keys of db-v1: '
kubectl get -n demo secret db-v1 -o go-template='{{range $k, $v := .data}}{{$k}} {{end}}'
echo

bold "2. the backend value changes → db-v2, and the app rolls onto it"
run kubectl patch -n demo secretstore demo-store --type merge -p \
  '{"spec":{"provider":{"fake":{"data":[{"key":"app/db","value":"{\"username\":\"app\",\"password\":\"correct-horse-2\"}","version":"2"},{"key":"app/config","value":"{\"host\":\"db.internal\",\"port\":\"5432\"}","version":"1"}]}}}}'
wait_version db 2
run kubectl rollout status -n demo deployment/app --timeout=60s
run kubectl secretsync list -n demo
show

bold "3. on-call rotates on demand → db-v3 (same content, fresh read), rolled out"
run kubectl secretsync rotate db -n demo --wait --timeout 2m
show

bold "4. db-v3 leaked: revoke it → db-v4 is made, the app rolls off db-v3, then db-v3 is deleted"
run kubectl secretsync revoke db -n demo --version 3 --wait --timeout 2m
kubectl wait -n demo --for=delete secret/db-v3 --timeout=60s >/dev/null 2>&1 || true
show

bold "events"
kubectl get -n demo events --field-selector involvedObject.name=db \
  -o custom-columns='TYPE:.type,REASON:.reason,MESSAGE:.message' --sort-by=.metadata.creationTimestamp

bold "done: the API server and the operator stop now"
