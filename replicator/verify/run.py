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
(``report.render``); see README.md.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import psycopg
import sqlalchemy.exc

from .. import stream_tables
from ..dsn import redact
from ..errors import ConfigError
from ..model import Lsn, TableMapping
from ..source import slot as slots
from ..source import snapshot
from ..state import StateStore
from .ranges import KEY, SK, VALUES, VERSION, OrderError, classify, drill, scan
from .read import TargetReader, source_snapshot
from .report import render
from .sql import TablePlan
from .values import display

__all__ = ["Settings", "verify", "render"]
log = logging.getLogger(__name__)
#: what reading one table may raise without stopping the others (values no driver can convert,
#: statements a database refuses)
READ_ERRORS = (sqlalchemy.exc.SQLAlchemyError, psycopg.Error, ValueError, OverflowError, TypeError)


@dataclass
class Settings:
    chunk_rows: int = 10_000  # source keys per checksummed range
    sub_rows: int = 100  # source keys per reported sub-range of a differing range
    max_keys: int = 20  # differing keys listed per table
    max_ranges: int = 20  # differing sub-ranges listed per table
    rounds: int = 3  # consistent re-checks on a live mirror
    wait_seconds: float = 60.0  # time the re-checks may wait for a live mirror, in all
    slice_seconds: float = 0.5  # how long a live DuckDB file is held per read


@dataclass
class _Range:
    """A range still differing: its bounds (source raw keys) and latest counts."""

    lo: Optional[tuple]
    hi: Optional[tuple]
    source_rows: int
    target_rows: int
    first: Optional[tuple] = None  # lowest and highest row seen in it (either side), for reports
    last: Optional[tuple] = None
    unsettled: int = 0
    lagging: bool = False
    seq: int = 0  # position in the scan


@dataclass
class _Found:
    """Confirmed differences of one range, as sub-ranges of (first row, last row, diffs)."""

    range: _Range
    subranges: list = field(default_factory=list)


def verify(opts, settings: Optional[Settings] = None) -> dict:
    """Verify every mapped table; ``opts`` is a :class:`replicator.options.Options`."""
    from ..planner import Planner

    settings = settings or Settings()
    _check_file(opts.target)
    planner = Planner.for_options(opts)
    with contextlib.suppress(ConfigError):  # a target without the stream's state: every table
        stream_tables.narrow(planner)  # the stream's own tables, not every table of the source
    mappings = planner.plan(check_target=True)
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


class Mirror:
    """The running mirror, if any: waits until it confirmed a source position."""

    def __init__(self, dsn: str, slot: Optional[str], wait_seconds: float):
        self.dsn, self.slot, self.wait_seconds = dsn, slot, wait_seconds
        self.deadline: Optional[float] = None  # from the first wait on (scans may take long)

    def wait(self, lsn: Lsn) -> bool:
        """True once the mirror confirmed ``lsn`` (it confirms only what the target committed;
        an idle mirror confirms the WAL end), or when there is no mirror; False after the
        deadline.  A mirror that stopped meanwhile leaves a target that no longer moves."""
        if self.slot is None:
            return True
        if self.deadline is None:
            self.deadline = time.monotonic() + self.wait_seconds
        with contextlib.closing(snapshot.connect(self.dsn, autocommit=True)) as c:
            while True:
                info = slots.slot_info(c, self.slot)
                if info is None or not info["active"]:
                    log.info("the mirror stopped: the target no longer moves")
                    self.slot = None
                    return True
                if Lsn.parse(info["confirmed_flush_lsn"]) >= lsn:
                    return True
                if time.monotonic() > self.deadline:
                    return False
                time.sleep(0.05)


class TableCheck:
    """Scan, drill-down and (on a live mirror) consistent re-checks of one table."""

    def __init__(
        self,
        dsn: str,
        reader: TargetReader,
        m: TableMapping,
        s: Settings,
        mirror: Mirror,
        state: Optional[str] = None,
    ):
        self.dsn, self.reader, self.m, self.s, self.mirror = dsn, reader, m, s, mirror
        self.state = state
        self.plan: Optional[TablePlan] = None
        self.doc = {
            "source": m.label,
            "target": reader.target.display(m),
            "equal": False,
            "source_rows": 0,
            "target_rows": 0,
            "ranges": [],
            "differing_ranges": 0,
            "truncated": False,
            "unsettled": 0,
            "error": None,
        }
        self.found: list[_Found] = []
        self.pending: list[_Range] = []
        self.unchecked: list[_Range] = []
        self.lagging = False

    # ------------------------------------------------------------------ scan
    def scan(self) -> None:
        """Counts and range digests of the whole table (one source snapshot)."""
        if self.state in ("i", "d"):
            self.doc["error"] = (
                f"the copy of this table has not finished (state {self.state}): "
                f"verify it once it is s or r (replicator status)"
            )
            return
        types = self.reader.reflect(self.m)
        if types is None:
            self.doc["error"] = f"target table {self.doc['target']} does not exist"
            return
        missing = [c for c in self.m.view.column_names if c not in types]
        if missing:
            self.doc["error"] = f"target table {self.doc['target']} lacks column(s) {', '.join(missing)}"
            return
        self.plan = TablePlan(self.m, self.reader.target, types)
        t0 = time.monotonic()
        with self._guarded():
            with source_snapshot(self.dsn) as (sc, _lsn):
                src = self.plan.source_rows(sc)
                with contextlib.closing(self.reader.rows(self.plan)) as tgt:
                    for r in scan(src, tgt, self.s.chunk_rows):
                        self.doc["source_rows"] += r.source_rows
                        self.doc["target_rows"] += r.target_rows
                        if not r.equal:
                            self.pending.append(
                                _Range(
                                    _bound(r.lo),
                                    _bound(r.hi),
                                    r.source_rows,
                                    r.target_rows,
                                    r.first,
                                    r.last,
                                    seq=len(self.pending),
                                )
                            )
        log.debug(
            "%s: scanned %d/%d rows in %.2fs, %d range(s) differ",
            self.m.label,
            self.doc["source_rows"],
            self.doc["target_rows"],
            time.monotonic() - t0,
            len(self.pending),
        )

    @contextlib.contextmanager
    def _guarded(self):
        """A table that cannot be read or ordered is reported as such; the others go on."""
        try:
            yield
        except OrderError as e:
            self.doc["error"] = (
                f"cannot compare in key order ({e}): the key's type orders differently on the target"
            )
        except READ_ERRORS as e:
            log.debug("%s: verify failed", self.m.label, exc_info=True)
            orig = getattr(e, "orig", None) or e
            first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            self.doc["error"] = f"could not be compared: {redact(first)}"
        else:
            return
        self.pending = []

    # ------------------------------------------------------------------ rounds
    def recheck(self, sc, caught: bool) -> None:
        """Drill into the pending ranges at snapshot ``sc``; keep those to look at again."""
        if not self.pending:
            return
        nxt = []
        with self._guarded(), sc.transaction():  # a savepoint: the round's snapshot survives errors
            for rng in self.pending:
                if self._full():
                    self.unchecked.append(rng)
                elif self._drill(sc, rng, caught):
                    nxt.append(rng)
            self.pending = nxt

    def _scanned(self) -> TablePlan:
        """The plan :meth:`scan` made: every range (pending, found, unchecked) comes from it."""
        assert self.plan is not None, "a range before the scan"
        return self.plan

    def _drill(self, sc, rng: _Range, caught: bool) -> bool:
        """One range at snapshot ``sc``; True when it must be looked at again next round."""
        live = self.mirror.slot is not None
        plan = self._scanned()
        with contextlib.closing(self.reader.rows(plan, rng.lo, rng.hi)) as tgt:
            d = drill(
                plan.source_rows(sc, rng.lo, rng.hi, version=live),
                tgt,
                self.s.sub_rows,
                plan.keyed,
                max(2 * self.s.chunk_rows, self.s.max_keys),
            )
        self.doc["source_rows"] += d.source_rows - rng.source_rows
        self.doc["target_rows"] += d.target_rows - rng.target_rows
        rng.source_rows, rng.target_rows = d.source_rows, d.target_rows
        rng.lagging = False
        if not d.diff_count:
            return False
        if not live:
            self.found.append(_Found(rng, [(s.first, s.last, s.diffs) for s in d.subranges]))
            return False
        if not caught:
            rng.lagging = True
            return True
        confirmed, unsettled = classify(d.diffs, self._later(rng, {x.sk for x in d.diffs}))
        if len(d.diffs) < d.diff_count and not confirmed:
            unsettled = unsettled or d.diffs  # not every difference was kept: look again
        if confirmed:
            keep = {id(x) for x in confirmed}
            self.found.append(
                _Found(
                    rng,
                    [
                        (s.first, s.last, [x for x in s.diffs if id(x) in keep])
                        for s in d.subranges
                        if any(id(x) in keep for x in s.diffs)
                    ],
                )
            )
            return False
        rng.unsettled = len(unsettled)
        return bool(unsettled)

    def _later(self, rng: _Range, wanted: set) -> dict:
        """Versions and canonical rows of ``wanted`` keys in a snapshot taken now (S2)."""
        later: dict = {}
        with source_snapshot(self.dsn) as (sc2, _lsn):
            for row in self._scanned().source_rows(sc2, rng.lo, rng.hi, version=True):
                if row[SK] in wanted:
                    vs, rows = later.setdefault(row[SK], ([], []))
                    vs.append(str(row[VERSION]))
                    rows.append(row[VALUES])
        return later

    def _full(self) -> bool:
        keys = sum(len(d) for f in self.found for _a, _b, d in f.subranges)
        subs = sum(len(f.subranges) for f in self.found)
        return keys >= self.s.max_keys and subs >= self.s.max_ranges

    # ------------------------------------------------------------------ report
    def finish(self) -> dict:
        """The table's document, once the rounds are over."""
        lagging = [r for r in self.pending if r.lagging]
        if lagging:
            self.doc["error"] = (
                f"the mirror did not confirm the source's position within "
                f"{self.s.wait_seconds:.0f}s (lagging?): {len(lagging)} differing "
                f"range(s) could not be checked at a consistent point"
            )
            self.unchecked += lagging
        self.doc["unsettled"] = sum(r.unsettled for r in self.pending if not r.lagging)
        self._report(self.unchecked)
        return self.doc

    def _report(self, unchecked: list[_Range]) -> None:
        """``ranges``: the differing sub-ranges with their keys while ``max_keys`` lasts, then
        the other differing ranges without keys; at most ``max_ranges`` entries."""
        self.doc["differing_ranges"] = len(self.found) + len(unchecked)
        self.doc["equal"] = not self.found and not unchecked and self.doc["error"] is None
        budget, out, keyless, cut = self.s.max_keys, self.doc["ranges"], list(unchecked), False
        for f in self.found:
            listed = 0
            for first, last, diffs in f.subranges:
                if budget <= 0 or len(out) >= self.s.max_ranges:
                    cut = True
                    break
                entry: dict[str, Any] = {
                    "from": self._key(first),
                    "to": self._key(last),
                    "missing": [],
                    "extra": [],
                    "changed": [],
                    "columns": [],
                }
                for d in diffs[:budget]:
                    entry[d.kind].append(self._key(d.row))
                cut |= len(diffs) > budget
                budget -= min(budget, len(diffs))
                names = self._scanned().source_names
                entry["columns"] = [names[i] for i in sorted({c for d in diffs for c in d.columns})]
                out.append(entry)
                listed += 1
            if not listed:
                keyless.append(f.range)
        room = max(0, self.s.max_ranges - len(out))
        keyless.sort(key=lambda r: r.seq)
        for rng in keyless[:room]:
            out.append(
                {
                    "from": rng.first and self._key(rng.first),
                    "to": rng.last and self._key(rng.last),
                    "missing": [],
                    "extra": [],
                    "changed": [],
                    "columns": [],
                }
            )
        self.doc["truncated"] = cut or len(keyless) > room

    def _key(self, row: tuple) -> dict:
        plan = self._scanned()
        names, idx = plan.source_names, plan.key_idx
        return {names[i]: display(row[VALUES][i]) for i in idx}


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


def _bound(row: Optional[tuple]) -> Optional[tuple]:
    """A range bound as the source raw key (what the next queries bind)."""
    return None if row is None else row[KEY]
