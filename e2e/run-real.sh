#!/usr/bin/env bash
# The e2e journeys on a real Kubernetes control plane: etcd, kube-apiserver (RBAC on),
# kube-controller-manager and kube-scheduler built from the Go module proxy, with kwok as the
# kubelets (scripts/control-plane.sh). The journeys only see KUBECONFIG; E2E_CLUSTER=real
# also tells them that the server enforces RBAC. scripts/test.sh runs this as the suite's
# third leg; extra arguments go to the test binary (e.g. a journey name). A control plane
# that cannot be built or started fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
# The same build as `cargo test --workspace` (a no-op after it), binaries included.
cargo test --workspace --locked --no-run --quiet

export CONTROL_PLANE_DIR
CONTROL_PLANE_DIR=$(mktemp -d)
cleanup() {
  scripts/control-plane.sh stop || true
  rm -rf "$CONTROL_PLANE_DIR"
}
trap cleanup EXIT
kubeconfig=$(scripts/control-plane.sh start)

status=0
E2E_CLUSTER=real KUBECONFIG="$kubeconfig" \
  cargo test --workspace --locked --test journeys -- "$@" || status=$?
if [ "$status" -ne 0 ]; then
  for p in kube-apiserver kube-controller-manager kube-scheduler kwok; do
    echo "--- $p log (last 20 lines)"
    tail -n 20 "$CONTROL_PLANE_DIR/$p.log"
  done
fi
exit "$status"
