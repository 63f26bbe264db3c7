"""Net-change reduction (replicator/netchange.py): applying the reduced batch equals applying
every change one by one, over random change sequences per key (insert, update, delete, key
change, unchanged TOAST), on a model target; the target-side version of this property runs on
every real target in tests/integration/test_net_apply.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.model import UNCHANGED, ChangeKind, Lsn, RowChange
from replicator.netchange import NetChanges, merged

INS, U, D = ChangeKind.INSERT, ChangeKind.UPDATE, ChangeKind.DELETE


class Missing(Exception):
    pass


def key_of(row, key_idx):
    return tuple(row[i] for i in key_idx)


def apply_one_by_one(target: dict, changes, key_idx) -> dict:
    """The reference: each change applied alone to a dict key → row (errors on a missing row or
    a duplicate key, as a target with a primary key would)."""
    t = dict(target)
    for ch in changes:
        if ch.kind is INS:
            k = key_of(ch.new, key_idx)
            if k in t:
                raise Missing(f"duplicate {k}")
            t[k] = ch.new
            continue
        k = key_of(ch.old if ch.old is not None else ch.new, key_idx)
        if k not in t:
            raise Missing(f"{ch.kind.name} {k} at {ch.lsn}")
        row = t.pop(k)
        if ch.kind is U:
            new = merged(row, ch.new)
            nk = key_of(new, key_idx)
            if nk in t:
                raise Missing(f"duplicate {nk}")
            t[nk] = new
    return t


@st.composite
def histories(draw, key_cols: int = 1, width: int = 4):
    """A consistent source history: a start state and changes valid against it, with the
    identity the source would send (old key for DELETE and key changes; FULL when ``full``)."""
    full = draw(st.booleans())
    keys = [tuple(f"k{i}-{j}" for j in range(key_cols)) for i in range(6)]
    start = {}
    for k in draw(st.lists(st.sampled_from(keys), unique=True, max_size=4)):
        start[k] = k + tuple(f"v{j}" for j in range(width - key_cols))
    state, changes = dict(start), []
    for n in range(draw(st.integers(0, 30))):
        lsn = Lsn(100 + n)
        op = draw(st.sampled_from("IUDK" if state else "I"))
        free = [k for k in keys if k not in state]
        if op == "I" or (op == "K" and not free):
            if not free:
                continue
            k = draw(st.sampled_from(free))
            row = k + tuple(draw(st.sampled_from(["a", "b", None])) for _ in range(width - key_cols))
            state[k] = row
            changes.append(RowChange(INS, "t", new=row, lsn=lsn))
            continue
        k = draw(st.sampled_from(sorted(state)))
        row = state[k]
        old_key = row if full else k + (None,) * (width - key_cols)
        if op == "D":
            del state[k]
            changes.append(RowChange(D, "t", old=old_key, old_is_key=not full, lsn=lsn))
            continue
        nk = draw(st.sampled_from(free)) if op == "K" else k
        vals = nk + tuple(draw(st.sampled_from(["x", "y", None])) for _ in range(width - key_cols))
        # TOAST: a column whose value did not change may be sent as UNCHANGED
        sent = tuple(
            UNCHANGED if i >= key_cols and vals[i] == row[i] and draw(st.booleans()) else v
            for i, v in enumerate(vals)
        )
        del state[k]
        state[nk] = vals
        old = old_key if (full or nk != k) else None
        changes.append(RowChange(U, "t", new=sent, old=old, old_is_key=not full, lsn=lsn))
    return start, changes, state


@pytest.mark.parametrize("key_cols", [1, 2])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_applying_the_net_changes_equals_applying_each_change(key_cols, data):
    start, changes, final = data.draw(histories(key_cols))
    key_idx = list(range(key_cols))
    net = NetChanges(key_idx)
    for ch in changes:
        net.add(ch)
    out = net.drain()
    assert apply_one_by_one(start, changes, key_idx) == final
    assert apply_one_by_one(start, out, key_idx) == final
    assert len(out) <= 2 * len(changes)  # a key change is a DELETE and an INSERT
    assert len(net) == 0 and net.drain() == []


def test_a_batch_of_pgbench_transactions_touches_each_teller_once():
    net = NetChanges([0])
    for n in range(5000):
        net.add(RowChange(U, "tellers", new=(str(n % 100), "1", str(n)), lsn=Lsn(n)))
    out = net.drain()
    assert len(out) == 100
    assert {ch.new[0]: ch.new[2] for ch in out}["7"] == "4907"


def test_unchanged_toast_keeps_the_last_value_sent_or_stays_untouched():
    net = NetChanges([0])
    net.add(RowChange(U, "t", new=("1", "big", "a"), lsn=Lsn(1)))
    net.add(RowChange(U, "t", new=("1", UNCHANGED, "b"), lsn=Lsn(2)))
    net.add(RowChange(U, "t", new=("2", UNCHANGED, "c"), lsn=Lsn(3)))
    out = {ch.new[0]: ch.new for ch in net.drain()}
    assert out == {"1": ("1", "big", "b"), "2": ("2", UNCHANGED, "c")}


def test_each_kind_runs_once_deletes_then_updates_then_inserts():
    net = NetChanges([0])
    for n in range(30):
        kind = (INS, U, D)[n % 3]
        row = (str(n), "v")
        net.add(RowChange(kind, "t", new=None if kind is D else row, old=row if kind is D else None))
    out = net.drain()
    assert [ch.kind for ch in out] == [D] * 10 + [U] * 10 + [INS] * 10


def test_insert_then_delete_is_nothing_and_delete_then_insert_replaces():
    net = NetChanges([0])
    net.add(RowChange(INS, "t", new=("1", "a"), lsn=Lsn(1)))
    net.add(RowChange(D, "t", old=("1", None), lsn=Lsn(2)))
    net.add(RowChange(D, "t", old=("2", None), lsn=Lsn(3)))
    net.add(RowChange(INS, "t", new=("2", "b"), lsn=Lsn(4)))
    assert [(ch.kind, ch.new, ch.lsn) for ch in net.drain()] == [(U, ("2", "b"), Lsn(3))]


def test_a_divergence_names_the_first_change_that_needed_the_row():
    net = NetChanges([0])
    for n in range(3):
        net.add(RowChange(U, "t", new=("9", str(n)), lsn=Lsn(10 + n)))
    (ch,) = net.drain()
    with pytest.raises(Missing, match="at 0/A"):
        apply_one_by_one({}, [ch], [0])


def test_a_key_change_with_an_unknown_toast_value_is_applied_as_it_came():
    net = NetChanges([0])
    net.add(RowChange(U, "t", new=("1", "x", "a"), lsn=Lsn(1)))
    kc = RowChange(U, "t", new=("2", UNCHANGED, "b"), old=("1", None, None), lsn=Lsn(2))
    net.add(kc)
    net.add(RowChange(U, "t", new=("2", UNCHANGED, "c"), lsn=Lsn(3)))
    out = net.drain()
    assert out[1] is kc and len(out) == 3


def test_tables_without_a_key_keep_every_change_in_order():
    net = NetChanges([])
    chs = [RowChange(INS, "t", new=("a",)), RowChange(D, "t", old=("a",), old_is_key=False)] * 3
    for ch in chs:
        net.add(ch)
    assert net.drain() == chs
