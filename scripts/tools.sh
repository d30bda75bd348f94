#!/usr/bin/env bash
# Builds the tools the chart, release and image checks run, at pinned versions, into
# ~/.cache/secretsync/bin/<name>-<version>/, and prints the binary's path:
#
#   scripts/tools.sh helm                    helm (tools/helm/go.mod)
#   scripts/tools.sh promtool                Prometheus' promtool (tools/prometheus/go.mod)
#   scripts/tools.sh promql-selectors        ours, tools/prometheus/promql-selectors: the
#                                            selectors and grouping labels of PromQL, by
#                                            Prometheus' own parser
#   scripts/tools.sh krew                    krew (tools/krew/go.mod)
#   scripts/tools.sh validate-krew-manifest  krew's manifest validator (the same module)
#   scripts/tools.sh eso                     External Secrets Operator's manager (tools/eso/go.mod),
#                                            for the bench against the peers only
#                                            (scripts/bench-peers.sh)
#   scripts/tools.sh cargo-auditable         cargo-auditable (crates.io, version below)
#   scripts/tools.sh cargo-cyclonedx         cargo-cyclonedx (crates.io, version below)
#
# The Go tools come from our own modules under tools/ (each pins its version in go.mod; helm,
# Prometheus, krew and ESO each have their own: they pin different Kubernetes client versions),
# built through the Go module proxy. A build goes to a temporary directory and is renamed into
# place, so an interrupted build never leaves a half-written binary, and a second run is
# instant.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO_AUDITABLE_VERSION=0.7.7
CARGO_CYCLONEDX_VERSION=0.5.9

export GOMODCACHE=$HOME/.cache/secretsync/go/mod
export GOCACHE=$HOME/.cache/secretsync/go/build
export GOFLAGS=-trimpath
# Only the module proxy is reachable; never fall back to fetching from origin servers.
export GOPROXY=${GOPROXY:-https://proxy.golang.org}

die() {
  echo "tools: $*" >&2
  exit 1
}

[ $# = 1 ] || die "usage: scripts/tools.sh helm|promtool|promql-selectors|krew|validate-krew-manifest|eso|cargo-auditable|cargo-cyclonedx"
name=$1
case $name in
helm) module=helm.sh/helm/v4 mod=$ROOT/tools/helm pkg=$module/cmd/helm ;;
promtool) module=github.com/prometheus/prometheus mod=$ROOT/tools/prometheus pkg=$module/cmd/promtool ;;
promql-selectors) module=github.com/prometheus/prometheus mod=$ROOT/tools/prometheus pkg=./promql-selectors ;;
krew | validate-krew-manifest) module=sigs.k8s.io/krew mod=$ROOT/tools/krew pkg=$module/cmd/$name ;;
# ESO's manager is its module's main package. v0.16.2 is the newest release the proxy serves as
# one whole module: later ones (v1.x) are split into modules joined by local replaces
# (../apis, ../providers/...), which a module requiring them cannot follow.
eso) module=github.com/external-secrets/external-secrets mod=$ROOT/tools/eso pkg=$module ;;
cargo-auditable) version=$CARGO_AUDITABLE_VERSION ;;
cargo-cyclonedx) version=$CARGO_CYCLONEDX_VERSION ;;
*) die "unknown tool '$name'" ;;
esac
if [ -n "${mod:-}" ]; then
  version=$(awk -v m="$module" '$1 == m {print $2} $1 == "require" && $2 == m {print $3}' "$mod/go.mod")
  [ -n "$version" ] || die "$mod/go.mod does not require $module"
  # Our own tool is rebuilt whenever its source changes.
  if [ "$name" = promql-selectors ]; then
    version+=-$(cat "$mod/go.sum" "$mod/promql-selectors/main.go" | sha256sum | cut -c1-12)
  fi
fi
dir=$HOME/.cache/secretsync/bin/$name-$version
if [ -x "$dir/$name" ]; then
  echo "$dir/$name"
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
echo "tools: building $name $version (cold: minutes on 2 cores)" >&2
if [ -n "${mod:-}" ]; then
  command -v go >/dev/null || die "Go is not installed (need go on PATH to build $name $version)"
  ldflags="-s -w"
  # helm and krew report their version from these variables; unset, they say v4-dev / v0.0.0.
  case $name in
  helm) ldflags+=" -X helm.sh/helm/v4/internal/version.version=$version" ;;
  krew) ldflags+=" -X sigs.k8s.io/krew/internal/version.gitTag=$version" ;;
  esac
  (cd "$mod" && nice -n 10 go build -ldflags="$ldflags" -o "$tmp/$name" "$pkg") >&2 ||
    die "building $name $version failed (see the Go errors above)"
else
  command -v cargo >/dev/null || die "cargo is not installed (needed to build $name $version)"
  # Its own target directory, removed afterwards: a tool's build shares nothing with ours.
  CARGO_TARGET_DIR=$tmp/target nice -n 10 cargo install --locked --quiet --root "$tmp" \
    "$name" --version "$version" >&2 || die "cargo install $name $version failed (see above)"
  mv "$tmp/bin/$name" "$tmp/$name"
fi
mv "$tmp/$name" "$dir/$name"
echo "tools: built $name in $((SECONDS - start)) s" >&2
echo "$dir/$name"
