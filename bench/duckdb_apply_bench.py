"""DuckDB target rates: snapshot load (load_copy vs DuckDB's plain read_csv) and pgbench-shaped apply.

    python bench/duckdb_apply_bench.py [--scale 10] [--tx 50000] [--batch 500 2000 10000]

Starts a throwaway PostgreSQL (tests/servers.py), runs ``pgbench -i -s SCALE`` (100k accounts per
unit), then:

* copy: COPY pgbench_accounts out once in the target's CSV format into a file, and time
  ``DuckDBTarget.load_copy`` fed with 8 MB chunks of that file (load only), against DuckDB's own
  ``read_csv`` of the same file (auto-detected, into a table without key), and the end-to-end copy
  (COPY out of PostgreSQL → load_copy) as the pipeline runs it;
* apply: TX pgbench transactions as RowChanges (UPDATE accounts/tellers/branches by key with full
  new tuples, INSERT history), applied in batches of BATCH transactions: one target transaction
  per batch (open file, apply per table, commit, close), so the rate includes the per-batch cost.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from replicator.model import ChangeKind, RowChange, TableMapping  # noqa: E402
from replicator.source import catalog, snapshot  # noqa: E402
from replicator.target.duckdb import DuckDBTarget  # noqa: E402
from tests.servers import PostgresServer, pgbench_init  # noqa: E402


def mappings(dsn: str) -> dict[str, TableMapping]:
    with snapshot.connect(dsn) as c:
        tables = [t for t in catalog.list_tables(c) if t[2].startswith("pgbench_")]
        return {s.name: TableMapping(s, s.name) for s in catalog.load_schemas(c, tables)}


def copy_all(dsn: str, target: DuckDBTarget, ms: dict[str, TableMapping]) -> None:
    with snapshot.snapshot_connection(dsn, None) as sc, target.connect() as conn:
        for m in ms.values():
            target.ensure_table(conn, m)
            q = snapshot.copy_query(m.view, target.copy_expressions(m), target.copy_options)
            target.load_copy(conn, m, snapshot.copy_bytes(sc, q))


def file_chunks(path: str, size: int = 8 << 20):
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def bench_copy(dsn: str, tmp: str, m: TableMapping, rows: int) -> None:
    csv = os.path.join(tmp, "accounts.csv")
    target = DuckDBTarget(f"duckdb:///{tmp}/copy.duckdb")
    with snapshot.snapshot_connection(dsn, None) as sc, open(csv, "wb") as f:
        for chunk in snapshot.copy_bytes(
            sc, snapshot.copy_query(m.view, target.copy_expressions(m), target.copy_options)
        ):
            f.write(chunk)
    print(f"copy: {rows} rows, CSV {os.path.getsize(csv) / 1e6:.0f} MB")
    for spool in (8 << 20, 16 << 20, 64 << 20):
        target.load_file_bytes = spool
        with target.connect() as conn:
            target.ensure_table(conn, m)
            target.clear(conn, m)
        t0 = time.perf_counter()
        with target.connect() as conn:
            n = target.load_copy(conn, m, file_chunks(csv))
        dt = time.perf_counter() - t0
        assert n == rows, (n, rows)
        print(
            f"  load_copy, {spool >> 20:2} MB spool files, into PK table: {dt:6.2f} s  {rows / dt:10,.0f} rows/s"
        )
    for what, sql in [
        ("read_csv, new table, no key", "CREATE TABLE plain AS SELECT * FROM read_csv('{f}')"),
        (
            "read_csv into PK table",
            "CREATE TABLE pk (aid INTEGER PRIMARY KEY, bid INTEGER, abalance INTEGER, filler VARCHAR);"
            "INSERT INTO pk SELECT * FROM read_csv('{f}')",
        ),
    ]:
        db = duckdb.connect(f"{tmp}/plain_{len(what)}.duckdb")
        t0 = time.perf_counter()
        db.execute(sql.format(f=csv))
        db.close()
        dt = time.perf_counter() - t0
        print(f"  DuckDB alone, {what:28}: {dt:6.2f} s  {rows / dt:10,.0f} rows/s")
    target.dispose()
    fresh = DuckDBTarget(f"duckdb:///{tmp}/e2e.duckdb")
    t0 = time.perf_counter()
    with snapshot.snapshot_connection(dsn, None) as sc, fresh.connect() as conn:
        fresh.ensure_table(conn, m)
        q = snapshot.copy_query(m.view, fresh.copy_expressions(m), fresh.copy_options)
        n = fresh.load_copy(conn, m, snapshot.copy_bytes(sc, q))
    dt = time.perf_counter() - t0
    print(
        f"  end to end: PostgreSQL COPY → load_copy into a new PK table: {dt:6.2f} s  {n / dt:10,.0f} rows/s"
    )
    fresh.dispose()


def pgbench_changes(ms: dict[str, TableMapping], scale: int, tx: int, seed: int = 1) -> list[list[tuple]]:
    """Per transaction: (table, RowChange) x 4, like pgbench's tpcb-like script."""
    rnd = random.Random(seed)
    filler84 = " " * 84
    out = []
    for _i in range(tx):
        aid, tid, bid = rnd.randint(1, 100000 * scale), rnd.randint(1, 10 * scale), rnd.randint(1, scale)
        delta = rnd.randint(-5000, 5000)
        mk = lambda t, new, kind=ChangeKind.UPDATE: (t, RowChange(kind, f"public.{t}", new=new))  # noqa: E731
        out.append(
            [
                mk("pgbench_accounts", (str(aid), str((aid - 1) // 100000 + 1), str(delta), filler84)),
                mk("pgbench_tellers", (str(tid), str((tid - 1) // 10 + 1), str(delta), None)),
                mk("pgbench_branches", (str(bid), str(delta), None)),
                mk(
                    "pgbench_history",
                    (str(tid), str(bid), str(aid), str(delta), "2024-01-02 03:04:05.123456", None),
                    ChangeKind.INSERT,
                ),
            ]
        )
    return out


def bench_apply(
    tmp: str, dsn: str, ms: dict[str, TableMapping], scale: int, tx: int, batches: list[int]
) -> None:
    txs = pgbench_changes(ms, scale, tx)
    order = ["pgbench_accounts", "pgbench_tellers", "pgbench_branches", "pgbench_history"]
    for batch in batches:
        url = f"duckdb:///{tmp}/apply_{batch}.duckdb"
        target = DuckDBTarget(url)
        copy_all(dsn, target, ms)
        t_apply, t0 = 0.0, time.perf_counter()
        for start in range(0, tx, batch):
            per_table: dict[str, list] = {t: [] for t in order}
            for changes in txs[start : start + batch]:
                for t, ch in changes:
                    per_table[t].append(ch)
            with target.connect() as conn:
                a0 = time.perf_counter()
                for t in order:
                    target.apply(conn, ms[t], per_table[t])
                t_apply += time.perf_counter() - a0
        dt = time.perf_counter() - t0
        n = 4 * tx
        print(
            f"apply: batch {batch:6} tx ({4 * batch:6} changes): {n / dt:10,.0f} changes/s with "
            f"open+commit+close per batch, {n / t_apply:10,.0f} changes/s apply only"
        )
        target.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--tx", type=int, default=50000)
    ap.add_argument("--batch", type=int, nargs="+", default=[500, 2000, 10000])
    ap.add_argument("--skip-copy", action="store_true")
    a = ap.parse_args()
    with PostgresServer() as pg, tempfile.TemporaryDirectory() as tmp:
        dsn = pg.create_database("bench")
        pgbench_init(dsn, scale=a.scale)
        ms = mappings(dsn)
        if not a.skip_copy:
            bench_copy(dsn, tmp, ms["pgbench_accounts"], 100000 * a.scale)
        bench_apply(tmp, dsn, ms, a.scale, a.tx, a.batch)


if __name__ == "__main__":
    main()
