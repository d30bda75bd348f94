#!/usr/bin/env bash
# The end-to-end demo. Until the operator lands this prints the journey it will run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cat <<'PLAN'
secretsync demo (coming with the reconciler):
  1. start the sandbox API server and the fake backend
  2. apply crds/ and examples/fake/ → Secret db-v1 appears
  3. change the backend value → db-v2, the Deployment rolls to db-v2, db-v1 is pruned after the rollout
  4. kubectl secretsync rotate db → db-v3
  5. kubectl secretsync revoke db --version 3 → db-v4 made, rollout, db-v3 deleted
PLAN
