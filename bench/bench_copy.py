"""Benchmark (issue 12): the snapshot copy against the machine's limits, measured in the same run.

Usage:  python bench/bench_copy.py [--scales 10,50] [--targets duckdb,pg,mysql,sqlite] [--repeat 1]

For each scale it starts a throwaway PostgreSQL (wal_level=logical) and, when ``mysql`` is a target,
a MariaDB, loads ``pgbench -i -s SCALE`` and times the 100,000 x SCALE rows of ``pgbench_accounts``:
  1. source limit: ``psql -c "COPY pgbench_accounts TO STDOUT (FORMAT csv)" > /dev/null``
  2. asyncpg ``copy_from_query(..., format='csv')`` into a callback that drops the data
  3. DuckDB's own load: ``read_csv`` of that CSV + ``ALTER TABLE ADD PRIMARY KEY``
  4. peer: a whole python process of DuckDB 1.5.5 + its postgres extension (``CREATE TABLE AS SELECT``
     from the attached source, then the primary key); venv cached in bench/.peer-venv (git-ignored)
  5. PostgreSQL's own load: ``psql \\copy FROM`` the CSV into a table of a second database, primary
     key added after the load (the reference of the ratio; the key-before figure is printed too)
  6. MariaDB's own load: ``LOAD DATA LOCAL INFILE`` into an InnoDB table with the primary key
  7. SQLite's own load: ``csv`` reader + ``executemany`` into a table with the primary key, one
     transaction (the replicator's pragmas: WAL, synchronous=NORMAL)
  8. ``replicator migrate --tables public.pgbench_accounts`` into each target: whole-process seconds,
     the copy phase rows/s it prints, and that child's peak RSS (GNU time %M, per child)
  9. fixed cost: ``replicator migrate`` of 5 tables x 100 rows into DuckDB (median of 3 or more)
Every figure is the median of ``--repeat`` runs.  Not a test: it prints figures, ratios against
the aims of issue 12, and a final JSON dump of everything.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import duckdb  # noqa: E402

from tests.servers import MariaDBServer, PostgresServer, find_pg_bindir, pgbench_init  # noqa: E402

PEER_VERSION = "1.5.5"
PEER_VENV = ROOT / "bench" / ".peer-venv"
PEER_SCRIPT = """
import sys, duckdb
ext, db, conninfo = sys.argv[1:4]
c = duckdb.connect(db)
c.execute(f"LOAD '{ext}'")
c.execute(f"ATTACH '{conninfo}' AS pg (TYPE postgres, READ_ONLY)")
c.execute("CREATE TABLE accounts AS SELECT * FROM pg.public.pgbench_accounts")
c.execute("ALTER TABLE accounts ADD PRIMARY KEY (aid)")
c.close()
"""
COPY_LINE = re.compile(r"(\d+) rows copied in ([0-9.]+)s \(([0-9.]+) rows/s\)")
ACCOUNTS_COLS = "aid INTEGER NOT NULL, bid INTEGER, abalance INTEGER, filler CHAR(84)"
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_child(argv, *, stdout=None, timeout: float = 7200) -> tuple[float, int | None, str]:
    """Run ``argv``: (wall seconds, its peak RSS in MB, its stderr, and stdout unless ``stdout`` names a
    file for it).  The RSS is GNU time's %M: wait4/RUSAGE_CHILDREN on a child spawned from this
    process would report at least this process's own RSS (vfork + exec keeps its high-water mark)."""
    with (
        tempfile.TemporaryFile("w+") as err,
        open(stdout or os.devnull, "wb") as sink,
        tempfile.NamedTemporaryFile("r", suffix=".rss") as rss,
    ):
        wrap = [TIME, "-f", "%M", "-o", rss.name] if TIME else []
        t0 = time.perf_counter()
        p = subprocess.Popen(
            wrap + [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=sink if stdout else err,
            stderr=err,
            start_new_session=True,
        )
        try:
            p.wait(timeout)
        except BaseException:  # timeout, ^C: the whole child group goes
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise
        dt = time.perf_counter() - t0
        err.seek(0)
        text = err.read()
        words = rss.read().split()
    if p.returncode != 0:
        raise RuntimeError(f"{Path(str(argv[0])).name} exit {p.returncode}: {text.strip()[-2000:]}")
    return dt, int(words[-1]) // 1024 if words and words[-1].isdigit() else None, text


def median_of(n: int, fn, rows: int) -> dict:
    """Run ``fn`` (seconds, or a dict with "seconds") n times: the median of every numeric field,
    rows_per_s = rows / seconds, and the seconds of each run when n > 1."""
    runs = []
    for _ in range(n):
        v = fn()
        v = v if isinstance(v, dict) else {"seconds": v}
        runs.append({**v, "rows_per_s": rows / v["seconds"]})
    res = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, (int, float)):
            m = statistics.median(r[k] for r in runs)
            res[k] = round(m) if k.endswith("per_s") else round(m, 3)
    if n > 1:
        res["samples_s"] = [round(r["seconds"], 3) for r in runs]
    return res


def attempt(fn) -> dict:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a figure that cannot be had is reported, the rest goes on
        return {"error": f"{type(e).__name__}: {e}"}


# ------------------------------------------------------------------ source and loaders


def psql_argv(dsn: str, *commands: str) -> list:
    argv = [find_pg_bindir() / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn]
    for c in commands:
        argv += ["-c", c]
    return argv


def source_limit(dsn: str, out: str = os.devnull) -> float:
    return run_child(psql_argv(dsn, "COPY pgbench_accounts TO STDOUT (FORMAT csv)"), stdout=out)[0]


async def _asyncpg_read(dsn: str) -> dict:
    conn = await asyncpg.connect(dsn)
    nbytes = 0

    async def sink(chunk: bytes) -> None:
        nonlocal nbytes
        nbytes += len(chunk)

    try:
        t0 = time.perf_counter()
        await conn.copy_from_query("SELECT * FROM pgbench_accounts", output=sink, format="csv")
        dt = time.perf_counter() - t0
    finally:
        await conn.close()
    return {"seconds": dt, "mb_per_s": nbytes / dt / 1e6}


def duckdb_load(csv_path: Path, tmp: Path) -> float:
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        t0 = time.perf_counter()
        db = duckdb.connect(f"{d}/own.duckdb")
        db.execute(
            f"CREATE TABLE accounts AS SELECT * FROM read_csv('{csv_path}', header=false, "
            "columns={'aid':'INTEGER','bid':'INTEGER','abalance':'INTEGER','filler':'VARCHAR'})"
        )
        db.execute("ALTER TABLE accounts ADD PRIMARY KEY (aid)")
        db.close()
        return time.perf_counter() - t0


def pg_load(dsn: str, csv_path: Path, key_after: bool) -> float:
    t = f"accounts_{uuid.uuid4().hex[:8]}"
    pk = "" if key_after else ", PRIMARY KEY (aid)"
    cmds = [f"CREATE TABLE {t} ({ACCOUNTS_COLS}{pk})", f"\\copy {t} FROM '{csv_path}' (FORMAT csv)"]
    if key_after:
        cmds.append(f"ALTER TABLE {t} ADD PRIMARY KEY (aid)")
    try:
        return run_child(psql_argv(dsn, *cmds))[0]
    finally:
        run_child(psql_argv(dsn, f"DROP TABLE IF EXISTS {t}"))


def mariadb_load(maria: MariaDBServer, csv_path: Path, rows: int) -> float:
    name = f"own_{uuid.uuid4().hex[:8]}"
    maria.create_database(name)
    conn = maria.connect(name)  # local_infile=True
    try:
        with conn.cursor() as cur:
            t0 = time.perf_counter()
            cur.execute(f"CREATE TABLE accounts ({ACCOUNTS_COLS}, PRIMARY KEY (aid)) ENGINE=InnoDB")
            n = cur.execute(
                f"LOAD DATA LOCAL INFILE '{csv_path}' INTO TABLE accounts FIELDS TERMINATED BY ',' "
                "OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n'"
            )
            dt = time.perf_counter() - t0
    finally:
        conn.close()
        maria.drop_database(name)
    if n != rows:
        raise RuntimeError(f"LOAD DATA loaded {n} rows, not {rows}")
    return dt


def sqlite_load(csv_path: Path, tmp: Path) -> float:
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        t0 = time.perf_counter()
        db = sqlite3.connect(f"{d}/own.sqlite", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")  # the pragmas of the replicator's SQLite target
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"CREATE TABLE accounts ({ACCOUNTS_COLS}, PRIMARY KEY (aid))")
        db.execute("BEGIN")
        with open(csv_path, newline="") as f:
            db.executemany("INSERT INTO accounts VALUES (?, ?, ?, ?)", csv.reader(f))
        db.execute("COMMIT")
        db.close()
        return time.perf_counter() - t0


# ------------------------------------------------------------------------------ peer


def peer_extension(tmp: Path) -> Path:
    """Build (once) the DuckDB 1.5.5 venv with the postgres extension; the extension under ``tmp``."""
    py = PEER_VENV / "bin" / "python"
    marker = PEER_VENV / f"ok-{PEER_VERSION}"
    if not marker.exists():
        shutil.rmtree(PEER_VENV, ignore_errors=True)
        try:
            run_child([sys.executable, "-m", "venv", PEER_VENV], timeout=300)
            (PEER_VENV / ".gitignore").write_text("*\n")  # nothing of it goes to git
            pkgs = [f"duckdb=={PEER_VERSION}", f"duckdb-extension-postgres=={PEER_VERSION}"]
            run_child([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *pkgs], timeout=900)
        except Exception:
            shutil.rmtree(PEER_VENV, ignore_errors=True)
            raise
        marker.touch()
    found = sorted(PEER_VENV.glob("lib/python*/site-packages/duckdb_extension_postgres/**/postgres.*"))
    if not found:
        raise RuntimeError(f"no postgres.duckdb_extension in {PEER_VENV}")
    ext = tmp / "postgres_scanner.duckdb_extension"  # the file's entry point is postgres_scanner
    shutil.copyfile(found[0], ext)
    return ext


def peer_run(ext: Path, pg: PostgresServer, tmp: Path) -> dict:
    conninfo = f"dbname=bench host={pg.host} port={pg.port} user={pg.superuser}"
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        dt, rss, _ = run_child(
            [PEER_VENV / "bin" / "python", "-c", PEER_SCRIPT, ext, f"{d}/peer.duckdb", conninfo]
        )
    return {"seconds": dt, "peak_rss_mb": rss}


# ------------------------------------------------------------------------ replicator


def fresh_target(kind: str, tmp: Path, pg: PostgresServer, maria: MariaDBServer | None):
    """(URL, clean-up) of a fresh target of ``kind``."""
    name = f"tgt_{uuid.uuid4().hex[:8]}"
    if kind in ("duckdb", "sqlite"):
        d = tempfile.TemporaryDirectory(dir=tmp)
        return f"{kind}:///{d.name}/{name}.{kind}", d.cleanup
    if kind == "pg":
        pg.create_database(name)
        return pg.sqlalchemy_url(name), lambda: pg.drop_database(name)
    return maria.create_database(name), lambda: maria.drop_database(name)


def migrate_into(kind: str, source_db: str, tmp: Path, pg: PostgresServer, maria, *extra: str) -> dict:
    """``replicator migrate`` of ``source_db`` into a fresh target (unique --name: slot, publication
    and state rows of this run only); a failed run's slot is dropped."""
    url, clean = fresh_target(kind, tmp, pg, maria)
    argv = [sys.executable, "-m", "replicator", "migrate", "--source", pg.dsn_for(source_db), "--target", url]
    try:
        dt, rss, out = run_child([*argv, "--name", f"bench_{uuid.uuid4().hex[:8]}", "--no-progress", *extra])
    finally:
        clean()
        pg.drop_replication_slots(source_db)
    m = COPY_LINE.search(out)
    if not m:
        raise RuntimeError(f"no copy line in the output of migrate: {out[-2000:]}")
    rows, copy_s, rate = int(m.group(1)), float(m.group(2)), float(m.group(3))
    return {"seconds": dt, "rows": rows, "copy_seconds": copy_s, "copy_rows_per_s": rate, "peak_rss_mb": rss}


def make_small_db(pg: PostgresServer) -> None:
    pg.create_database("small")
    pg.execute(";".join(
        f"CREATE TABLE t{i} (id int PRIMARY KEY, name text, v numeric(12,2), at timestamptz);"
        f"INSERT INTO t{i} SELECT g, 'row ' || g, g * 1.5, now() FROM generate_series(1, 100) g"
        for i in range(1, 6)
    ), dbname="small")  # fmt: skip


# --------------------------------------------------------------------------- report


AIMS = [  # label, (numerator), (denominator), aim; numerator/denominator must reach the aim
    ("DuckDB migrate process vs peer process (peer s / replicator s)",
     ("peer", "seconds"), ("migrate", "duckdb", "seconds"), 1.0),
    ("DuckDB copy phase vs source limit (psql COPY TO)",
     ("migrate", "duckdb", "copy_rows_per_s"), ("source_limit", "rows_per_s"), 0.8),
    ("PostgreSQL copy phase vs \\copy FROM (key after load)",
     ("migrate", "pg", "copy_rows_per_s"), ("pg_copy_key_after", "rows_per_s"), 1.0),
    ("MariaDB copy phase vs LOAD DATA LOCAL INFILE",
     ("migrate", "mysql", "copy_rows_per_s"), ("mariadb_load_data", "rows_per_s"), 0.9),
    ("SQLite copy phase vs csv + executemany",
     ("migrate", "sqlite", "copy_rows_per_s"), ("sqlite_executemany", "rows_per_s"), 0.8),
]  # fmt: skip
LABELS = {
    "source_limit": "source limit: psql COPY TO STDOUT > /dev/null",
    "asyncpg_read": "asyncpg copy_from_query (csv), data dropped",
    "duckdb_read_csv": "DuckDB own load: read_csv + ADD PRIMARY KEY",
    "peer": f"peer: DuckDB {PEER_VERSION} + postgres ext, process",
    "pg_copy_key_after": "PostgreSQL own load: \\copy FROM, key after",
    "pg_copy_key_before": "PostgreSQL own load: \\copy FROM, key before",
    "mariadb_load_data": "MariaDB own load: LOAD DATA LOCAL INFILE",
    "sqlite_executemany": "SQLite own load: csv + executemany, 1 txn",
}


def dig(r: dict, path: tuple):
    for k in path:
        r = r.get(k) if isinstance(r, dict) else None
    return r


def ratios(r: dict) -> list[tuple[str, float | None, str, bool | None]]:
    """(what, value, aim, met) for the aims of issue 12."""
    res = []
    for what, num, den, aim in AIMS:
        n, d = dig(r, num), dig(r, den)
        v = round(n / d, 2) if n and d else None
        res.append((what, v, f">= {aim}", None if v is None else v >= aim))
    fc = dig(r, ("fixed_cost", "seconds"))
    fc = fc and round(fc, 2)
    res.append(("fixed cost: migrate 5 x 100 rows into DuckDB (s)", fc, "<= 1.0", fc and fc <= 1.0))
    rss = [m["peak_rss_mb"] for m in r["migrate"].values() if m.get("peak_rss_mb")]
    top = max(rss) if rss else None
    res.append(
        ("replicator peak RSS, max over targets (MB; aim at scale 50)", top, "< 500", top and top < 500)
    )
    return res


def print_scale(r: dict) -> None:
    print(f"\n=== scale {r['scale']}: {r['rows']:,} rows of pgbench_accounts, CSV {r['csv_mb']:.0f} MB ===")
    print(f"{'measurement':<50} {'seconds':>8} {'rows/s':>11} {'RSS MB':>7}")
    lines = [(LABELS[k], v) for k, v in r.items() if k in LABELS]
    lines += [(f"replicator migrate -> {t}, process", v) for t, v in r["migrate"].items()]
    lines.append(("fixed cost: migrate 5 x 100 rows -> duckdb", r["fixed_cost"]))
    for name, v in lines:
        if "error" in v:
            print(f"{name:<50} FAILED: {v['error'][:600]}")
            continue
        print(f"{name:<50} {v['seconds']:>8.2f} {v['rows_per_s']:>11,.0f} {v.get('peak_rss_mb') or '':>7}")
        if "copy_rows_per_s" in v and v["rows"] == r["rows"]:
            copy = f"{v['copy_seconds']:>8.2f} {v['copy_rows_per_s']:>11,.0f}"
            print(f"{'  its copy phase, as printed by migrate':<50} {copy}")
    print(f"\n{'ratio':<64} {'aim':>9} {'value':>6}")
    for what, value, aim, met in ratios(r):
        mark = "n/a" if met is None else ("ok" if met else "MISSED")
        print(f"{what:<64} {aim:>9} {'-' if value is None else value:>6}  {mark}")


def bench_scale(scale: int, targets: list[str], repeat: int) -> dict:
    r: dict = {"scale": scale}
    with tempfile.TemporaryDirectory(prefix="bench-copy-") as d, PostgresServer(name="bench-copy") as pg:
        tmp = Path(d)
        maria = None
        try:
            maria = MariaDBServer(name="bench-copy-maria") if "mysql" in targets else None
            dsn = pg.create_database("bench")
            t0 = time.perf_counter()
            pgbench_init(dsn, scale=scale)
            r["pgbench_init_s"] = round(time.perf_counter() - t0, 1)
            rows = r["rows"] = pg.execute("SELECT count(*) FROM pgbench_accounts", dbname="bench")[0][0]
            csv_path = tmp / "accounts.csv"
            source_limit(dsn, str(csv_path))
            r["csv_mb"] = round(csv_path.stat().st_size / 1e6, 1)

            def measure(into: dict, key: str, fn, *args, n: int = repeat, rows: int = rows) -> None:
                what = key if into is r else f"replicator migrate -> {key}"
                print(f"scale {scale}: {what}", file=sys.stderr, flush=True)
                into[key] = attempt(lambda: median_of(n, lambda: fn(*args), rows))

            measure(r, "source_limit", source_limit, dsn)
            measure(r, "asyncpg_read", lambda: asyncio.run(_asyncpg_read(dsn)))
            measure(r, "duckdb_read_csv", duckdb_load, csv_path, tmp)
            try:
                ext = peer_extension(tmp)
            except Exception as e:  # noqa: BLE001 - no peer, the rest still runs
                why = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                print(f"peer unavailable: {why}", file=sys.stderr)
                r["peer"] = {"error": f"peer unavailable: {why}"}
            else:
                measure(r, "peer", peer_run, ext, pg, tmp)
            if "pg" in targets:
                loads = pg.create_database("loads")
                measure(r, "pg_copy_key_after", pg_load, loads, csv_path, True)
                measure(r, "pg_copy_key_before", pg_load, loads, csv_path, False)
            if maria:
                measure(r, "mariadb_load_data", mariadb_load, maria, csv_path, rows)
            if "sqlite" in targets:
                measure(r, "sqlite_executemany", sqlite_load, csv_path, tmp)
            r["migrate"] = {}
            for kind in targets:
                extra = ("--tables", "public.pgbench_accounts")
                measure(r["migrate"], kind, migrate_into, kind, "bench", tmp, pg, maria, *extra)
            make_small_db(pg)
            measure(
                r, "fixed_cost", migrate_into, "duckdb", "small", tmp, pg, None, n=max(3, repeat), rows=500
            )
        finally:
            if maria:
                maria.cleanup()
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="10,50", help="comma-separated pgbench scales")
    ap.add_argument("--targets", default="duckdb,pg,mysql,sqlite", help="comma-separated target kinds")
    ap.add_argument("--repeat", type=int, default=1, help="runs per figure (the median is reported)")
    a = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    scales = [int(s) for s in a.scales.split(",") if s.strip()]
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    for t in targets:
        if t not in ("duckdb", "pg", "mysql", "sqlite"):
            ap.error(f"unknown target {t!r}")
    results = []
    for scale in scales:
        r = bench_scale(scale, targets, max(1, a.repeat))
        print_scale(r)
        results.append(r)
    report = {
        "machine": {"cpus": os.cpu_count(), "duckdb": duckdb.__version__, "peer": PEER_VERSION},
        "targets": targets,
        "repeat": a.repeat,
        "scales": results,
    }
    for r in results:
        r["ratios"] = {w: {"value": v, "aim": aim, "met": met} for w, v, aim, met in ratios(r)}
    print("\n" + json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
