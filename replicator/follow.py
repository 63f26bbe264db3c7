"""Follow phase: the applier of the stream, and the one feedback rule.

Two threads (issue 13, "decode beside apply"): a receiver (source/receive.py) owns the replication
connection, decodes, and answers the source; this module's loop runs in the caller's thread and
feeds the decoded events to the Replayer, which writes the target.  Between them: a bounded queue
of event lists one way, a :class:`~replicator.source.receive.Feedback` the other way.  The blocks
of streamed in-progress transactions never reach this loop: the receiver writes them to the spool
as they arrive, and this loop replays a transaction from there at its StreamCommit.

The feedback rule (DESIGN.md invariants 2, 4, 11): the flush position sent to the source is always
one this loop published, which is the Replayer's ``applied`` position after the target committed
it.  While idle the position may move past it to the server's WAL end (so an idle slot does not
hold WAL), but only after that position has been written to the target's state row: persist
first, then publish, so a slot's ``confirmed_flush_lsn`` never passes the target's applied LSN.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Optional, Protocol

from .apply import Replayer
from .model import Lsn, StreamCommit, TxBegin, TxCommit
from .source import slot as slots
from .source.changes import ChangeDecoder
from .source.frames import Keepalive
from .source.receive import CHUNK_EVENTS, QUEUE_ITEMS, Feedback, FrameSource, Item, Receiver
from .spool import Spool

log = logging.getLogger(__name__)

IDLE_POKE_SECONDS = 1.0  # idle: ask the server for a keepalive this often (its WAL end)
IDLE_PERSIST_SECONDS = 5.0  # idle: write the WAL end to the target at most this often
RESYNC_POLL_SECONDS = 5.0  # idle: look for tables set back by 'replicator resync' this often

UNTIL, STOP, RESYNC = "until", "stop", "resync"
#: with nothing received left to apply, a batch this old is committed at once: under a steady
#: load the applier keeps up and each change waits at most this long plus its commit (p99
#: latency at 1,000 pgbench tps, README), while a backlog still fills whole batches
CAUGHT_UP_SECONDS = 0.1


class Lists(Protocol):
    """Where the applier takes its work from (a :class:`Receiver`, or a test's script)."""

    def get(self, timeout: float) -> Optional[Item]: ...


class Follow:
    """One run of the loop over an open stream; :meth:`run` says why it ended.

    ``stop`` and ``resync_requested`` are called from the applier's thread only; ``on_frame``
    from the receiver's (see :class:`Receiver`)."""

    def __init__(
        self,
        stream: FrameSource,
        decoder: ChangeDecoder,
        rep: Replayer,
        stop: Callable[[], bool],
        on_frame: Callable[[object], None],
        status_interval: float = 10.0,
        resync_requested: Optional[Callable[[], bool]] = None,
        queue_items: int = QUEUE_ITEMS,
        chunk: int = CHUNK_EVENTS,
        spool: Optional[Spool] = None,
    ):
        """``spool``: where the blocks of streamed in-progress transactions wait for their
        commit (protocol 2); None: the stream sends none (protocol 1)."""
        self.stream, self.decoder, self.rep = stream, decoder, rep
        self.spool = spool
        self.stop, self.on_frame = stop, on_frame
        self.status_interval = status_interval
        self.resync_requested = resync_requested
        self.queue_items, self.chunk = queue_items, chunk
        self.feedback = Feedback(rep.applied)
        self.wal_end = Lsn(0)
        self.last_poll = time.monotonic()
        self.last_persist = 0.0  # the first idle position may be written at once
        self.last_poke = 0.0
        self.receiver: Optional[Receiver] = None  # the receiving thread of the current run

    def run(self, until: Optional[Lsn] = None, exact: bool = False) -> str:
        """Apply until ``until`` is reached (None: until a stop or a resync request); ``exact``
        ends before the first transaction that commits at or after ``until``.  The receiving
        thread has ended (and closed the stream) when this returns, unless it was stuck, and
        then it closes the stream itself when it ends."""
        wait = 0.2 if until is None else 0.02
        rx = Receiver(
            self.stream,
            self.decoder,
            self.feedback,
            self.on_frame,
            self.status_interval,
            wait,
            self.queue_items,
            self.chunk,
            self.spool,
            self.spool_figures,
        )
        self.receiver = rx
        rx.start()
        try:
            outcome = self.apply(rx, until, exact, wait)
        finally:
            rx.stop()
        if rx.error is not None:
            if rx.unconfirmed():
                raise rx.error  # the last committed position could not be confirmed
            log.info("the stream ended after the run's end, nothing left to confirm: %s", rx.error)
        return outcome

    def apply(self, lists: Lists, until: Optional[Lsn], exact: bool, wait: float) -> str:
        """The applier's loop over the lists of events and keepalives, in stream order."""
        rep = self.rep
        fence = until if exact else None
        while True:
            items = lists.get(0.0)
            if items is None:  # caught up: a batch old enough is committed now, not when full
                if rep.caught_up_due(CAUGHT_UP_SECONDS):
                    self.commit()
                items = lists.get(wait)
            if items is None:  # nothing came for a while: the stream is quiet
                outcome = self.between(None, until, quiet=True)
                if outcome:
                    return outcome
                continue
            for ev in items:
                if isinstance(ev, Keepalive):
                    outcome = self.between(ev, until)
                    if outcome:
                        return outcome
                elif type(ev) is StreamCommit:
                    if self.streamed(ev, fence):
                        self.commit()  # everything before the fence is applied: end here
                        return UNTIL
                elif fence is not None and type(ev) is TxBegin and ev.final_lsn >= fence:
                    self.commit()  # everything before the fence is applied: end here
                    return UNTIL
                else:
                    rep.handle(ev)
                    if type(ev) is TxCommit and rep.due():  # a batch ends only between transactions
                        self.commit()
            if self.stop():
                outcome = self.between(None, until)
                if outcome:
                    return outcome

    def streamed(self, ev: StreamCommit, fence: Optional[Lsn]) -> bool:
        """A streamed in-progress transaction committed (its blocks are in the spool, written by
        the receiving thread): replayed as one source transaction; True: it commits at or after
        ``fence`` (not applied)."""
        spool = self.spool
        assert spool is not None, "a streamed transaction on a stream that did not ask for them"
        if fence is not None and ev.commit_lsn >= fence:
            return True
        for replayed in spool.replay(ev):
            self.rep.handle(replayed)
        if self.rep.due():
            self.commit()
        self.spool_figures()
        return False

    def spool_figures(self) -> None:
        """The spool's figures into the telemetry (from either thread)."""
        if self.spool is not None:
            self.rep.telemetry.spooled(*self.spool.figures())

    def commit(self) -> None:
        """Commit the open batch (if any, and only between source transactions), then publish."""
        lsn = self.rep.commit()
        if lsn is not None:
            self.feedback.publish(lsn)

    def between(self, ka: Optional[Keepalive], until: Optional[Lsn], quiet: bool = False) -> Optional[str]:
        """Not in the middle of a list: a keepalive ``ka``, a ``quiet`` stream or a stop request.
        Commit what is due, advance an idle position, ask for the server's WAL end; a reason to
        end the run, or None."""
        rep = self.rep
        if ka is not None:
            self.wal_end = max(self.wal_end, ka.wal_end)
        if rep.batch_txs and (quiet or rep.due() or self.stop()):
            self.commit()
        idle = not rep.in_tx and not rep.batch_txs
        if not idle:
            return None
        position = max(rep.applied, self.wal_end)
        if rep.would_ready(position):
            self.persist(position, now=False)  # tables pass their sync LSN: s → r
        if until is not None and slots.reached(position, until):
            return UNTIL
        if self.stop():
            return self.confirm_and_end(position, STOP)
        if until is None and self.resync_due():
            return self.confirm_and_end(position, RESYNC)
        now = time.monotonic()
        poke = quiet and (until is not None or now - self.last_poke > IDLE_POKE_SECONDS)
        since = now - self.last_persist
        asked = ka is not None and (ka.reply_requested or since > self.status_interval)
        if (poke or asked) and since >= IDLE_PERSIST_SECONDS:
            self.persist(position)
        if poke:
            self.last_poke = now
            self.feedback.ask_wal_end()
        return None

    def persist(self, position: Lsn, now: bool = True) -> None:
        """Write an idle position to the target (it becomes ``rep.applied``), then publish it:
        confirmed at once (``now``), or with the next status update.  Only a position that moved
        counts for the :data:`IDLE_PERSIST_SECONDS` spacing: tables made ready at the applied
        position itself (a quiet source right after the copy) do not hold back the next one."""
        before = self.rep.applied
        self.rep.advance_idle(position)
        if self.rep.applied != before:
            self.last_persist = time.monotonic()
            self.feedback.publish(self.rep.applied, now)

    def confirm_and_end(self, position: Lsn, why: str) -> str:
        self.persist(position)
        self.feedback.publish(self.rep.applied)
        return why

    def resync_due(self) -> bool:
        """A table was set back to i/d by 'replicator resync' (polled every few seconds)."""
        if self.resync_requested is None:
            return False
        if not self.rep.resync_pending and time.monotonic() - self.last_poll <= RESYNC_POLL_SECONDS:
            return False
        self.last_poll = time.monotonic()
        return self.rep.resync_pending or self.resync_requested()
