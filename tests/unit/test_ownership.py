"""Whose slot is it (DESIGN.md invariant 11): the start decision and the continuity check."""

from __future__ import annotations

import pytest

from replicator.errors import ConfigError, SlotLostError, TransientError
from replicator.model import Lsn, StreamProgress, TableProgress, TableState
from replicator.ownership import FRESH, RESUME, decide
from replicator.source.slot import check_slot

ROW = StreamProgress("replicator", "replicator", "42", Lsn(0x500))
SLOT = {
    "slot_name": "replicator",
    "slot_type": "logical",
    "plugin": "pgoutput",
    "database": "app",
    "this_database": "app",
    "active": False,
    "active_pid": None,
    "wal_status": "reserved",
    "confirmed_flush_lsn": "0/500",
}


def progress(state):
    return {"public.t": TableProgress("public.t", "t", state, Lsn(0x100))}


def who():
    return "'replicator replicator pid 77' (client pid 77)"


def test_a_slot_this_target_does_not_claim_is_never_touched():
    with pytest.raises(ConfigError, match="client pid 77.*another --name"):
        decide(None, {}, {**SLOT, "active": True}, False, "replicator", who)
    with pytest.raises(ConfigError, match="not in use right now"):
        decide(StreamProgress("replicator", "", "42"), {}, SLOT, False, "replicator", who)


def test_no_slot_and_no_claim_starts_fresh():
    assert decide(None, {}, None, False, "replicator", who) == FRESH


def test_state_removed_while_running_is_terminal():
    with pytest.raises(SlotLostError, match="removed from the target"):
        decide(None, {}, None, True, "replicator", who)


@pytest.mark.parametrize("state", [TableState.SYNCDONE, TableState.READY])
def test_a_copied_table_means_resume(state):
    assert decide(ROW, progress(state), SLOT, False, "replicator", who) == RESUME


def test_an_interrupted_first_start_of_ours_starts_again_unless_in_use():
    assert decide(ROW, progress(TableState.DATASYNC), SLOT, False, "replicator", who) == FRESH
    assert decide(ROW, progress(TableState.INIT), None, False, "replicator", who) == FRESH
    with pytest.raises(TransientError, match="client pid 77"):
        decide(ROW, {}, {**SLOT, "active": True}, False, "replicator", who)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"plugin": "test_decoding"}, "not the pgoutput slot"),
        ({"database": "other"}, "not the pgoutput slot"),
        ({"slot_type": "physical"}, "not the pgoutput slot"),
        ({"wal_status": "lost"}, "invalidated"),
        ({"confirmed_flush_lsn": "0/600"}, "beyond 0/500"),
    ],
)
def test_continuity_check_refuses_a_slot_that_is_not_where_the_target_stopped(change, match):
    with pytest.raises(SlotLostError, match=match):
        check_slot({**SLOT, **change}, "replicator", "replicator", "42", "42", Lsn(0x500))


def test_continuity_check_accepts_the_slot_behind_or_at_the_target():
    assert check_slot(
        {**SLOT, "confirmed_flush_lsn": "0/400"}, "replicator", "replicator", "42", "42", Lsn(0x500)
    )
    with pytest.raises(SlotLostError, match="another server"):
        check_slot(SLOT, "replicator", "replicator", "43", "42", Lsn(0x500))
