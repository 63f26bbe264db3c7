#!/usr/bin/env bash
# Run the test-suite:  bash scripts/test.sh [pytest args]
# Installs what is missing (see scripts/setup.sh), then runs pytest from the repository root and
# exits with its status (pytest's "no tests collected", exit 5, counts as a failure).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# ---------------------------------------------------------------- run pytest

rc=0
"$PYTHON" -m pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  say "pytest collected no tests; treating that as a failure"
  exit 1
fi
exit "$rc"
