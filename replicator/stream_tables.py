"""What a stream replicates, as its state on the target records it.

A stream started with ``--tables`` (or a mapping) must not need those options again: commands run
later against the same stream (``resync``, and ``verify`` when it wants to) act on the tables in
``replicator_state_tables``, never on every table of the source (an unrelated table created since,
without a key, would otherwise stop them).

Contract: :func:`narrow` only reads (the target's state, the source's table list); it sets
``p.opts.tables`` to the stream's tables that still exist on the source, unless the caller gave
``--tables`` already, and returns the stream's tables.  It raises ConfigError when the target has
no state for the stream.
"""

from __future__ import annotations

import logging

from .errors import ConfigError
from .source import catalog, snapshot

log = logging.getLogger(__name__)


def recorded(p) -> list[str]:
    """The source tables (``schema.table``) the stream's state lists; ConfigError without state."""
    with p.target.connect(readonly=True) as c:
        row = p.store.load_stream(c) if p.store.exists(c) else None
        tables = sorted(p.store.load_tables(c)) if row is not None else []
    if row is None:
        raise ConfigError(
            f"stream {p.opts.name} has no state on this target: nothing to act on "
            f"(start it with 'replicator mirror'; --name names the stream)"
        )
    return tables


def narrow(p) -> list[str]:
    """Make ``p`` plan only its stream's tables (unless ``--tables`` was given); returns them.
    Tables of the stream that the source no longer has are left out, with a warning."""
    mine = recorded(p)
    if p.opts.tables:
        return mine
    with snapshot.connect(p.opts.source) as c:
        have = {f"{t[1]}.{t[2]}" for t in catalog.list_tables(c)}
    gone = [t for t in mine if t not in have]
    if gone:
        log.warning(
            "stream %s replicated %s, which the source no longer has: left out", p.opts.name, ", ".join(gone)
        )
    p.opts.tables = [escape(t) for t in mine if t in have]
    if not p.opts.tables:
        raise ConfigError(
            f"stream {p.opts.name} has no table the source still has ({', '.join(mine) or 'none recorded'})"
        )
    return mine


def escape(label: str) -> str:
    """``label`` as a --tables pattern that matches exactly it (glob characters taken literally)."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in label)
