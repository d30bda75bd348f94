#!/usr/bin/env bash
# Sets up everything the tests need (real kubectl, OpenBao, moto into .venv/) and runs every
# test of the workspace — the e2e journeys among them, on the sandbox — then the e2e journeys
# again in `existing` mode against a sandbox process without its simulator plus the
# standalone secretsync-sim (e2e/run-existing.sh), then once more on a real Kubernetes control
# plane built from the Go module proxy (e2e/run-real.sh, scripts/control-plane.sh; the build
# is cached in ~/.cache/secretsync/; journey 8 there runs the real `helm`, built by
# scripts/tools.sh) together with part of the operator's integration suite
# (stress.rs, user_actions.rs, matrix.rs and database.rs; `--real`: all of it but the sandbox-only tests,
# scripts/integration-real.sh), then the compare bench's smoke run.
# Tests that need those tools fail, rather than skip, when they are missing; so does the real
# leg when Go is missing or its control plane cannot be built or started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
# The integration tests that run on the real control plane too (every one runs on the sandbox).
real_integration=(stress:: user_actions:: matrix:: database::)
if [ "${1:-}" = --real ]; then
  shift
  real_integration=()
fi
scripts/setup.sh
cargo test --workspace --locked "$@"
start=$SECONDS
e2e/run-existing.sh
echo "test: e2e journeys on sandbox + secretsync-sim (existing mode) took $((SECONDS - start)) s"
start=$SECONDS
scripts/control-plane.sh build >/dev/null
echo "test: the real control plane's build (cached after the first) took $((SECONDS - start)) s"
start=$SECONDS
scripts/tools.sh helm >/dev/null
echo "test: helm's build for journey 8 (cached after the first) took $((SECONDS - start)) s"
start=$SECONDS
e2e/run-real.sh
echo "test: e2e journeys on a real control plane (Kubernetes ${K8S_VERSION:-1.37.2}) took $((SECONDS - start)) s"
start=$SECONDS
scripts/integration-real.sh "${real_integration[@]}"
echo "test: integration tests on a real control plane (${real_integration[*]:-all but the sandbox-only}) took $((SECONDS - start)) s"
# The compare bench at N=50 on debug builds, so it cannot rot (the full run is scripts/bench.sh).
start=$SECONDS
scripts/bench.sh --smoke
echo "test: bench smoke took $((SECONDS - start)) s"
