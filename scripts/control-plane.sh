#!/usr/bin/env bash
# A real Kubernetes control plane for the tests: etcd, kube-apiserver, kube-controller-manager
# and kube-scheduler, with kwok as the kubelets of three Nodes, all built from the Go module
# proxy (controlplane/go.mod; kwok from its own module, controlplane/kwok/go.mod, so that it
# builds whatever the Kubernetes release) and run on loopback with RBAC on.
#
#   scripts/control-plane.sh build         build (or find cached) binaries; prints their directory
#   scripts/control-plane.sh start         build, then start all five; prints the kubeconfig path
#   scripts/control-plane.sh stop          stop exactly the processes `start` recorded
#   scripts/control-plane.sh env           print `export KUBECONFIG=...` lines for a running plane
#
# CONTROL_PLANE_AUDIT_POLICY (unset: no auditing) names an audit policy file for kube-apiserver;
# its log is then $CONTROL_PLANE_DIR/audit.log (JSON lines), as the peers bench counts requests.
# K8S_VERSION (default 1.37.2) picks the Kubernetes release; another release than controlplane/'s
# is built from a module generated the same way in the cache. CONTROL_PLANE_DIR (default
# .cache/control-plane/<version> in the checkout) holds the PKI, data, logs, pids and kubeconfig.
# Binaries are cached in ~/.cache/secretsync/k8s/<version>/, Go's module and build caches in
# ~/.cache/secretsync/go/, so a second build is instant.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DEFAULT_VERSION=1.37.2
K8S_VERSION=${K8S_VERSION:-$DEFAULT_VERSION}
BIN_DIR=$HOME/.cache/secretsync/k8s/$K8S_VERSION
STATE=${CONTROL_PLANE_DIR:-$ROOT/.cache/control-plane/$K8S_VERSION}
GO_TOOLS=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler)
# kwok is a client of the API server only: it is built at its own dependency versions
# (controlplane/kwok/go.mod), not the control plane's, which it does not compile against on
# every release (v0.8.0 against k8s.io/cri-client v0.35.x).
KWOK_MODULE=$ROOT/controlplane/kwok
READY_TIMEOUT=${CONTROL_PLANE_READY_TIMEOUT:-120}
PROGRAMS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

export GOMODCACHE=$HOME/.cache/secretsync/go/mod
export GOCACHE=$HOME/.cache/secretsync/go/build
export GOFLAGS=-trimpath
# Only the module proxy is reachable; never fall back to fetching from origin servers.
export GOPROXY=${GOPROXY:-https://proxy.golang.org}

die() {
  echo "control-plane: $*" >&2
  exit 1
}

# The module to build: controlplane/ for the pinned release, otherwise one generated beside the
# binaries the way controlplane/go.mod was made: require k8s.io/kubernetes vX and replace each
# staging module (a local path in Kubernetes' own go.mod) with its published v0.Y release.
module_dir() {
  if [ "$K8S_VERSION" = "$DEFAULT_VERSION" ]; then
    echo "$ROOT/controlplane"
    return
  fi
  local dir=$BIN_DIR/module staging=v0.${K8S_VERSION#1.}
  # (Each tool is named with the release's version: a bare path would mean @upgrade, the
  # newest k8s.io/kubernetes, against staging modules of the older release.)
  if [ ! -f "$dir/go.sum" ]; then
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    cp -r "$ROOT/controlplane/cmd" "$dir.tmp/"
    local kmod
    kmod=$(cd "$dir.tmp" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p') ||
      die "the module proxy does not serve k8s.io/kubernetes v$K8S_VERSION"
    {
      printf 'module secretsync.dev/controlplane\n\ngo %s\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' \
        "$(sed -n 's/^go //p' "$kmod")" "$K8S_VERSION"
      awk -v v="$staging" '/=> \.\/staging\/src\// {print "\t" $1 " => " $1 " " v}' "$kmod"
      printf ')\n'
    } >"$dir.tmp/go.mod"
    (cd "$dir.tmp" &&
      go get -tool "${GO_TOOLS[@]/%/@v$K8S_VERSION}" &&
      go mod tidy) >&2 || die "could not resolve the modules of Kubernetes $K8S_VERSION (see above)"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

cmd_build() {
  local missing=0 p
  for p in "${PROGRAMS[@]}"; do [ -x "$BIN_DIR/$p" ] || missing=1; done
  [ -d "$BIN_DIR/kwok-stages" ] || missing=1
  if [ "$missing" = 0 ]; then
    echo "$BIN_DIR"
    return
  fi
  command -v go >/dev/null || die "Go is not installed (need go >= 1.26 on PATH to build Kubernetes $K8S_VERSION)"
  mkdir -p "$BIN_DIR"
  local mod minor=${K8S_VERSION#1.}
  minor=${minor%%.*}
  mod=$(module_dir)
  local v ldflags="-s -w"
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $v.gitVersion=v$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  done
  # Build into a fresh directory next to the cache, then rename each binary into place: an
  # interrupted build leaves only the temp directory, never a half-written binary.
  local tmp start=$SECONDS
  tmp=$(mktemp -d "$BIN_DIR/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "control-plane: building Kubernetes $K8S_VERSION and etcd (cold: tens of minutes on 2 cores)" >&2
  (cd "$mod" && nice -n 10 go build -ldflags="$ldflags" -o "$tmp/" "${GO_TOOLS[@]}" ./cmd/etcd) >&2 ||
    die "building Kubernetes $K8S_VERSION failed (see the Go errors above)"
  (cd "$KWOK_MODULE" && nice -n 10 go build -o "$tmp/" sigs.k8s.io/kwok/cmd/kwok) >&2 ||
    die "building kwok failed (see the Go errors above)"
  # kwok's pods and nodes move through Stages it reads from config files; its module ships
  # them (kustomize/stage/...), used as they are: nodes initialised and heartbeating with a
  # Lease, pods Ready at once, Job pods completed, deleted pods released.
  local kwok_dir
  kwok_dir=$(cd "$KWOK_MODULE" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  mkdir -p "$tmp/kwok-stages"
  cp "$kwok_dir"/kustomize/stage/node/fast/node-initialize.yaml \
    "$kwok_dir"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    "$kwok_dir"/kustomize/stage/pod/fast/pod-{ready,complete,delete}.yaml "$tmp/kwok-stages/"
  rm -rf "$BIN_DIR/kwok-stages"
  mv "$tmp/kwok-stages" "$BIN_DIR/kwok-stages"
  # The programs last: the cache counts as built only when all of them are there.
  for p in "${PROGRAMS[@]}"; do mv "$tmp/$p" "$BIN_DIR/$p"; done
  rm -rf "$tmp"
  trap - EXIT
  echo "control-plane: built in $((SECONDS - start)) s" >&2
  echo "$BIN_DIR"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A client certificate signed by the plane's CA and a kubeconfig that uses it.
client_kubeconfig() { # NAME CN ORG
  local name=$1 cn=$2 org=$3 pki=$STATE/pki
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "/O=$org/CN=$cn" \
    -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -out "$pki/$name.crt" -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null
  cat >"$STATE/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: real
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $pki/$name.crt
    client-key: $pki/$name.key
contexts:
- name: real
  context: {cluster: real, user: $name}
current-context: real
EOF
}

make_pki() {
  local pki=$STATE/pki
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 30 \
    -subj "/CN=secretsync-test-ca" 2>/dev/null
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/apiserver.key" -subj "/CN=kube-apiserver" \
    -out "$pki/apiserver.csr" 2>/dev/null
  # 10.0.0.1 is the `kubernetes` Service's address in --service-cluster-ip-range.
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -out "$pki/apiserver.crt" -extfile <(printf '%s\n' \
      'extendedKeyUsage=serverAuth' \
      'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local') \
    2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  client_kubeconfig admin kubernetes-admin system:masters
  client_kubeconfig controller-manager system:kube-controller-manager system:kube-controller-manager
  client_kubeconfig scheduler system:kube-scheduler system:kube-scheduler
  # kwok plays every node's kubelet: it writes Nodes, their Leases and Pod status for all of
  # them, which the Node authorizer would refuse any single node's identity.
  client_kubeconfig kwok kwok system:masters
}

spawn() { # NAME PROGRAM ARGS...
  local name=$1
  shift
  "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

# Polls CHECK until it succeeds; fails, with the end of NAME's log, after READY_TIMEOUT
# seconds or as soon as NAME's process has exited.
wait_for() { # NAME WHAT CHECK...
  local name=$1 what=$2 deadline=$((SECONDS + READY_TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then
      tail -n 30 "$STATE/$name.log" >&2
      die "$name exited before $what (log: $STATE/$name.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$STATE/$name.log" >&2
      die "$name: not $what within ${READY_TIMEOUT}s (log: $STATE/$name.log)"
    fi
    sleep 0.2
  done
}

admin_get() { # PATH
  curl -fsS --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" --key "$STATE/pki/admin.key" \
    "https://127.0.0.1:$API_PORT$1"
}

kube() { "$KUBECTL" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }

# kwok's pod-ready Stage (on stdin), except for the Pods that the tests' apps cannot run: a Pod
# annotated `sandbox.secretsync.io/hang-rollout: "true"`, or `sandbox.secretsync.io/bad-secrets:
# "db-v2,..."` and referencing one of those Secrets, stays Pending and never Ready, as on the
# sandbox's simulator (crates/simulator, which also reads them from the Pod's workload).
never_ready_pods() {
  local hang='.metadata.annotations["sandbox.secretsync.io/hang-rollout"]'
  local bad='(.metadata.annotations["sandbox.secretsync.io/bad-secrets"] // "" | split(",")) as $bad
    | [(.spec.initContainers // [])[], (.spec.containers // [])[]
        | ((.env // [])[] | .valueFrom.secretKeyRef.name?), ((.envFrom // [])[] | .secretRef.name?)]
      + [(.spec.volumes // [])[] | .secret.secretName?, ((.projected.sources // [])[] | .secret.name?)]
      + [(.spec.imagePullSecrets // [])[] | .name]
    | any(. as $name | $name != null and ($bad | any(. == $name)))'
  awk -v hang="$hang" -v bad="$(echo "$bad" | tr -s ' \n' ' ')" '
    { print }
    /^    matchExpressions:$/ {
      gsub(/\x27/, "\x27\x27", bad)
      print "    - key: \x27" hang "\x27"
      print "      operator: \x27NotIn\x27"
      print "      values: [\x27true\x27]"
      print "    - key: \x27" bad "\x27"
      print "      operator: \x27NotIn\x27"
      print "      values: [\x27true\x27]"
    }'
}

cmd_start() {
  local bin
  bin=$(cmd_build)
  alive etcd && die "a control plane is already running from $STATE (run \`$0 stop\` first)"
  KUBECTL=$ROOT/.venv/bin/kubectl
  [ -x "$KUBECTL" ] || KUBECTL=$(command -v kubectl) ||
    die "kubectl not found (scripts/setup.sh installs it into .venv/)"
  command -v openssl >/dev/null || die "openssl not found (it makes the control plane's PKI)"
  rm -rf "$STATE"
  mkdir -p "$STATE"
  # Whatever failed, nothing that was started is left running.
  trap 'cmd_stop 2>/dev/null' EXIT
  local etcd_port etcd_peer_port
  etcd_port=$(free_port)
  etcd_peer_port=$(free_port)
  API_PORT=$(free_port)
  make_pki

  spawn etcd "$bin/etcd" --name=test --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="test=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync
  wait_for etcd "healthy" curl -fsS "http://127.0.0.1:$etcd_port/health"

  local pki=$STATE/pki audit=()
  if [ -n "${CONTROL_PLANE_AUDIT_POLICY:-}" ]; then
    [ -f "$CONTROL_PLANE_AUDIT_POLICY" ] || die "no audit policy at $CONTROL_PLANE_AUDIT_POLICY"
    audit=(--audit-policy-file="$CONTROL_PLANE_AUDIT_POLICY" --audit-log-path="$STATE/audit.log"
      --audit-log-format=json)
  fi
  # The admission plugins are those a cluster has by default (none disabled), plus
  # NodeRestriction, as kubeadm adds it. No endpoint reconciler: it refuses a loopback
  # advertise address, and nothing runs in the cluster to reach the `kubernetes` Service.
  spawn kube-apiserver "$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --cert-dir="$STATE/apiserver-certs" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none --profiling=false \
    "${audit[@]}"
  wait_for kube-apiserver "ready (/readyz)" admin_get /readyz

  # Client rate limits well above the defaults (20/s): the tests run many workloads at once,
  # and a throttled Deployment controller would fail their short rollout timeouts.
  spawn kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --secure-port=0 --leader-elect=false --use-service-account-credentials=true \
    --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --profiling=false \
    --kube-api-qps=200 --kube-api-burst=400
  spawn kube-scheduler "$bin/kube-scheduler" --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --secure-port=0 --leader-elect=false --profiling=false
  local stages=() f
  mkdir -p "$STATE/kwok-stages"
  for f in "$bin"/kwok-stages/*.yaml; do
    if [ "$(basename "$f")" = pod-ready.yaml ]; then
      never_ready_pods <"$f" >"$STATE/kwok-stages/pod-ready.yaml"
      f=$STATE/kwok-stages/pod-ready.yaml
    fi
    stages+=("--config=$f")
  done
  spawn kwok "$bin/kwok" --kubeconfig="$STATE/kwok.kubeconfig" "${stages[@]}" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=10.1.0.1 --cidr=10.2.0.0/16 --node-lease-duration-seconds=40 \
    --server-address="127.0.0.1:$(free_port)"

  # The controller-manager serves once it has made the `default` ServiceAccount, which Pods
  # need to pass admission.
  wait_for kube-controller-manager "serving (the default ServiceAccount made)" \
    kube get serviceaccount default -n default
  local i
  for i in 0 1 2; do
    kube apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux}
status:
  allocatable: {cpu: "32", memory: 128Gi, pods: "110"}
  capacity: {cpu: "32", memory: 128Gi, pods: "110"}
EOF
  done
  wait_for kwok "running the nodes (kwok-node-* Ready)" \
    kube wait --for=condition=Ready node -l type=kwok --timeout=1s
  alive kube-scheduler || die "kube-scheduler exited (log: $STATE/kube-scheduler.log)"
  trap - EXIT
  echo "control-plane: Kubernetes $K8S_VERSION on https://127.0.0.1:$API_PORT (state: $STATE)" >&2
  echo "$STATE/admin.kubeconfig"
}

cmd_stop() {
  local p pid deadline stopped=()
  # The reverse of the start order: the clients, then the server, then etcd.
  for p in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$STATE/$p.pid" ] || continue
    pid=$(cat "$STATE/$p.pid")
    if kill "$pid" 2>/dev/null; then
      stopped+=("$p")
      deadline=$((SECONDS + 20))
      while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/$p.pid"
  done
  echo "control-plane: stopped ${stopped[*]:-nothing} ($STATE)" >&2
}

cmd_env() {
  alive kube-apiserver || die "no control plane is running from $STATE (run \`$0 start\`)"
  echo "export KUBECONFIG=$STATE/admin.kubeconfig"
}

case "${1:-}" in
build) cmd_build ;;
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
*)
  echo "usage: $0 build|start|stop|env" >&2
  exit 2
  ;;
esac
