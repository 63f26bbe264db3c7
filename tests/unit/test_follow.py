"""The follow loop's feedback rule on a real SQLite target (no server): a scripted stream stands in
for the replication connection (the loop's own logic is what is tested, not PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from replicator.apply import Replayer
from replicator.follow import STOP, Follow
from replicator.model import ChangeKind, Lsn, RowChange, TxBegin, TxCommit
from replicator.source.frames import Keepalive
from tests.unit.test_replay import setup  # noqa: F401  (fixture)


@dataclass
class Data:
    """A data frame; its payload is the event the scripted decoder hands on."""

    payload: object


class ScriptedStream:
    """Frames in order (None: a receive that timed out); records every flush position sent."""

    def __init__(self, frames):
        self.frames, self.sent, self.last_status = list(frames), [], 0.0

    def recv(self, timeout):
        return self.frames.pop(0) if self.frames else None

    def send_status(self, flush, reply=False):
        assert isinstance(flush, Lsn), f"flush position {flush!r} is not an LSN"
        self.sent.append(flush)


class PassDecoder:
    def feed(self, payload):
        return payload


def insert(i, lsn):
    return RowChange(ChangeKind.INSERT, "public.t", new=(str(i), "x"), lsn=Lsn(lsn))


def applied_on_target(target, store):
    with target.connect() as c:
        return store.load_stream(c).applied_lsn


def test_a_receive_timeout_inside_a_transaction_with_a_batch_open_is_no_error(setup):  # noqa: F811
    """Issue 9: the loop committed (and confirmed None, a TypeError) when a receive timed out in
    the middle of a source transaction while an earlier transaction waited in the batch."""
    target, m, store, progress = setup
    rep = Replayer(target, store, {"public.t": m}, progress, Lsn(0), batch_seconds=3600)
    frames = [
        Data(TxBegin(Lsn(0x300), None, 1)),
        Data(insert(1, 0x300)),
        Data(TxCommit(Lsn(0x300), Lsn(0x310), None)),
        Data(TxBegin(Lsn(0x400), None, 2)),
        Data(insert(2, 0x400)),
        None,  # the receive times out here: in_tx, one transaction in the batch
        Data(TxCommit(Lsn(0x400), Lsn(0x410), None)),
        None,
    ]
    stream = ScriptedStream(frames)
    stops = iter([False] * 8 + [True] * 100)
    outcome = Follow(stream, PassDecoder(), rep, lambda: next(stops), lambda f: None).run()
    assert outcome == STOP
    assert applied_on_target(target, store) >= Lsn(0x410)
    assert all(p <= Lsn(0x410) for p in stream.sent)


@pytest.mark.parametrize("wal_end", [0x900])
def test_an_idle_position_is_written_to_the_target_before_it_is_confirmed(setup, wal_end):  # noqa: F811
    """Persist first, then confirm: every flush position sent is one the target holds."""
    target, m, store, progress = setup
    rep = Replayer(target, store, {"public.t": m}, progress, Lsn(0x300))
    stream = ScriptedStream([Keepalive(Lsn(wal_end), None, True), None])
    sent_vs_target = []
    real_send = stream.send_status

    def send(flush, reply=False):
        sent_vs_target.append((flush, applied_on_target(target, store)))
        real_send(flush, reply)

    stream.send_status = send
    stops = iter([False, True, True, True])
    Follow(stream, PassDecoder(), rep, lambda: next(stops), lambda f: None).run()
    assert sent_vs_target and all(flush <= held for flush, held in sent_vs_target)
    assert sent_vs_target[-1][0] == Lsn(wal_end)  # the idle slot still follows the WAL end
