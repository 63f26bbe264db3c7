"""Re-sync beside the live table (issue 15): copy into a shadow table, swap it in once ready.

``replicator resync`` never empties the table readers use.  The chosen table's state row goes back
to ``i`` naming its *shadow* (``Target.shadow``: ``<name>__resync`` within the database's name
limits; :func:`start_over`); the copy fills the shadow (``d`` → ``s``, from the source's current
columns) and the stream applies the table's changes to it, as to any table; the live table is
left exactly as it was, and nothing writes it.  The batch whose commit passes the sync LSN makes
the row ``r`` (still naming the shadow); right after that commit, where the stream holds no open
batch, one more target transaction swaps the shadow in (``Target.swap_table``: the old table
dropped, the shadow renamed to its name) and names the live table in the row again
(:func:`swap_ready`).  Readers see the old rows until that commit and the new ones after.

The row's ``target_table`` names the physical table the stream writes, so it says where a table
stands across crashes (:func:`redirect` rebuilds the stream's mappings from it on start):

* ``i``/``d`` naming the shadow: copied again into the shadow (cleared first), as any table;
* ``s`` naming the shadow: the stream goes on writing the shadow; the swap comes with ``r``;
* ``r`` naming the shadow: the swap was not made, or (MySQL, whose RENAME TABLE commits by
  itself) made and not recorded: :func:`finish` makes or completes it on start, before the stream;
* naming the live table: nothing to do.

Where DDL is transactional (PostgreSQL, SQLite, DuckDB) the swap and the state row that records
it commit together: a swap is made exactly once.  MySQL: the swap is one atomic RENAME TABLE, then
the DROP of the old table and the state row; a start after a crash in between finds the shadow gone
and completes the rest.  Only this module and admin.py's resync make shadows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa

from .errors import ConfigError, TargetError
from .failpoints import failpoint
from .model import TableMapping, TableProgress, TableState
from .target import mode_merge, swap

if TYPE_CHECKING:
    from .state import StateStore
    from .target.base import Target
    from .telemetry import Telemetry

log = logging.getLogger(__name__)


def names_shadow(target: Target, m: TableMapping, p: Optional[TableProgress]) -> bool:
    """Whether state row ``p`` names the shadow of ``m`` (a live mapping): a re-sync under way."""
    return p is not None and p.target == target.display(target.shadow(m))


def redirect(
    target: Target, mappings: list[TableMapping], progress: dict[str, TableProgress]
) -> list[TableMapping]:
    """The mappings the stream writes through: each table's shadow where its state row names the
    shadow, else its live table (shadow mappings given are taken back to their tables first)."""
    out = []
    for m in mappings:
        live = target.unshadow(m) or m
        out.append(target.shadow(live) if names_shadow(target, live, progress.get(live.label)) else live)
    return out


def resyncing(target: Target, mappings: list[TableMapping], progress: dict[str, TableProgress]) -> bool:
    """Some table is being re-synced beside its live copy (the stream's slot carried its changes
    before: a start resumes the stream, it never begins afresh)."""
    return any(names_shadow(target, target.unshadow(m) or m, progress.get(m.label)) for m in mappings)


def start_over(target: Target, store: StateStore, conn: sa.Connection, m: TableMapping) -> None:
    """``replicator resync`` of ``m``, in the caller's transaction: a shadow left by an earlier
    re-sync is dropped, and the state row goes back to ``i`` naming the shadow.  A shadow name
    that another replicated table has is a ConfigError, before anything is dropped."""
    sh = target.shadow(m)
    name = target.display(sh)
    mine = store.load_tables(conn).get(m.label)
    holder = store.replicated_targets(conn).get(name.lower())
    if holder is not None and (mine is None or mine.target != name):
        raise ConfigError(
            f"{m.label}: a re-sync copies into {name} beside {target.display(m)}, but stream "
            f"{holder} replicates a table of that name: map one of them to another name"
        )
    swap.drop(conn, sh)
    target.forget(sh)
    store.set_table(conn, m.label, name, TableState.INIT, sync_lsn=0, rows_copied=0)


def finish(
    target: Target, store: StateStore, mappings: list[TableMapping], progress: dict[str, TableProgress]
) -> list[TableMapping]:
    """On start, before the stream: swap in every shadow whose table is ``r`` already (a crash
    came between its ``r`` and its swap); returns ``mappings`` with those at their live tables."""
    by_label = {m.label: m for m in mappings}
    ready = [t for t, p in progress.items() if p.state is TableState.READY and t in by_label]
    swap_ready(target, store, by_label, progress, ready)
    merged = [
        m
        for m in by_label.values()
        if m.mode is not None
        and target.unshadow(m) is None
        and not names_shadow(target, m, progress.get(m.label))
    ]
    if merged and not target.transactional_ddl:  # a shadow merged in, not dropped yet (a crash)
        with target.connect() as conn:
            for m in merged:
                sh = target.shadow(m)
                if swap.exists(conn, sh):
                    swap.drop(conn, sh)
                target.forget(sh)
    return list(by_label.values())


def swap_ready(
    target: Target,
    store: StateStore,
    mappings: dict[str, TableMapping],
    progress: dict[str, TableProgress],
    ready: list[str],
    telemetry: Optional[Telemetry] = None,
) -> bool:
    """Swap in the shadows of the tables ``ready`` (just made ``r`` and committed; no batch
    open), each in its own target transaction with its state row; ``mappings`` and ``progress``
    then name their live tables.  True when some table was swapped."""
    done = False
    for label in ready:
        sh = mappings.get(label)
        live = target.unshadow(sh) if sh is not None else None
        if sh is None or live is None:
            continue
        swap_in(target, store, label, live, sh, progress[label].sync_lsn)
        mappings[label] = live
        progress[label].target = target.display(live)
        if telemetry is not None:
            telemetry.table(label).target = target.display(live)
        done = True
    return done


def swap_in(
    target: Target, store: StateStore, label: str, live: TableMapping, sh: TableMapping, sync_lsn: int
) -> None:
    """One swap and the state row that records it (one transaction where DDL is transactional).
    A table with a mode is not swapped but merged (target/mode_merge.py: the live table keeps its
    past), with the state row in one transaction on every database; the shadow is dropped in it,
    or right after where DDL commits by itself (a crash in between leaves it to :func:`finish`).
    A database error names the table and the way on; a transient one is raised as it is."""
    failpoint("resync.before_swap", label)
    try:
        with target.connect() as conn:
            if live.mode is None:
                target.swap_table(conn, live, sh)
            else:
                mode_merge.merge(target, conn, live, sh, sync_lsn)
                if target.transactional_ddl:
                    swap.drop(conn, sh)
            store.set_table(conn, label, target.display(live), TableState.READY)
        if live.mode is not None and not target.transactional_ddl:
            failpoint("resync.merged", label)
            with target.connect() as conn:
                swap.drop(conn, sh)
    except sa.exc.DBAPIError as e:
        if target.transient(e):
            raise
        first = str(e.orig).strip().splitlines()[0] if str(e.orig).strip() else type(e.orig).__name__
        raise TargetError(
            f"{label}: swapping the re-synced copy {target.display(sh)} in for {target.display(live)} "
            f"failed: {first}; the old table is left as it was (objects that depend on it, such as "
            f"views, keep it from being dropped: drop them), and the next start tries again"
        ) from e
    failpoint("resync.swapped", label)
    target.forget(live)
    target.forget(sh)
    log.info("%s: the re-synced copy is in place of %s", label, target.display(live))
