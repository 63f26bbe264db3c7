#!/usr/bin/env bash
# Static checks: bash scripts/lint.sh   (CI runs it before the tests, see .ci/run)
# ruff (lint and format), mypy (strict on the model, source/ and the apply phase) and the
# import-linter layering contracts, all configured in pyproject.toml.  Installs what is missing
# (scripts/setup.sh), then exits non-zero at the first check that fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

say "ruff check"
"$PYTHON" -m ruff check replicator tests bench scripts
say "ruff format --check"
"$PYTHON" -m ruff format --check replicator tests bench scripts
say "mypy"
"$PYTHON" -m mypy replicator
say "import-linter"
"$PYTHON" -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
