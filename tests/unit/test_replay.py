"""Replay rules on a real SQLite file (no server): skip, sync gating, grouping, chunked huge txns."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from replicator.apply import Replayer
from replicator.failpoints import failpoint  # noqa: F401  (module imported: inert without env)
from replicator.model import (
    ChangeKind,
    Column,
    Lsn,
    RowChange,
    TableMapping,
    TableProgress,
    TableSchema,
    TableState,
    TxBegin,
    TxCommit,
)
from replicator.state import StateStore
from replicator.target import open_target

T = TableSchema(
    "public",
    "t",
    (Column("id", 23, "integer", not_null=True), Column("v", 25, "text")),
    key=("id",),
    primary_key=("id",),
)


@pytest.fixture
def setup(tmp_path):
    target = open_target(f"sqlite:///{tmp_path}/r.sqlite")
    m = TableMapping(T, "t")
    store = StateStore("s")
    with target.connect() as c:
        target.ensure_table(c, m)
        store.ensure(c)
        store.init_stream(c, "slot", "1", 0)
        store.set_table(c, "public.t", "t", TableState.SYNCDONE, sync_lsn=0x200)
    progress = {"public.t": TableProgress("public.t", "t", TableState.SYNCDONE, Lsn(0x200))}
    yield target, m, store, progress
    target.dispose()


def tx(rep, final, end, *ids):
    rep.handle(TxBegin(Lsn(final), None, 1))
    for i in ids:
        rep.handle(RowChange(ChangeKind.INSERT, "public.t", new=(str(i), "x"), lsn=Lsn(final)))
    rep.handle(TxCommit(Lsn(final), Lsn(end), None))


def rows(target):
    with target.connect() as c:
        return sorted(r[0] for r in c.execute(sa.text("SELECT id FROM t")))


def test_sync_gating_skips_changes_in_the_snapshot_and_marks_ready(setup):
    target, m, store, progress = setup
    rep = Replayer(target, store, {"public.t": m}, progress, Lsn(0))
    tx(rep, 0x100, 0x110, 1)  # commit before the sync LSN: already in the copy
    tx(rep, 0x200, 0x210, 2)  # at the sync LSN: applied
    assert rep.commit() == Lsn(0x210)
    assert rows(target) == [2]
    with target.connect() as c:
        assert store.load_tables(c)["public.t"].state is TableState.READY
        assert store.load_stream(c).applied_lsn == 0x210


def test_applied_transactions_are_skipped_on_resend(setup):
    target, m, store, progress = setup
    rep = Replayer(target, store, {"public.t": m}, progress, Lsn(0x300))
    tx(rep, 0x250, 0x260, 7)  # at or below the applied position: skipped
    tx(rep, 0x300, 0x310, 8)
    rep.commit()
    assert rows(target) == [8]


def test_batch_never_commits_inside_a_transaction_and_chunks_huge_ones(setup):
    target, m, store, progress = setup
    rep = Replayer(target, store, {"public.t": m}, progress, Lsn(0), batch_rows=10, chunk_rows=100)
    rep.handle(TxBegin(Lsn(0x400), None, 1))
    for i in range(1000):
        rep.handle(RowChange(ChangeKind.INSERT, "public.t", new=(str(i), "x"), lsn=Lsn(0x400)))
        assert rep.pending_rows < 100  # flushed into the open transaction in chunks
    assert not rep.due() and rep.commit() is None
    rep.handle(TxCommit(Lsn(0x400), Lsn(0x410), None))
    assert rep.due()
    assert rep.commit() == Lsn(0x410)
    assert len(rows(target)) == 1000


def test_rollback_leaves_neither_data_nor_progress(setup):
    target, m, store, progress = setup
    rep = Replayer(target, store, {"public.t": m}, progress, Lsn(0), chunk_rows=1)
    tx(rep, 0x500, 0x510, 1, 2)
    rep.close(commit=False)
    assert rows(target) == []
    with target.connect() as c:
        assert store.load_stream(c).applied_lsn == 0


def test_state_tables_from_an_older_version_get_the_layout_column(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path}/old.sqlite")
    with eng.begin() as c:
        c.execute(
            sa.text(
                "CREATE TABLE replicator_state_tables (stream VARCHAR(200), source_table VARCHAR(400), "
                "target_table VARCHAR(400), state VARCHAR(1), sync_lsn BIGINT, rows_copied BIGINT, "
                "updated_at DATETIME, PRIMARY KEY (stream, source_table))"
            )
        )
        c.execute(
            sa.text("INSERT INTO replicator_state_tables VALUES ('s', 'public.t', 't', 'r', 5, 1, NULL)")
        )
        store = StateStore("s")
        store.ensure(c)
        assert store.load_tables(c)["public.t"].layout is None
    eng.dispose()
