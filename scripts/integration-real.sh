#!/usr/bin/env bash
# The operator's integration suite (crates/operator/tests/integration) on a real Kubernetes
# control plane (scripts/control-plane.sh): each test in a namespace of its own, with the
# operator in-process and watching only that namespace (common.rs, SECRETSYNC_TEST_CLUSTER=real).
#
#   scripts/integration-real.sh                  the whole suite but the sandbox-only tests
#   scripts/integration-real.sh stress:: ...     only the tests whose names contain a filter
#
# The tests listed in common.rs's SANDBOX_ONLY (each with the reason) are excluded by name and
# counted as not run, never as passed; a name there that no test has fails the run. A control
# plane that cannot be built or started fails it too. INTEGRATION_REAL_THREADS (default 4) tests
# run at once; KUBECONFIG=... with CONTROL_PLANE_DIR unset reuses a running plane.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
threads=${INTEGRATION_REAL_THREADS:-4}
# `--workspace`, as `cargo test --workspace` before: the same features, so the same build (a
# `-p` build unifies features differently and compiles the workspace's crates again).

cargo test --workspace --test integration --locked --no-run --quiet

# The names in SANDBOX_ONLY: every "module::test" string between its opening and its `];`.
mapfile -t sandbox_only < <(
  sed -n '/^pub const SANDBOX_ONLY/,/^];/p' crates/operator/tests/integration/common.rs |
    grep -oE '"[a-z0-9_]+::[a-z0-9_]+"' | tr -d '"'
)
all_tests=$(cargo test --workspace --test integration --locked -q -- --list 2>/dev/null |
  sed -n 's/: test$//p')
skips=()
for name in "${sandbox_only[@]}"; do
  grep -qxF "$name" <<<"$all_tests" ||
    { echo "integration-real: SANDBOX_ONLY names $name, which is no test" >&2; exit 1; }
  skips+=(--skip "$name")
done

if [ -z "${KUBECONFIG:-}" ] || [ -n "${CONTROL_PLANE_DIR:-}" ]; then
  export CONTROL_PLANE_DIR
  CONTROL_PLANE_DIR=${CONTROL_PLANE_DIR:-$(mktemp -d)}
  cleanup() {
    scripts/control-plane.sh stop || true
    rm -rf "$CONTROL_PLANE_DIR"
  }
  trap cleanup EXIT
  KUBECONFIG=$(scripts/control-plane.sh start)
fi
export KUBECONFIG

start=$SECONDS
status=0
# --skip matches by substring: each name is a whole `module::test`, and the list check above
# keeps them real names.
SECRETSYNC_TEST_CLUSTER=real cargo test --workspace --test integration --locked -- \
  --test-threads="$threads" "${skips[@]}" "$@" || status=$?
echo "integration-real: ${#sandbox_only[@]} sandbox-only tests not run (common.rs SANDBOX_ONLY);" \
  "the run took $((SECONDS - start)) s with $threads threads" >&2
if [ "$status" -ne 0 ] && [ -n "${CONTROL_PLANE_DIR:-}" ]; then
  for p in kube-apiserver kube-controller-manager kwok; do
    echo "--- $p log (last 10 lines)"
    tail -n 10 "$CONTROL_PLANE_DIR/$p.log"
  done
fi
exit "$status"
