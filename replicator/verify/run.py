"""Verify: prove the target holds what the source holds, table by table, in bounded memory.

Per mapped table (``Planner.plan``: the same mappings replication uses, with row filters, excluded
columns and renames):

1. **Scan.**  One REPEATABLE READ snapshot of the source, read by key order beside the target
   (``sql``); both sides cut into ranges of ``chunk_rows`` source keys with per-side row
   counts and digests of the canonical rows (``ranges.scan``, ``values``).  This gives
   the row counts and the differing ranges; nothing else is kept.
2. **Drill-down** of each differing range, from a fresh snapshot (one per round, shared by all
   tables): key by key, grouped into sub-ranges of ``sub_rows`` keys, listing keys missing on the
   target, extra on it, or changed.
3. **A live mirror** (the stream's slot is active) moves while we read, so a difference is only
   reported when it holds at a consistent point: each round takes a snapshot S at WAL position L,
   waits until the mirror has confirmed L (slot ``confirmed_flush_lsn``: it confirms only what the
   target committed, and an idle mirror confirms the WAL end), reads the range on the target, then
   reads it again on the source in a later snapshot S2.  The target was read between S and S2, so a
   key whose source row version (``xmin``) is the same in S and S2 must be equal on the target: a
   difference there is confirmed.  A key that changed in between is fine when the target equals S2
   and else retried in the next round (``rounds``; ``wait_seconds`` of waiting in all); keys still
   moving after the last round are counted as ``unsettled`` (hot rows) and not reported as
   differences.  A mirror that never confirms in time leaves the table in error (not verified).

The result is one document (``--json``, stable) and one line per table for humans
(``report.render``); see README.md.  This module runs the tables and the rounds; one table's
scan, drill-down and document are ``table.TableCheck``, the wait for the mirror ``mirror.Mirror``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from typing import Optional

from .. import modes, stream_tables
from ..errors import ConfigError
from ..source import slot as slots
from ..source import snapshot
from ..state import StateStore
from .mirror import Mirror
from .read import TargetReader, source_snapshot
from .report import render
from .table import Settings, TableCheck
from .table import _Found as _Found  # re-exported: tests build reports from them
from .table import _Range as _Range

__all__ = ["Settings", "verify", "render"]
log = logging.getLogger(__name__)


def verify(opts, settings: Optional[Settings] = None) -> dict:
    """Verify every mapped table; ``opts`` is a :class:`replicator.options.Options`."""
    from ..planner import Planner

    settings = settings or Settings()
    _check_file(opts.target)
    planner = Planner.for_options(opts)
    with contextlib.suppress(ConfigError):  # a target without the stream's state: every table
        stream_tables.narrow(planner)  # the stream's own tables, not every table of the source
    mappings = [modes.compared(m) for m in planner.plan(check_target=True)]
    target = planner.target
    target.dispose()
    reader = TargetReader(target)
    try:
        slot, states = _stream_state(opts, reader)
        mirror = Mirror(opts.source, slot, settings.wait_seconds)
        if mirror.slot:
            log.info(
                "a mirror is applying into %s (slot %s active): differing ranges are "
                "re-checked at consistent points",
                target.describe(),
                mirror.slot,
            )
            if target.readers_block_writer:  # read in slices, so the mirror can write between
                reader.slice_seconds = settings.slice_seconds
        checks = [TableCheck(opts.source, reader, m, settings, mirror, states.get(m.label)) for m in mappings]
        with _no_gc():
            for c in checks:
                c.scan()
            _rounds(opts.source, checks, mirror, settings)
        tables = [c.finish() for c in checks]
    finally:
        reader.close()
    return {"tables": tables, "equal": all(t["equal"] for t in tables)}


def _rounds(dsn: str, checks: list[TableCheck], mirror: Mirror, s: Settings) -> None:
    """Drill into every differing range until each is confirmed, equal, or out of rounds: one
    source snapshot (and one wait for the mirror) per round, shared by all tables."""
    for _ in range(s.rounds if mirror.slot else 1):
        if not any(c.pending for c in checks):
            return
        with source_snapshot(dsn) as (sc, lsn):
            t0 = time.monotonic()
            caught = mirror.wait(lsn)
            log.debug(
                "re-checking %d range(s) at %s (waited %.2fs for the mirror)",
                sum(len(c.pending) for c in checks),
                lsn,
                time.monotonic() - t0,
            )
            for c in checks:
                c.recheck(sc, caught)


def _check_file(url: Optional[str]) -> None:
    """An embedded target must exist: opening it would create an empty one."""
    from ..target import open_target, target_exists

    target = open_target(url)
    if not target_exists(target):
        raise ConfigError(
            f"target file {target.url.database} does not exist: nothing to verify (check --target)"
        )


def _stream_state(opts, reader: TargetReader) -> tuple[Optional[str], dict]:
    """(the stream's slot when a mirror is applying into this target right now, i.e. the slot
    is active; the state of each table the stream has on the target)."""
    store = StateStore(opts.name)
    with reader.connect() as c:
        if not store.exists(c):
            return None, {}
        stream, tables = store.load_stream(c), store.load_tables(c)
    states = {label: p.state.value for label, p in tables.items()}
    if stream is None or not stream.slot:
        return None, states
    with contextlib.closing(snapshot.connect(opts.source, autocommit=True)) as src:
        info = slots.slot_info(src, stream.slot)
    return (stream.slot if info and info["active"] else None), states


@contextlib.contextmanager
def _no_gc():
    """The cycle collector paused while rows stream: they are tuples freed by reference counting,
    and a collection every few hundred rows halves the throughput.  One collection afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        gc.collect()
