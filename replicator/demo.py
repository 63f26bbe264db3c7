"""``replicator demo``: the whole tool in one command, on a throwaway database.

1. Start a private PostgreSQL from the installed binaries (``replicator.devserver``: temp dir,
   random port, ``wal_level=logical``), unless ``--source`` names one.
2. Load the pgbench sample (``pgbench -i``; its ``pgbench_history`` has no key, so it is set to
   ``REPLICA IDENTITY FULL``) and check the source (``replicator check``).
3. Mirror the ``pgbench_*`` tables into DuckDB while pgbench runs a short workload: the snapshot
   copy, then the changes streamed live (the progress display on a terminal).
4. Stop the mirror, show ``replicator status`` (tables, applied LSN, slot, lag).
5. Finish like ``replicator migrate``: catch up to the source's position, compare row counts,
   drop the slot and the publications.
6. Show a per-table row-count check and remove the throwaway server.

With ``--source`` the pgbench tables are created there when missing (existing ones are reused,
never dropped) and stay afterwards; the slot and publications are always removed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .dsn import redact
from .errors import ReplicatorError

if TYPE_CHECKING:
    import psycopg
    from psycopg.abc import Query

log = logging.getLogger(__name__)
TABLES = ["public.pgbench_*"]


class DemoError(ReplicatorError):
    """The demo could not run (a problem the check found, a workload failure)."""


def _default_target() -> tuple[str, Path]:
    path = Path.cwd() / "demo.duckdb"
    return f"duckdb:///{path}", path


def _remove_duckdb(path: Path) -> None:
    for p in (path, Path(f"{path}.wal")):
        if p.exists():
            p.unlink()


def _value(conn: psycopg.Connection, query: Query) -> Any:
    """The value of a query that returns exactly one row (no FROM, a count, a regclass lookup)."""
    row = conn.execute(query).fetchone()
    assert row is not None, query
    return row[0]


def _source_has_pgbench(dsn: str) -> bool:
    from .source import snapshot

    with snapshot.connect(dsn) as c:
        return _value(c, "SELECT to_regclass('public.pgbench_accounts') IS NOT NULL")


def _full_identity(dsn: str) -> None:
    from .source import snapshot

    with snapshot.connect(dsn, autocommit=True) as c:
        ident = _value(c, "SELECT relreplident FROM pg_class WHERE oid = 'public.pgbench_history'::regclass")
        if ident != "f":
            c.execute("ALTER TABLE public.pgbench_history REPLICA IDENTITY FULL")


def _wait_slot_idle(dsn: str, name: str, timeout: float = 30.0) -> None:
    """Until the stopped mirror's walsender has let go of the slot (it exits a moment later)."""
    from .source import snapshot

    deadline = time.monotonic() + timeout
    with snapshot.connect(dsn, autocommit=True) as c:
        while time.monotonic() < deadline:
            row = c.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (name,)
            ).fetchone()
            if row is None or not row[0]:
                return
            time.sleep(0.1)


def _drop_stream_objects(dsn: str, target: str, name: str) -> None:
    """Best effort after a failed or interrupted demo: never leave a slot retaining WAL (and mark
    the stream finished on the target, so the next demo starts afresh)."""
    from .source import slot as slots
    from .source import snapshot
    from .state import StateStore
    from .target import open_target

    try:
        with snapshot.connect(dsn, autocommit=True) as c:
            for _ in range(20):
                row = c.execute(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (name,)
                ).fetchone()
                if row is None or row[0] is None:
                    break
                time.sleep(0.25)
            slots.drop_slot(c, name)
            slots.drop_publication(c, name)
            slots.drop_publication(c, f"{name[:55]}_inserts")
    except Exception as e:  # noqa: BLE001  (the demo reports and goes on)
        log.warning(
            "could not drop replication slot/publication %s on the source: %s; drop them by "
            "hand (pg_drop_replication_slot, DROP PUBLICATION)",
            name,
            redact(e),
        )
        return
    try:
        t = open_target(target)
        try:
            with t.connect() as conn:
                store = StateStore(name)
                if store.exists(conn):
                    store.clear_slot(conn)
        finally:
            t.dispose()
    except Exception as e:  # noqa: BLE001  (the demo reports and goes on)
        log.warning("could not mark stream %s finished on the target: %s", name, redact(e))


def row_counts(pipeline) -> list[tuple[str, str, int, int]]:
    """(source table, target table, source rows, target rows) for every mapped table."""
    import sqlalchemy as sa
    from psycopg import sql

    from .source import snapshot

    out = []
    with snapshot.connect(pipeline.opts.source) as src, pipeline.target.connect() as conn:
        for m in pipeline.mappings:
            t = m.source_table
            q = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t.schema, t.name))
            if m.where:
                q = sql.SQL("{} WHERE {}").format(q, sql.SQL(m.where))
            s = _value(src, q)
            n = conn.execute(sa.select(sa.func.count()).select_from(pipeline.target.table(m))).scalar()
            out.append((m.label, pipeline.target.display(m), int(s), int(n)))
    return out


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(
    source: Optional[str] = None,
    target: Optional[str] = None,
    *,
    seconds: float = 5.0,
    scale: int = 1,
    name: str = "replicator_demo",
    progress: bool = True,
    out: Callable[[str], None] = print,
) -> int:
    """Run the demo; returns the exit code (0: every table's row count matches)."""
    from . import devserver

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: stop, drop the slot, remove the server
    default_path = None
    if target is None:
        target, default_path = _default_target()
    server = None
    t0 = time.monotonic()
    try:
        if source is None:
            server = devserver.DevServer(name="demo")
            source = server.create_database("demo")
            out(
                f"started a throwaway PostgreSQL {server.version} on {server.host}:{server.port} "
                f"(data in {server.basedir}, removed at the end)"
            )
        else:
            out(f"using the source {redact(source)}")
        bindir = server.bindir if server else None
        _prepare(source, server is not None, scale, bindir, default_path, out)
        return _replicate(source, target, name, seconds, progress, bindir, out, t0)
    finally:
        if server is not None:
            server.cleanup()
            out("removed the throwaway PostgreSQL")


def _prepare(
    source: str,
    fresh: bool,
    scale: int,
    bindir,
    default_path: Optional[Path],
    out: Callable[[str], None],
) -> None:
    """Load the pgbench sample (always into a ``fresh`` server, else only when the source lacks
    it), give ``pgbench_history`` REPLICA IDENTITY FULL, and remove an earlier demo's default
    DuckDB file."""
    from . import devserver

    if fresh or not _source_has_pgbench(source):
        out(f"loading the pgbench sample (scale {scale}: {scale * 100_000:,} accounts)")
        devserver.pgbench(source, ["-i", "-q", "-s", str(scale)], bindir=bindir)
    else:
        out("using the pgbench tables already in the source")
    _full_identity(source)
    if default_path is not None and default_path.exists():
        out(f"replacing {default_path} (from an earlier demo)")
        _remove_duckdb(default_path)


def _replicate(
    source: str,
    target: str,
    name: str,
    seconds: float,
    progress: bool,
    bindir,
    out: Callable[[str], None],
    t0: float,
) -> int:
    """Check the source, mirror under a pgbench load, show the status, finish like migrate and
    report the row counts; returns the exit code.  Unless the migrate finished, the slot and
    publications are dropped on the way out (best effort)."""
    from .pipeline import Options

    _check(source, target, out)
    opts = Options(source=source, target=target, tables=TABLES, name=name, jobs=2, batch_seconds=0.5)
    finished = False
    try:
        _mirror_under_load(opts, seconds, progress, bindir, out)
        p = _catch_up(opts, progress, out)
        finished = True
        counts = row_counts(p)
        p.target.dispose()
    finally:
        if not finished:
            _drop_stream_objects(source, target, name)
    return _report(counts, target, t0, out)


def _check(source: str, target: str, out: Callable[[str], None]) -> None:
    """``replicator check`` on the demo tables: print each problem, DemoError when there is one."""
    from .check import preflight

    out(f"$ replicator check --tables {','.join(TABLES)}")
    problems = preflight(source, TABLES, target)
    for problem in problems:
        out(f"problem: {redact(problem)}")
    if problems:
        raise DemoError("the source is not ready for logical replication (see the problems above)")
    out("ok: ready to replicate")


def _mirror_under_load(opts, seconds: float, progress: bool, bindir, out: Callable[[str], None]) -> None:
    """Mirror in a thread while pgbench runs ``seconds`` of tpcb-like transactions, then stop the
    mirror; re-raises the mirror's error, DemoError when pgbench failed."""
    from . import devserver
    from .pipeline import Pipeline

    out(
        f"$ replicator mirror --target {redact(opts.target)}   (while pgbench runs {seconds:g}s of "
        f"tpcb-like transactions)"
    )
    p = Pipeline(opts)
    bench = devserver.pgbench(
        opts.source,
        ["-n", "-c", "2", "-j", "2", "-T", str(max(1, round(seconds))), "-R", "200", "-b", "tpcb-like"],
        bindir=bindir,
        background=True,
    )
    bench_out = _mirror_while(p, bench, progress)
    if bench.returncode != 0:
        raise DemoError(f"pgbench failed (exit {bench.returncode}):\n{bench_out[-2000:]}")
    tps = [ln for ln in bench_out.splitlines() if ln.startswith("tps")]
    out(
        f"mirror stopped: {p.telemetry.changes_applied:,} changes applied in "
        f"{p.telemetry.batches} batches" + (f"; pgbench {tps[0]}" if tps else "")
    )


def _mirror_while(p, bench, progress: bool) -> str:
    """Run ``p.mirror()`` in a thread until ``bench`` (or the mirror) ends; always kill a running
    ``bench``, stop the mirror and dispose of its target.  Returns pgbench's output; re-raises the
    mirror's error."""
    from .watch import watching

    failure: list[BaseException] = []

    def mirror() -> None:
        try:
            p.mirror()
        except BaseException as e:  # noqa: BLE001  re-raised in the main thread
            failure.append(e)

    worker = threading.Thread(target=mirror, name="demo-mirror", daemon=True)
    try:
        with watching(p, progress=progress):
            worker.start()
            while bench.poll() is None and worker.is_alive():
                time.sleep(0.2)
            p.stop_requested = True
            worker.join()
    finally:
        if bench.poll() is None:
            bench.kill()
        bench_out, _ = bench.communicate()
        p.stop_requested = True
        worker.join(60)
        p.target.dispose()
    if failure:
        raise failure[0]
    return bench_out


def _catch_up(opts, progress: bool, out: Callable[[str], None]):
    """Show the status, then finish like ``replicator migrate`` (exact catch-up, count check,
    slot and publications dropped); returns the finished Pipeline (its target still open)."""
    from .pipeline import Pipeline
    from .status import collect, render
    from .watch import watching

    source, target, name = opts.source, opts.target, opts.name
    out(f"$ replicator status --target {redact(target)} --name {name}")
    out(render(collect(source, target, name)))
    out(
        f"$ replicator migrate --target {redact(target)} --name {name}   (catch up, compare "
        f"counts, drop slot and publication)"
    )
    _wait_slot_idle(source, name)
    p = Pipeline(opts)
    with watching(p, progress=progress):
        s = p.migrate()
    out(
        f"caught up to {s.applied_lsn}: {s.changes_applied:,} more changes applied; slot and "
        f"publication dropped"
    )
    return p


def _report(
    counts: list[tuple[str, str, int, int]], target: str, t0: float, out: Callable[[str], None]
) -> int:
    """Print the per-table row counts, the total time and (for DuckDB) how to look at the
    target; returns 0 when every table matches, else 1."""
    out("row counts (source → target):")
    width = max(len(c[0]) for c in counts)
    bad = 0
    for src_t, tgt_t, s_n, t_n in counts:
        ok = s_n == t_n
        bad += not ok
        out(f"  {src_t:{width}} {s_n:>10,} → {t_n:>10,} {tgt_t}  {'ok' if ok else 'DIFFERENT'}")
    out(
        ("every table matches" if not bad else f"{bad} table(s) differ")
        + f"; {time.monotonic() - t0:.1f}s in all"
    )
    if target.startswith("duckdb:///"):
        out(
            f"look at it: duckdb {os.path.relpath(target[len('duckdb:///') :])} "
            f'"SELECT count(*) FROM pgbench_accounts"'
        )
    return 0 if not bad else 1
