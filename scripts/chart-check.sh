#!/usr/bin/env bash
# Checks the Helm chart as CI does: every value documented, strict lint with the defaults and
# each example, the rendered manifests valid against the Kubernetes 1.33 schemas, and applied
# with real kubectl to the sandbox API server, where each object must then be stored.
# Installs what it needs (scripts/setup.sh); the sandbox it starts is stopped on exit.
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
cleanup() {
  if [ -n "$sandbox_pid" ]; then
    kill "$sandbox_pid" 2>/dev/null || true
    wait "$sandbox_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# One release per values set, each in its own namespace, so that no two share an object.
# The last one turns on everything optional (the NetworkPolicy, the ServiceMonitor).
releases=(secretsync ss-vault ss-aws ss-azure ss-gcp ss-full)
values=(
  ""
  charts/secretsync/examples/values-vault.yaml
  charts/secretsync/examples/values-aws.yaml
  charts/secretsync/examples/values-azure.yaml
  charts/secretsync/examples/values-gcp.yaml
  ""
)
extra=(
  ""
  ""
  ""
  ""
  ""
  '--set-json=networkPolicy={"enabled":true} --set-json=metrics={"serviceMonitor":{"enabled":true}} --set-json=watchNamespaces=["payments"] --set-json=replicaCount=1'
)
step "render and validate against Kubernetes $KUBE_VERSION (kubernetes-validate --strict)"
for i in "${!releases[@]}"; do
  release=${releases[$i]}
  args=(render --release "$release" --namespace "$release")
  [ -n "${values[$i]}" ] && args+=(-f "${values[$i]}")
  # shellcheck disable=SC2206 # the extra options are split on purpose
  [ -n "${extra[$i]}" ] && args+=(${extra[$i]})
  $PY scripts/chart.py "${args[@]}" >"$work/$release.yaml"
  # Custom resources (the ServiceMonitor) have no schema there: kubernetes-validate warns and
  # skips them; the sandbox checks them against the test CRD below.
  .venv/bin/kubernetes-validate --strict --quiet -k "$KUBE_VERSION" "$work/$release.yaml"
  echo "$release: $(grep -c '^kind:' "$work/$release.yaml") objects valid"
done

step "apply to the sandbox API server with kubectl"
cargo build -q --locked -p secretsync-sandbox
"$CARGO_TARGET_DIR/debug/secretsync-sandbox" --port 0 --kubeconfig-out "$work/kubeconfig" \
  >"$work/sandbox.log" 2>&1 &
sandbox_pid=$!
for _ in $(seq 100); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
[ -s "$work/kubeconfig" ] || { cat "$work/sandbox.log"; exit 1; }
k() { "$KUBECTL" --kubeconfig "$work/kubeconfig" "$@"; }

k apply -f charts/secretsync/crds/ -f crates/sandbox/tests/fixtures/servicemonitor-crd.yaml >/dev/null
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

printf '\nchart checks passed in %ss\n' "$((SECONDS - start))"
