"""Benchmark: migrate and change-apply rates against the physical limits measured in the same run.

Usage:  python bench/bench_migrate.py [--scale 10] [--transactions 50000] [--target duckdb|sqlite|…]

Starts a throwaway PostgreSQL (wal_level=logical) from the installed binaries, loads pgbench at
``--scale`` and prints, in one run:
  1. source ``COPY pgbench_accounts TO STDOUT`` rate (raw bytes, no parsing): limit A
  2. DuckDB ``read_csv`` rate of the same rows from a local file: limit B
  3. ``replicator migrate`` rows/s into the target, and its ratio to min(A, B)
  4. change-apply rate for a backlog of ``--transactions`` pgbench transactions (row changes/s)
  5. peak RSS of the replicator processes
Not a test: it prints figures; README.md quotes them with this command.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import psycopg  # noqa: E402

from tests.servers import MariaDBServer, PostgresServer, pgbench_init, pgbench_run  # noqa: E402


def copy_rate(dsn: str, path: Path) -> tuple[int, float]:
    """Rows and seconds for COPY … TO STDOUT (CSV), bytes written to ``path``."""
    t0 = time.perf_counter()
    n = 0
    with psycopg.connect(dsn) as c, open(path, "wb") as f:
        with c.cursor().copy("COPY pgbench_accounts TO STDOUT (FORMAT csv)") as cp:
            for chunk in cp:
                f.write(chunk)
                n += bytes(chunk).count(b"\n")
    return n, time.perf_counter() - t0


def read_csv_rate(path: Path, tmp: Path) -> tuple[int, float]:
    db = duckdb.connect(str(tmp / "limit.duckdb"))
    t0 = time.perf_counter()
    db.execute(
        f"CREATE TABLE a AS SELECT * FROM read_csv('{path}', header=false, "
        "columns={'aid':'INTEGER','bid':'INTEGER','abalance':'INTEGER','filler':'VARCHAR'})"
    )
    dt = time.perf_counter() - t0
    n = db.execute("SELECT count(*) FROM a").fetchone()[0]
    db.close()
    return n, dt


def run_replicator(*args: str) -> tuple[str, float, int]:
    """Run the CLI; returns (stdout, seconds, peak RSS of children in MB so far)."""
    t0 = time.perf_counter()
    cp = subprocess.run([sys.executable, "-m", "replicator", *args], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if cp.returncode != 0:
        sys.exit(f"replicator {args[0]} failed:\n{cp.stderr[-3000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return cp.stdout, dt, rss


def target_url(kind: str, tmp: Path, maria) -> str:
    if kind == "duckdb":
        return f"duckdb:///{tmp}/bench.duckdb"
    if kind == "sqlite":
        return f"sqlite:///{tmp}/bench.sqlite"
    if kind == "mysql":
        return maria.create_database("bench")
    raise SystemExit(f"unknown target {kind}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--transactions", type=int, default=50_000)
    ap.add_argument("--target", default="duckdb")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, PostgresServer(name="bench") as pg:
        tmp = Path(d)
        maria = MariaDBServer(name="bench-maria") if a.target == "mysql" else None
        pg.create_database("bench")
        dsn = pg.dsn_for("bench")
        pgbench_init(dsn, scale=a.scale)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        rows, t_copy = copy_rate(dsn, tmp / "accounts.csv")
        _, t_csv = read_csv_rate(tmp / "accounts.csv", tmp)
        limit = min(rows / t_copy, rows / t_csv)
        url = target_url(a.target, tmp, maria)
        out, t_mig, _ = run_replicator("migrate", "--source", dsn, "--target", url, "--keep-slot")
        total_rows = 100_000 * a.scale + 10 * a.scale + a.scale
        phase_rate = float(re.search(r"\(([0-9.]+) rows/s\)", out).group(1))
        clients = 4
        pgbench_run(
            dsn, transactions=a.transactions // clients, clients=clients, builtin="tpcb-like", no_vacuum=True
        )
        changes = 4 * a.transactions
        out2, t_apply, rss = run_replicator("migrate", "--source", dsn, "--target", url, "--keep-slot")
        if maria:
            maria.cleanup()
        report = {
            "scale": a.scale,
            "target": a.target,
            "source_copy_rows_per_s": round(rows / t_copy),
            "duckdb_read_csv_rows_per_s": round(rows / t_csv),
            "migrate_rows_per_s": round(total_rows / t_mig),
            "migrate_seconds": round(t_mig, 2),
            "migrate_vs_slower_limit": round(total_rows / t_mig / limit, 2),
            "copy_phase_rows_per_s": round(phase_rate),
            "copy_phase_vs_slower_limit": round(phase_rate / limit, 2),
            "backlog_transactions": a.transactions,
            "backlog_row_changes": changes,
            "apply_seconds_incl_start": round(t_apply, 2),
            "apply_row_changes_per_s": round(changes / t_apply),
            "peak_rss_mb": rss,
        }
        print(json.dumps(report, indent=2))
        print(
            f"\nmigrate {report['migrate_rows_per_s']:,} rows/s = {report['migrate_vs_slower_limit']}x "
            f"the slower limit (COPY out {report['source_copy_rows_per_s']:,}/s, read_csv "
            f"{report['duckdb_read_csv_rows_per_s']:,}/s); copy phase {report['copy_phase_rows_per_s']:,} "
            f"rows/s = {report['copy_phase_vs_slower_limit']}x; apply {report['apply_row_changes_per_s']:,} "
            f"row changes/s; peak RSS {rss} MB"
        )


if __name__ == "__main__":
    main()
