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
#   scripts/bench.sh --heaptrack --n 5000
#                                  # the operator under heaptrack (apt-get install heaptrack):
#                                  # where its peak heap goes (scripts/heap-peaks.py); the
#                                  # times are heaptrack's, not the operator's
#
# A script rather than a bare `cargo bench`: the bench spawns the sandbox and operator
# binaries, which cargo does not build for another target, and OpenBao from .venv/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"

profile=release
n=1000,10000
bench_args=()
heaptrack=
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) profile=dev; bench_args+=(--smoke) ;;
    --50k) n="$n,50000" ;;
    --n) n="$2"; shift ;;
    --heaptrack) heaptrack=1 ;;
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
if [ -n "$heaptrack" ]; then
  command -v heaptrack_print >/dev/null || { echo "bench.sh: needs heaptrack (apt-get install heaptrack)" >&2; exit 2; }
  lib=$(dirname "$(command -v heaptrack)")/../lib/heaptrack
  rec="$CARGO_TARGET_DIR/bench/heaptrack"
  rm -rf "$rec" && mkdir -p "$rec"
  # exec keeps the pid that the bench signals and reads /proc of; heaptrack's own launcher
  # would run the operator as its child.
  printf '%s\n' '#!/usr/bin/env bash' \
    'pipe="$REC/pipe.$$"; mkfifo "$pipe"' \
    '"$LIB/libexec/heaptrack_interpret" <"$pipe" | gzip -c >"$REC/operator.$$.gz" &' \
    'exec env LD_PRELOAD="$LIB/libheaptrack_preload.so" DUMP_HEAPTRACK_OUTPUT="$pipe" "$OPERATOR" "$@"' \
    >"$rec/operator"
  chmod +x "$rec/operator"
  REC="$rec" LIB="$lib" OPERATOR="$SECRETSYNC_OPERATOR_BIN" SECRETSYNC_OPERATOR_BIN="$rec/operator" \
    cargo bench --locked -p secretsync-operator --bench compare -- --n "$n"
  # The first operator process: cold start through the steady state (the second is the restart).
  first=$(ls -tr "$rec"/operator.*.gz | head -1)
  heaptrack_print -f "$first" --print-peaks 0 --print-allocators 0 --print-temporary 0 \
    --print-leaks 0 -F "$rec/peak.folded" --flamegraph-cost-type peak | tail -3
  python3 scripts/heap-peaks.py "$rec/peak.folded"
  exit 0
fi
out="$CARGO_TARGET_DIR/bench/results.jsonl"
: >"$out"
echo "bench: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
cargo bench --locked -p secretsync-operator --bench compare -- --n "$n" --out "$out"
python3 scripts/bench-plot.py "$out" docs
