#!/usr/bin/env bash
# The e2e journeys in `existing` mode, as on a bare control plane: a sandbox PROCESS started
# without its built-in simulator, plus the standalone `secretsync-sim --controllers` playing
# kubelet and kube-controller-manager over the API. The journeys only see KUBECONFIG.
# scripts/test.sh runs this as the suite's second leg; extra arguments go to the test binary
# (e.g. a journey name).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
# The same build as `cargo test --workspace` (a no-op after it), binaries included.
cargo test --workspace --locked --no-run --quiet
bin="$CARGO_TARGET_DIR/debug"

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

"$bin/secretsync-sandbox" --port 0 --no-simulator --kubeconfig-out "$dir/kubeconfig" \
  >"$dir/sandbox.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  grep -q '^kubeconfig written' "$dir/sandbox.log" && break
  sleep 0.1
done
grep -q '^kubeconfig written' "$dir/sandbox.log" || { cat "$dir/sandbox.log"; exit 1; }

KUBECONFIG="$dir/kubeconfig" "$bin/secretsync-sim" --controllers --ready-delay-ms 100 \
  >"$dir/sim.log" 2>&1 &
pids+=($!)

status=0
E2E_CLUSTER=existing KUBECONFIG="$dir/kubeconfig" \
  cargo test --workspace --locked --test journeys -- "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- secretsync-sim log (last 50 lines)"
  tail -n 50 "$dir/sim.log"
fi
exit "$status"
