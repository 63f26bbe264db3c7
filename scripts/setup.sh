#!/usr/bin/env bash
# Set-up shared by scripts/test.sh and scripts/demo.sh:  source scripts/setup.sh
#
# Works on a fresh Debian/Ubuntu machine: installs what is missing, then runs
# `python3 -m pytest "$@"` from the repository root and exits with its status
# (pytest's "no tests collected", exit 5, counts as a failure).
#
#  * Debian packages `postgresql` + `postgresql-contrib` (initdb, pg_ctl,
#    postgres, pgbench) and `mariadb-server` (mariadbd, mariadb-install-db)
#    are installed with apt when their binaries are missing; needs root or
#    sudo.  Their system services are neither needed nor started: the tests
#    run private throwaway servers (tests/servers.py) on random ports.
#  * The package itself is installed editable with its test extras
#    (`pip install -e '.[test]'`) when it is not importable from this checkout
#    or pyproject.toml changed since the last install.  If the interpreter is
#    "externally managed" (PEP 668) a virtualenv in .venv is used instead.
#
# Environment:
#   PYTHON=...                     interpreter to use (default: python3, or .venv)
#   REPLICATOR_TEST_NO_INSTALL=1   never run apt-get / pip
#   REPLICATOR_PG_BINDIR=...       PostgreSQL server binaries to use
#   REPLICATOR_TEST_PG_DSN / REPLICATOR_TEST_PG_TARGET_DSN / REPLICATOR_TEST_MYSQL_URL
#                                  use existing servers instead (see tests/conftest.py)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'scripts/test.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

NO_INSTALL="${REPLICATOR_TEST_NO_INSTALL:-0}"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
fi

# ---------------------------------------------------------------- system packages

pg_bindir() {
  local d
  if [ -n "${REPLICATOR_PG_BINDIR:-}" ]; then echo "$REPLICATOR_PG_BINDIR"; return 0; fi
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  d="$(command -v initdb 2>/dev/null || true)"
  if [ -n "$d" ]; then dirname "$d"; return 0; fi
  return 1
}

have_postgres() {
  local d b
  d="$(pg_bindir)" || return 1
  for b in initdb pg_ctl postgres pgbench; do [ -x "$d/$b" ] || return 1; done
}

have_mariadb() {
  local d found_server="" found_install=""
  for d in ${REPLICATOR_MARIADB_BINDIR:-} ${PATH//:/ } /usr/sbin /usr/bin; do
    [ -x "$d/mariadbd" ] || [ -x "$d/mysqld" ] && found_server=1
    [ -x "$d/mariadb-install-db" ] || [ -x "$d/mysql_install_db" ] && found_install=1
  done
  [ -n "$found_server" ] && [ -n "$found_install" ]
}

APT_UPDATED=""
apt_install() {
  [ "$NO_INSTALL" = 1 ] && die "missing packages ($*) and REPLICATOR_TEST_NO_INSTALL=1"
  command -v apt-get >/dev/null 2>&1 || die "missing packages ($*) and no apt-get; install them manually"
  if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
    die "missing packages ($*): run as root, install sudo, or install them manually"
  fi
  local log policy_created=""
  log="$(mktemp /tmp/replicator-apt.XXXXXX)"
  # Keep apt from starting the packages' system services: the tests run
  # their own servers.  Only touch policy-rc.d if there is none already.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  say "installing Debian packages: $* (log: $log)"
  local rc=0
  {
    if [ -z "$APT_UPDATED" ]; then
      "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q && APT_UPDATED=1
    fi &&
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
  } >"$log" 2>&1 || rc=$?
  if [ -n "$policy_created" ]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log" >&2
    die "apt-get install $* failed (exit $rc)"
  fi
  rm -f "$log"
}

packages=()
have_postgres || packages+=(postgresql postgresql-contrib)
have_mariadb || packages+=(mariadb-server)
if [ ${#packages[@]} -gt 0 ]; then
  apt_install "${packages[@]}"
  have_postgres || die "PostgreSQL binaries (initdb, pg_ctl, postgres, pgbench) still not found"
  have_mariadb || die "MariaDB binaries (mariadbd, mariadb-install-db) still not found"
fi

# ---------------------------------------------------------------- Python package

STAMP="$ROOT/build/test-deps.stamp"
MODULES="replicator psycopg duckdb duckdb_engine sqlalchemy pyarrow pymysql yaml click pytest hypothesis"

stamp_value() {  # pyproject.toml hash + interpreter
  local py="$1"
  printf '%s %s\n' "$(sha256sum pyproject.toml | cut -d' ' -f1)" "$(command -v "$py" || echo "$py")"
}

python_ready() {  # modules importable, replicator from THIS checkout, stamp current
  local py="$1"
  command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || return 1
  (cd / && "$py" - "$ROOT" $MODULES >/dev/null 2>&1 <<'EOF'
import importlib.util, os, sys
root, names = sys.argv[1], sys.argv[2:]
for n in names:
    if importlib.util.find_spec(n) is None:
        sys.exit(1)
spec = importlib.util.find_spec("replicator")
here = os.path.realpath(os.path.join(root, "replicator"))
locs = [os.path.realpath(p) for p in (spec.submodule_search_locations or [])]
sys.exit(0 if here in locs else 1)
EOF
  ) || return 1
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_value "$py")" ]
}

pip_install() {
  local py="$1" log rc=0
  log="$(mktemp /tmp/replicator-pip.XXXXXX)"
  say "installing the package and test dependencies with $py -m pip (log: $log)"
  PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$py" -m pip install -q -e ".[test]" >"$log" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    mkdir -p "$(dirname "$STAMP")" && stamp_value "$py" >"$STAMP"
    rm -f "$log"
    return 0
  fi
  if grep -q "externally-managed-environment" "$log"; then return 2; fi
  tail -n 40 "$log" >&2
  return 1
}

ensure_python() {
  if [ -n "${PYTHON:-}" ]; then
    python_ready "$PYTHON" && return 0
    [ "$NO_INSTALL" = 1 ] && return 0
    pip_install "$PYTHON" || die "pip install into $PYTHON failed"
    return 0
  fi
  if [ -x "$ROOT/.venv/bin/python" ] && python_ready "$ROOT/.venv/bin/python"; then
    PYTHON="$ROOT/.venv/bin/python"; return 0
  fi
  PYTHON=python3
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip python3-venv
  python_ready python3 && return 0
  [ "$NO_INSTALL" = 1 ] && return 0
  if ! python3 -m pip --version >/dev/null 2>&1; then
    python3 -m ensurepip --upgrade >/dev/null 2>&1 || apt_install python3-pip python3-venv
  fi
  local rc=0
  pip_install python3 || rc=$?
  [ "$rc" -eq 0 ] && return 0
  [ "$rc" -eq 2 ] || die "pip install -e '.[test]' failed"
  # PEP 668 "externally managed" interpreter: use a virtualenv in .venv
  say "python3 is externally managed; using a virtualenv in .venv"
  if ! python3 -m venv "$ROOT/.venv" >/dev/null 2>&1; then
    apt_install python3-venv
    python3 -m venv "$ROOT/.venv" >/dev/null || die "could not create .venv"
  fi
  PYTHON="$ROOT/.venv/bin/python"
  pip_install "$PYTHON" || die "pip install -e '.[test]' into .venv failed"
}

ensure_python

