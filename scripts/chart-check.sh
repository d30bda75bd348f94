#!/usr/bin/env bash
# Checks the Helm chart as CI does: every value documented, strict lint with the defaults and
# each example, the rendered manifests valid against the Kubernetes 1.33 schemas, and applied
# with real kubectl to the sandbox API server, where each object must then be stored; the
# alerts checked and unit-tested with promtool; then every metric, label and label value the
# dashboard and the alerts name compared with what the operator's /metrics serves after a run
# against the sandbox that makes versions, completes and fails rollouts, fails a sync and
# loses a backend.
# Installs what it needs (scripts/setup.sh, scripts/tools.sh); what it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
KUBE_VERSION=1.33.0
start=$SECONDS

step() { printf '\n== chart: %s\n' "$*"; }

scripts/setup.sh
PY=.venv/bin/python
KUBECTL=.venv/bin/kubectl

step "every value is documented"
$PY scripts/chart.py docs

examples=(charts/secretsync/examples/*.yaml)
step "lint (strict) with the defaults and ${examples[*]}"
$PY scripts/chart.py lint "${examples[@]}"

work=$(mktemp -d)
sandbox_pid=
operator_pid=
cleanup() {
  for pid in $operator_pid $sandbox_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# One release per values set, each in its own namespace, so that no two share an object.
# The last one turns on everything optional (the NetworkPolicy, the ServiceMonitor, the
# dashboard, the PrometheusRule).
releases=(secretsync ss-vault ss-aws ss-azure ss-gcp ss-conjur ss-akeyless ss-full)
values=(
  ""
  charts/secretsync/examples/values-vault.yaml
  charts/secretsync/examples/values-aws.yaml
  charts/secretsync/examples/values-azure.yaml
  charts/secretsync/examples/values-gcp.yaml
  charts/secretsync/examples/values-conjur.yaml
  charts/secretsync/examples/values-akeyless.yaml
  ""
)
extra=(
  ""
  ""
  ""
  ""
  ""
  ""
  ""
  '--set-json=networkPolicy={"enabled":true} --set-json=metrics={"serviceMonitor":{"enabled":true},"dashboard":{"enabled":true},"prometheusRule":{"enabled":true}} --set-json=watchNamespaces=["payments"] --set-json=replicaCount=1'
)
step "render and validate against Kubernetes $KUBE_VERSION (kubernetes-validate --strict)"
for i in "${!releases[@]}"; do
  release=${releases[$i]}
  args=(render --release "$release" --namespace "$release")
  [ -n "${values[$i]}" ] && args+=(-f "${values[$i]}")
  # shellcheck disable=SC2206 # the extra options are split on purpose
  [ -n "${extra[$i]}" ] && args+=(${extra[$i]})
  $PY scripts/chart.py "${args[@]}" >"$work/$release.yaml"
  # Custom resources (the ServiceMonitor, the PrometheusRule) have no schema there: kubernetes-validate warns and
  # skips them; the sandbox checks them against the test CRDs below.
  .venv/bin/kubernetes-validate --strict --quiet -k "$KUBE_VERSION" "$work/$release.yaml"
  echo "$release: $(grep -c '^kind:' "$work/$release.yaml") objects valid"
done

step "apply to the sandbox API server with kubectl"
cargo build -q --locked -p secretsync-sandbox -p secretsync-operator
"$CARGO_TARGET_DIR/debug/secretsync-sandbox" --port 0 --kubeconfig-out "$work/kubeconfig" \
  >"$work/sandbox.log" 2>&1 &
sandbox_pid=$!
for _ in $(seq 100); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
[ -s "$work/kubeconfig" ] || { cat "$work/sandbox.log"; exit 1; }
k() { "$KUBECTL" --kubeconfig "$work/kubeconfig" "$@"; }

k apply -f charts/secretsync/crds/ -f crates/sandbox/tests/fixtures/servicemonitor-crd.yaml \
  -f crates/sandbox/tests/fixtures/prometheusrule-crd.yaml >/dev/null
k wait --for=condition=Established crd --all --timeout=30s >/dev/null
for ns in "${releases[@]}" payments orders; do k create namespace "$ns" >/dev/null; done
for release in "${releases[@]}"; do
  file="$work/$release.yaml"
  k apply -f "$file" >"$work/$release.applied"
  want=$(grep -c '^kind:' "$file")
  created=$(grep -c ' created$' "$work/$release.applied" || true)
  stored=$(k get -f "$file" -o name | wc -l)
  if [ "$created" -ne "$want" ] || [ "$stored" -ne "$want" ]; then
    echo "$release: $want objects rendered, $created created, $stored stored" >&2
    cat "$work/$release.applied" >&2
    exit 1
  fi
  # Applying the same manifests again changes nothing. (kubectl always sends a
  # PodDisruptionBudget's selector, whose patch strategy is `replace`, and prints
  # "configured" for it on real clusters too.)
  k apply -f "$file" >"$work/$release.again"
  if grep -v ' unchanged$' "$work/$release.again" | grep -v '^poddisruptionbudget.policy/.* configured$' | grep -q .; then
    echo "$release: a second apply changed objects:" >&2
    cat "$work/$release.again" >&2
    exit 1
  fi
  echo "$release: $want objects applied and stored; a second apply is a no-op"
done
k get -n secretsync deployment/secretsync -o jsonpath='{.spec.template.spec.containers[0].args}' \
  | grep -q -- '--lease-namespace=$(POD_NAMESPACE)'

step "alerts: promtool check rules and test rules"
promtool=$(scripts/tools.sh promtool)
"$promtool" check rules charts/secretsync/alerts/rules.yaml
"$promtool" test rules charts/tests/alerts.test.yaml

step "dashboard and alerts name only what /metrics serves (operator run against the sandbox)"
selectors=$(scripts/tools.sh promql-selectors)
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
metrics_addr=127.0.0.1:$(free_port)
k create namespace metrics >/dev/null
KUBECONFIG=$work/kubeconfig "$CARGO_TARGET_DIR/debug/secretsync-operator" --namespace metrics \
  --hash-key-namespace metrics --metrics-bind-address "$metrics_addr" \
  --health-bind-address "127.0.0.1:$(free_port)" >"$work/operator.log" 2>&1 &
operator_pid=$!
# The fake store's example app (versions, a rollout that completes); the same app whose Pods
# never become Ready (a rollout that fails); a key the store does not have (a failing sync);
# a Vault store nobody listens for (a backend down).
k apply -n metrics -f examples/fake/ >/dev/null
sed -e 's/name: db$/name: hung/' -e 's/name: app}/name: hung}/' -e 's/timeout: 2m/timeout: 2s/' \
  examples/fake/secretsync.yaml | k apply -n metrics -f - >/dev/null
sed -e 's/^  name: app$/  name: hung\n  annotations: {sandbox.secretsync.io\/hang-rollout: "true"}/' \
  -e 's/app: demo/app: hung/' -e 's/db-v1/hung-v1/' examples/fake/deployment.yaml |
  k apply -n metrics -f - >/dev/null
sed -e 's/name: db$/name: missing/' -e 's/key: app\/config/key: app\/missing/' -e '/rollout:/,$d' \
  examples/fake/secretsync.yaml | k apply -n metrics -f - >/dev/null
k create secret generic -n metrics vault-token --from-literal=token=unused >/dev/null
k apply -n metrics -f - >/dev/null <<'YAML'
apiVersion: secretsync.io/v1alpha1
kind: SecretStore
metadata: {name: down}
spec:
  provider:
    vault:
      server: http://127.0.0.1:1
      path: secret
      version: v2
      auth:
        tokenSecretRef: {name: vault-token, key: token}
YAML
k wait -n metrics --for=jsonpath='{.status.activeVersion}'=1 secretsync/db secretsync/hung \
  --timeout=60s >/dev/null
# A new value: both apps roll to v2; one completes, the other fails after its 2s timeout.
k patch -n metrics secretstore demo-store --type=json -p '[
  {"op": "replace", "path": "/spec/provider/fake/data/0/value",
   "value": "{\"username\":\"app\",\"password\":\"correct-horse-2\"}"},
  {"op": "replace", "path": "/spec/provider/fake/data/0/version", "value": "2"}]' >/dev/null
# Polled until every series the queries name has appeared, for 90 s at most.
deadline=$((SECONDS + 90))
until curl -sf "http://$metrics_addr/metrics" >"$work/metrics.txt" &&
  $PY scripts/chart.py metrics --scrape "$work/metrics.txt" --selectors "$selectors" \
    >"$work/metrics.check" 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "--- the operator's log (last 5 lines)" >&2
    tail -n 5 "$work/operator.log" >&2
    cat "$work/metrics.check" >&2
    echo "chart: the dashboard or an alert names a metric, label or value that /metrics does not serve (above)" >&2
    exit 1
  fi
  sleep 1
done
cat "$work/metrics.check"

printf '\nchart checks passed in %ss\n' "$((SECONDS - start))"
