"""One table's verification: scan, drill-down and consistent re-checks, and its result document.

Contract: a :class:`TableCheck` reads only (one source snapshot for its scan, the round's snapshot
and a later one for each re-check, the target through its :class:`~.read.TargetReader`); what it
cannot read or order becomes the ``error`` of its document and never stops the other tables.  Its
memory is bounded by the settings: range digests while scanning, at most ``2 * chunk_rows`` keys
per drilled range, and the ``max_keys`` / ``max_ranges`` listed.  The document's keys are those of
``--json`` (see :mod:`replicator.verify.run` and README.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import psycopg
import sqlalchemy.exc

from ..dsn import redact
from ..model import TableMapping
from .mirror import Mirror
from .ranges import KEY, SK, VALUES, VERSION, Drilled, OrderError, classify, drill, scan
from .read import TargetReader, source_snapshot
from .sql import TablePlan
from .values import display

log = logging.getLogger("replicator.verify.run")  # its name before the split: log lines unchanged
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


def _no_keys(first: Any, last: Any) -> dict[str, Any]:
    """A ``ranges`` entry from ``first`` to ``last`` with (as yet) no keys listed."""
    return {"from": first, "to": last, "missing": [], "extra": [], "changed": [], "columns": []}


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
        plan = self._plan()
        if plan is None:
            return
        t0 = time.monotonic()
        with self._guarded():
            with source_snapshot(self.dsn) as (sc, _lsn):
                src = plan.source_rows(sc)
                with contextlib.closing(self.reader.rows(plan)) as tgt:
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

    def _plan(self) -> Optional[TablePlan]:
        """The table's read plan (kept as ``self.plan``), or None with the document's ``error``
        set when the table cannot be scanned: its copy is unfinished, or the target table or
        some of its columns are missing."""
        if self.state in ("i", "d"):
            self.doc["error"] = (
                f"the copy of this table has not finished (state {self.state}): "
                f"verify it once it is s or r (replicator status)"
            )
            return None
        types = self.reader.reflect(self.m)
        if types is None:
            self.doc["error"] = f"target table {self.doc['target']} does not exist"
            return None
        missing = [c for c in self.m.view.column_names if c not in types]
        if missing:
            self.doc["error"] = f"target table {self.doc['target']} lacks column(s) {', '.join(missing)}"
            return None
        self.plan = TablePlan(self.m, self.reader.target, types)
        return self.plan

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
        return self._settle(rng, d)

    def _settle(self, rng: _Range, d: Drilled) -> bool:
        """Differences ``d`` of ``rng`` on a live mirror that caught
        up: those whose source row did not move since are confirmed and kept in ``found``; True
        when others moved (or were not all kept) and the range must be looked at again."""
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
        out, keyless = self.doc["ranges"], list(unchecked)
        cut = self._keyed(out, keyless)
        room = max(0, self.s.max_ranges - len(out))
        keyless.sort(key=lambda r: r.seq)
        for rng in keyless[:room]:
            out.append(_no_keys(rng.first and self._key(rng.first), rng.last and self._key(rng.last)))
        self.doc["truncated"] = cut or len(keyless) > room

    def _keyed(self, out: list, keyless: list[_Range]) -> bool:
        """Append to ``out`` the found sub-ranges with their keys, ``max_keys`` keys and
        ``max_ranges`` entries at most; a found range none of whose sub-ranges fit goes to
        ``keyless``.  True when something was left out (the report is truncated)."""
        budget, cut = self.s.max_keys, False
        for f in self.found:
            listed = 0
            for first, last, diffs in f.subranges:
                if budget <= 0 or len(out) >= self.s.max_ranges:
                    cut = True
                    break
                entry = _no_keys(self._key(first), self._key(last))
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
        return cut

    def _key(self, row: tuple) -> dict:
        plan = self._scanned()
        names, idx = plan.source_names, plan.key_idx
        return {names[i]: display(row[VALUES][i]) for i in idx}


def _bound(row: Optional[tuple]) -> Optional[tuple]:
    """A range bound as the source raw key (what the next queries bind)."""
    return None if row is None else row[KEY]
