"""The pipeline: plan → publication + slot → snapshot copy → stream → apply, and resume.

One :class:`Pipeline` is one stream (``--name``).  It wires the phases together and runs the
commands; each phase lives in its own module:

* planning (read only): :mod:`replicator.planner`: every config, mapping and identity error is
  raised before any slot, publication or table exists (invariant 9);
* start, resume and the snapshot copy: :mod:`replicator.start` (ownership, publications, slot,
  continuity check, copy of the tables not yet in ``s``/``r``);
* the stream: the loop in :mod:`replicator.follow`; feedback to the source is sent only with
  positions the target committed (invariants 2, 4);
* ``migrate`` and ``mirror`` here, with their clean-up after a failure (cleanup.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Optional

import psycopg

from . import cleanup, fence, retry, schema_change, stopping, stream_tables
from .apply import Replayer
from .dsn import redact
from .errors import CheckError, ReplicatorError, TargetError
from .follow import RESYNC, STOP, Follow
from .model import Lsn, TableMapping, TableProgress, TableState
from .options import Options, Summary, validate  # callers import Options and Summary from here
from .ownership import COPIED
from .planner import Planner
from .source import slot as slots
from .source import snapshot
from .source.changes import ChangeDecoder
from .source.stream import ReplicationStream
from .spool import spooling
from .start import Claim, Publications, Starter
from .state import StateStore
from .target import open_target
from .telemetry import Telemetry

log = logging.getLogger(__name__)


def _claimed(attr: str) -> property:
    """A pipeline attribute kept in its :class:`~replicator.start.Claim` (cleanup.py, admin.py)."""
    return property(
        lambda self: getattr(self.claim, attr), lambda self, value: setattr(self.claim, attr, value)
    )


class Pipeline:
    """One stream (``--name``): its slot, publication and target-side state."""

    started = _claimed("started")  # this process has claimed or resumed the stream's slot
    created_slot = _claimed("created_slot")  # … and created it in this run
    owned_publications = _claimed("owned_publications")
    created_publications = _claimed("created_publications")  # … in this run

    def __init__(self, opts: Options):
        validate(opts)
        self.opts = opts
        self.slot = self.publication = opts.name
        self.target = open_target(opts.target)
        self.store = StateStore(opts.name)
        self.mappings: list[TableMapping] = []
        self.telemetry = Telemetry(opts.name)
        self.restart_requested = False
        self.backoff = retry.Backoff()
        self.claim = Claim()
        self.planner = Planner(opts, self.target, self.store)
        self.publications = Publications(opts.name, self.target, self.store, self.claim)
        self.starter = Starter(opts, self.target, self.store, self.claim, self.publications, self.telemetry)
        self.publication_inserts = self.publications.inserts
        self.client_name = self.starter.client_name
        self._stop = False

    @property
    def stop_requested(self) -> bool:
        """Set by the caller (demo) or by SIGINT/SIGTERM (stopping.py)."""
        return self._stop or stopping.requested()

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self._stop = value

    def owns_publication(self, pub: str) -> bool:
        return self.claim.owns_publication(pub)

    def publication_names(self) -> list[str]:
        return self.publications.names(self.mappings)

    # ------------------------------------------------------------ plan, start
    def plan(self, check_target: bool = True) -> list[TableMapping]:
        """What goes where, checked (read only: planner.py)."""
        self.mappings = self.planner.plan(check_target)
        return self.mappings

    def start(self, src: psycopg.Connection) -> tuple[Lsn, dict[str, TableProgress], Summary]:
        """Bring every table to ``s``/``r``; returns (applied LSN, table progress, copy summary)."""
        started = self.starter.start(src, self.mappings)
        self.mappings = started.mappings
        return started.applied, started.progress, started.summary

    # ------------------------------------------------------------ stream
    def stream(
        self,
        applied: Lsn,
        progress: dict[str, TableProgress],
        until: Optional[Lsn] = None,
        exact: bool = False,
    ) -> Replayer:
        """Apply changes until ``until`` is reached (None: until stop is requested); ``exact``
        stops before the first transaction that commits at or after ``until``."""
        rep = self._replayer(applied, progress)
        decoder = ChangeDecoder({m.label: m.source_table for m in self.mappings})
        spool = spooling(self.opts)  # large in-progress transactions come while they run
        stream = ReplicationStream(
            self.opts.source,
            self.slot,
            self.publication_names(),
            app_name=self.client_name,
            proto_version=2 if spool else 1,
        )
        stream.start()
        follow = Follow(
            stream,
            decoder,
            rep,
            lambda: self.stop_requested,
            self._seen,
            self.opts.status_interval,
            self.resync_requested,
            spool=spool,
        )
        try:
            outcome = follow.run(until, exact)
        except BaseException:
            rep.close(commit=False)
            raise
        finally:
            stream.close()
            self.mappings = list(rep.mappings.values())  # schema changes followed while streaming
        self.restart_requested = outcome == RESYNC
        if until is not None and outcome == STOP:
            stopping.check(f"catching up to {until}")
        return rep

    def _replayer(self, applied: Lsn, progress: dict[str, TableProgress]) -> Replayer:
        """The Replayer of this run's mappings from ``applied`` on (tables in ``progress``), its
        batch limits from the options; the telemetry's applied LSN and table states set to match."""
        rep = Replayer(
            self.target,
            self.store,
            {m.label: m for m in self.mappings},
            progress,
            applied,
            self.opts.batch_rows,
            self.opts.batch_seconds,
            telemetry=self.telemetry,
            evolve=schema_change.Follower(self.opts.source, self.store),
        )
        self.telemetry.applied_lsn = int(applied)
        for label, p in progress.items():
            self.telemetry.table(label).state = p.state.value
        return rep

    def _seen(self, frame) -> None:
        """A frame arrived: the stream works (backoff starts again at 1 s), the server's WAL end."""
        self.backoff.healthy()
        end = getattr(frame, "wal_end", 0) or getattr(frame, "end", 0)
        self.telemetry.server_wal_end = max(self.telemetry.server_wal_end, int(end))

    def resync_requested(self) -> bool:
        """A table of this stream was set back to i/d (``replicator resync``) while streaming."""
        with self.target.connect() as c:
            states = self.store.load_tables(c)
        todo = [
            m.label
            for m in self.mappings
            if m.label not in states or states[m.label].state in (TableState.INIT, TableState.DATASYNC)
        ]
        if todo:
            log.info("re-sync requested for %s: pausing the stream to copy", ", ".join(todo))
        return bool(todo)

    # ------------------------------------------------------------ commands
    def migrate(self) -> Summary:
        """Copy, catch up to the source's WAL position after the copy, check counts, clean up.
        A failed run removes the slot and publications it created (unless --keep-slot)."""
        t0 = time.monotonic()
        with self.target.held():  # one-shot: an embedded target file stays open throughout
            self.plan()
            try:
                with snapshot.connect(self.opts.source, autocommit=True) as src:
                    summary, rep = self._migrate(src)
            except BaseException as e:
                self._after_failure(e, keep=self.opts.keep_slot)
                raise
        summary.changes_applied = rep.total_changes
        summary.applied_lsn = rep.applied
        summary.seconds = time.monotonic() - t0
        return summary

    def _migrate(self, src) -> tuple[Summary, Replayer]:
        applied, progress, summary = self.start(src)
        rep = None
        for _attempt in range(3):
            end, counts = fence.take(self.opts.source, self.slot, self.mappings, self.opts.slot_timeout)
            rep = self.stream(rep.applied if rep else applied, progress, until=end, exact=True)
            mismatched = fence.mismatches(self.target, self.mappings, counts)
            if not mismatched:
                break
            log.warning("row counts differ at %s (%s): catching up again", end, ", ".join(mismatched))
        else:
            raise TargetError(
                f"row counts differ after catch-up: {', '.join(mismatched)}; the "
                f"target diverged: run 'replicator verify' to find the rows"
            )
        if self.opts.cutover:
            from . import cutover

            summary.cutover = cutover.carry(self.target, self.mappings, cutover.sequences(src, self.mappings))
        self.finish(src)
        return summary, rep

    def mirror(self) -> Summary:
        """Copy what needs copying, then apply changes until stop is requested.

        Transient failures (a server restarting, a dropped connection) roll back the open batch
        and resume from the state on the target after a backoff; nothing unapplied was confirmed.
        A first start that fails (or is stopped) before any table was copied removes the slot and
        publications it created.
        """
        with self.target.held():
            self.plan()
        total = Summary(tables=len(self.mappings))
        while True:
            try:
                self._mirror_round(total)
                if not self.restart_requested or self.stop_requested:
                    return total
            except Exception as e:  # noqa: BLE001  (classified right below)
                if retry.is_transient(e, self.target) and not self.stop_requested:
                    self._backoff(e)
                    continue
                self._after_failure(e, keep=self._copied_any(), say_kept=False)
                if self.stop_requested and (
                    retry.is_transient(e, self.target) or isinstance(e, stopping.Interrupted)
                ):
                    log.warning("stopped: %s", redact(str(e).splitlines()[0] if str(e) else e))
                    return total  # a stop request is not a failure: exit 0
                raise

    def _mirror_round(self, total: Summary) -> None:
        # the round's source connection carries the stream's client name: while the slot is idle
        # (a copy between two rounds) it tells ``replicator resync`` that this mirror runs
        src_name = {"application_name": self.client_name}
        with self.target.held(), snapshot.connect(self.opts.source, autocommit=True, **src_name) as src:
            if self.restart_requested:
                self._replan_resynced()
            applied, progress, summary = self.start(src)
        total.rows_copied += summary.rows_copied
        rep = self.stream(applied, progress)
        total.changes_applied += rep.total_changes
        total.applied_lsn = rep.applied

    def _replan_resynced(self) -> None:
        """Tables ``replicator resync`` set back to ``i``/``d`` while this mirror ran are planned
        again, so their copy has the source's current columns (a re-sync is how a renamed or
        retyped column goes on); the others keep the layout the stream has applied."""
        with self.target.connect(readonly=True) as c:
            states = self.store.load_tables(c)
        todo = {t for t, p in states.items() if p.state in (TableState.INIT, TableState.DATASYNC)}
        todo &= {m.label for m in self.mappings}
        if not todo:
            return
        opts = dataclasses.replace(self.opts, tables=[stream_tables.escape(t) for t in sorted(todo)])
        fresh = {m.label: m for m in Planner(opts, self.target, self.store).plan(check_target=False)}
        self.mappings = [fresh.get(m.label, m) if m.label in todo else m for m in self.mappings]

    def _backoff(self, e: Exception) -> None:
        """Wait before the next try (ends early on a stop request)."""
        self.telemetry.errors[type(e).__name__] += 1
        delay = self.backoff.next()
        log.warning("%s; retrying in %.0fs", redact(str(e).splitlines()[0] if str(e) else e), delay)
        self.target.dispose()
        stopping.sleep(delay)

    def _copied_any(self) -> bool:
        """Some table of this stream reached ``s`` (the slot is then needed to go on)."""
        try:
            with self.target.connect(readonly=True) as c:
                states = self.store.load_tables(c) if self.store.exists(c) else {}
        except Exception:  # noqa: BLE001  (unreadable target: keep the slot, the safe side)
            return True
        return any(p.state in COPIED for p in states.values())

    def _after_failure(self, e: BaseException, keep: bool, say_kept: bool = True) -> None:
        """Remove what this failed run created, or say what it leaves; the note goes into the
        error's message (and the log)."""
        note = cleanup.after_failure(self, keep) if (say_kept or not keep) else ""
        if not note:
            return
        log.warning("%s", note)
        if isinstance(e, ReplicatorError) and e.args and not isinstance(e, CheckError):
            e.args = (f"{e.args[0]}; {note}",) + e.args[1:]

    def finish(self, src) -> None:
        """After a migration: drop slot and the publications this stream created, unless
        --keep-slot; a pre-created publication is left as it was."""
        if self.opts.keep_slot:
            log.info("keeping slot %s and publication %s (--keep-slot)", self.slot, self.publication)
            return
        slots.drop_slot(src, self.slot, terminate=True)  # ours: only our closed stream lingers
        self.publications.drop_owned(src, self.opts.name)
        with self.target.connect() as c:
            self.store.clear_slot(c)
