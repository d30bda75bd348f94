#!/usr/bin/env bash
# The AWS path end to end: a moto server (the AWS Secrets Manager emulator), the sandbox API
# server, the operator binary and real kubectl, all on 127.0.0.1 and stopped when the script
# exits. Shows examples/aws/ syncing (property, extract, find), a new value in AWS becoming
# a new version, and a rotation.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/demo-lib.sh

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bold "starting moto on 127.0.0.1:$port"
moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/moto-api/" >/dev/null && break; sleep 0.1; done
aws() { # action json: one Secrets Manager call, as the AWS CLI would make it
  curl -sf "http://127.0.0.1:$port/" -H "X-Amz-Target: secretsmanager.$1" \
    -H 'Content-Type: application/x-amz-json-1.1' \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0' \
    -d "$2"
  echo
}
run aws CreateSecret '{"Name":"app/db","SecretString":"{\"db\":{\"user\":\"app\",\"password\":\"correct-horse-1\"}}"}'
run aws CreateSecret '{"Name":"app/config","SecretString":"{\"host\":\"db.internal\",\"port\":\"5432\"}"}'
run aws CreateSecret '{"Name":"app/payments/stripe","SecretString":"sk-demo","Tags":[{"Key":"team","Value":"payments"}]}'
run aws CreateSecret '{"Name":"app/payments/other-team","SecretString":"not ours"}'

bold "starting the sandbox API server and the operator"
start_sandbox
start_operator

bold "1. the AWS store (moto's endpoint) and a SecretSync with property, extract and find"
sed "s#http://127.0.0.1:5000#http://127.0.0.1:$port#" examples/aws/store.yaml | run kubectl apply -n demo -f -
run kubectl apply -n demo -f examples/aws/credentials-secret.yaml -f examples/aws/secretsync.yaml
run kubectl wait -n demo --for=condition=Ready secretstore/aws --timeout=60s
run kubectl wait -n demo --for=condition=Ready secretsync/payments --timeout=60s
run kubectl get -n demo secretstores
run kubectl secretsync status payments -n demo
printf 'keys of payments-v1: '
kubectl get -n demo secret payments-v1 -o go-template='{{range $k, $v := .data}}{{$k}} {{end}}'
echo

bold "2. the password changes in AWS → payments-v2 at the next refresh (here: asked for at once)"
run aws PutSecretValue '{"SecretId":"app/db","SecretString":"{\"db\":{\"user\":\"app\",\"password\":\"correct-horse-2\"}}"}'
run kubectl patch -n demo secretsync payments --type merge -p '{"spec":{"refreshInterval":"2s"}}'
kubectl wait -n demo --for=jsonpath='{.status.currentVersion}'=2 secretsync/payments --timeout=60s >/dev/null
run kubectl secretsync status payments -n demo

bold "3. on-call rotates: a fresh read bypassing every cache → payments-v3"
run kubectl secretsync rotate payments -n demo --wait --timeout 2m
run kubectl get -n demo secrets -l secretsync.io/sync=payments \
  -o custom-columns='SECRET:.metadata.name,VERSION:.metadata.labels.secretsync\.io/version,SOURCES:.metadata.annotations.secretsync\.io/source-versions'

bold "done: moto, the sandbox and the operator stop now"
