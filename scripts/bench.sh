#!/usr/bin/env bash
# The compare bench (docs/benchmarks.md): the release operator binary as its own process
# against the sandbox API server (a process) and a real OpenBao dev server, beside a raw
# client doing the same minimal work. Prints one table; results go to
# $CARGO_TARGET_DIR/bench/results.jsonl and the plots to docs/ (scripts/bench-plot.py).
#
#   scripts/bench.sh               # N = 1000 and 10000 (under 20 minutes on the 2-core VM)
#   scripts/bench.sh --50k         # also N = 50000
#   scripts/bench.sh --n 2000      # any list of N, comma-separated
#   scripts/bench.sh --smoke       # N = 50, debug builds, asserts the steady-state and
#                                  # restart targets; run by scripts/test.sh (< 60 s)
#
# A script rather than a bare `cargo bench`: the bench spawns the sandbox and operator
# binaries, which cargo does not build for another target, and OpenBao from .venv/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"

profile=release
n=1000,10000
bench_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) profile=dev; bench_args+=(--smoke) ;;
    --50k) n="$n,50000" ;;
    --n) n="$2"; shift ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

scripts/setup.sh >/dev/null
if [ "$profile" = release ]; then
  dir="$CARGO_TARGET_DIR/release"
  cargo build --release --locked -p secretsync-operator --bin secretsync-operator \
    -p secretsync-sandbox --bin secretsync-sandbox
else
  dir="$CARGO_TARGET_DIR/debug"
  cargo build --locked -p secretsync-operator --bin secretsync-operator \
    -p secretsync-sandbox --bin secretsync-sandbox
fi
export SECRETSYNC_OPERATOR_BIN="$dir/secretsync-operator" SECRETSYNC_SANDBOX_BIN="$dir/secretsync-sandbox"

if [ "$profile" = dev ]; then
  exec cargo bench --locked --profile dev -p secretsync-operator --bench compare -- "${bench_args[@]}"
fi
mkdir -p "$CARGO_TARGET_DIR/bench"
out="$CARGO_TARGET_DIR/bench/results.jsonl"
: >"$out"
echo "bench: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
cargo bench --locked -p secretsync-operator --bench compare -- --n "$n" --out "$out"
python3 scripts/bench-plot.py "$out" docs
