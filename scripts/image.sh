#!/usr/bin/env bash
# Builds the operator image of the Containerfile without a container engine, and checks it.
#
# The release binary is linked statically against glibc (no musl target can be installed
# here), then buildah assembles a FROM-scratch image (binary, CA bundle, user 65532,
# entrypoint, OCI labels) and commits it to an OCI image layout; buildah runs with its own
# storage under the work directory and the vfs driver, which needs neither overlayfs nor
# user namespaces. The check unpacks the image with umoci, runs the binary from the rootfs
# as uid 65532 with chroot (--help, then against a sandbox API server reached by a host name
# from a DNS server, proving name resolution in the static binary), and reads the image config
# with skopeo. Installs buildah, umoci and skopeo from Debian when missing (CI runs as root).
#
# Supply chain: the binary is built with `cargo auditable` (its dependency list embedded in a
# .dep-v0 section, which `cargo audit bin` and syft read), and cargo-cyclonedx writes a
# CycloneDX SBOM of it next to the image ($IMAGE_DIR.cdx.json); the check fails unless every
# crate `cargo tree -p secretsync-operator -e normal` lists, and every crate embedded in the
# binary, is in the SBOM. The image is labelled with the SBOM's sha256
# (dev.secretsync.sbom.digest) and format. Both tools come from scripts/tools.sh.
#
#   scripts/image.sh            # image at $IMAGE_DIR (default $CARGO_TARGET_DIR/image/oci)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"
IMAGE_DIR="${IMAGE_DIR:-$CARGO_TARGET_DIR/image/oci}"
TARGET=x86_64-unknown-linux-gnu
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
TAG="secretsync-operator:$VERSION"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
start=$SECONDS

step() { printf '\n== image: %s\n' "$*"; }

missing=()
for tool in buildah umoci skopeo jq; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ -f "$CA_BUNDLE" ] || missing+=(ca-certificates)
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]} (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "building secretsync-operator (release, static glibc, cargo auditable)"
auditable=$(scripts/tools.sh cargo-auditable)
RUSTFLAGS='-C target-feature=+crt-static' "$auditable" auditable build -q --locked --release \
  --target "$TARGET" -p secretsync-operator --bin secretsync-operator
binary="$CARGO_TARGET_DIR/$TARGET/release/secretsync-operator"
if ldd "$binary" >/dev/null 2>&1 && ! ldd "$binary" 2>&1 | grep -q 'statically linked'; then
  echo "image: $binary is dynamically linked:" >&2
  ldd "$binary" >&2
  exit 1
fi
echo "$binary: $(ldd "$binary" 2>&1 | head -1 | sed 's/^[[:space:]]*//'), $(du -h "$binary" | cut -f1)"

step "SBOM: CycloneDX of secretsync-operator, checked against cargo tree and the binary"
cyclonedx=$(scripts/tools.sh cargo-cyclonedx)
SBOM=$IMAGE_DIR.cdx.json
mkdir -p "$(dirname "$SBOM")"
# cargo-cyclonedx writes one file beside each workspace member's Cargo.toml: the operator's
# is moved out at once, the others deleted.
"$cyclonedx" cyclonedx -q --manifest-path crates/operator/Cargo.toml --format json \
  --target "$TARGET" --spec-version 1.5 --override-filename secretsync-operator-sbom
mv crates/operator/secretsync-operator-sbom.json "$SBOM"
find crates e2e -name secretsync-operator-sbom.json -delete
cargo tree -q --locked -p secretsync-operator -e normal --prefix none --target "$TARGET" \
  >"$SBOM.tree"
objcopy --dump-section .dep-v0="$SBOM.dep-v0" "$binary" ||
  { echo "image: $binary has no .dep-v0 section (not built by cargo auditable)" >&2; exit 1; }
python3 - "$SBOM" "$SBOM.tree" "$SBOM.dep-v0" <<'PY'
import json, re, sys, zlib
sbom = json.load(open(sys.argv[1]))
listed = {(c["name"], c["version"]) for c in sbom.get("components", [])}
top = sbom["metadata"]["component"]
listed.add((top["name"], top["version"]))
for c in sbom.get("components", []):
    for sub in c.get("components", []):
        listed.add((sub["name"], sub["version"]))
tree = set()
for line in open(sys.argv[2]):
    m = re.match(r"(\S+) v(\S+)", line)
    if m:
        tree.add((m.group(1), m.group(2)))
embedded = json.loads(zlib.decompress(open(sys.argv[3], "rb").read()))
binary = {(p["name"], p["version"]) for p in embedded["packages"] if p.get("kind", "runtime") == "runtime"}
missing = sorted(tree - listed)
unlisted = sorted(binary - listed)
for name, version in missing:
    print(f"image: SBOM lacks {name} {version}, which cargo tree lists", file=sys.stderr)
for name, version in unlisted:
    print(f"image: SBOM lacks {name} {version}, which the binary embeds", file=sys.stderr)
if missing or unlisted:
    sys.exit(1)
print(f"SBOM {sys.argv[1]}: {len(listed)} components (CycloneDX {sbom['specVersion']}); "
      f"all {len(tree)} crates of cargo tree and all {len(binary)} embedded in the binary listed")
PY
sbom_digest=sha256:$(sha256sum "$SBOM" | cut -d' ' -f1)
rm -f "$SBOM.tree" "$SBOM.dep-v0"

work=$(mktemp -d)
sandbox_pid=
operator_pid=
dns_pid=
cleanup() {
  for pid in "$operator_pid" "$sandbox_pid" "$dns_pid"; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  if [ -n "${ctr:-}" ]; then bah rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
bah() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }

step "assembling $TAG from scratch with buildah (vfs storage)"
ctr=$(bah from --name secretsync-image-build scratch)
bah copy --chmod 0644 "$ctr" "$CA_BUNDLE" /etc/ssl/certs/ca-certificates.crt >/dev/null
bah copy --chmod 0755 "$ctr" "$binary" /secretsync-operator >/dev/null
bah config \
  --user 65532:65532 \
  --entrypoint '["/secretsync-operator"]' \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --port 9090 --port 8081 \
  --os linux --arch amd64 \
  --created-by "scripts/image.sh: buildah copy of a static secretsync-operator and the CA bundle" \
  --label org.opencontainers.image.title=secretsync-operator \
  --label "org.opencontainers.image.description=secretsync: secrets from Vault/OpenBao, AWS Secrets Manager, … as immutable, version-suffixed Kubernetes Secrets that workloads follow" \
  --label "org.opencontainers.image.version=$VERSION" \
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --label org.opencontainers.image.source=https://github.com/secretsync/secretsync \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label "dev.secretsync.sbom.digest=$sbom_digest" \
  --label dev.secretsync.sbom.format=CycloneDX-1.5-JSON \
  "$ctr"
rm -rf "$IMAGE_DIR"
mkdir -p "$(dirname "$IMAGE_DIR")"
bah commit --quiet --format oci --disable-compression=false --rm "$ctr" "oci:$IMAGE_DIR:$TAG" >/dev/null
ctr=

step "checking the image config (skopeo inspect --config)"
config=$(skopeo inspect --config "oci:$IMAGE_DIR:$TAG")
user=$(jq -r '.config.User' <<<"$config")
entrypoint=$(jq -c '.config.Entrypoint' <<<"$config")
echo "user=$user entrypoint=$entrypoint labels=$(jq -c '.config.Labels | keys' <<<"$config")"
[ "$user" = "65532:65532" ] || { echo "image: runs as '$user', not 65532:65532" >&2; exit 1; }
[ "$entrypoint" = '["/secretsync-operator"]' ] || { echo "image: entrypoint $entrypoint" >&2; exit 1; }
[ "$(jq -r '.config.Labels["org.opencontainers.image.version"]' <<<"$config")" = "$VERSION" ]
[ "$(jq -r '.config.Labels["dev.secretsync.sbom.digest"]' <<<"$config")" = "$sbom_digest" ] ||
  { echo "image: the SBOM digest label is not $sbom_digest" >&2; exit 1; }

step "unpacking with umoci and running the binary from the rootfs as 65532"
umoci unpack --image "$IMAGE_DIR:$TAG" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
find "$rootfs" -mindepth 1 | sed "s|^$rootfs||" | sort | tr '\n' ' '
echo
chroot --userspec=65532:65532 "$rootfs" /secretsync-operator --help | head -3
# What the container runtime gives every container and chroot does not: the default device
# nodes of the OCI runtime spec (the static binary's getrandom falls back to /dev/urandom, as
# glibc's getrandom cannot be looked up with dlsym there) and, from the kubelet, /etc/hosts
# and /etc/resolv.conf. Then talk to a sandbox API server by a name only a DNS server knows
# (scripts/dns-stub.py on 127.0.0.53), as the operator talks to kubernetes.default.svc.
mkdir -p "$rootfs/dev"
for node in "null 1 3" "zero 1 5" "random 1 8" "urandom 1 9"; do
  set -- $node # split "name major minor"
  mknod -m 0666 "$rootfs/dev/$1" c "$2" "$3"
done
cargo build -q --locked -p secretsync-sandbox
"$CARGO_TARGET_DIR/debug/secretsync-sandbox" --port 0 --kubeconfig-out "$work/kubeconfig" \
  >"$work/sandbox.log" 2>&1 &
sandbox_pid=$!
for _ in $(seq 100); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
[ -s "$work/kubeconfig" ] || { cat "$work/sandbox.log"; exit 1; }
port=$(sed -n 's|.*server: http://127.0.0.1:\([0-9]*\).*|\1|p' "$work/kubeconfig")
python3 scripts/dns-stub.py 127.0.0.53 api.sandbox.test >"$work/dns.log" 2>&1 &
dns_pid=$!
for _ in $(seq 50); do [ -s "$work/dns.log" ] && break; sleep 0.1; done
printf '127.0.0.1 localhost\n' >"$rootfs/etc/hosts"
printf 'nameserver 127.0.0.53\noptions timeout:1 attempts:2\n' >"$rootfs/etc/resolv.conf"
sed "s|http://127.0.0.1:$port|http://api.sandbox.test:$port|" "$work/kubeconfig" >"$rootfs/kubeconfig"
chmod 0644 "$rootfs/kubeconfig"
.venv/bin/kubectl --kubeconfig "$work/kubeconfig" apply -f crds/ >/dev/null
if chroot "$rootfs" /bin/sh -c true 2>/dev/null; then echo "image: has a shell" >&2; exit 1; fi
KUBECONFIG=/kubeconfig chroot --userspec=65532:65532 "$rootfs" /secretsync-operator \
  --log-format json >"$work/operator.log" 2>&1 &
operator_pid=$!
for _ in $(seq 150); do grep -q 'caches ready' "$work/operator.log" && break; sleep 0.2; done
grep -q 'caches ready' "$work/operator.log" || { echo "image: the operator did not start:" >&2; cat "$work/operator.log" >&2; exit 1; }
echo "the operator in the image resolved api.sandbox.test through DNS, reached the sandbox on port $port and filled its caches"

step "size"
layer_bytes=$(jq '[.layers[].size] | add' "$IMAGE_DIR/blobs/sha256/$(jq -r '.manifests[0].digest' "$IMAGE_DIR/index.json" | cut -d: -f2)")
echo "image $TAG at $IMAGE_DIR: compressed layers $((layer_bytes / 1024)) KiB, unpacked $(du -sk "$rootfs" | cut -f1) KiB"
echo "SBOM $SBOM ($sbom_digest, the image's dev.secretsync.sbom.digest label)"
printf '\nimage built and checked in %ss\n' "$((SECONDS - start))"
