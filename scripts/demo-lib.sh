# Shared by the demo scripts (sourced, not run): set-up, the build, a work directory whose
# processes stop when the demo exits, and the sandbox API server with the CRDs and the
# operator on 127.0.0.1.

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
scripts/setup.sh
bold "building the operator, the sandbox API server and the kubectl plugin"
cargo build -q --locked -p secretsync-operator -p secretsync-sandbox -p kubectl-secretsync
export PATH="$PWD/.venv/bin:$CARGO_TARGET_DIR/debug:$PATH"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The sandbox API server, the CRDs and namespace `demo`; KUBECONFIG points at it.
start_sandbox() {
  secretsync-sandbox --port 0 --kubeconfig-out "$work/kubeconfig" >"$work/sandbox.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
  [ -s "$work/kubeconfig" ] || { cat "$work/sandbox.log"; exit 1; }
  export KUBECONFIG="$work/kubeconfig"
  head -1 "$work/sandbox.log"
  run kubectl apply -f crds/
  run kubectl wait --for=condition=Established crd --all --timeout=30s
  run kubectl create namespace demo
}

# The operator, its HTTP endpoints off so a demo never competes for a port.
start_operator() {
  echo "operator log: $work/operator.log"
  secretsync-operator --log-level info --metrics-bind-address 0 --health-bind-address 0 \
    >"$work/operator.log" 2>&1 &
  pids+=($!)
}
