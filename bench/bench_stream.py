"""Benchmark (issue 16): one large source transaction, streamed while it runs or sent at its commit.

Usage:  python bench/bench_stream.py [--rows 2000000] [--target duckdb|sqlite]
                                     [--runs stream,nostream] [--duckdb-poll-ms 250] [--poll-ms 100]
                                     [--quiet-wait SECONDS] [--json PATH]

Starts a throwaway source PostgreSQL (tests/servers.py: wal_level=logical, fsync off) with
PostgreSQL's default ``logical_decoding_work_mem`` (64MB, printed) and ``synchronous_commit = on``
(the test servers' ``off`` would let COMMIT return up to ~0.6 s before the walsender may send the
commit record).  Tables ``big (id bigint PRIMARY KEY, payload text)`` and ``sentinel (run text
PRIMARY KEY, rows bigint)``, autovacuum off on both (an autovacuum of ``big`` lands at a random
moment of one run, not the other).  Then, one run after the other, never in parallel:
  stream     ``replicator mirror`` (protocol 2, in-progress transactions streamed and spooled)
  nostream   ``replicator mirror --no-stream-in-progress`` (protocol 1: the source decodes the
             whole transaction, spilling to its disk past logical_decoding_work_mem, and sends
             it at its commit)
each on its own fresh stream (slot and publication ``bench_<run>``), target file and spool
directory, the source tables emptied and a CHECKPOINT before it.  A run: start the mirror, wait
until its slot is active and a ``ready`` sentinel row shows on the target, reset the slot's
statistics (pg_stat_reset_replication_slot), then one source transaction:
    INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, ROWS) g;
    UPDATE big SET payload = upper(payload) WHERE id % 10 = 0;
    INSERT INTO sentinel VALUES ('<run>', ROWS);
    COMMIT
and from the COMMIT's return, the target is read with short read-only connections until the
sentinel row shows (the whole transaction is one target transaction: ``big``'s count at that
read is checked too).  SQLite is read every --poll-ms (100); DuckDB every --duckdb-poll-ms
(250): one process opens a DuckDB file at a time, a read holds it for tens of ms and the
mirror's open backs off (50 ms, doubling) meanwhile, so frequent reads would measure themselves
(bench_apply.py's notes); the figure's resolution is one read interval.  A sampler thread reads,
every 100 ms: the spool directory's total size, the mirror's CPU time and RSS (/proc), the
walsender's CPU time, the machine's busy CPU; from these, where the time after the commit
went: when the mirror got busy, when the last streamed block was spooled (the spool's peak: the
replay starts), when the replay had read the spool (it is empty), when the walsender was done;
and, once a second, whether a pytest process runs on the machine (--quiet-wait: wait up to that
long for none before each run).  After the sentinel shows, the target's row count
and updated-row count are compared with the source, the mirror is stopped (SIGTERM) and the
slot's pg_stat_replication_slots row is read (spill_*, stream_*, total_*) once its walsender
has exited, then slot and publication are dropped.
Peak RSS: the mirror is started by a small launcher that runs it and reads its ``os.wait4``
ru_maxrss (bench_apply.py's pattern).  Not a test: it prints the figures, the ratio streaming /
not streaming of commit-to-visible, the aims of issue 16 with met/missed, and a JSON report
(--json); exit 1 when a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import psycopg  # noqa: E402

from tests.servers import PostgresServer  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from benchlib import LIVE, Child, Failed, log, wait_for  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")

RUNS = {"stream": [], "nostream": ["--no-stream-in-progress"]}
RATIO_AIM, RSS_AIM_MB = 0.8, 300
SETUP = (
    "CREATE TABLE big (id bigint PRIMARY KEY, payload text) WITH (autovacuum_enabled = off)",
    "CREATE TABLE sentinel (run text PRIMARY KEY, rows bigint) WITH (autovacuum_enabled = off)",
)
TRANSACTION = (
    ("insert_s", "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, %(rows)s) g"),
    ("update_s", "UPDATE big SET payload = upper(payload) WHERE id %% 10 = 0"),
    ("sentinel_s", "INSERT INTO sentinel VALUES (%(run)s, %(rows)s)"),
)
#: the same on source and target: rows, and rows the UPDATE changed (md5 text with a letter)
CHECK = "SELECT count(*), sum(CASE WHEN payload <> lower(payload) THEN 1 ELSE 0 END) FROM big"
SLOT_STATS = (
    "spill_txns", "spill_count", "spill_bytes", "stream_txns", "stream_count", "stream_bytes",
    "total_txns", "total_bytes",
)  # fmt: skip


# ------------------------------------------------------------------------------ helpers


def sql(dsn: str, query: str, params=None):
    """The first row (None for a statement without rows), autocommit."""
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(query, params)
        return cur.fetchone() if cur.description else None


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), None once it is gone."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB, (0, 0) once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0, 0
    got = {ln.split(":")[0]: int(ln.split()[1]) for ln in lines if ln.startswith(("VmRSS", "VmHWM"))}
    return got.get("VmRSS", 0), got.get("VmHWM", 0)


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat)."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v[:8]) - idle, sum(v[:8])


def dir_bytes(d: Path) -> int:
    total = 0
    try:
        with os.scandir(d) as it:
            for e in it:
                try:
                    total += e.stat().st_size
                except FileNotFoundError:
                    pass
    except FileNotFoundError:
        pass
    return total


def others_running() -> list[str]:
    """Other pytest processes on the machine (the brief: benchmark a quiet machine)."""
    cp = subprocess.run(["pgrep", "-af", "pytest"], capture_output=True, text=True)
    return [ln for ln in cp.stdout.splitlines() if str(os.getpid()) != ln.split()[0]]


def wait_quiet(seconds: float) -> list[str]:
    """Up to ``seconds`` until no pytest process runs; those still running then."""
    deadline = time.monotonic() + seconds
    while (others := others_running()) and time.monotonic() < deadline:
        time.sleep(5)
    return others


class Sampler(threading.Thread):
    """Every ``every`` seconds: (t, spool bytes, mirror CPU s, walsender CPU s, mirror RSS KiB,
    mirror HWM KiB, machine busy jiffies, machine total jiffies)."""

    def __init__(self, spool: Path, mirror_pid: int, walsender_pid: int | None, every: float = 0.1):
        super().__init__(daemon=True)
        self.spool, self.mirror, self.walsender, self.every = spool, mirror_pid, walsender_pid, every
        self.samples: list[tuple] = []
        self.others: set[str] = set()  # pytest processes seen while it ran (checked every second)
        self.halt = threading.Event()

    def sample(self) -> tuple:
        rss, hwm = rss_kib(self.mirror)
        busy, total = machine_jiffies()
        s = (
            time.perf_counter(), dir_bytes(self.spool), cpu_seconds(self.mirror),
            cpu_seconds(self.walsender), rss, hwm, busy, total,
        )  # fmt: skip
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self.sample()
            if len(self.samples) % 10 == 0:
                self.others.update(others_running())


def window(samples: list[tuple], t0: float, t1: float) -> dict:
    """CPU figures between the samples nearest to ``t0`` and ``t1``."""
    a = min(samples, key=lambda s: abs(s[0] - t0))
    b = min(samples, key=lambda s: abs(s[0] - t1))
    wall = max(b[0] - a[0], 1e-9)

    def d(i):
        return None if a[i] is None or b[i] is None else round(b[i] - a[i], 2)

    busy = (b[6] - a[6]) / max(b[7] - a[7], 1)
    return {
        "seconds": round(t1 - t0, 2),
        "mirror_cpu_s": d(2),
        "walsender_cpu_s": d(3),
        "machine_busy_cores": round(busy * (os.cpu_count() or 1), 2),
        "sampled_s": round(wall, 2),
    }


# ------------------------------------------------------------------------------ a run


class Target:
    """The run's target file, read with short read-only connections."""

    def __init__(self, kind: str, path: Path):
        self.kind, self.path = kind, path
        self.url = f"{kind}:///{path}"
        self.reads = self.refused = 0
        self.held_s = 0.0

    def query(self, q: str, params=()) -> tuple | None:
        """The first row; None when the file is held by the mirror (or not there yet)."""
        self.reads += 1
        t0 = time.perf_counter()
        try:
            if self.kind == "sqlite":
                if not self.path.exists():
                    return None
                with contextlib.closing(
                    sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=0.05)
                ) as c:
                    return c.execute(q, params).fetchone()
            with duckdb.connect(str(self.path), read_only=True) as c:
                return c.execute(q, params).fetchone()
        except (duckdb.IOException, duckdb.CatalogException, sqlite3.OperationalError):
            self.refused += 1
            return None
        finally:
            self.held_s += time.perf_counter() - t0


def start_mirror(a, run: str, dsn: str, tmp: Path) -> tuple[Child, Target, Path]:
    d = tmp / run
    d.mkdir()
    target, spool = Target(a.target, d / f"target.{a.target}"), d / "spool"
    args = [
        "mirror", "--source", dsn, "--target", target.url, "--name", f"bench_{run}",
        "--tables", "public.big,public.sentinel", "--spool-dir", str(spool), *RUNS[run],
    ]  # fmt: skip
    return Child(f"mirror ({run})", *args, logfile=d / "mirror.log"), target, spool


def wait_ready(dsn: str, run: str, mirror: Child, target: Target, slot: str) -> int:
    """Until the slot is active and a 'ready' sentinel row shows on the target; the walsender's pid."""

    def active():
        mirror.check_running()
        row = sql(dsn, "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        return bool(row and row[0])

    wait_for(active, 600, f"slot {slot} active")
    sql(dsn, "INSERT INTO sentinel VALUES (%s, 0)", (f"ready-{run}",))

    def shown():
        mirror.check_running()
        return target.query("SELECT count(*) FROM sentinel WHERE run = ?", (f"ready-{run}",)) == (1,)

    wait_for(shown, 300, f"{run}: the ready row on the target", every=0.25)
    return sql(dsn, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))[0]


def big_transaction(dsn: str, run: str, rows: int) -> dict:
    """The transaction; perf_counter times of its begin and of its COMMIT's return."""
    res: dict = {}
    with psycopg.connect(dsn) as c:
        lsn0 = c.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        c.commit()
        res["t_begin"] = time.perf_counter()
        for what, q in TRANSACTION:
            t0 = time.perf_counter()
            c.execute(q, {"rows": rows, "run": run})
            res[what] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        c.commit()
        res["t_commit"] = time.perf_counter()
        res["commit_s"] = round(res["t_commit"] - t0, 3)
        c.autocommit = True
        res["wal_bytes"] = int(
            c.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", (str(lsn0),)).fetchone()[0]
        )
    return res


def until_visible(target: Target, run: str, rows: int, mirror: Child, every: float, timeout: float) -> tuple:
    """Reads the target every ``every`` s until the sentinel shows: (perf_counter time, big's count)."""
    deadline = time.perf_counter() + timeout
    while True:
        t0 = time.perf_counter()
        got = target.query(
            "SELECT (SELECT count(*) FROM sentinel WHERE run = ?), (SELECT count(*) FROM big)", (run,)
        )
        if got and got[0] == 1:
            return t0, got[1]
        mirror.check_running()
        if time.perf_counter() > deadline:
            raise Failed(
                f"{run}: the transaction not visible on the target after {timeout:.0f}s:\n{mirror.tail()}"
            )
        time.sleep(max(0.0, every - (time.perf_counter() - t0)))


def slot_stats(dsn: str, slot: str) -> dict:
    cols = ", ".join(SLOT_STATS)
    row = sql(dsn, f"SELECT {cols} FROM pg_stat_replication_slots WHERE slot_name = %s", (slot,))
    return dict(zip(SLOT_STATS, (int(v) for v in row))) if row else {}


def one_run(a, run: str, dsn: str, tmp: Path) -> dict:
    slot = f"bench_{run}"
    for q in ("TRUNCATE big, sentinel", "CHECKPOINT"):
        sql(dsn, q)
    mirror, target, spool = start_mirror(a, run, dsn, tmp)
    res: dict = {"mirror_argv": mirror.argv}
    sampler = None
    try:
        t0 = time.perf_counter()
        walsender = wait_ready(dsn, run, mirror, target, slot)
        res["mirror_start_to_ready_s"] = round(time.perf_counter() - t0, 2)
        sql(dsn, "SELECT pg_stat_reset_replication_slot(%s)", (slot,))
        pid = mirror.pid()
        sampler = Sampler(spool, pid, walsender)
        base = sampler.sample()
        sampler.start()
        target.reads = target.refused = 0
        target.held_s = 0.0
        log(f"{run}: the transaction ({a.rows:,} rows inserted, {a.rows // 10:,} updated)")
        tx = big_transaction(dsn, run, a.rows)
        at_commit = sampler.sample()
        every = (a.duckdb_poll_ms if a.target == "duckdb" else a.poll_ms) / 1000
        log(
            f"{run}: committed after {tx['t_commit'] - tx['t_begin']:.1f} s; reading the target every {every:.2f} s"
        )
        t_visible, count = until_visible(target, run, a.rows, mirror, every, a.timeout)
        at_visible = sampler.sample()
        sampler.halt.set()
        sampler.join()
        samples = sampler.samples
        res.update(
            commit_to_visible_s=round(t_visible - tx["t_commit"], 2),
            begin_to_visible_s=round(t_visible - tx["t_begin"], 2),
            transaction={k: v for k, v in tx.items() if not k.startswith("t_")}
            | {"seconds": round(tx["t_commit"] - tx["t_begin"], 2)},
            rows_at_visible=count,
            reads={"every_ms": round(every * 1000), "reads": target.reads, "refused": target.refused,
                   "held_s": round(target.held_s, 2)},
            during_transaction=window(samples, tx["t_begin"], tx["t_commit"]),
            after_commit=window(samples, tx["t_commit"], t_visible),
            spool_peak_bytes=max(s[1] for s in samples),
            spool_bytes_at_commit=at_commit[1],
            mirror_rss_mb={"at_ready": base[4] // 1024, "hwm_at_commit": at_commit[5] // 1024,
                           "hwm_at_visible": at_visible[5] // 1024},
            others_during=sorted(sampler.others),
        )  # fmt: skip
        res.update(after_commit_events(samples, tx["t_commit"], t_visible, at_commit[1] > 0))
        res["timeline"] = [
            [round(s[0] - tx["t_begin"], 2), s[1], s[2], s[3], s[4] // 1024] for s in samples[::5]
        ]
        got, want = target.query(CHECK), sql(dsn, CHECK)
        res["check"] = "OK" if got and tuple(got) == tuple(want) and count == a.rows else "MISMATCH"
        res["source_rows_updated"], res["target_rows_updated"] = (int(want[0]), int(want[1])), got
        log(f"{run}: visible {res['commit_to_visible_s']} s after the commit; stopping the mirror")
        res["mirror_cpu_s"] = cpu_seconds(pid)
        res["mirror"] = mirror.stop(300)
        q = "SELECT NOT active FROM pg_replication_slots WHERE slot_name = %s"
        wait_for(lambda: sql(dsn, q, (slot,))[0], 120, f"slot {slot} inactive")
        res["slot_stats"] = slot_stats(dsn, slot)
    except BaseException:
        mirror.kill()
        raise
    finally:
        if sampler is not None:
            sampler.halt.set()
        drop_stream(dsn, slot)
    return res


def after_commit_events(samples: list[tuple], t_commit: float, t_visible: float, spooled: bool) -> dict:
    """Seconds after the commit when: the spool reached its peak (the last streamed block was
    spooled; the replay starts then), the spool emptied (the replay had read it all), the mirror
    first used more than half a core (it received the first changes it could work on) and the
    walsender last used more than 30% of one (it had sent the whole transaction)."""
    after = [s for s in samples if t_commit <= s[0] <= t_visible + 0.2]
    out: dict = {"spool_complete_after_s": None, "spool_emptied_after_s": None,
                 "mirror_busy_after_s": None, "walsender_done_after_s": None}  # fmt: skip
    peak = max((s[1] for s in samples), default=0)
    for s in after:
        if spooled and s[1] == peak and out["spool_complete_after_s"] is None:
            out["spool_complete_after_s"] = round(s[0] - t_commit, 2)
        if spooled and s[1] == 0 and out["spool_emptied_after_s"] is None:
            out["spool_emptied_after_s"] = round(s[0] - t_commit, 2)
    for a_, b in zip(after, after[1:]):
        if b[2] - a_[2] > 0.5 * (b[0] - a_[0]):
            out["mirror_busy_after_s"] = round(a_[0] - t_commit, 2)
            break
    busy = [
        b for a_, b in zip(after, after[1:])
        if a_[3] is not None and b[3] is not None and b[3] - a_[3] > 0.3 * (b[0] - a_[0])
    ]  # fmt: skip
    if busy:
        out["walsender_done_after_s"] = round(busy[-1][0] - t_commit, 2)
    return out


def drop_stream(dsn: str, slot: str) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,)
            )  # fmt: skip
            time.sleep(0.2)
            c.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )
            c.execute(f'DROP PUBLICATION IF EXISTS "{slot}"')
    except psycopg.Error as e:
        log(f"could not drop slot/publication {slot}: {e}")


# ------------------------------------------------------------------------------ report


def aims(rep: dict) -> list[tuple[str, object, str, bool | None]]:
    runs, out = rep["runs"], []
    ratio = rep.get("ratio_commit_to_visible")
    out.append(("commit-to-visible, streaming / not streaming", ratio, f"<= {RATIO_AIM}",
                None if ratio is None else ratio <= RATIO_AIM))  # fmt: skip
    spill = runs.get("stream", {}).get("slot_stats", {}).get("spill_bytes")
    out.append(("source spill bytes with streaming", spill, "= 0", None if spill is None else spill == 0))
    for run, r in runs.items():
        rss = r.get("mirror", {}).get("peak_rss_mb")
        out.append(
            (
                f"{run}: mirror peak RSS (MB)",
                rss,
                f"< {RSS_AIM_MB}",
                None if rss is None else rss < RSS_AIM_MB,
            )
        )
    return out


def mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f}"


def print_report(rep: dict) -> None:
    print(f"\n=== one transaction: {rep['rows']:,} rows inserted, {rep['rows'] // 10:,} of them updated, "
          f"target {rep['target']} ===")  # fmt: skip
    names = list(rep["runs"])
    rows = [
        ("source transaction (s)", lambda r: r["transaction"]["seconds"]),
        ("  INSERT / UPDATE / COMMIT (s)", lambda r: f"{r['transaction']['insert_s']} / "
                                                     f"{r['transaction']['update_s']} / {r['transaction']['commit_s']}"),
        ("  its WAL (MB)", lambda r: mb(r["transaction"]["wal_bytes"])),
        ("COMMIT -> visible on target (s)", lambda r: r["commit_to_visible_s"]),
        ("BEGIN -> visible on target (s)", lambda r: r["begin_to_visible_s"]),
        ("  mirror busy (> 0.5 core) from, after COMMIT (s)", lambda r: r.get("mirror_busy_after_s")),
        ("  last block spooled, after COMMIT (s)", lambda r: r.get("spool_complete_after_s")),
        ("  spool read by the replay, after COMMIT (s)", lambda r: r.get("spool_emptied_after_s")),
        ("  walsender last busy after COMMIT (s)", lambda r: r.get("walsender_done_after_s")),
        ("  target reads / refused (every ms)", lambda r: f"{r['reads']['reads']} / {r['reads']['refused']} "
                                                          f"({r['reads']['every_ms']})"),
        ("mirror CPU s: transaction / after", lambda r: f"{r['during_transaction']['mirror_cpu_s']} / "
                                                        f"{r['after_commit']['mirror_cpu_s']}"),
        ("walsender CPU s: transaction / after", lambda r: f"{r['during_transaction']['walsender_cpu_s']} / "
                                                           f"{r['after_commit']['walsender_cpu_s']}"),
        ("machine busy cores: transaction / after", lambda r: f"{r['during_transaction']['machine_busy_cores']} / "
                                                              f"{r['after_commit']['machine_busy_cores']}"),
        ("slot spill_txns / spill_bytes (MB)", lambda r: f"{r['slot_stats'].get('spill_txns')} / "
                                                         f"{mb(r['slot_stats'].get('spill_bytes'))}"),
        ("slot stream_txns / stream_bytes (MB)", lambda r: f"{r['slot_stats'].get('stream_txns')} / "
                                                           f"{mb(r['slot_stats'].get('stream_bytes'))}"),
        ("slot total_txns / total_bytes (MB)", lambda r: f"{r['slot_stats'].get('total_txns')} / "
                                                         f"{mb(r['slot_stats'].get('total_bytes'))}"),
        ("spool peak / at COMMIT (MB)", lambda r: f"{mb(r['spool_peak_bytes'])} / {mb(r['spool_bytes_at_commit'])}"),
        ("mirror peak RSS (MB, ru_maxrss)", lambda r: r["mirror"]["peak_rss_mb"]),
        ("  RSS at ready / HWM at COMMIT / at visible", lambda r: "{at_ready} / {hwm_at_commit} / {hwm_at_visible}"
                                                                   .format(**r["mirror_rss_mb"])),
        ("mirror CPU s, whole process", lambda r: r["mirror_cpu_s"]),
        ("pytest processes at start / during run", lambda r: f"{len(r['others_at_start'])} / {len(r['others_during'])}"),
        ("target rows at first sight / check", lambda r: f"{r['rows_at_visible']:,} / {r['check']}"),
    ]  # fmt: skip
    print(f"{'':<50}" + "".join(f"{n:>26}" for n in names))
    for label, f in rows:
        cells = []
        for n in names:
            r = rep["runs"][n]
            try:
                v = f(r)
            except (KeyError, TypeError):
                v = "-"
            cells.append(f"{'-' if v is None else v!s:>26}")
        print(f"{label:<50}" + "".join(cells))
    if rep.get("ratio_commit_to_visible") is not None:
        print(f"\nratio streaming / not streaming, COMMIT -> visible: {rep['ratio_commit_to_visible']}")
    print("\n=== aims (issue 16) ===")
    for what, v, aim, met in aims(rep):
        mark = "n/a" if met is None else ("met" if met else "MISSED")
        print(f"{what:<46} {aim:>7} {'-' if v is None else v!s:>10}  {mark}")
    if "stream" in rep["runs"] and rep["runs"]["stream"].get("slot_stats", {}).get("stream_txns") == 0:
        print("NOTE: the streaming run's slot streamed no transaction (stream_txns 0)")
    for who, err in rep["failed"].items():
        print(f"\nFAILED {who}: {err[-2500:]}")


# ------------------------------------------------------------------------------ main


def facts(src: PostgresServer, dsn: str) -> dict:
    settings = ("server_version", "logical_decoding_work_mem", "synchronous_commit", "fsync",
                "shared_buffers", "max_wal_size", "wal_compression")  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as c:
        pg = {s: c.execute(f"SHOW {s}").fetchone()[0] for s in settings}
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip() or None  # fmt: skip
    except OSError:
        rev = None
    return {
        "nproc": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "mem_total_mb": int(Path("/proc/meminfo").read_text().split()[1]) // 1024,
        "python": sys.version.split()[0],
        "duckdb": duckdb.__version__,
        "git": rev,
        "root": str(ROOT),
        "source": pg,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000, help="rows the transaction inserts")
    ap.add_argument("--target", choices=("duckdb", "sqlite"), default="duckdb")
    ap.add_argument("--runs", default="stream,nostream", help="which runs, in this order")
    ap.add_argument("--poll-ms", type=int, default=100, help="SQLite target read interval")
    ap.add_argument("--duckdb-poll-ms", type=int, default=250, help="DuckDB target read interval")
    ap.add_argument(
        "--timeout", type=float, default=1800, help="seconds a run may take to show the transaction"
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=0,
        help="before each run, wait up to this many seconds for no pytest process on the machine",
    )
    ap.add_argument("--json", default=os.path.join(tempfile.gettempdir(), "bench_stream.json"),
                    help="where the JSON report goes (default %(default)s)")  # fmt: skip
    a = ap.parse_args()
    runs = [r.strip() for r in a.runs.split(",") if r.strip()]
    for r in runs:
        if r not in RUNS:
            ap.error(f"unknown run {r!r} (stream, nostream)")
    sys.stdout.reconfigure(line_buffering=True)
    print("command: " + " ".join(shlex.quote(x) for x in [sys.executable, *sys.argv]))
    others = others_running()
    print(f"machine: nproc {os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"other pytest processes: {len(others) or 'none'}")  # fmt: skip
    for ln in others:
        print(f"  {ln[:150]}")
    t0 = time.perf_counter()
    rep: dict = {"command": [sys.executable, *sys.argv], "rows": a.rows, "target": a.target,
                 "runs": {}, "failed": {}, "others_at_start": others}  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="bench-stream-") as d,
        PostgresServer(name="bench-stream-src", settings={"synchronous_commit": "on"}) as src,
    ):
        try:
            dsn = src.create_database("bench")
            rep["machine"] = facts(src, dsn)
            f = rep["machine"]
            print(f"source: PostgreSQL {f['source']['server_version']}, "
                  + ", ".join(f"{k} {v}" for k, v in f["source"].items() if k != "server_version")
                  + f"; replicator from {f['root']} ({f['git'] or 'not a git checkout'}); duckdb {f['duckdb']}")  # fmt: skip
            for q in SETUP:
                sql(dsn, q)
            for run in runs:
                others = wait_quiet(a.quiet_wait)
                log(f"run {run}: other pytest processes {len(others) or 'none'}, "
                    f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
                try:
                    r = rep["runs"][run] = {"others_at_start": others, "loadavg_at_start": os.getloadavg()}
                    r.update(one_run(a, run, dsn, Path(d)))
                except (Failed, psycopg.Error) as e:
                    rep["failed"][run] = str(e)
                    rep["runs"].pop(run, None)
                    log(f"FAILED {run}:\n{e}")
                finally:  # the mirror's log outlives the temp dir, beside the JSON report
                    kept = Path(a.json).with_name(f"{Path(a.json).stem}-{run}.log")
                    with contextlib.suppress(OSError):
                        shutil.copyfile(Path(d) / run / "mirror.log", kept)
                        rep["mirror_logs"] = {**rep.get("mirror_logs", {}), run: str(kept)}
        finally:
            for c in list(LIVE):
                c.kill()
    s, n = rep["runs"].get("stream"), rep["runs"].get("nostream")
    if s and n and n["commit_to_visible_s"] > 0:
        rep["ratio_commit_to_visible"] = round(s["commit_to_visible_s"] / n["commit_to_visible_s"], 2)
    rep["total_seconds"] = round(time.perf_counter() - t0, 1)
    rep["aims"] = [{"what": w, "value": v, "aim": aim, "met": m} for w, v, aim, m in aims(rep)]
    print_report(rep)
    print(f"\ntotal run time {rep['total_seconds']:.0f} s")
    Path(a.json).write_text(json.dumps(rep, indent=2, default=str))
    print(f"JSON report: {a.json}")
    sys.exit(1 if rep["failed"] else 0)


if __name__ == "__main__":
    main()
