"""The spool of streamed in-progress transactions, without a server: blocks of interleaved
transactions, subtransaction rollbacks cut where their first change was (in the unwritten chunk
or in a written one), whole aborts, a transaction streamed again from its first block, the size
limit, and the replay as one ordinary transaction at the commit LSN."""

from __future__ import annotations

import pytest

from replicator import spool as sp
from replicator.model import (
    UNCHANGED,
    ChangeKind,
    Lsn,
    RowChange,
    StreamAbort,
    StreamCommit,
    StreamStart,
    Truncate,
    TxBegin,
    TxCommit,
)

INS = ChangeKind.INSERT


def ch(i: int, xid: int) -> RowChange:
    return RowChange(INS, "public.t", (str(i), UNCHANGED if i % 3 else "x"), None, True, Lsn(0), xid)


def block(s: sp.Spool, xid: int, changes, first=False) -> None:
    s.start(StreamStart(xid, first))
    for c in changes:
        s.add(c)
    s.stop()


def replayed(s: sp.Spool, xid: int, lsn: int = 500):
    return list(s.replay(StreamCommit(xid, Lsn(lsn), Lsn(lsn + 8), None)))


@pytest.fixture
def spool(tmp_path, monkeypatch):
    monkeypatch.setattr(sp, "CHUNK_EVENTS", 4)  # several chunks per block
    return sp.Spool(tmp_path / "spool", 1 << 30)


def test_interleaved_blocks_replay_in_order_at_the_commit_lsn(spool):
    block(spool, 10, [ch(i, 10) for i in range(5)], first=True)
    block(spool, 11, [ch(100, 11)], first=True)
    block(spool, 10, [ch(i, 10) for i in range(5, 9)] + [Truncate(("public.t",), xid=10)])
    evs = replayed(spool, 10)
    assert type(evs[0]) is TxBegin and evs[0].final_lsn == 500 and type(evs[-1]) is TxCommit
    assert evs[-1].end_lsn == 508
    rows = [e for e in evs[1:-1] if type(e) is RowChange]
    assert [r.new[0] for r in rows] == [str(i) for i in range(9)]
    assert all(r.lsn == 500 for r in evs[1:-1]) and rows[1].new[1] is UNCHANGED  # the sentinel survives
    assert type(evs[-2]) is Truncate
    assert list(spool.txs) == [11] and len(list(spool.dir.glob("xid-*"))) == 1


@pytest.mark.parametrize("written", [True, False])
def test_a_rolled_back_subtransaction_is_cut_from_its_first_change(spool, written):
    spool.start(StreamStart(10, True))
    for i in range(6):  # one chunk written (4), two in the buffer
        spool.add(ch(i, 10))
    for i in range(6, 9):
        spool.add(ch(i, 20))  # the subtransaction
    if written:
        spool.stop()
        spool.start(StreamStart(10, False))
    spool.add(ch(9, 21))  # nested in 20
    spool.stop()
    spool.abort(StreamAbort(10, 20))
    block(spool, 10, [ch(10, 10)])
    assert spool.bytes == spool.txs[10].path.stat().st_size  # the figure follows the cut
    assert [e.new[0] for e in replayed(spool, 10)[1:-1]] == [str(i) for i in range(6)] + ["10"]
    assert spool.figures() == (0, 0, None)


def test_abort_drops_the_transaction_and_first_starts_it_again(spool):
    block(spool, 10, [ch(i, 10) for i in range(5)], first=True)
    spool.abort(StreamAbort(10, 10))
    assert not spool.txs and not list(spool.dir.glob("xid-*"))
    spool.abort(StreamAbort(99, 99))  # unknown: nothing happens
    block(spool, 12, [ch(1, 12)], first=True)
    block(spool, 12, [ch(2, 12)], first=True)  # streamed again after a reconnect
    assert spool.bytes == spool.txs[12].path.stat().st_size  # the first try no longer counts
    assert [e.new[0] for e in replayed(spool, 12)[1:-1]] == ["2"]


def test_the_limit_names_the_transaction_and_the_option(tmp_path):
    s = sp.Spool(tmp_path, 100)
    with pytest.raises(sp.SpoolFull, match=r"transaction 7 .*--spool-limit"):
        block(s, 7, [ch(i, 7) for i in range(50)], first=True)


def test_clear_removes_what_a_previous_process_left(tmp_path):
    s = sp.Spool(tmp_path, 1 << 20)
    block(s, 7, [ch(1, 7)], first=True)
    fresh = sp.Spool(tmp_path, 1 << 20)
    fresh.clear()
    assert not list(tmp_path.glob("xid-*")) and fresh.figures() == (0, 0, None)


def test_status_reads_the_spool_of_a_running_mirror(tmp_path, monkeypatch):
    """``status`` (another process) counts the spooled transactions, their bytes and the oldest
    one's start from the files; the text says it for people."""
    from replicator import status, status_text

    monkeypatch.setenv("REPLICATOR_SPOOL_DIR", str(tmp_path))
    assert status._in_progress("s1") == {"transactions": 0, "spooled_bytes": 0, "oldest_start": None}
    s = sp.Spool(sp.default_dir("s1"), 1 << 20)
    block(s, 7, [ch(i, 7) for i in range(10)], first=True)
    block(s, 8, [ch(1, 8)], first=True)
    doc = status._in_progress("s1")
    assert doc["transactions"] == 2 and doc["spooled_bytes"] == s.bytes > 0
    assert doc["oldest_start"].endswith("Z")
    line = status_text.in_progress_text(doc)
    assert line.startswith("2 transaction(s) spooled, ") and "oldest started 20" in line
    assert status_text.in_progress_text({"transactions": 0}) == "none"
    assert status_text.in_progress_text(None) == "—"
