"""Receiving beside applying (issue 13): the receiving thread answers the source while the applier
commits, hands its errors over with their type, stays within its queue, and carries the idle poke.
Fake streams and replayers; every wait is on an event or a deadline, none assumes a speed."""

from __future__ import annotations

import itertools
import select
import threading
import time

import pytest

from replicator.apply import Replayer
from replicator.errors import DecodeError, SlotLostError, TargetError, TransientError
from replicator.follow import STOP, UNTIL, Follow
from replicator.model import Lsn, TxBegin, TxCommit
from replicator.source.frames import Keepalive
from tests.unit.test_follow import Data, PassDecoder, ScriptedStream, insert
from tests.unit.test_replay import setup  # noqa: F401  (fixture)

DEADLINE = 30.0  # seconds: only a broken implementation waits this long


def wait_for(cond, what):
    end = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


class FakeReplayer:
    """The Replayer's face to the follow loop, without a target: records the events it handles."""

    def __init__(self, applied=Lsn(0)):
        self.applied, self.in_tx, self.batch_txs, self.resync_pending = Lsn(applied), False, 0, False
        self.handled = []

    def handle(self, ev):
        self.handled.append(ev)

    def due(self):
        return False

    def caught_up_due(self, seconds):
        return False

    def commit(self):
        return None

    def would_ready(self, position):
        return False

    def advance_idle(self, position):
        self.applied = max(self.applied, position)


class SlowCommit(Replayer):
    """A Replayer whose batch commit waits until the test lets it go (a slow target)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.committing, self.release = threading.Event(), threading.Event()
        self.committed = []  # positions whose target commit returned

    def commit(self):
        if self.batch_txs and not self.in_tx:
            self.committing.set()
            assert self.release.wait(DEADLINE), "nobody answered the keepalive during the commit"
        lsn = super().commit()
        if lsn is not None:
            self.committed.append(lsn)
        return lsn


def test_a_keepalive_is_answered_while_a_batch_commits(setup):  # noqa: F811
    """The source asks for a reply while the target commits a batch: the receiving thread answers
    at once with the position confirmed before, never the one being committed."""
    target, m, store, progress = setup
    before = Lsn(0x250)
    with target.connect() as c:
        store.set_applied(c, before, None)
    rep = SlowCommit(target, store, {"public.t": m}, progress, before, batch_seconds=0)
    asked = threading.Event()

    def keepalive_once_committing():
        assert rep.committing.wait(DEADLINE), "the batch never committed"
        asked.set()
        return Keepalive(Lsn(0x400), None, True)

    frames = [
        Data(TxBegin(Lsn(0x300), None, 1)),
        Data(insert(1, 0x300)),
        Data(TxCommit(Lsn(0x300), Lsn(0x310), None)),
        None,
        keepalive_once_committing,
    ]
    stream = ScriptedStream(frames)
    answers = []

    def recv(timeout, wake=None, real=stream.recv):
        frame = real(timeout)
        return frame() if callable(frame) else frame

    def send(flush, reply=False, real=stream.send_status):
        assert flush == before or flush in rep.committed, f"{flush} sent before the target committed it"
        if asked.is_set() and not rep.release.is_set():
            answers.append(flush)
            rep.release.set()
        real(flush, reply)

    stream.recv, stream.send_status = recv, send
    follow = Follow(stream, PassDecoder(), rep, lambda: rep.applied >= Lsn(0x310), lambda f: None, 3600)
    assert follow.run() == STOP
    assert answers == [before]
    assert Lsn(0x310) in stream.sent and max(stream.sent) <= rep.applied


class FailingStream(ScriptedStream):
    """Some frames, then the error a real stream would raise."""

    def __init__(self, frames, error):
        super().__init__(frames)
        self.error = error

    def recv(self, timeout, wake=None):
        if not self.frames:
            raise self.error
        return super().recv(timeout)


class FailingDecoder(PassDecoder):
    def feed(self, payload):
        if payload.event == "bad":
            raise DecodeError("pgoutput message 'X' truncated at byte offset 3")
        return payload.event


@pytest.mark.parametrize(
    "error",
    [
        SlotLostError("replication slot s: invalidated"),
        TransientError("replication connection lost: server closed the connection"),
        DecodeError("pgoutput message 'X' truncated at byte offset 3"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_error_of_the_receiving_thread_is_raised_by_the_applier(error):
    """Connection lost, slot lost, a frame that does not decode: the applier raises the same
    type and message, and the connection is closed once, by the thread that used it."""
    frames = [Data(1), Data(2)]
    if isinstance(error, DecodeError):
        frames.append(Data("bad"))
    stream = FailingStream(frames, error)
    rep = FakeReplayer()
    follow = Follow(stream, FailingDecoder(), rep, lambda: False, lambda f: None)
    with pytest.raises(type(error)) as raised:
        follow.run()
    assert type(raised.value) is type(error) and str(raised.value) == str(error)
    assert len(stream.closed_by) == 1 and stream.closed_by[0] is not threading.current_thread()
    assert not stream.owner.is_alive()


def test_an_error_of_the_applier_stops_the_receiving_thread():
    """The target fails: the error is the applier's, and the receiving thread ends and closes
    the connection (a stream that never stops sending does not keep it alive)."""
    counter = itertools.count(1)

    class Endless(ScriptedStream):
        def recv(self, timeout, wake=None):
            return Data(next(counter))

    class Refusing(FakeReplayer):
        def handle(self, ev):
            raise TargetError("target refused table t")

    stream = Endless([])
    with pytest.raises(TargetError, match="refused"):
        Follow(stream, PassDecoder(), Refusing(), lambda: False, lambda f: None).run()
    assert not stream.owner.is_alive() and len(stream.closed_by) == 1


def test_the_receiving_thread_stays_within_its_queue_and_keeps_answering():
    """A slow applier: the receiver reads at most (queue lists + the applier's + its own) × chunk
    frames, then waits, still sending status updates; nothing is lost or reordered."""
    queue_items, chunk = 2, 4
    bound = (queue_items + 2) * chunk
    counter = itertools.count(1)
    blocked_sends = []

    class Endless(ScriptedStream):
        received = 0

        def recv(self, timeout, wake=None):
            self.received = next(counter)
            return Data(self.received)

        def send_status(self, flush, reply=False):
            if follow.receiver.blocked_waits:
                blocked_sends.append(flush)
            super().send_status(flush, reply)

    class Slow(FakeReplayer):
        def handle(self, ev):
            if not self.handled:  # the first event: wait until the receiver waits on the queue
                wait_for(lambda: follow.receiver.blocked_waits >= 3, "the receiver to wait on its queue")
                wait_for(lambda: len(blocked_sends) >= 2, "status updates while the queue is full")
                assert stream.received == bound, f"{stream.received} frames read, the bound is {bound}"
            super().handle(ev)

    stream, rep = Endless([]), Slow()
    follow = Follow(
        stream,
        PassDecoder(),
        rep,
        lambda: len(rep.handled) >= 5 * bound,
        lambda f: None,
        0.01,
        None,
        queue_items,
        chunk,
    )
    assert follow.run() == STOP
    assert rep.handled == list(range(1, len(rep.handled) + 1))


def test_catching_up_asks_the_source_for_its_wal_end():
    """Idle, with a position to reach: the applier asks for a keepalive, the receiving thread sends
    the request, the source's answer (its WAL end) ends the run."""
    wal_end = Lsn(0x5000)

    class Answering(ScriptedStream):
        def send_status(self, flush, reply=False):
            super().send_status(flush, reply)
            if reply:
                self.frames.append(Keepalive(wal_end, None, False))

    stream, rep = Answering([]), FakeReplayer(Lsn(0x100))
    follow = Follow(stream, PassDecoder(), rep, lambda: False, lambda f: None)
    assert follow.run(until=wal_end) == UNTIL
    assert follow.wal_end == wal_end


def test_a_published_position_wakes_the_receiver_waiting_on_a_quiet_socket():
    """The applier commits while the socket is quiet: the receiving thread, waiting on the socket,
    is woken and confirms the position at once (a stream that would otherwise wait 30 s)."""

    class Quiet(ScriptedStream):
        def recv(self, timeout, wake=None):
            if self.frames:
                return self.frames.pop(0)
            if timeout:
                assert select.select([wake], [], [], DEADLINE)[0], "the receiver was never woken"
            return None

    class CommitsOnce(FakeReplayer):
        def due(self):
            return bool(self.handled) and self.applied < Lsn(0x500)

        def commit(self):
            self.applied = Lsn(0x500)
            return self.applied

    commit = TxCommit(Lsn(0x4F0), Lsn(0x500), None)  # the applier looks at due() after a commit
    stream, rep = Quiet([Data(commit)]), CommitsOnce()
    follow = Follow(stream, PassDecoder(), rep, lambda: Lsn(0x500) in stream.sent, lambda f: None, 3600)
    assert follow.run() == STOP
    assert stream.sent[-1] == Lsn(0x500)
