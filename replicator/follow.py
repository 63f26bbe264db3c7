"""Follow phase: receive → decode → apply → confirm, and the one feedback rule.

The feedback rule (DESIGN.md invariants 2, 4, 11): the flush position sent to the source is always
the Replayer's ``applied`` position, which is what the target has committed.  While idle the
position may move past it to the server's WAL end (so an idle slot does not hold WAL), but only
after that position has been written to the target's state row: persist first, then confirm, so
a slot's ``confirmed_flush_lsn`` never passes the target's applied LSN.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional, Union

from .apply import Replayer
from .model import Lsn, TxBegin
from .source import slot as slots
from .source.changes import ChangeDecoder
from .source.frames import Keepalive, XLogData
from .source.stream import ReplicationStream

IDLE_POKE_SECONDS = 1.0  # idle: ask the server for a keepalive this often (its WAL end)
IDLE_PERSIST_SECONDS = 5.0  # idle: write the WAL end to the target at most this often
RESYNC_POLL_SECONDS = 5.0  # idle: look for tables set back by 'replicator resync' this often

UNTIL, STOP, RESYNC = "until", "stop", "resync"


class Follow:
    """One run of the loop over an open stream; :meth:`run` says why it ended."""

    def __init__(
        self,
        stream: ReplicationStream,
        decoder: ChangeDecoder,
        rep: Replayer,
        stop: Callable[[], bool],
        on_frame: Callable[[object], None],
        status_interval: float = 10.0,
        resync_requested: Optional[Callable[[], bool]] = None,
    ):
        self.stream, self.decoder, self.rep = stream, decoder, rep
        self.stop, self.on_frame = stop, on_frame
        self.status_interval = status_interval
        self.resync_requested = resync_requested
        self.wal_end = Lsn(0)
        self.last_poll = self.last_persist = time.monotonic()

    def run(self, until: Optional[Lsn] = None, exact: bool = False) -> str:
        """Apply until ``until`` is reached (None: until a stop or a resync request); ``exact``
        ends before the first transaction that commits at or after ``until``."""
        while True:
            frame = self.stream.recv(0.2 if until is None else 0.02)
            if frame is not None:
                self.on_frame(frame)
            if frame is not None and not isinstance(frame, Keepalive):
                ev = self.decoder.feed(frame.payload)
                if exact and until is not None and type(ev) is TxBegin and ev.final_lsn >= until:
                    self.commit()  # everything before the fence is applied: end here
                    return UNTIL
                if ev is not None:
                    self.rep.handle(ev)
                if self.rep.due():
                    self.commit()
                elif time.monotonic() - self.stream.last_status > self.status_interval:
                    self.stream.send_status(self.rep.applied)
                if not self.stop():
                    continue
            outcome = self.between(frame, until)
            if outcome:
                return outcome

    def commit(self) -> None:
        """Commit the open batch (if any, and only between source transactions), then confirm."""
        lsn = self.rep.commit()
        if lsn is not None:
            self.stream.send_status(lsn)

    def between(self, frame: Union[XLogData, Keepalive, None], until: Optional[Lsn]) -> Optional[str]:
        """No data frame right now (idle, a keepalive, or a stop): commit what is due, advance an
        idle position, answer the server; a reason to end the run, or None."""
        rep, reply = self.rep, False
        if isinstance(frame, Keepalive):
            self.wal_end = max(self.wal_end, frame.wal_end)
            reply = frame.reply_requested
        if rep.batch_txs and (frame is None or rep.due() or self.stop()):
            self.commit()
        idle = not rep.in_tx and not rep.batch_txs
        position = max(rep.applied, self.wal_end) if idle else rep.applied
        if idle and rep.would_ready(position):
            self.persist(position)  # tables pass their sync LSN: s → r
        if until is not None and idle and slots.reached(position, until):
            return UNTIL
        if idle and self.stop():
            return self.confirm_and_end(position, STOP)
        if until is None and idle and self.resync_due():
            return self.confirm_and_end(position, RESYNC)
        since = time.monotonic() - self.stream.last_status
        poke = frame is None and idle and (until is not None or since > IDLE_POKE_SECONDS)
        if reply or poke or since > self.status_interval:
            if idle and time.monotonic() - self.last_persist >= IDLE_PERSIST_SECONDS:
                self.persist(position)
            self.stream.send_status(rep.applied, reply=poke)
        return None

    def persist(self, position: Lsn) -> None:
        """Write an idle position to the target (it becomes ``rep.applied``)."""
        self.last_persist = time.monotonic()
        self.rep.advance_idle(position)

    def confirm_and_end(self, position: Lsn, why: str) -> str:
        self.persist(position)
        self.stream.send_status(self.rep.applied)
        return why

    def resync_due(self) -> bool:
        """A table was set back to i/d by 'replicator resync' (polled every few seconds)."""
        if self.resync_requested is None:
            return False
        if not self.rep.resync_pending and time.monotonic() - self.last_poll <= RESYNC_POLL_SECONDS:
            return False
        self.last_poll = time.monotonic()
        return self.rep.resync_pending or self.resync_requested()
