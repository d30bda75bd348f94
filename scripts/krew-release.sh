#!/usr/bin/env bash
# Builds the kubectl-secretsync archives krew installs and writes the krew manifest that names
# them, with each archive's sha256; then checks the manifest as krew does.
#
#   scripts/krew-release.sh [OUT]     archives and secretsync.yaml into OUT (default
#                                     $CARGO_TARGET_DIR/krew), and the manifest to
#                                     plugins/secretsync.yaml
#   scripts/krew-release.sh --check   the same into a temporary directory, leaving
#                                     plugins/secretsync.yaml alone (CI)
#
# Platforms: every os/arch below whose Rust target is installed (rustup target list
# --installed); here that is linux/amd64 only. Binaries are static (glibc, +crt-static) and
# built with `cargo auditable` (their dependency list embedded, readable by cargo audit bin
# and syft). Archives are reproducible for a given binary: sorted names, owner 0, mtime
# SOURCE_DATE_EPOCH (default 0), gzip without a name or timestamp.
#
# The check: krew's own manifest validator (sigs.k8s.io/krew's validate-krew-manifest:
# apiVersion, kind, the name equal to the file name, shortDescription set and on one line,
# semver version, each platform's uri, sha256, bin and os/arch-only selector, every selector
# matching a platform krew knows and none overlapping), the sha256 of each platform equal to
# the archive just built, and `kubectl krew install --manifest --archive` of the linux/amd64
# archive (krew verifies the sha256 itself), whose installed `kubectl secretsync` must run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
VERSION=v$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
RELEASES=https://github.com/secretsync/secretsync/releases/download/$VERSION
# os arch rust-target
PLATFORMS=(
  "linux amd64 x86_64-unknown-linux-gnu"
  "linux arm64 aarch64-unknown-linux-gnu"
  "darwin amd64 x86_64-apple-darwin"
  "darwin arm64 aarch64-apple-darwin"
)

die() {
  echo "krew-release: $*" >&2
  exit 1
}

check=0
out=$CARGO_TARGET_DIR/krew
if [ "${1:-}" = --check ]; then
  check=1
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
elif [ -n "${1:-}" ]; then
  out=$1
fi
mkdir -p "$out"
start=$SECONDS

auditable=$(scripts/tools.sh cargo-auditable)
installed=$(rustup target list --installed 2>/dev/null) || die "rustup is needed to list the installed Rust targets"
epoch=${SOURCE_DATE_EPOCH:-0}
platforms_yaml=
built=()
for p in "${PLATFORMS[@]}"; do
  read -r os arch target <<<"$p"
  if ! grep -qx "$target" <<<"$installed"; then
    echo "krew-release: $os/$arch skipped: Rust target $target is not installed"
    continue
  fi
  echo "krew-release: building kubectl-secretsync for $os/$arch ($target, cargo auditable)"
  RUSTFLAGS='-C target-feature=+crt-static' "$auditable" auditable build -q --locked --release \
    --target "$target" -p kubectl-secretsync --bin kubectl-secretsync
  name=kubectl-secretsync_${VERSION}_${os}_${arch}.tar.gz
  stage=$out/stage-$os-$arch
  rm -rf "$stage"
  mkdir -p "$stage"
  install -m 0755 "$CARGO_TARGET_DIR/$target/release/kubectl-secretsync" "$stage/kubectl-secretsync"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -C "$stage" -cf - \
    kubectl-secretsync | gzip -9 -n >"$out/$name"
  rm -rf "$stage"
  sha=$(sha256sum "$out/$name" | cut -d' ' -f1)
  built+=("$os/$arch $out/$name $sha")
  platforms_yaml+="
    - selector:
        matchLabels: {os: $os, arch: $arch}
      uri: $RELEASES/$name
      sha256: $sha
      bin: kubectl-secretsync"
done
[ "${#built[@]}" -gt 0 ] || die "no platform could be built (no Rust target of ${PLATFORMS[*]} is installed)"

manifest=$out/secretsync.yaml
cat >"$manifest" <<YAML
# The krew plugin manifest of kubectl-secretsync, written by scripts/krew-release.sh from the
# archives it built (do not edit the sha256 values by hand). Install from a release:
#   kubectl krew install --manifest=plugins/secretsync.yaml
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: secretsync
spec:
  version: $VERSION
  homepage: https://github.com/secretsync/secretsync
  shortDescription: Rotate, revoke and roll back synced Secret versions
  description: |
    The command-line side of the secretsync operator, which syncs secrets from Vault/OpenBao,
    AWS Secrets Manager, Azure Key Vault and GCP Secret Manager into immutable,
    version-suffixed Secrets (db-v1, db-v2, ...) and rolls workloads onto the active one.
    kubectl secretsync list and status show each SecretSync's versions and rollouts;
    rotate, revoke, rollback, pin and unpin act on them, with --wait to follow the
    rollout to its end. Needs the secretsync operator in the cluster.
  platforms:${platforms_yaml}
YAML

echo "krew-release: checking $manifest with krew's validator"
validator=$(scripts/tools.sh validate-krew-manifest)
"$validator" -manifest "$manifest" -skip-install 2>"$out/validate.log" ||
  { cat "$out/validate.log" >&2; die "krew's validator refused the manifest (above)"; }
python3 - "$manifest" "${built[@]}" <<'PY' || die "a platform's sha256 is not its archive's"
import sys, re
text = open(sys.argv[1]).read()
for entry in sys.argv[2:]:
    platform, archive, sha = entry.split(" ")
    name = archive.rsplit("/", 1)[1]
    m = re.search(r"uri: \S*/" + re.escape(name) + r"\n\s+sha256: ([0-9a-f]{64})", text)
    if not m or m.group(1) != sha:
        sys.exit(f"krew-release: {platform}: manifest says {m and m.group(1)}, {name} is {sha}")
    print(f"krew-release: {platform}: sha256 {sha} = {name}")
PY

# krew itself installs the linux/amd64 archive from the manifest, verifying its sha256.
for entry in "${built[@]}"; do
  read -r platform archive _ <<<"$entry"
  [ "$platform" = linux/amd64 ] || continue
  krew=$(scripts/tools.sh krew)
  krew_root=$out/krew-root
  KREW_ROOT=$krew_root KREW_OS=linux KREW_ARCH=amd64 "$krew" install --manifest="$manifest" \
    --archive="$archive" >"$out/install.log" 2>&1 ||
    { cat "$out/install.log" >&2; die "krew install --manifest --archive failed (above)"; }
  "$krew_root/bin/kubectl-secretsync" --help | head -1 ||
    die "the plugin krew installed does not run"
  echo "krew-release: krew installed kubectl-secretsync from the linux/amd64 archive"
done

if [ "$check" = 0 ]; then
  cp "$manifest" plugins/secretsync.yaml
  echo "krew-release: archives in $out; manifest written to plugins/secretsync.yaml"
else
  # The committed manifest must be this one but for the sha256 values (binaries differ from
  # one build host to another); a release rewrites them.
  strip() { sed -E 's/sha256: [0-9a-f]{64}/sha256: <archive>/' "$1"; }
  diff <(strip plugins/secretsync.yaml) <(strip "$manifest") >&2 ||
    die "plugins/secretsync.yaml is not what scripts/krew-release.sh writes (run it; diff above)"
  if cmp -s plugins/secretsync.yaml "$manifest"; then
    echo "krew-release: plugins/secretsync.yaml's sha256 values reproduced"
  else
    echo "krew-release: plugins/secretsync.yaml's sha256 values are another build's (a release rewrites them)"
  fi
fi
echo "krew-release: done in $((SECONDS - start)) s"
