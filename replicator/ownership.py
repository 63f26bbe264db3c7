"""Start phase, first step: whose slot is it?  (DESIGN.md invariant 11)

A stream owns its slot when the target holds the stream's state row naming that slot: the row is
committed before the slot is created, so a slot without such a row on this target belongs to
someone else (another target's stream of the same name, another tool) and is never touched.

:func:`decide` is pure: given what the target's state says and what the source's slot looks like,
it answers how to start, or raises the error that stops the start before anything is changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from .errors import ConfigError, SlotLostError, TransientError
from .model import StreamProgress, TableProgress, TableState

FRESH = "fresh"  # claim the name, create publications and slot, copy every table
RESUME = "resume"  # continue: the slot must pass the continuity check (slot.check_slot)

COPIED = (TableState.SYNCDONE, TableState.READY)


def decide(
    row: Optional[StreamProgress],
    progress: dict[str, TableProgress],
    info: Optional[dict],
    started: bool,
    name: str,
    holder: Callable[[], str],
) -> str:
    """How to start stream ``name``; ``info`` is its slot's pg_replication_slots row (or None),
    ``started`` whether this process already ran the stream (a reconnect), ``holder`` describes
    who holds the slot (called only for a message)."""
    claimed = row is not None and bool(row.slot)
    if not claimed:
        if started:
            raise SlotLostError(
                f"the state of stream {name} was removed from the target while it "
                f"ran (replicator drop?): stopping without creating anything; start "
                f"it again to copy every table afresh"
            )
        if info is not None:
            raise ConfigError(foreign_slot(name, info, holder()))
        return FRESH
    if started or any(p.state in COPIED for p in progress.values()):
        return RESUME
    if info is not None and info.get("active"):
        raise TransientError(
            f"replication slot {info['slot_name']} of stream {name} is in use by "
            f"{holder()}: another replicator of this stream and target is running"
        )
    return FRESH  # an interrupted first start of ours: nothing was copied through the slot


def foreign_slot(name: str, info: dict, who: str, advice: str = "") -> str:
    """The message for a slot of our name that this target's state does not claim."""
    use = f"in use by {who}" if info.get("active") else "not in use right now"
    advice = advice or (
        f"Pick another --name for this target; if the slot is a leftover nobody "
        f"uses, remove it with 'replicator drop --name {name} --force'"
    )
    return (
        f"replication slot {info['slot_name']} already exists on the source ({use}) and this "
        f"target holds no state of stream {name} that created it: it belongs to another stream "
        f"(a mirror into another target?) and was left untouched. {advice}"
    )
