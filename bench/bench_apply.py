"""Benchmark (issue 13): the apply engine against PostgreSQL's native logical replication.

Usage:  python bench/bench_apply.py [--scale 10] [--transactions 50000] [--targets pg,duckdb,mysql,sqlite]
                                    [--latency-seconds 30] [--no-latency] [--big-rows 1000000]
                                    [--duckdb-poll-ms 250]

Starts throwaway servers (tests/servers.py): a source PostgreSQL (wal_level=logical), a second
PostgreSQL holding both the native subscription (database ``native``) and the replicator's
PostgreSQL target (database ``repl``), and a MariaDB when ``mysql`` is a target.  The source gets
``pgbench -i -s SCALE`` (pgbench_history REPLICA IDENTITY FULL) plus ``heartbeat`` and ``big``.
Every consumer is set up, each on its own slot, before any backlog is written:
  native      pg_dump's DDL, CREATE PUBLICATION/SUBSCRIPTION (copy_data), all tables 'r', DISABLE
  replicator  ``migrate --keep-slot --name bench_<target>`` once per target (copy, keeps the slot)
Then, per phase, the backlog is written once and each consumer drains it alone, one after another:
  1. backlog: pgbench tpcb-like, 2 clients x TRANSACTIONS/2, no vacuum (4 row changes each); its
     end is pg_current_wal_insert_lsn() (the servers run synchronous_commit=off, so the write
     position pg_current_wal_lsn() may still stand before the last commit record).
     native: ENABLE, time until its slot's confirmed_flush_lsn reaches the end (polled every
     20 ms), DISABLE.  replicator: the whole ``migrate --keep-slot`` process (start, catch up to
     the WAL end, stop).  Printed: seconds, changes/s, native s / consumer s, peak RSS, and a check
     of the target's balance sums, history and big counts against the source.
  2. big: one ``INSERT INTO big ... generate_series(1, BIG_ROWS)`` transaction, drained the same way.
  3. latency (pg and duckdb targets): ``mirror`` on the same slot; once the target shows a
     heartbeat of this phase (it has applied what its slot held, an earlier phase's load too),
     ``pgbench -R 1000 -c 2 -T S``.  The source's heartbeat row is set to clock_timestamp() every
     50 ms, the target's row read every 50 ms (one clock; a read adds up to its interval).  ``newest``: a
     value v first seen at t is a sample t - v.  A batch shows only the last heartbeat it applied,
     so ``every`` also counts each value written since the previous one seen: t - its write time.
     DuckDB is read with short read-only connections, every --duckdb-poll-ms (250): opening the
     file takes tens of ms and locks out the mirror, whose lock wait backs off exponentially, so
     reads every 50 ms would hold it most of the time and measure themselves.  Printed: the share
     of the time the reads took, and the reads refused by the mirror's lock.
Peak RSS: each replicator process is started by a small launcher that runs it and reads its
``os.wait4`` ru_maxrss; measured from this process instead, a child would report at least this
process's own RSS (vfork + exec keeps the parent's high-water mark).  Not a test: it prints
figures, the aims of issue 13 with met/missed, and a JSON report; exit 1 when a consumer failed.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import psycopg  # noqa: E402

from tests.servers import MariaDBServer, PostgresServer, find_pg_bindir, pgbench_init  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from benchlib import LIVE, Child, Failed, log, wait_for  # noqa: E402

TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "heartbeat", "big")
CHECKS = {
    "accounts": "SELECT sum(abalance) FROM pgbench_accounts",
    "branches": "SELECT sum(bbalance) FROM pgbench_branches",
    "tellers": "SELECT sum(tbalance) FROM pgbench_tellers",
    "history": "SELECT count(*) FROM pgbench_history",
    "big": "SELECT count(*) FROM big",
}
SPEED_AIMS = {"pg": 1.5, "duckdb": 2.0, "mysql": 1.0, "sqlite": 1.0}
RSS_AIM_MB, P99_AIM_S = 300, 1.0
PGBENCH = ("-n", "-b", "tpcb-like", "-c", "2", "-j", "2")  # no vacuum, 2 clients


# ------------------------------------------------------------------------ servers and SQL


def sql(dsn: str, query: str, params=None):
    """First column of the first row (None for a statement without rows), autocommit."""
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(query, params)
        row = cur.fetchone() if cur.description else None
        return row and row[0]


def run_cmd(*argv, stdin: str | None = None) -> str:
    """Run a client program; Failed with its output's tail when it fails."""
    cp = subprocess.run([str(a) for a in argv], input=stdin, capture_output=True, text=True)
    if cp.returncode != 0:
        raise Failed(f"{Path(str(argv[0])).name} exit {cp.returncode}:\n{(cp.stderr + cp.stdout)[-3000:]}")
    return cp.stdout


def prepare_source(dsn: str, scale: int) -> None:
    pgbench_init(dsn, scale=scale)
    for q in (
        "ALTER TABLE pgbench_history REPLICA IDENTITY FULL",
        "CREATE TABLE heartbeat (id int PRIMARY KEY, source_commit timestamptz)",
        "INSERT INTO heartbeat VALUES (1, clock_timestamp())",
        "CREATE TABLE big (id bigint PRIMARY KEY, payload text)",
    ):
        sql(dsn, q)


def source_values(dsn: str) -> dict:
    return {k: int(sql(dsn, q) or 0) for k, q in CHECKS.items()}


class Native:
    """PostgreSQL's own subscription into database ``native`` of the target server."""

    NAME = "bench_native"

    def __init__(self, src_dsn: str, tgt: PostgresServer):
        self.src, self.dsn = src_dsn, tgt.create_database("native")
        bindir = find_pg_bindir()
        tables = [a for t in TABLES for a in ("-t", f"public.{t}")]
        ddl = run_cmd(bindir / "pg_dump", "--schema-only", "--no-publications", *tables, src_dsn)
        run_cmd(bindir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn, stdin=ddl)
        sql(src_dsn, f"CREATE PUBLICATION {self.NAME} FOR TABLE {', '.join(TABLES)}")
        sql(self.dsn, f"CREATE SUBSCRIPTION {self.NAME} CONNECTION '{src_dsn}' "
                      f"PUBLICATION {self.NAME} WITH (copy_data = true)")  # fmt: skip
        q = "SELECT count(*) FILTER (WHERE srsubstate = 'r') = %s FROM pg_subscription_rel"
        self.copy_seconds = wait_for(lambda: sql(self.dsn, q, (len(TABLES),)), 1800, "native initial sync")
        self.pause()

    def pause(self) -> None:
        sql(self.dsn, f"ALTER SUBSCRIPTION {self.NAME} DISABLE")
        q = "SELECT NOT active FROM pg_replication_slots WHERE slot_name = %s"
        wait_for(lambda: sql(self.src, q, (self.NAME,)), 120, "native walsender gone after DISABLE")

    def drain(self, end_lsn: str, timeout: float = 3600) -> dict:
        q = "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s"
        with psycopg.connect(self.src, autocommit=True) as c:
            sql(self.dsn, f"ALTER SUBSCRIPTION {self.NAME} ENABLE")
            t0 = time.perf_counter()
            reached = lambda: c.execute(q, (end_lsn, self.NAME)).fetchone()[0]  # noqa: E731
            wait_for(reached, timeout, f"native confirmed_flush_lsn >= {end_lsn}", every=0.02)
            seconds = time.perf_counter() - t0
        self.pause()
        return {"seconds": round(seconds, 2)}

    def values(self) -> dict:
        return {k: int(sql(self.dsn, q) or 0) for k, q in CHECKS.items()}


class Replicator:
    """One replicator target on its own stream (slot, publication, state rows): ``bench_<kind>``."""

    def __init__(self, kind: str, src_dsn: str, tmp: Path, tgt: PostgresServer, maria):
        self.kind, self.src, self.name = kind, src_dsn, f"bench_{kind}"
        self.path = tmp / f"bench.{kind}"
        if kind == "pg":
            self.pg_dsn = tgt.create_database("repl")
            self.url = tgt.sqlalchemy_url("repl")
        elif kind == "mysql":
            self.url, self.maria = maria.create_database("bench"), maria
        else:
            self.url = f"{kind}:///{self.path}"

    def args(self, command: str) -> list[str]:
        return [command, "--source", self.src, "--target", self.url, "--name", self.name]

    def migrate(self, timeout: float = 3600) -> dict:
        return Child(f"migrate -> {self.kind}", *self.args("migrate"), "--keep-slot").wait(timeout)

    drain = migrate

    def query(self, q: str):
        if self.kind == "pg":  # one connection: the latency poll reads every 50 ms
            self.conn = getattr(self, "conn", None) or psycopg.connect(self.pg_dsn, autocommit=True)
            return self.conn.execute(q).fetchone()[0]
        if self.kind == "mysql":
            return self.maria.execute(q, database="bench")[0][0]
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as c:
                return c.execute(q).fetchone()[0]
        with duckdb.connect(str(self.path), read_only=True) as c:
            return c.execute(q).fetchone()[0]

    def values(self) -> dict:
        return {k: int(self.query(q) or 0) for k, q in CHECKS.items()}


# ------------------------------------------------------------------------------ phases


def drain_all(consumers: dict, end_lsn: str, expect: dict, changes: int, failed: dict) -> dict:
    """Each consumer drains alone, one after another; native's seconds are the reference."""
    res = {}
    for who, c in list(consumers.items()):
        log(f"drain {who} up to {end_lsn}")
        try:
            r = c.drain(end_lsn) if who == "native" else c.drain()
            got = c.values()
        except (Failed, psycopg.Error) as e:
            failed[who] = str(e)
            log(f"FAILED {who}:\n{e}")
            del consumers[who]
            continue
        bad = {k: {"source": v, "target": got.get(k)} for k, v in expect.items() if got.get(k) != v}
        r["changes_per_s"] = round(changes / r["seconds"])
        r["check"] = "OK" if not bad else "MISMATCH"
        if bad:
            r["mismatch"] = bad
        native = res.get("native", {}).get("seconds")
        r["vs_native"] = round(native / r["seconds"], 2) if native else None
        res[who] = r
    return res


def backlog(dsn: str, transactions: int) -> str:
    run_cmd(find_pg_bindir() / "pgbench", *PGBENCH, "-t", transactions // 2, dsn)
    return sql(dsn, "SELECT pg_current_wal_insert_lsn()::text")


def big_transaction(dsn: str, rows: int) -> str:
    sql(dsn, "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, %s) g", (rows,))
    return sql(dsn, "SELECT pg_current_wal_insert_lsn()::text")


class Heartbeat:
    """Sets the source's heartbeat row to clock_timestamp() every 50 ms, one autocommit transaction
    each, and keeps every value written (epoch seconds, in order)."""

    def __init__(self, dsn: str):
        self.dsn, self.written, self.stop = dsn, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        q = "UPDATE heartbeat SET source_commit = clock_timestamp() WHERE id = 1 RETURNING source_commit"
        with psycopg.connect(self.dsn, autocommit=True) as c:
            tick = time.monotonic()
            while not self.stop.wait(max(0.0, tick - time.monotonic())):
                self.written.append(c.execute(q).fetchone()[0].timestamp())
                tick += 0.05


def read_heartbeat(r: Replicator, stats: dict) -> float | None:
    """The target's heartbeat as epoch seconds; None when DuckDB's file is locked by the mirror."""
    stats["polls"] += 1
    t0 = time.perf_counter()
    try:
        v = r.query("SELECT source_commit FROM heartbeat WHERE id = 1")
    except duckdb.IOException:
        stats["blocked"] += 1
        return None
    finally:
        stats["held_s"] = stats.get("held_s", 0.0) + time.perf_counter() - t0
    return v and (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).timestamp()


def latency(r: Replicator, seconds: int, every_s: float) -> dict:
    """Heartbeat latency while ``mirror`` applies a steady pgbench load; the target read every ``every_s``."""
    mirror, hb, load = Child(f"mirror -> {r.kind}", *r.args("mirror")), Heartbeat(r.src), None
    stats: dict = {"polls": 0, "blocked": 0}
    try:
        caught_up(r, hb, stats, mirror)
        load = subprocess.Popen(
            [find_pg_bindir() / "pgbench", *PGBENCH, "-R", "1000", "-T", str(seconds), r.src],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        res = poll_heartbeat(r, hb, stats, load, mirror, every_s)
        out = load.communicate()[0]
        res["mirror"] = mirror.stop()
    except BaseException:
        mirror.kill()
        raise
    finally:
        hb.stop.set()
        if load and load.poll() is None:
            load.kill()
            load.wait()
    tps = [float(line.split()[2]) for line in out.splitlines() if line.startswith("tps = ")]
    return {**res, **stats, "pgbench_tps": round(tps[0]) if tps else None}


def caught_up(r: Replicator, hb: Heartbeat, stats: dict, mirror: Child) -> None:
    """Until the target shows a heartbeat of this phase: the mirror has applied what its slot held
    (the load of an earlier latency phase too) and is at the present."""

    def now() -> bool:
        mirror.check_running()
        v = read_heartbeat(r, stats)
        return bool(v and hb.written and v >= hb.written[0] - 1e-6)

    seconds = wait_for(now, 1800, f"mirror -> {r.kind}: a heartbeat of this phase applied", every=0.05)
    stats["catch_up_seconds"] = round(seconds, 2)


def poll_heartbeat(r: Replicator, hb: Heartbeat, stats: dict, load, mirror: Child, every_s: float) -> dict:
    """Reads the target's heartbeat every ``every_s`` while the load runs.  ``newest``: a value v first
    seen at t gives t - v.  ``every``: each heartbeat written after the previous value seen and up
    to v gives t - its write time, so values a batch overwrote before the target showed them count
    too (a batch applies them together)."""
    stats.update(polls=0, blocked=0, held_s=0.0, poll_ms=round(every_s * 1000))
    t_start = time.perf_counter()
    last = wait_for_value(r, stats)
    i, newest, every = bisect.bisect_right(hb.written, last + 1e-6), [], []
    while load.poll() is None:
        mirror.check_running()
        t0 = time.time()
        v = read_heartbeat(r, stats)
        if v is not None and v != last:
            t, last = time.time(), v
            newest.append(t - v)
            while i < len(hb.written) and hb.written[i] <= v + 1e-6:
                every.append(t - hb.written[i])
                i += 1
        time.sleep(max(0.0, every_s - (time.time() - t0)))
    stats["held_pct"] = round(100 * stats.pop("held_s") / (time.perf_counter() - t_start), 1)
    return {"newest": quantiles(newest), "every": quantiles(every)}


def wait_for_value(r: Replicator, stats: dict) -> float:
    for _ in range(600):
        v = read_heartbeat(r, stats)
        if v is not None:
            return v
        time.sleep(0.05)
    raise Failed(f"{r.kind}: the target's heartbeat row stayed unreadable for 30 s")


def quantiles(samples: list[float]) -> dict:
    if len(samples) < 2:
        return {"samples": len(samples)}
    q = statistics.quantiles(samples, n=100, method="inclusive")
    pick = {"p50_s": q[49], "p95_s": q[94], "p99_s": q[98], "max_s": max(samples)}
    return {"samples": len(samples), **{k: round(v, 3) for k, v in pick.items()}}


# ------------------------------------------------------------------------------ report


def dig(d: dict, *keys):
    for k in keys:
        d = d.get(k, {}) if isinstance(d, dict) else {}
    return d if d != {} else None


def aims(rep: dict) -> list[tuple[str, object, str, bool | None]]:
    """(what, value, aim, met) for the aims of issue 13; met is None when there is no value."""
    out = []

    def add(what: str, v, above: bool, limit: float) -> None:
        met = None if v is None else (v >= limit if above else v < limit)
        out.append((what, v, f"{'>=' if above else '<'} {limit}", met))

    for kind, limit in SPEED_AIMS.items():
        if kind in rep["targets"]:
            add(f"{kind}: backlog drain vs native", dig(rep, "backlog", kind, "vs_native"), True, limit)
    for kind, r in rep.get("latency", {}).items():
        for which in ("newest", "every"):
            add(f"{kind}: mirror p99 latency, {which} heartbeat (s)", r[which].get("p99_s"), False, P99_AIM_S)
    for phase in ("backlog", "big"):
        for who, r in rep.get(phase, {}).items():
            if who != "native":
                add(f"{who}: peak RSS, {phase} drain (MB)", r["peak_rss_mb"], False, RSS_AIM_MB)
    for kind, r in rep.get("latency", {}).items():
        add(f"{kind}: peak RSS, mirror (MB)", r["mirror"]["peak_rss_mb"], False, RSS_AIM_MB)
    return out


def print_drains(title: str, res: dict, unit: str) -> None:
    print(f"\n=== {title} ===")
    print(f"{'consumer':<10} {'drain s':>8} {unit:>13} {'vs native':>10} {'RSS MB':>7}  check")
    for who, r in res.items():
        vs, rss = r.get("vs_native") or "-", r.get("peak_rss_mb", "-")
        print(f"{who:<10} {r['seconds']:>8.2f} {r['changes_per_s']:>13,} {vs:>10} {rss:>7}  {r['check']}")
        for k, v in r.get("mismatch", {}).items():
            print(f"{'':<10} {k}: source {v['source']}, target {v['target']}")


def print_latency(rep: dict) -> None:
    print(
        f"\n=== latency: mirror under pgbench -R 1000 -c 2 -T {rep['latency_seconds']}, heartbeat 50 ms ==="
    )
    cols = ("samples", "p50_s", "p95_s", "p99_s", "max_s")
    print(f"{'target':<7} {'heartbeat':<9} {'samples':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6}")
    for kind, r in rep["latency"].items():
        for which in ("newest", "every"):
            f = [r[which].get(k, "-") for k in cols]
            print(f"{kind:<7} {which:<9} {f[0]:>7} {f[1]:>6} {f[2]:>6} {f[3]:>6} {f[4]:>6}")
        print(f"{kind:<7} read every {r['poll_ms']} ms, reads took {r['held_pct']}% of the time, "
              f"{r['blocked']}/{r['polls']} blocked by the mirror; mirror start to present "
              f"{r['catch_up_seconds']} s; pgbench {r['pgbench_tps']} tps; mirror peak RSS "
              f"{r['mirror']['peak_rss_mb']} MB")  # fmt: skip


def print_report(rep: dict) -> None:
    n, changes = rep["transactions"], rep.get("row_changes", 0)
    if rep.get("backlog"):
        print_drains(
            f"backlog: {n:,} pgbench transactions = {changes:,} row changes", rep["backlog"], "changes/s"
        )
    if rep.get("big"):
        print_drains(f"big: one transaction inserting {rep['big_rows']:,} rows", rep["big"], "rows/s")
    if rep.get("latency"):
        print_latency(rep)
    print("\n=== aims (issue 13) ===")
    for what, v, aim, met in aims(rep):
        mark = "n/a" if met is None else ("met" if met else "MISSED")
        print(f"{what:<50} {aim:>7} {'-' if v is None else v:>7}  {mark}")
    for who, err in rep["failed"].items():
        print(f"\nFAILED {who}: {err[-1500:]}")


# -------------------------------------------------------------------------------- main


def setup(a, rep: dict, dsn: str, tmp: Path, tgt: PostgresServer, maria) -> dict:
    """Every consumer copied and on its own slot, before any backlog: native first, then each target."""
    log("native: subscription and initial sync")
    try:
        consumers: dict = {"native": Native(dsn, tgt)}
    except Failed as e:
        raise Failed(f"native subscription: {e}") from None
    rep["setup_seconds"] = {"native": round(consumers["native"].copy_seconds, 2)}
    for kind in a.targets:
        log(f"replicator: migrate -> {kind} (copy, keep slot)")
        r = consumers[kind] = Replicator(kind, dsn, tmp, tgt, maria)
        try:
            rep["setup_seconds"][kind] = r.migrate()["seconds"]
        except Failed as e:
            rep["failed"][kind] = str(e)
            log(f"FAILED {kind}:\n{e}")
            del consumers[kind]
    return consumers


def run(a, rep: dict, tmp: Path, src: PostgresServer, tgt: PostgresServer, maria) -> None:
    dsn = src.create_database("bench")
    log(f"source: pgbench -i -s {a.scale}")
    prepare_source(dsn, a.scale)
    consumers = setup(a, rep, dsn, tmp, tgt, maria)
    log(f"backlog: pgbench 2 clients x {a.transactions // 2} transactions")
    rep["row_changes"], end = 4 * 2 * (a.transactions // 2), backlog(dsn, a.transactions)
    rep["backlog_end_lsn"] = end
    rep["backlog"] = drain_all(consumers, end, source_values(dsn), rep["row_changes"], rep["failed"])
    if a.big_rows:
        log(f"big: one transaction of {a.big_rows:,} rows")
        rep["big_rows"], end = a.big_rows, big_transaction(dsn, a.big_rows)
        rep["big_end_lsn"] = end
        rep["big"] = drain_all(consumers, end, source_values(dsn), a.big_rows, rep["failed"])
    if a.latency_seconds > 0:
        rep["latency_seconds"], rep["latency"] = a.latency_seconds, {}
        for kind in [k for k in ("pg", "duckdb") if k in consumers]:
            log(f"latency: mirror -> {kind}, {a.latency_seconds}s of pgbench -R 1000")
            try:
                every_s = (a.duckdb_poll_ms if kind == "duckdb" else 50) / 1000
                rep["latency"][kind] = latency(consumers[kind], a.latency_seconds, every_s)
            except Failed as e:
                rep["failed"][f"mirror {kind}"] = str(e)
                log(f"FAILED mirror {kind}:\n{e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--transactions", type=int, default=50_000, help="pgbench backlog transactions (even)")
    ap.add_argument("--targets", default="pg,duckdb,mysql,sqlite")
    ap.add_argument("--latency-seconds", type=int, default=30)
    ap.add_argument("--duckdb-poll-ms", type=int, default=250, help="DuckDB heartbeat read interval")
    ap.add_argument("--no-latency", dest="latency_seconds", action="store_const", const=0)
    ap.add_argument("--big-rows", type=int, default=1_000_000, help="rows of the big transaction (0: none)")
    a = ap.parse_args()
    a.targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    for t in a.targets:
        if t not in SPEED_AIMS:
            ap.error(f"unknown target {t!r} (pg, duckdb, mysql, sqlite)")
    sys.stdout.reconfigure(line_buffering=True)
    t0 = time.perf_counter()
    rep: dict = {"scale": a.scale, "transactions": a.transactions, "targets": a.targets, "failed": {}}
    with (
        tempfile.TemporaryDirectory(prefix="bench-apply-") as d,
        PostgresServer(name="bench-apply-src") as src,
        PostgresServer(name="bench-apply-tgt") as tgt,
    ):
        maria = None
        try:
            # a buffer pool that holds the data set, as PostgreSQL has the OS page cache (InnoDB
            # reads around it: at the test servers' 128 MB, 12k pgbench updates took 1.9 s, at 1 GB 0.6 s)
            maria = (
                MariaDBServer(name="bench-apply-maria", options={"innodb-buffer-pool-size": "1G"})
                if "mysql" in a.targets
                else None
            )
            run(a, rep, Path(d), src, tgt, maria)
        except Failed as e:  # the reference or the source failed: report what was measured
            rep["failed"]["run"] = str(e)
            log(f"FAILED:\n{e}")
        finally:
            for c in list(LIVE):
                c.kill()
            if maria:
                maria.cleanup()
    rep["total_seconds"] = round(time.perf_counter() - t0, 1)
    rep["aims"] = [{"what": w, "value": v, "aim": aim, "met": m} for w, v, aim, m in aims(rep)]
    print_report(rep)
    print(f"\ntotal run time {rep['total_seconds']:.0f} s")
    print("\n" + json.dumps(rep, indent=2, default=str))
    sys.exit(1 if rep["failed"] else 0)


if __name__ == "__main__":
    main()
