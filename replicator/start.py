"""Start phase: claim the stream, publish, create the slot and copy; or resume what the target has.

Contracts:
* Ownership first (DESIGN.md invariant 11, ownership.py): a slot is created, dropped or used only
  when this target's state row proves it this stream's; the row is committed before the slot is
  created.
* The publications are created before the slot (decoding reads them through the historic
  catalog); a publication this stream creates is recorded on the target first, so that only what
  it created is ever dropped (a pre-created one, the least-privilege path, is left alone).
* A resumed slot must pass the continuity check (slot.check_slot; a lost slot is terminal,
  invariant 5).
* Tables found in ``i``/``d`` on start are re-copied from one fresh temporary-slot snapshot; tables
  in ``s``/``r`` are never copied again.  A table whose state row names its shadow (a re-sync,
  shadow.py) is copied into, and streamed to, the shadow; one already ``r`` is swapped in first.
* :class:`Claim` records what this process holds and created, for the stream and for cleanup.py.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from . import bulkcopy, mapping, ownership, schema_change, shadow, stopping
from .errors import TransientError
from .failpoints import failpoint
from .model import Lsn, TableMapping, TableProgress, TableState
from .options import Options, Summary, inserts_publication
from .source import slot as slots
from .state import StateStore
from .telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass
class Claim:
    """What this process holds of its stream."""

    started: bool = False  # this process has claimed or resumed the stream's slot
    created_slot: bool = False  # … and created it in this run
    #: publications the stream created (None: a state row of an older version, which did not say)
    owned_publications: Optional[list[str]] = field(default_factory=list)
    created_publications: list[str] = field(default_factory=list)  # … in this run

    def owns_publication(self, pub: str) -> bool:
        """Created by this stream (state rows of older versions did not record it: assume so)."""
        return self.owned_publications is None or pub in self.owned_publications


class Publications:
    """The stream's two publications: ``name`` (all changes) and ``<name>_inserts`` (tables
    published insert-only)."""

    def __init__(self, name: str, target, store: StateStore, claim: Claim):
        self.full, self.inserts = name, inserts_publication(name)
        self.target, self.store, self.claim = target, store, claim

    def names(self, mappings: list[TableMapping]) -> list[str]:
        """The publications the stream of ``mappings`` reads."""
        full, inserts = mapping.publications(mappings)
        return [p for p, t in ((self.full, full), (self.inserts, inserts)) if t]

    def publish(self, src, mappings: list[TableMapping]) -> None:
        """Create or update both publications to list ``mappings`` (see the module contract)."""
        full, inserts = mapping.publications(mappings)
        for pub, tables in ((self.full, full), (self.inserts, inserts)):
            exists = slots.publication_exists(src, pub)
            if not tables:
                if exists and self.claim.owns_publication(pub):
                    slots.drop_publication(src, pub)
                continue
            if not exists:
                if pub not in (self.claim.owned_publications or []):  # recorded before it exists
                    with self.target.connect() as c:
                        self.record(c, [pub])
                self.claim.created_publications.append(pub)
            slots.ensure_publication(src, pub, tables, insert_only=pub == self.inserts)

    def missing(self, src, mappings: list[TableMapping]) -> list[str]:
        """The publications :meth:`publish` will create for ``mappings`` (they do not exist)."""
        full, inserts = mapping.publications(mappings)
        pubs = ((self.full, full), (self.inserts, inserts))
        return [p for p, t in pubs if t and not slots.publication_exists(src, p)]

    def record(self, conn, pubs: list[str]) -> None:
        """Record on the target, in the caller's transaction, that this stream creates ``pubs``
        (before it does: only what a stream created is ever dropped)."""
        for pub in pubs:
            self.claim.owned_publications = self.store.add_publication(
                conn, pub, self.claim.owned_publications or []
            )

    def drop_owned(self, src, stream: str) -> None:
        """Drop the publications this stream created; a pre-created one is left as it was."""
        for pub in (self.full, self.inserts):
            if self.claim.owns_publication(pub):
                slots.drop_publication(src, pub)
            elif slots.publication_exists(src, pub):
                log.info("publication %s was not created by stream %s: left as it is", pub, stream)


class Started(NamedTuple):
    applied: Lsn  # the stream goes on after this position
    progress: dict[str, TableProgress]
    summary: Summary  # of the copy this start made
    mappings: list[TableMapping]  # resumed tables with the layout the target applied


class Starter:
    """Brings every table of stream ``opts.name`` to ``s``/``r`` (:meth:`start`)."""

    def __init__(
        self,
        opts: Options,
        target,
        store: StateStore,
        claim: Claim,
        publications: Publications,
        telemetry: Telemetry,
    ):
        self.opts, self.target, self.store = opts, target, store
        self.claim, self.publications, self.telemetry = claim, publications, telemetry
        self.slot = opts.name
        self.client_name = slots.client_name(opts.name)

    def start(self, src, mappings: list[TableMapping]) -> Started:
        """Fresh (claim, publish, create the slot, copy) or resume, as ownership.decide says."""
        row, progress = self._read_state()
        repl = slots.replication_connection(self.opts.source, self.client_name)
        try:
            system_id, _tli, _pos = slots.identify_system(repl)
            info = slots.slot_info(src, self.slot)
            way = ownership.decide(
                row,
                progress,
                info,
                self.claim.started,
                self.opts.name,
                lambda: slots.holder(src, info["active_pid"] if info else None),
            )
            if way == ownership.FRESH and row is not None and row.slot:
                # a table re-synced beside its copy was streamed through the slot: go on with it
                way = ownership.RESUME if shadow.resyncing(self.target, mappings, progress) else way
            if way == ownership.RESUME:
                return self._resume(src, repl, row, progress, system_id, info, mappings)
            if info is not None:  # ours (the state row says so), left by an interrupted start
                self._wait_inactive(src, info)
                log.warning(
                    "dropping slot %s left by an interrupted start of stream %s: no table "
                    "was copied through it",
                    self.slot,
                    self.opts.name,
                )
                slots.drop_slot(src, self.slot)
            applied, summary = self._fresh(src, repl, system_id, progress, mappings)
            with self.target.connect() as c:
                return Started(applied, self.store.load_tables(c), summary, mappings)
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

    def _fresh(
        self, src, repl, system_id: str, old: dict, mappings: list[TableMapping]
    ) -> tuple[Lsn, Summary]:
        """Claim the slot on the target (committed first), publish, create the slot, copy."""
        self.claim.owned_publications = []
        with self.target.connect() as c:  # one target transaction: the claim and its publications
            self.store.ensure(c)
            for label in old:
                self.store.forget_table(c, label)
            self.store.init_stream(c, self.slot, system_id, 0)
            for m in mappings:
                self.store.set_table(c, m.label, self.target.display(m), TableState.INIT)
            self.publications.record(c, self.publications.missing(src, mappings))
        self.publications.publish(src, mappings)
        lsn, snap = slots.create_slot(repl, self.slot, timeout=self.opts.slot_timeout, dsn=self.opts.source)
        self.claim.created_slot = self.claim.started = True
        failpoint("slot.created")
        with self.target.connect() as c:
            self.store.set_applied(c, lsn, None)  # the slot confirms its consistent point already
            for m in mappings:
                self.target.ensure_table(c, m)
        return lsn, self._copy(mappings, snap, lsn)

    def _resume(
        self,
        src,
        repl,
        row,
        progress: dict[str, TableProgress],
        system_id: str,
        info,
        mappings: list[TableMapping],
    ) -> Started:
        """Continue a stream this target owns: the slot must be the one it confirmed to."""
        slots.check_slot(info, self.slot, self.opts.name, system_id, row.system_id, row.applied_lsn)
        info = self._wait_inactive(src, info)
        if info["active"]:
            raise TransientError(
                f"replication slot {self.slot} is in use by "
                f"{slots.holder(src, info['active_pid'])} (another mirror of "
                f"{self.opts.name} on this target?)"
            )
        self.claim.started = True
        self.claim.owned_publications = row.extra.get("publications")
        summary = self._copy_missing(src, repl, progress, mappings)
        ms = shadow.redirect(self.target, restore_layouts(mappings, progress), progress)
        return Started(
            row.applied_lsn, progress, summary, shadow.finish(self.target, self.store, ms, progress)
        )

    def _copy_missing(
        self, src, repl, progress: dict[str, TableProgress], mappings: list[TableMapping]
    ) -> Summary:
        """Forget tables no longer selected; copy those not yet (or no longer) in ``s``/``r``."""
        self._forget_unselected(progress, {m.label for m in mappings})
        todo = [  # a table re-synced beside its copy is copied into its shadow
            m
            for m in shadow.redirect(self.target, mappings, progress)
            if m.label not in progress or progress[m.label].state in (TableState.INIT, TableState.DATASYNC)
        ]
        self.publications.publish(src, mappings)
        if not todo:
            return Summary(tables=len(mappings))
        log.info("copying %d table(s) from a fresh snapshot: %s", len(todo), ", ".join(m.label for m in todo))
        lsn, snap = slots.create_slot(
            repl,
            f"{self.slot[:40]}_sync_{os.getpid()}",
            temporary=True,
            timeout=self.opts.slot_timeout,
            dsn=self.opts.source,
        )
        with self.target.connect() as c:
            for m in todo:
                self.target.ensure_table(c, m)
                self.store.set_table(c, m.label, self.target.display(m), TableState.INIT)
        summary = self._copy(todo, snap, lsn)
        with self.target.connect() as c:
            progress.update(self.store.load_tables(c))
        return summary

    def _forget_unselected(self, progress: dict[str, TableProgress], labels: set[str]) -> None:
        with self.target.connect() as c:
            for gone in [t for t in progress if t not in labels]:
                log.warning("%s is no longer selected: it stops being replicated", gone)
                self.store.forget_table(c, gone)
                progress.pop(gone)

    def _copy(self, mappings: list[TableMapping], snap: str, lsn: Lsn) -> Summary:
        t0 = time.monotonic()
        stats = bulkcopy.copy_tables(
            self.opts.source,
            self.target,
            self.store,
            mappings,
            snap,
            lsn,
            self.opts.jobs,
            telemetry=self.telemetry,
        )
        dt = time.monotonic() - t0
        return Summary(
            tables=len(mappings),
            rows_copied=stats.total_rows,
            seconds=dt,
            copy_seconds=dt,
            counts=dict(stats.rows),
        )


def restore_layouts(mappings: list[TableMapping], progress: dict[str, TableProgress]) -> list[TableMapping]:
    """Tables the target already has follow the layout it applied, not today's catalog: the
    stream resumes before any later schema change and brings it in order."""
    return [
        schema_change.with_layout(m, progress[m.label].layout) if m.label in progress else m for m in mappings
    ]
