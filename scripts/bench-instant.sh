#!/usr/bin/env bash
# Instant sync's latency (docs/instant-sync.md, docs/benchmarks.md): a write at a real OpenBao
# to the new versioned Secret on a real control plane (scripts/control-plane.sh), through
# OpenBao's socket audit device, with refreshInterval 1h. The operator runs in the bench's
# process (crates/operator/benches/instant.rs). Everything it starts is stopped on exit.
#
#   scripts/bench-instant.sh                 # 100 keys, written 10 per second
#   scripts/bench-instant.sh --n 200 --rate 20
#   scripts/bench-instant.sh --source sqs    # AWS Secrets Manager on moto, events through SQS
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
scripts/setup.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
cargo bench --locked -p secretsync-operator --bench instant --no-run
export CONTROL_PLANE_DIR
CONTROL_PLANE_DIR=$(mktemp -d)
cleanup() {
  scripts/control-plane.sh stop >/dev/null 2>&1 || true
  rm -rf "$CONTROL_PLANE_DIR"
}
trap cleanup EXIT
KUBECONFIG=$(scripts/control-plane.sh start)
export KUBECONFIG
kubectl apply -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/secretsyncs.secretsync.io crd/secretstores.secretsync.io >/dev/null
echo "bench-instant: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
cargo bench --locked -p secretsync-operator --bench instant -- "$@"
