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
from .source import slot as slots
from .source import snapshot

log = logging.getLogger(__name__)


def after_failure(p, keep: bool) -> str:
    """Undo this run's slot and publications of pipeline ``p`` (unless ``keep``), as its
    :class:`~replicator.start.Claim` records them; a note or ''."""
    claim = p.claim
    if not claim.created_slot and not claim.created_publications:
        return ""
    made = ([f"replication slot {p.slot}"] if claim.created_slot else []) + [
        f"publication {x}" for x in claim.created_publications
    ]
    if keep:
        return (
            f"kept {', '.join(made)} for the next run; remove them with 'replicator drop "
            f"--name {p.opts.name}'"
        )
    try:
        with snapshot.connect(p.opts.source, autocommit=True) as src:
            if claim.created_slot:
                slots.drop_slot(src, p.slot, terminate=False)
            for pub in claim.created_publications:
                slots.drop_publication(src, pub)
    except Exception as e:  # noqa: BLE001  (the run failed already: say what is left)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (
            f"could not remove {', '.join(made)} created by this run ({redact(first)}): remove "
            f"them with 'replicator drop --name {p.opts.name}'"
        )
    with contextlib.suppress(Exception):  # the next start begins afresh either way
        with p.target.connect() as c:
            if p.store.exists(c):
                p.store.clear_slot(c)
    claim.created_slot, claim.created_publications, claim.started = False, [], False
    return f"removed {', '.join(made)} created by this run"
