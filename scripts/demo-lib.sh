# Shared by the demo scripts (sourced, not run): set-up, the build, a work directory whose
# processes stop when the demo exits, and the API server (the sandbox, or with --real a real
# Kubernetes control plane) with the CRDs and the operator on 127.0.0.1.

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
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${CONTROL_PLANE_DIR:-}" ]; then scripts/control-plane.sh stop || true; fi
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

# A real Kubernetes control plane (scripts/control-plane.sh: etcd, kube-apiserver with RBAC,
# kube-controller-manager, kube-scheduler, kwok as the kubelets), the CRDs and namespace
# `demo`; KUBECONFIG points at it. The first run builds Kubernetes from the Go module proxy.
start_real() {
  export CONTROL_PLANE_DIR="$work/control-plane"
  KUBECONFIG=$(scripts/control-plane.sh start)
  export KUBECONFIG
  run kubectl version
  run kubectl apply -f crds/
  run kubectl wait --for=condition=Established crd --all --timeout=30s
  run kubectl create namespace demo
}

# The sandbox, or the real control plane when the demo was given --real.
start_cluster() {
  case "${1:-}" in
  "") start_sandbox ;;
  --real) start_real ;;
  *)
    echo "usage: $0 [--real]" >&2
    exit 2
    ;;
  esac
}

# The operator, its HTTP endpoints off so a demo never competes for a port.
start_operator() {
  echo "operator log: $work/operator.log"
  secretsync-operator --log-level info --metrics-bind-address 0 --health-bind-address 0 \
    >"$work/operator.log" 2>&1 &
  pids+=($!)
}
