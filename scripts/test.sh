#!/usr/bin/env bash
# Sets up everything the tests need (real kubectl, OpenBao, moto into .venv/) and runs every
# test of the workspace — the e2e journeys among them, on the sandbox — then the e2e journeys
# again in `existing` mode against a sandbox process without its simulator plus the
# standalone secretsync-sim (e2e/run-existing.sh), then the compare bench's smoke run.
# Tests that need those tools fail, rather than skip, when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
scripts/setup.sh
cargo test --workspace --locked "$@"
start=$SECONDS
e2e/run-existing.sh
echo "test: e2e journeys on sandbox + secretsync-sim (existing mode) took $((SECONDS - start)) s"
# The compare bench at N=50 on debug builds, so it cannot rot (the full run is scripts/bench.sh).
start=$SECONDS
scripts/bench.sh --smoke
echo "test: bench smoke took $((SECONDS - start)) s"
