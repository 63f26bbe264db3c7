"""The pipeline: plan → publication + slot → snapshot copy → stream → apply, and resume.

Contracts:
* :meth:`Pipeline.plan` only reads (source catalog, target tables): every config, mapping and
  identity error is raised there, before any slot, publication or table exists (invariant 9).
* The publication is created before the slot (decoding reads it through the historic catalog).
* A recorded stream whose slot is gone, invalidated or on another system is terminal (invariant 5).
* Tables found in ``i``/``d`` on start are re-copied from one fresh temporary-slot snapshot; tables
  in ``s``/``r`` are never copied again.
* Feedback to the source is sent only with positions the target committed (invariants 2, 4).
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Optional

import psycopg


from . import bulkcopy, cleanup, fence, mapping, ownership, retry, schema_change, stopping
from .dsn import redact
from .config import MappingConfig
from .errors import CheckError, ConfigError, ReplicatorError, TargetError, TransientError
from .failpoints import failpoint
from .model import Lsn, TableMapping, TableProgress, TableState
from .source import catalog, slot as slots, snapshot
from .follow import RESYNC, STOP, Follow
from .source.changes import ChangeDecoder
from .source.stream import ReplicationStream
from .replay import Replayer
from .state import StateStore
from .target import open_target
from .telemetry import Telemetry

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class Options:
    source: str
    target: Optional[str] = None
    tables: Optional[list[str]] = None
    name: str = "replicator"
    jobs: int = 2
    keep_slot: bool = False
    batch_rows: int = 50_000
    batch_seconds: float = 1.0
    status_interval: float = 10.0
    slot_timeout: float = 300.0
    cutover: bool = False
    mapping: Optional["MappingConfig"] = None


@dataclass
class Summary:
    tables: int = 0
    rows_copied: int = 0
    changes_applied: int = 0
    seconds: float = 0.0
    copy_seconds: float = 0.0
    cutover: list = field(default_factory=list)
    applied_lsn: Lsn = Lsn(0)
    counts: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_copied / self.seconds if self.seconds else 0.0


class Pipeline:
    """One stream (``--name``): its slot, publication and target-side state."""

    def __init__(self, opts: Options):
        if not NAME_RE.match(opts.name or ""):
            raise ConfigError(f"--name {opts.name!r}: use lowercase letters, digits and _ "
                              f"(at most 63, not starting with a digit): it names the slot")
        if opts.jobs < 1:
            raise ConfigError(f"--jobs {opts.jobs}: must be at least 1")
        self.opts = opts
        self.slot = self.publication = opts.name
        self.publication_inserts = f"{opts.name[:55]}_inserts"  # tables published insert-only
        self.target = open_target(opts.target)
        self.store = StateStore(opts.name)
        self.mappings: list[TableMapping] = []
        self.telemetry = Telemetry(opts.name)
        self.restart_requested = False
        self.backoff = retry.Backoff()
        self.client_name = slots.client_name(opts.name)
        self.started = False  # this process has claimed or resumed the stream's slot
        self.created_slot = False  # … and created it in this run
        self.owned_publications: Optional[list[str]] = []
        self.created_publications: list[str] = []  # … in this run
        self.applied_at_start = Lsn(0)
        self._stop = False

    @property
    def stop_requested(self) -> bool:
        """Set by the caller (demo) or by SIGINT/SIGTERM (stopping.py)."""
        return self._stop or stopping.requested()

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self._stop = value

    # ------------------------------------------------------------ plan (read only)
    def plan(self, check_target: bool = True) -> list[TableMapping]:
        """Resolve what goes where and check it all (read only); ``check_target`` False skips
        opening the target (``check`` without --target)."""
        with snapshot.connect(self.opts.source) as c:
            if self.opts.mapping is not None:
                self.mappings = self._from_mapping(c)
            else:
                tables = catalog.select_tables(catalog.list_tables(c), self.opts.tables)
                schemas = catalog.load_schemas(c, tables)
                problems = [p for p in (catalog.identity_problem(s) for s in schemas) if p]
                if problems:
                    raise CheckError(problems)
                self.mappings = [TableMapping(s, s.name) for s in schemas]
            self._check_filters(c)
            from .check import server_problems  # the same problems in the same order as check
            problems = server_problems(c, self.slot) + self._publish_problems(c)
            if problems:
                raise CheckError(problems)
        if not self.mappings:
            raise ConfigError("no tables to replicate: the source has no user tables "
                              "(or --tables / the mapping matched none)")
        names = [p for m in self.mappings for p in self.target.identifier_problems(m)]
        names += [p for m in self.mappings for p in self.target.limit_problems(m)]
        if names:
            raise CheckError(names)
        self._check_target_names()
        if check_target:
            self._check_existing_target_tables()
        return self.mappings

    def _from_mapping(self, c) -> list[TableMapping]:
        """Resolve the mapping file against the whole catalog; --tables narrows the result."""
        schemas = catalog.load_schemas(c, catalog.list_tables(c))
        ms = mapping.resolve(self.opts.mapping, schemas)
        if self.opts.tables:
            keep = {t[0] for t in catalog.select_tables([(m.source.oid, m.source.schema, m.source.name, "")
                                                         for m in ms], self.opts.tables)}
            ms = [m for m in ms if m.source.oid in keep]
        return ms

    def _publish_problems(self, c) -> list[str]:
        """Creating or changing the publications needs privileges a replication role may lack."""
        from .check import publish_problems
        full, inserts = mapping.publications(self.mappings)
        return (publish_problems(c, self.publication, full)
                + publish_problems(c, self.publication_inserts, inserts))

    def _check_filters(self, c) -> None:
        """Each row filter must be valid SQL over its table (tried with LIMIT 0, read only)."""
        from psycopg import sql
        for m in self.mappings:
            if not m.where:
                continue
            t = m.source_table
            try:
                c.execute(sql.SQL("SELECT 1 FROM {} WHERE ({}) LIMIT 0").format(
                    sql.Identifier(t.schema, t.name), sql.SQL(m.where)))
            except psycopg.Error as e:
                c.rollback()
                raise ConfigError(f"row filter of {m.label} is not valid: {m.where!r}: "
                                  f"{str(e).strip().splitlines()[0]}") from None

    def _check_target_names(self) -> None:
        seen: dict[str, str] = {}
        for m in self.mappings:
            k = self.target.display(m).lower()
            if k in seen:
                raise ConfigError(f"{seen[k]} and {m.label} both map to target table "
                                  f"{self.target.display(m)}: replicate one of them, or map them "
                                  f"to different names in a mapping file")
            seen[k] = m.label

    def _check_existing_target_tables(self) -> None:
        """A table we did not create must have every column; ours follow the source's schema
        changes through the stream, so they may lag behind the catalog until it gets there."""
        import sqlalchemy as sa
        with self.target.connect(readonly=True) as conn:
            ours = self.store.load_tables(conn) if self.store.exists(conn) else {}
            insp = sa.inspect(conn)
            for m in self.mappings:
                if m.label in ours:
                    continue
                if insp.has_table(m.target_name, schema=m.target_schema):
                    have = {c["name"] for c in insp.get_columns(m.target_name, schema=m.target_schema)}
                    missing = [c for c in m.source.column_names if c not in have]
                    if missing:
                        raise TargetError(
                            f"target table {self.target.display(m)} exists but lacks column(s) "
                            f"{', '.join(missing)} of {m.label}: add them, or drop the target table")

    # ------------------------------------------------------------ publications
    def publish(self, src) -> None:
        """Create or update the publications (before the slot: decoding reads them historically).

        A publication this stream creates is recorded on the target first, so that only what it
        created is ever dropped (a pre-created one, the least-privilege path, is left alone)."""
        full, inserts = mapping.publications(self.mappings)
        for pub, tables in ((self.publication, full), (self.publication_inserts, inserts)):
            exists = slots.publication_exists(src, pub)
            if not tables:
                if exists and self.owns_publication(pub):
                    slots.drop_publication(src, pub)
                continue
            if not exists:
                with self.target.connect() as c:
                    self.owned_publications = self.store.add_publication(
                        c, pub, self.owned_publications or [])
                self.created_publications.append(pub)
            slots.ensure_publication(src, pub, tables, insert_only=pub == self.publication_inserts)

    def owns_publication(self, pub: str) -> bool:
        """Created by this stream (state rows of older versions did not record it: assume so)."""
        return self.owned_publications is None or pub in self.owned_publications

    def publication_names(self) -> list[str]:
        full, inserts = mapping.publications(self.mappings)
        return [p for p, t in ((self.publication, full), (self.publication_inserts, inserts)) if t]

    # ------------------------------------------------------------ start / resume
    def start(self, src: psycopg.Connection) -> tuple[Lsn, dict[str, TableProgress], Summary]:
        """Bring every table to ``s``/``r``; returns (applied LSN, table progress, copy summary).

        Ownership first (DESIGN.md invariant 11, ownership.py): a slot is created, dropped or used
        only when this target's state row proves it this stream's."""
        row, progress = self._read_state()
        repl = slots.replication_connection(self.opts.source, self.client_name)
        try:
            system_id, _tli, _pos = slots.identify_system(repl)
            info = slots.slot_info(src, self.slot)
            way = ownership.decide(row, progress, info, self.started, self.opts.name,
                                   lambda: slots.holder(src, info and info["active_pid"]))
            if way == ownership.RESUME:
                return self._resume(src, repl, row, progress, system_id, info)
            if info is not None:  # ours (the state row says so), left by an interrupted start
                self._wait_inactive(src, info)
                log.warning("dropping slot %s left by an interrupted start of stream %s: no table "
                            "was copied through it", self.slot, self.opts.name)
                slots.drop_slot(src, self.slot)
            summary = self._fresh(src, repl, system_id, progress)
            with self.target.connect() as c:
                return self.applied_at_start, self.store.load_tables(c), summary
        finally:
            repl.close()

    def _read_state(self):
        """(stream row or None, table progress) without creating anything on the target."""
        with self.target.connect() as c:
            if not self.store.exists(c):
                return None, {}
            self.store.ensure(c)
            return self.store.load_stream(c), self.store.load_tables(c)

    def _wait_inactive(self, src, info: dict, seconds: float = 5.0) -> dict:
        """A walsender of a connection we just closed may linger a moment: give it time."""
        deadline = time.monotonic() + seconds
        while info and info["active"] and time.monotonic() < deadline:
            if stopping.sleep(0.1):
                break
            info = slots.slot_info(src, self.slot) or info
        return info

    def _fresh(self, src, repl, system_id: str, old: dict) -> Summary:
        """Claim the slot on the target (committed first), publish, create the slot, copy."""
        with self.target.connect() as c:
            self.store.ensure(c)
            for label in old:
                self.store.forget_table(c, label)
            self.store.init_stream(c, self.slot, system_id, 0)
            for m in self.mappings:
                self.store.set_table(c, m.label, self.target.display(m), TableState.INIT)
        self.owned_publications = []
        self.publish(src)
        lsn, snap = slots.create_slot(repl, self.slot, timeout=self.opts.slot_timeout,
                                      dsn=self.opts.source)
        self.created_slot = self.started = True
        failpoint("slot.created")
        with self.target.connect() as c:
            self.store.set_applied(c, lsn, None)  # the slot confirms its consistent point already
            for m in self.mappings:
                self.target.ensure_table(c, m)
        self.applied_at_start = lsn
        return self._copy(self.mappings, snap, lsn)

    def _resume(self, src, repl, row, progress: dict[str, TableProgress], system_id: str,
                info) -> tuple[Lsn, dict[str, TableProgress], Summary]:
        """Continue a stream this target owns: the slot must be the one it confirmed to."""
        slots.check_slot(info, self.slot, self.opts.name, system_id, row.system_id, row.applied_lsn)
        info = self._wait_inactive(src, info)
        if info["active"]:
            raise TransientError(f"replication slot {self.slot} is in use by "
                                 f"{slots.holder(src, info['active_pid'])} (another mirror of "
                                 f"{self.opts.name} on this target?)")
        self.started = True
        self.owned_publications = row.extra.get("publications")
        summary = self._copy_missing(src, repl, progress)
        self._restore_layouts(progress)
        return row.applied_lsn, progress, summary

    def _copy_missing(self, src, repl, progress: dict[str, TableProgress]) -> Summary:
        labels = {m.label for m in self.mappings}
        with self.target.connect() as c:
            for gone in [t for t in progress if t not in labels]:
                log.warning("%s is no longer selected: it stops being replicated", gone)
                self.store.forget_table(c, gone)
                progress.pop(gone)
        todo = [m for m in self.mappings if m.label not in progress
                or progress[m.label].state in (TableState.INIT, TableState.DATASYNC)]
        self.publish(src)
        if not todo:
            return Summary(tables=len(self.mappings))
        log.info("copying %d table(s) from a fresh snapshot: %s", len(todo),
                 ", ".join(m.label for m in todo))
        lsn, snap = slots.create_slot(repl, f"{self.slot[:40]}_sync_{os.getpid()}", temporary=True,
                                      timeout=self.opts.slot_timeout, dsn=self.opts.source)
        with self.target.connect() as c:
            for m in todo:
                self.target.ensure_table(c, m)
                self.store.set_table(c, m.label, self.target.display(m), TableState.INIT)
        summary = self._copy(todo, snap, lsn)
        with self.target.connect() as c:
            progress.update(self.store.load_tables(c))
        return summary

    def _restore_layouts(self, progress: dict[str, TableProgress]) -> None:
        """Tables the target already has follow the layout it applied, not today's catalog: the
        stream resumes before any later schema change and brings it in order."""
        self.mappings = [schema_change.with_layout(m, progress[m.label].layout)
                         if m.label in progress else m for m in self.mappings]

    def _copy(self, mappings, snap: str, lsn: Lsn) -> Summary:
        t0 = time.monotonic()
        stats = bulkcopy.copy_tables(self.opts.source, self.target, self.store, mappings, snap, lsn,
                                     self.opts.jobs, telemetry=self.telemetry)
        dt = time.monotonic() - t0
        return Summary(tables=len(mappings), rows_copied=stats.total_rows, seconds=dt,
                       copy_seconds=dt, counts=dict(stats.rows))

    # ------------------------------------------------------------ stream
    def stream(self, applied: Lsn, progress: dict[str, TableProgress],
               until: Optional[Lsn] = None, exact: bool = False) -> Replayer:
        """Apply changes until ``until`` is reached (None: until stop is requested); ``exact``
        stops before the first transaction that commits at or after ``until``."""
        rep = Replayer(self.target, self.store, {m.label: m for m in self.mappings}, progress,
                       applied, self.opts.batch_rows, self.opts.batch_seconds,
                       telemetry=self.telemetry,
                       evolve=schema_change.Follower(self.opts.source, self.store))
        self.telemetry.applied_lsn = int(applied)
        for label, p in progress.items():
            self.telemetry.table(label).state = p.state.value
        decoder = ChangeDecoder({m.label: m.source_table for m in self.mappings})
        stream = ReplicationStream(self.opts.source, self.slot, self.publication_names(),
                                   app_name=self.client_name)
        stream.start()
        follow = Follow(stream, decoder, rep, lambda: self.stop_requested, self._seen,
                        self.opts.status_interval, self.resync_requested)
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

    def _seen(self, frame) -> None:
        """A frame arrived: the stream works (backoff starts again at 1 s), the server's WAL end."""
        self.backoff.healthy()
        end = getattr(frame, "wal_end", 0) or getattr(frame, "end", 0)
        self.telemetry.server_wal_end = max(self.telemetry.server_wal_end, int(end))

    def resync_requested(self) -> bool:
        """A table of this stream was set back to i/d (``replicator resync``) while streaming."""
        with self.target.connect() as c:
            states = self.store.load_tables(c)
        todo = [m.label for m in self.mappings if m.label not in states
                or states[m.label].state in (TableState.INIT, TableState.DATASYNC)]
        if todo:
            log.info("re-sync requested for %s: pausing the stream to copy", ", ".join(todo))
        return bool(todo)

    # ------------------------------------------------------------ commands
    def migrate(self) -> Summary:
        """Copy, catch up to the source's WAL position after the copy, check counts, clean up.
        A failed run removes the slot and publications it created (unless --keep-slot)."""
        t0 = time.monotonic()
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
            raise TargetError(f"row counts differ after catch-up: {', '.join(mismatched)}; the "
                              f"target diverged: run 'replicator verify' to find the rows")
        if self.opts.cutover:
            from . import cutover
            summary.cutover = cutover.carry(self.target, self.mappings,
                                            cutover.sequences(src, self.mappings))
        self.finish(src)
        return summary, rep

    def mirror(self) -> Summary:
        """Copy what needs copying, then apply changes until stop is requested.

        Transient failures (a server restarting, a dropped connection) roll back the open batch
        and resume from the state on the target after a backoff; nothing unapplied was confirmed.
        A first start that fails (or is stopped) before any table was copied removes the slot and
        publications it created.
        """
        self.plan()
        total = Summary(tables=len(self.mappings))
        while True:
            try:
                self._mirror_round(total)
                if not self.restart_requested or self.stop_requested:
                    return total
            except Exception as e:  # noqa: BLE001  (classified right below)
                if retry.is_transient(e) and not self.stop_requested:
                    self._backoff(e)
                    continue
                self._after_failure(e, keep=self._copied_any(), say_kept=False)
                if self.stop_requested and (retry.is_transient(e) or isinstance(e, stopping.Interrupted)):
                    log.warning("stopped: %s", redact(str(e).splitlines()[0] if str(e) else e))
                    return total  # a stop request is not a failure: exit 0
                raise

    def _mirror_round(self, total: Summary) -> None:
        with snapshot.connect(self.opts.source, autocommit=True) as src:
            applied, progress, summary = self.start(src)
        total.rows_copied += summary.rows_copied
        rep = self.stream(applied, progress)
        total.changes_applied += rep.total_changes
        total.applied_lsn = rep.applied

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
        return any(p.state in ownership.COPIED for p in states.values())

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
        for pub in (self.publication, self.publication_inserts):
            if self.owns_publication(pub):
                slots.drop_publication(src, pub)
            elif slots.publication_exists(src, pub):
                log.info("publication %s was not created by stream %s: left as it is", pub,
                         self.opts.name)
        with self.target.connect() as c:
            self.store.clear_slot(c)
