#!/usr/bin/env bash
# The main job in one command:  bash scripts/demo.sh [SOURCE_DSN]
# Installs what is missing (scripts/setup.sh).  Without SOURCE_DSN (or REPLICATOR_SOURCE) it starts a
# throwaway PostgreSQL from the installed binaries and loads pgbench into it; then it migrates every
# table into the embedded DuckDB default (./replica.duckdb) and prints status.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$PYTHON" "$ROOT/scripts/demo.py" "$@"
