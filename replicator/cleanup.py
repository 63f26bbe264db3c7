"""After a failed run: remove what it created, or say exactly what it leaves and how to remove it.

Contract (DESIGN.md invariant 12): a failed ``migrate`` (and a failed first ``mirror`` start, before
any table was copied) drops the slot and the publications it created in this run, unless asked to
keep them; nothing it did not create is touched.  The returned note names what was removed or
left, for the error message.
"""
from __future__ import annotations

import contextlib
import logging

from .dsn import redact
from .source import slot as slots, snapshot

log = logging.getLogger(__name__)


def after_failure(p, keep: bool) -> str:
    """Undo this run's slot and publications of pipeline ``p`` (unless ``keep``); a note or ''."""
    if not p.created_slot and not p.created_publications:
        return ""
    made = ([f"replication slot {p.slot}"] if p.created_slot else []) + \
        [f"publication {x}" for x in p.created_publications]
    if keep:
        return (f"kept {', '.join(made)} for the next run; remove them with 'replicator drop "
                f"--name {p.opts.name}'")
    try:
        with snapshot.connect(p.opts.source, autocommit=True) as src:
            if p.created_slot:
                slots.drop_slot(src, p.slot, terminate=False)
            for pub in p.created_publications:
                slots.drop_publication(src, pub)
    except Exception as e:  # noqa: BLE001  (the run failed already: say what is left)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (f"could not remove {', '.join(made)} created by this run ({redact(first)}): remove "
                f"them with 'replicator drop --name {p.opts.name}'")
    with contextlib.suppress(Exception):  # the next start begins afresh either way
        with p.target.connect() as c:
            if p.store.exists(c):
                p.store.clear_slot(c)
    p.created_slot, p.created_publications, p.started = False, [], False
    return f"removed {', '.join(made)} created by this run"
