#!/usr/bin/env bash
# Build the runtime virtualenv of the container image:  bash scripts/image-build.sh VENV_DIR
#
# The Dockerfile's builder stage runs exactly this (RUN bash scripts/image-build.sh /opt/venv) and
# copies only VENV_DIR into the runtime image; tests/integration/test_container.py runs the same
# line into a temp dir and then the venv's `replicator`, so the steps are checked without Docker.
#
#  * VENV_DIR must not exist yet (or be empty): the venv is created there with $PYTHON
#    (default python3, Python >= 3.10).  It is not relocatable: build it at the path it runs from.
#  * The package is installed NON-editable from this checkout, without the test extras.  The
#    checkout is not written to: pyproject.toml, README.md and replicator/ are copied to a temp
#    dir first, so a stale build/ (setuptools keeps modules deleted from the source there) or an
#    egg-info of an editable install never reaches the venv.
#  * pip's own settings apply (PIP_NO_CACHE_DIR=1 in the Dockerfile; a local run may use the cache).
set -euo pipefail

venv="${1:-}"
if [ -z "$venv" ] || [ $# -ne 1 ]; then
  echo "usage: bash scripts/image-build.sh VENV_DIR" >&2
  exit 2
fi
if [ -e "$venv" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
  echo "scripts/image-build.sh: $venv exists and is not empty; give a new directory" >&2
  exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

src="$(mktemp -d "${TMPDIR:-/tmp}/replicator-image-src.XXXXXX")"
trap 'rm -rf "$src"' EXIT
tar -C "$root" --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md replicator |
  tar -C "$src" -xf -

"$python" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
"$venv/bin/python" -m pip install --quiet "$src"
"$venv/bin/replicator" --version
