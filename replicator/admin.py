"""Operating a stream: drop it, re-sync chosen tables.

Contracts:
* ``drop`` removes the slot, both publications and this stream's target-side state (target data
  stays unless ``drop_tables``); it is safe to run twice and refuses while a mirror holds the slot
  unless ``force``.
* ``resync`` puts the chosen tables back to ``i``, each naming its shadow table beside the live
  one (shadow.py): the copy goes there, from the source's current columns (a re-sync is how a
  renamed or retyped column goes on), while readers keep reading the live table, untouched, until
  the shadow is ready and swapped in.  A running mirror notices within
  ``follow.RESYNC_POLL_SECONDS`` between batches and re-copies them from a fresh snapshot; with no
  mirror running the copy happens here and now, and the stream is followed until the copies are
  swapped in.  Other tables are not copied again, and nothing confirmed to the source is lost
  either way.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from . import ownership, shadow, stopping, stream_tables
from .errors import ConfigError, ReplicatorError
from .model import Lsn, TableProgress, TableState
from .options import Options, validate
from .pipeline import Pipeline
from .source import catalog, snapshot
from .source import slot as slots
from .start import Claim, Publications
from .state import StateStore
from .target import open_target, swap

log = logging.getLogger(__name__)


def drop(opts: Options, drop_tables: bool = False, force: bool = False) -> list[str]:
    """Drop slot, publications and state (and target tables with ``drop_tables``); lines done.

    Only what this target's state proves the stream's own is dropped (DESIGN.md invariant 11);
    ``force`` drops the slot and publications of that name anyway, terminating their walsender."""
    target = open_target(opts.target, must_exist=True)  # a missing embedded file: error, not created
    validate(opts)
    store = StateStore(opts.name)
    with target.connect() as c:
        row = store.load_stream(c) if store.exists(c) else None
    ours = row is not None and bool(row.slot)
    claim = Claim(owned_publications=row.extra.get("publications") if row is not None else None)
    pubs = Publications(opts.name, target, store, claim)
    with snapshot.connect(opts.source, autocommit=True) as src:
        done = _drop_source_side(opts.name, pubs, src, ours, force)
    with target.connect() as c:
        if store.exists(c):
            tables = store.load_tables(c)
            if drop_tables:
                for t in tables.values():
                    for name in _physical(t.target):
                        _drop_table(c, name)
                        done.append(f"dropped target table {name}")
            store.drop(c)
            done.append(f"removed the state of stream {opts.name} from the target")
    target.dispose()
    return done or [f"nothing to drop for stream {opts.name}"]


def _drop_source_side(name: str, pubs: Publications, src, ours: bool, force: bool) -> list[str]:
    """The slot ``name`` and the publications ``pubs``, as far as they are the stream's."""
    info = slots.slot_info(src, name)
    if info and not ours and not force:
        who = slots.holder(src, info["active_pid"])
        raise ReplicatorError(
            ownership.foreign_slot(
                name,
                info,
                who,
                "Nothing was dropped; to drop it anyway (its stream then stops with exit 3), add --force",
            )
        )
    if info and info["active"] and not force:
        raise ReplicatorError(
            f"replication slot {name} is in use by "
            f"{slots.holder(src, info['active_pid'])} (a mirror is running): stop "
            f"it first, or add --force (the mirror then stops with exit 3)"
        )
    done = []
    if info and slots.drop_slot(src, name, terminate=force):
        done.append(f"dropped replication slot {name}")
    for pub in (pubs.full, pubs.inserts):
        if not slots.publication_exists(src, pub):
            continue
        if force or (ours and pubs.claim.owns_publication(pub)):
            slots.drop_publication(src, pub)
            done.append(f"dropped publication {pub}")
        else:
            done.append(f"left publication {pub}: stream {name} did not create it")
    return done


def _physical(display: str) -> list[str]:
    """The target tables of a state row: a row that names a re-sync's shadow (``t__resync``,
    shadow.py) stands for the live table ``t`` too."""
    if display.endswith(swap.SHADOW) and len(display) > len(swap.SHADOW):
        return [display.removesuffix(swap.SHADOW), display]
    return [display]


def _drop_table(conn, display: str) -> None:
    schema, _, name = display.rpartition(".")
    sa.Table(name, sa.MetaData(), schema=schema or None).drop(conn, checkfirst=True)


def resync(opts: Options, patterns: list[str]) -> str:
    """Send the tables matching ``patterns`` back through i → d → s → r, beside their live copies.

    Only the stream's own tables (its state on the target: stream_tables.py) are planned and can
    be chosen; other tables of the source are neither checked nor published."""
    p = Pipeline(opts)
    mine = stream_tables.narrow(p)
    ms = p.plan()
    chosen = _chosen(opts.name, ms, patterns, mine)
    with p.target.connect() as c:
        for m in ms:
            if m.label in chosen:
                shadow.start_over(p.target, p.store, c, m)
    with snapshot.connect(opts.source, autocommit=True) as src:
        if _mirror_running(src, p):
            return (
                f"{len(chosen)} table(s) set back to 'i': the running mirror re-copies them "
                f"within a few seconds ({', '.join(sorted(chosen))})"
            )
        applied, progress, summary = p.start(src)
    _catch_up(p, applied, progress, chosen)
    p.target.dispose()
    return f"re-copied {len(chosen)} table(s), {summary.rows_copied} rows: {', '.join(sorted(chosen))}"


def _mirror_running(src, p: Pipeline) -> bool:
    """A mirror of the stream runs: its slot is active, or one of its connections is open (between
    two of its rounds, while it copies, the slot is idle; pipeline.py names that round's source
    connection).  Looked at twice, 2 s apart: a mirror goes from its stream to its next round
    with no connection open for a moment."""
    mine = (f"replicator {p.opts.name[:32]} pid ", f"replicator {p.opts.name} copy ")
    for look in range(2):
        if look and stopping.sleep(2.0):
            stopping.check("looking for a running mirror")
        info = slots.slot_info(src, p.slot)
        (clients,) = src.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND (starts_with(application_name, %s) OR starts_with(application_name, %s))",
            mine,
        ).fetchone()
        if (info and info["active"]) or clients:
            return True
    return False


def _catch_up(p: Pipeline, applied: Lsn, progress: dict[str, TableProgress], chosen: set[str]) -> None:
    """With no mirror running: follow the stream until the chosen tables pass their sync LSN, so
    their copies are swapped in now (every table's changes up to there are applied, as a mirror
    applies them; the rest waits for the next mirror)."""
    waiting = [progress[t] for t in chosen if t in progress and progress[t].state is TableState.SYNCDONE]
    if waiting:
        p.stream(applied, progress, until=Lsn(max(t.sync_lsn for t in waiting)))


def _chosen(name: str, ms, patterns: list[str], mine: list[str]) -> set[str]:
    """The labels of the planned tables ``patterns`` match; a pattern matching none of the
    stream's tables is a ConfigError naming them."""
    rows = [(m.view.oid, m.view.schema, m.view.name, "") for m in ms]
    chosen: set[str] = set()
    for pat in patterns:
        try:
            chosen |= {t[1] + "." + t[2] for t in catalog.select_tables(rows, [pat])}
        except ConfigError:
            full = pat if "." in pat else f"public.{pat}"
            raise ConfigError(
                f"table {full!r} (from --tables) is not replicated by stream {name} "
                f"(its tables: {', '.join(mine) or 'none'}): nothing was re-synced; "
                f"check the name, or --name for another stream"
            ) from None
    return chosen
