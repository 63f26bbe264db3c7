"""Migrate a PostgreSQL database into ./replica.duckdb and show the result (see scripts/demo.sh).

With a DSN (argument or REPLICATOR_SOURCE): check, migrate every table, status.  Without one:
``replicator demo`` (a throwaway PostgreSQL with pgbench, mirrored under load, then checked).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> None:
    print("$ replicator " + " ".join(a if "://" not in a else "<dsn>" for a in args), flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run([sys.executable, "-m", "replicator", *args], check=True, env=env)


def main() -> None:
    target = f"duckdb:///{Path.cwd() / 'replica.duckdb'}"
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("REPLICATOR_SOURCE")
    if not dsn:
        return cli("demo", "--target", target, "--scale", "2")
    cli("check", "--source", dsn)
    cli("migrate", "--source", dsn, "--target", target)
    cli("status", "--target", target)


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)
