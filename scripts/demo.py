"""Migrate a PostgreSQL database into ./replica.duckdb and show the result (see scripts/demo.sh)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cli(*args: str) -> None:
    print("$ replicator " + " ".join(a if "://" not in a else "<dsn>" for a in args), flush=True)
    subprocess.run([sys.executable, "-m", "replicator", *args], check=True)


def migrate(dsn: str) -> None:
    target = f"duckdb:///{Path.cwd() / 'replica.duckdb'}"
    cli("check", "--source", dsn)
    cli("migrate", "--source", dsn, "--target", target)
    cli("status", "--target", target)


def main() -> None:
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("REPLICATOR_SOURCE")
    if dsn:
        return migrate(dsn)
    from tests.servers import PostgresServer, pgbench_init, pgbench_run
    with PostgresServer(name="demo") as pg:
        pg.create_database("demo")
        dsn = pg.dsn_for("demo")
        print(f"started a throwaway PostgreSQL on port {pg.port}; loading pgbench (scale 2)", flush=True)
        pgbench_init(dsn, scale=2)
        subprocess.run(["psql", dsn, "-qc", "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"], check=True)
        pgbench_run(dsn, transactions=500, clients=2, builtin="tpcb-like")
        migrate(dsn)


if __name__ == "__main__":
    main()
