#!/usr/bin/env bash
# The bench against the peers, first leg (issue 30): External Secrets Operator beside secretsync
# on the real control plane (scripts/control-plane.sh: etcd, kube-apiserver, kcm, kwok) and one
# OpenBao dev server, one system at a time, each controller its own process with its own user.
#
#   scripts/bench-peers.sh                 # N = 1000
#   scripts/bench-peers.sh --n 50          # the smoke size; --n takes a comma-separated list
#   scripts/bench-peers.sh --eso-unthrottled
#                                          # a fourth column: ESO --concurrent 16 without its
#                                          # client-side rate limit (QPS 50, burst 100 by default;
#                                          # ours has none), as --client-qps 10000 --client-burst 20000
#
# For each N and each system: N objects over 10 namespaces (ExternalSecrets, external-secrets.io/v1,
# or SecretSyncs), Vault provider, KV v2, token auth, each its own key bench/k<i>, refresh
# interval 1h, all written before the controller starts; the time from its start until all are
# Ready, its peak RSS (VmHWM) and CPU seconds, OpenBao's reads of the keys (its audit log) and
# the controller's API requests by verb and resource (kube-apiserver's audit log, Metadata level).
# Systems: secretsync (--concurrency 16, its default), ESO with its defaults (--concurrent 1,
# client QPS 50 / burst 100), ESO with --concurrent 16. Each controller run is its own
# ServiceAccount (a token kubeconfig) bound to cluster-admin. Prints one markdown table per N.
#
# ESO is built from our bench-only module tools/eso/go.mod (scripts/tools.sh eso, cached) and its
# CRDs are read from that module in the Go module cache: nothing of ESO's is in this repository.
# BENCH_PEERS_DIR (default: a new temporary directory) keeps the results, the controllers' logs
# and the OpenBao audit log; the control plane's state is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretsync/target}"

sizes=1000
unthrottled=
while [ $# -gt 0 ]; do
  case "$1" in
    --n) sizes="$2"; shift ;;
    --eso-unthrottled) unthrottled=1 ;;
    *) echo "bench-peers.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

die() {
  echo "bench-peers: $*" >&2
  exit 1
}

scripts/setup.sh >/dev/null
# shellcheck disable=SC1091
source .venv/bin/activate
cargo build --release --locked -p secretsync-operator --bin secretsync-operator
operator=$CARGO_TARGET_DIR/release/secretsync-operator
eso=$(scripts/tools.sh eso)
eso_version=$(basename "$(dirname "$eso")")
eso_version=${eso_version#eso-}
eso_module=$(cd tools/eso && GOMODCACHE=$HOME/.cache/secretsync/go/mod GOFLAGS=-mod=mod GOPROXY=off \
  go list -m -f '{{.Dir}}' github.com/external-secrets/external-secrets)
eso_crds=$eso_module/config/crds/bases
[ -f "$eso_crds/external-secrets.io_externalsecrets.yaml" ] || die "no ESO CRDs in $eso_crds"

work=${BENCH_PEERS_DIR:-$(mktemp -d -t bench-peers.XXXXXX)}
mkdir -p "$work"
export CONTROL_PLANE_DIR=$work/control-plane
bao_pid=
cleanup() {
  if [ -n "$bao_pid" ]; then
    kill "$bao_pid" 2>/dev/null || true
    wait "$bao_pid" 2>/dev/null || true
  fi
  scripts/control-plane.sh stop || true
  rm -rf "$CONTROL_PLANE_DIR"
}
trap cleanup EXIT

# kube-apiserver audits the controllers' users (every ServiceAccount of peers-system) at the
# Metadata level, one event per request (ResponseComplete), and no one else.
cat >"$work/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts:peers-system"]
- level: None
EOF
admin=$(CONTROL_PLANE_AUDIT_POLICY=$work/audit-policy.yaml scripts/control-plane.sh start)
api_audit_log=$CONTROL_PLANE_DIR/audit.log
kube() { kubectl --kubeconfig "$admin" "$@"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# OpenBao dev server: KV v2 at secret/, a file audit device (OpenBao 2 enables audit devices only
# from configuration), as crates/testkit/src/openbao.rs starts it.
bao_port=$(free_port)
bao_addr=http://127.0.0.1:$bao_port
bao_token=root-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$work/bao"
audit_log=$work/bao/audit.log
printf 'audit "file" "to-file" {\n  options {\n    file_path = "%s"\n  }\n}\n' "$audit_log" >"$work/bao/audit.hcl"
HOME=$work/bao bao server -dev -config="$work/bao/audit.hcl" -dev-root-token-id="$bao_token" \
  -dev-listen-address="127.0.0.1:$bao_port" -dev-no-store-token >"$work/bao/server.log" 2>&1 </dev/null &
bao_pid=$!
for _ in $(seq 150); do
  curl -fsS "$bao_addr/v1/sys/health" >/dev/null 2>&1 && break
  kill -0 "$bao_pid" 2>/dev/null || { tail -20 "$work/bao/server.log" >&2; die "bao server exited"; }
  sleep 0.2
done
curl -fsS "$bao_addr/v1/sys/health" >/dev/null || die "bao server not healthy at $bao_addr"

# The CRDs: ESO's from its module (its kustomization.yaml left out), ours from crds/.
for f in "$eso_crds"/*_*.yaml crds/*.yaml; do
  kube apply --server-side -f "$f" >/dev/null
done
kube wait --for=condition=Established crd --all --timeout=60s >/dev/null

# Each controller run its own user: a ServiceAccount bound to cluster-admin, through a token
# kubeconfig (ESO's chart grants a narrower ClusterRole; the first leg does not model RBAC).
server=$(kube config view -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kube config view -o jsonpath='{.clusters[0].cluster.certificate-authority}')
kube create namespace peers-system >/dev/null
user_kubeconfig() { # NAME
  kube -n peers-system create serviceaccount "$1" >/dev/null
  kube create clusterrolebinding "peers-$1" --clusterrole=cluster-admin \
    --serviceaccount="peers-system:$1" >/dev/null
  local token
  token=$(kube -n peers-system create token "$1" --duration=24h)
  cat >"$work/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: real
  cluster: {server: "$server", certificate-authority: "$ca"}
users:
- name: $1
  user: {token: "$token"}
contexts:
- name: real
  context: {cluster: real, user: $1}
current-context: real
EOF
  echo "$work/$1.kubeconfig"
}

results=$work/results.jsonl
: >"$results"
max_n=$(tr ',' '\n' <<<"$sizes" | sort -n | tail -1)
python3 scripts/bench-peers.py seed --bao "$bao_addr" --token "$bao_token" --n "$max_n"

bench() { # N SYSTEM LABEL KIND ARGV...: a run as the ServiceAccount <SYSTEM>-<N>
  local n=$1 system=$2 label=$3 kind=$4 kubeconfig
  shift 4
  kubeconfig=$(user_kubeconfig "$system-$n")
  python3 scripts/bench-peers.py run --system "$system" --label "$label" --kind "$kind" --n "$n" \
    --admin "$admin" --kubeconfig "$kubeconfig" --bao "$bao_addr" --token "$bao_token" \
    --audit-log "$audit_log" --api-audit-log "$api_audit_log" \
    --user "system:serviceaccount:peers-system:$system-$n" \
    --out "$results" --log "$work/$system-$n.log" -- "$@"
}
for n in ${sizes//,/ }; do
  metrics=127.0.0.1:$(free_port)
  bench "$n" ss secretsync secretsync \
    "$operator" --concurrency 16 --metrics-bind-address "$metrics" --health-bind-address 0
  metrics=127.0.0.1:$(free_port)
  bench "$n" eso "ESO default" eso "$eso" --metrics-addr "$metrics"
  metrics=127.0.0.1:$(free_port)
  bench "$n" eso16 "ESO --concurrent 16" eso "$eso" --metrics-addr "$metrics" --concurrent 16
  if [ -n "$unthrottled" ]; then
    metrics=127.0.0.1:$(free_port)
    bench "$n" eso16u "ESO --concurrent 16, QPS unthrottled" eso "$eso" --metrics-addr "$metrics" \
      --concurrent 16 --client-qps 10000 --client-burst 20000
  fi
done

echo
echo "bench-peers: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
echo "versions: secretsync $("$operator" --version | awk '{print $2}') ($(git rev-parse --short HEAD)), External Secrets Operator $eso_version," \
  "Kubernetes $(kube version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'), $(bao version | cut -d' ' -f1-2)"
python3 scripts/bench-peers.py table "$results"
echo
echo "bench-peers: results and logs in $work"
