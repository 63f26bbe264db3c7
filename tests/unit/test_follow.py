"""The follow loop's feedback rule on a real SQLite target (no server): a scripted stream stands in
for the replication connection (the loop's own logic is what is tested, not PostgreSQL)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from replicator.apply import Replayer
from replicator.follow import STOP, Follow
from replicator.model import ChangeKind, Lsn, RowChange, TxBegin, TxCommit
from replicator.source.frames import Keepalive
from tests.unit.test_replay import setup  # noqa: F401  (fixture)


@dataclass
class Payload:
    """What the scripted decoder decodes: the event itself, and a size in bytes."""

    event: object
    size: int = 100

    def __len__(self):
        return self.size


class Data:
    """A data frame; its payload carries the event the scripted decoder hands on."""

    def __init__(self, event):
        self.payload = Payload(event)


class ScriptedStream:
    """Frames in order (None: a receive that timed out), then silence; records every flush
    position sent and who closed it.  Used by the receiving thread only."""

    def __init__(self, frames):
        self.frames, self.sent, self.closed_by = list(frames), [], []
        self.last_frame, self.owner = 0.0, None

    def recv(self, timeout, wake=None):
        if self.frames:
            return self.frames.pop(0)
        time.sleep(timeout)  # silence: a receive that times out
        return None

    def send_status(self, flush, reply=False):
        assert isinstance(flush, Lsn), f"flush position {flush!r} is not an LSN"
        self.sent.append(flush)

    def close(self):
        self.closed_by.append(threading.current_thread())


class ScriptedLists:
    """The applier's input as the receiver hands it: lists of events, None for a quiet stream."""

    def __init__(self, items):
        self.items = list(items)

    def get(self, timeout):
        return self.items.pop(0) if self.items else None


class PassDecoder:
    def feed(self, payload):
        return payload.event


def insert(i, lsn):
    return RowChange(ChangeKind.INSERT, "public.t", new=(str(i), "x"), lsn=Lsn(lsn))


def applied_on_target(target, store):
    with target.connect() as c:
        return store.load_stream(c).applied_lsn


def test_a_quiet_stream_inside_a_transaction_with_a_batch_open_is_no_error(setup):  # noqa: F811
    """Issue 9: the loop committed (and confirmed None, a TypeError) when the stream went quiet in
    the middle of a source transaction while an earlier transaction waited in the batch."""
    target, m, store, progress = setup
    rep = Replayer(target, store, {"public.t": m}, progress, Lsn(0), batch_seconds=3600)
    script = ScriptedLists(
        [
            [
                TxBegin(Lsn(0x300), None, 1),
                insert(1, 0x300),
                TxCommit(Lsn(0x300), Lsn(0x310), None),
                TxBegin(Lsn(0x400), None, 2),
                insert(2, 0x400),
            ],
            None,  # quiet here: in_tx, one transaction in the batch
            [TxCommit(Lsn(0x400), Lsn(0x410), None)],
            None,
        ]
    )
    follow = Follow(ScriptedStream([]), PassDecoder(), rep, lambda: not script.items, lambda f: None)
    assert follow.apply(script, None, False, 0.2) == STOP
    assert applied_on_target(target, store) >= Lsn(0x410)
    assert follow.feedback.position == Lsn(0x410)


@pytest.mark.parametrize("wal_end", [0x900])
def test_an_idle_position_is_written_to_the_target_before_it_is_confirmed(setup, wal_end):  # noqa: F811
    """Persist first, then confirm: every flush position sent (by the receiving thread) is one
    the target holds; the stream is closed once, by that thread."""
    target, m, store, progress = setup
    with target.connect() as c:
        store.set_applied(c, Lsn(0x300), None)  # a run starts from what the target holds
    rep = Replayer(target, store, {"public.t": m}, progress, Lsn(0x300))
    stream = ScriptedStream([Keepalive(Lsn(wal_end), None, True), None])
    sent_vs_target = []
    real_send = stream.send_status

    def send(flush, reply=False):
        sent_vs_target.append((flush, applied_on_target(target, store)))
        real_send(flush, reply)

    stream.send_status = send
    follow = Follow(stream, PassDecoder(), rep, lambda: follow.wal_end >= Lsn(wal_end), lambda f: None)
    assert follow.run() == STOP
    assert sent_vs_target and all(flush <= held for flush, held in sent_vs_target)
    assert sent_vs_target[-1][0] == Lsn(wal_end)  # the idle slot still follows the WAL end
    assert len(stream.closed_by) == 1 and stream.closed_by[0] is not threading.current_thread()


def test_a_keepalive_inside_a_stream_block_is_answered_not_spooled(setup, tmp_path):  # noqa: F811
    """A streamed transaction's block with a keepalive in the middle (the server sends them
    whenever it likes): the receiving thread spools the block and hands the keepalive on as a
    keepalive, the commit is replayed and applied once (a keepalive reached the spool and crashed
    the mirror before)."""
    from replicator.model import StreamCommit, StreamStart, StreamStop
    from replicator.spool import Spool

    target, m, store, progress = setup
    rep = Replayer(target, store, {"public.t": m}, progress, Lsn(0), batch_seconds=3600)
    in_block = [insert(i, 0) for i in (1, 2)]
    for ch in in_block:
        ch.xid = 7
    stream = ScriptedStream(
        [
            Data(StreamStart(7, True)),
            Data(in_block[0]),
            Keepalive(Lsn(0x200), None, False),
            Data(in_block[1]),
            Data(StreamStop()),
            Data(StreamCommit(7, Lsn(0x500), Lsn(0x510), None)),
            None,
        ]
    )
    spool = Spool(tmp_path / "spool", 1 << 20)
    figures = []  # what the telemetry was told, from either thread
    rep.telemetry.spooled = lambda *f: figures.append(f)  # type: ignore[method-assign]
    deadline = time.monotonic() + 30
    follow = Follow(
        stream,
        PassDecoder(),
        rep,
        lambda: rep.applied >= Lsn(0x510) or time.monotonic() > deadline,
        lambda f: None,
        spool=spool,
    )
    assert follow.run() == STOP
    assert applied_on_target(target, store) >= Lsn(0x510)
    with target.connect() as c:
        assert sorted(r[0] for r in c.exec_driver_sql("SELECT * FROM t")) == [1, 2]
    assert not spool.txs and not list((tmp_path / "spool").glob("xid-*"))
    assert figures[0][0] == 1 and figures[0][1] > 0 and figures[0][2] is not None  # at the StreamStop
    assert figures[-1] == (0, 0, None)  # after the replay


def test_a_table_copied_at_the_start_position_is_ready_without_new_wal(setup):  # noqa: F811
    """The stream starts where the copy's snapshot was taken (applied = sync LSN) and the source
    writes nothing: the walsender's keepalives carry that same position.  The table is ready at
    once (it waited for the server's next WAL record before: up to 15 s, or forever on an idle
    server); nothing new is confirmed."""
    target, m, store, progress = setup
    with target.connect() as c:
        store.set_applied(c, Lsn(0x200), None)
    rep = Replayer(target, store, {"public.t": m}, progress, Lsn(0x200))
    stream = ScriptedStream([Keepalive(Lsn(0x200), None, True), None])
    deadline = time.monotonic() + 10

    def stop():
        return progress["public.t"].state.value == "r" or time.monotonic() > deadline

    assert Follow(stream, PassDecoder(), rep, stop, lambda f: None).run() == STOP
    with target.connect() as c:
        assert store.load_tables(c)["public.t"].state.value == "r"
        assert store.load_stream(c).applied_lsn == Lsn(0x200)
    assert all(flush <= Lsn(0x200) for flush in stream.sent)
