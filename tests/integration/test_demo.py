"""`replicator demo` end to end: its own throwaway PostgreSQL (removed afterwards), and --source."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import psycopg

from tests.integration.test_migrate import PGBENCH, slots_and_publications

ROOT = Path(__file__).resolve().parents[2]


def demo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cp = subprocess.run(
        [sys.executable, "-m", "replicator", "demo", "--seconds", "1", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    return cp


def duckdb_counts(path: Path) -> dict:
    with duckdb.connect(str(path), read_only=True) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in PGBENCH}


def test_demo_on_a_throwaway_server(tmp_path):
    cp = demo(cwd=tmp_path)
    out = cp.stdout
    m = re.search(r"started a throwaway PostgreSQL \S+ on 127\.0\.0\.1:\d+ \(data in (\S+),", out)
    assert m, out
    assert not Path(m.group(1)).exists(), "the throwaway server's directory is left behind"
    for step in (
        "$ replicator check",
        "ok: ready to replicate",
        "$ replicator mirror",
        "mirror stopped:",
        "$ replicator status",
        "applied LSN: 0/",
        "$ replicator migrate",
        "caught up to 0/",
        "every table matches",
        "removed the throwaway PostgreSQL",
    ):
        assert step in out, f"{step!r} missing from:\n{out}"
    counts = duckdb_counts(tmp_path / "demo.duckdb")  # the default target
    assert counts["pgbench_accounts"] == 100_000 and counts["pgbench_branches"] == 1
    assert counts["pgbench_history"] > 0  # the workload's transactions arrived
    assert re.search(
        rf"public\.pgbench_history +{counts['pgbench_history']:,} → +"
        rf"{counts['pgbench_history']:,} pgbench_history +ok",
        out,
    ), out


def test_demo_with_source_leaves_no_slot(source_db, tmp_path):
    target = tmp_path / "x.duckdb"
    cp = demo("--source", source_db, "--target", f"duckdb:///{target}", "--no-progress", cwd=tmp_path)
    assert "every table matches" in cp.stdout and "throwaway" not in cp.stdout
    assert slots_and_publications(source_db) == ([], [])
    with psycopg.connect(source_db) as c:
        history = c.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]
    assert duckdb_counts(target)["pgbench_history"] == history > 0
    assert not (tmp_path / "demo.duckdb").exists()
