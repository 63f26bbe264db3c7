"""Receive phase: the thread that owns the replication connection, decodes, and answers the source.

The applier (follow.py, the main thread) waits on the target; this thread reads and decodes the
stream meanwhile, so the source is read while the target writes, and the source's keepalive
requests are answered even while a batch commits (a reader that stays silent for
``wal_sender_timeout`` is disconnected).

Measured (issue 13, pgbench backlog into DuckDB, 2 cores): the thread buys that liveness, not
speed.  The single-threaded loop holds the GIL about 98% of its stream time (py-spy --gil), so
receiving (about 55% of the work) and applying hardly overlap; two busy Python threads also cost
each other about a quarter more CPU.  Throughput stays within noise of one thread (0 to 13%
slower); splitting off a process would let the two halves overlap.

Contracts:

* While the thread runs it is the only user of the replication connection (a libpq connection is
  never used by two threads at once), and it closes the connection when it ends
  (:meth:`ReplicationStream.close` from another thread does nothing meanwhile).
* Events reach the applier in stream order, in lists of at most ``chunk`` events (or
  :data:`CHUNK_BYTES` of payload, or what was there when the socket had nothing more), through a
  queue of at most ``queue_items`` lists: memory stays bounded.  A keepalive travels in the list
  at its place in the stream (its WAL end means something only after what came before it).  When
  the queue is full the thread stops reading (the source then waits: TCP flow control) and still
  sends a status update every :data:`BLOCKED_STATUS_SECONDS`.
* Every Standby Status Update carries as flush position the one the applier last published with
  :meth:`Feedback.publish`, which the target has committed (DESIGN.md invariants 2, 4); this thread
  never derives a position of its own.  A newly published position, or a request for the
  source's WAL end, wakes the thread from its wait on the socket (a pipe): it is sent at once.
* Streamed in-progress transactions (protocol 2): with a ``spool``, this thread writes their blocks
  to it as they arrive (StreamStart, the changes, StreamStop; StreamAbort cuts or drops) and hands
  the applier only their StreamCommit, at its place in the stream, once every block before it is
  written; ``on_spool`` is called after each block end or abort (the spool's figures).
* An error of this thread (connection lost, slot lost, a frame that does not decode) is raised, the
  same object with its type and message, by the applier's next :meth:`Receiver.get`; the thread
  ends when :meth:`Receiver.stop` is called.  Every wait here has a timeout (invariant 12).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Optional, Protocol, Union

from ..model import Lsn, StreamAbort, StreamStart, StreamStop
from .changes import ChangeDecoder, Event
from .frames import Keepalive, XLogData

log = logging.getLogger(__name__)

QUEUE_ITEMS = 64  # lists in the queue at most
CHUNK_EVENTS = 512  # events per list at most
CHUNK_BYTES = 256 * 1024  # pgoutput payload bytes per list at most (big rows: fewer per list)
BLOCKED_STATUS_SECONDS = 2.0  # queue full: a status update to the source at least this often
PUT_WAIT_SECONDS = 0.1  # queue full: look at stop requests and new positions this often
JOIN_SECONDS = 5.0  # stop(): wait this long for the thread to end

Item = list[Union[Event, Keepalive]]
_BLOCK_EVENTS = (StreamStart, StreamStop, StreamAbort)  # the spool's, never the applier's


class Spooler(Protocol):
    """Where the blocks of streamed transactions go (replicator.spool.Spool)."""

    def start(self, ev: StreamStart) -> None: ...

    def add(self, ev: Event) -> None: ...

    def stop(self) -> None: ...

    def abort(self, ev: StreamAbort) -> None: ...


class FrameSource(Protocol):
    """What the receiver needs of a stream (:class:`~replicator.source.stream.ReplicationStream`)."""

    last_frame: float
    owner: Optional[threading.Thread]

    def recv(self, timeout: float, wake: Optional[int] = None) -> Union[XLogData, Keepalive, None]: ...

    def send_status(self, flush: Lsn, reply: bool = False) -> None: ...

    def close(self) -> None: ...


class Feedback:
    """The flush position the applier allows the receiver to confirm, and its requests.

    One writer (the applier), one reader (the receiver).  ``serial`` changes with every
    publication, so the receiver knows a position is new without taking the lock; ``wake_fd``
    (set by the receiver while it runs) is written to so its wait on the socket ends."""

    def __init__(self, applied: Lsn):
        self._lock = threading.Lock()
        self.position = Lsn(applied)
        self.serial = 0
        self.poke = False
        self.wake_fd: Optional[int] = None

    def publish(self, lsn: Lsn, now: bool = True) -> None:
        """``lsn`` is committed on the target: confirm it to the source, at once (``now``) or with
        the next status update.  Call it only after the target commit returned; positions never
        go back."""
        with self._lock:
            self.position = max(self.position, Lsn(lsn))
            if now:
                self.serial += 1
        if now:
            self.nudge()

    def ask_wal_end(self) -> None:
        """Ask the source for a keepalive (its WAL end) with the next status update."""
        self.poke = True
        self.nudge()

    def nudge(self) -> None:
        """Wake the receiver (a byte into its pipe; a full pipe means it is woken already)."""
        fd = self.wake_fd
        if fd is not None:
            try:
                os.write(fd, b"\0")
            except BlockingIOError:
                pass

    def take(self) -> tuple[Lsn, int, bool]:
        """(position, its serial, whether a keepalive is asked for); clears the request."""
        with self._lock:
            poke, self.poke = self.poke, False
            return self.position, self.serial, poke


class Receiver:
    """The receiving thread of one run of the follow loop (:meth:`start` once, :meth:`stop` once).

    ``on_frame`` (telemetry) is called from this thread with each keepalive and with the last data
    frame of each list: it must be cheap and safe from a second thread."""

    def __init__(
        self,
        stream: FrameSource,
        decoder: ChangeDecoder,
        feedback: Feedback,
        on_frame: Callable[[object], None],
        status_interval: float,
        wait: float,
        queue_items: int = QUEUE_ITEMS,
        chunk: int = CHUNK_EVENTS,
        spool: Optional[Spooler] = None,
        on_spool: Callable[[], None] = lambda: None,
    ):
        self.stream, self.decoder, self.feedback = stream, decoder, feedback
        self.spool, self.on_spool = spool, on_spool
        self.in_block = False  # between a StreamStart and its StreamStop
        self.on_frame, self.status_interval, self.wait = on_frame, status_interval, wait
        self.chunk = chunk
        self.queue: queue.Queue[Item] = queue.Queue(queue_items)
        self.error: Optional[BaseException] = None
        self.sent_serial = -1  # serial of the last position sent (-1: none yet)
        self.last_sent = 0.0
        self.blocked_waits = 0  # times a full queue made the thread wait (tests watch it)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._main, name="replicator-receive", daemon=True)
        self._wake_r, self._wake_w = os.pipe()  # the applier's nudges (Feedback.nudge)
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # ------------------------------------------------------------ the applier's side
    def start(self) -> None:
        self.stream.owner = self._thread
        self.feedback.wake_fd = self._wake_w
        self._thread.start()

    def get(self, timeout: float) -> Optional[Item]:
        """The next list of events and keepalives, None when none came within ``timeout`` seconds;
        raises the receiver's error (the exception it caught, unchanged)."""
        if self.error is None:
            try:
                item: Optional[Item] = self.queue.get(timeout=timeout)
            except queue.Empty:
                item = None
        if self.error is not None:
            raise self.error
        return item or None  # an empty list only wakes the applier

    def stop(self) -> None:
        """End the thread: it sends the last published position if it has not yet, and closes
        the connection.  Waits up to :data:`JOIN_SECONDS`; a thread that has not ended by then
        (a stuck socket) still closes the connection itself when it does."""
        self._halt.set()
        self.feedback.nudge()
        self._thread.join(JOIN_SECONDS)
        self.feedback.wake_fd = None  # only the applier (this thread) writes to the pipe
        if self._thread.is_alive():
            log.warning(
                "the receiving thread did not end within %.0fs; it closes its connection", JOIN_SECONDS
            )
            return  # the pipe stays open: the thread may still wait on it
        os.close(self._wake_r)
        os.close(self._wake_w)

    def unconfirmed(self) -> bool:
        """A published position was never sent to the source (after :meth:`stop`)."""
        return self.sent_serial != self.feedback.serial

    # ------------------------------------------------------------ the thread
    def _main(self) -> None:
        try:
            self._loop()
            self._answer(self.status_interval)  # the last published position, if new
        except BaseException as e:  # noqa: BLE001  (handed to the applier: get() raises it)
            self.error = e
            try:
                self.queue.put_nowait([])  # wake a waiting applier
            except queue.Full:
                pass  # it is busy with a list and looks at the error before the next one
        finally:
            try:
                self.stream.close()
            except Exception as e:  # noqa: BLE001  (closing a broken connection: nothing to save)
                log.debug("closing the replication connection: %s", e)

    def _loop(self) -> None:
        while not self._halt.is_set():
            self._drain_wake()
            self._answer(self.status_interval)
            items = self._gather()
            if items:
                self._hand(items)

    def _gather(self) -> Item:
        """Frames until a list is full or the socket has nothing more (waiting up to ``wait``
        seconds for the first): the keepalives, and the events they decode to."""
        stream, feed, chunk = self.stream, self.decoder.feed, self.chunk
        add = self.spool.add if self.spool is not None else _no_spool
        items: Item = []
        size = 0
        last: Optional[XLogData] = None
        frame = stream.recv(self.wait, self._wake_r)
        while frame is not None:
            if isinstance(frame, Keepalive):
                self.on_frame(frame)
                if frame.reply_requested:
                    self._send()
                items.append(frame)
            else:
                ev = feed(frame.payload)
                last = frame
                size += len(frame.payload)
                if ev is None:
                    pass
                elif self.in_block and type(ev) is not StreamStop:
                    add(ev)  # the hot path of a streamed block
                elif type(ev) in _BLOCK_EVENTS:
                    self._block(ev)
                else:
                    items.append(ev)
            if len(items) >= chunk or size >= CHUNK_BYTES:
                break
            frame = stream.recv(0.0)
        if last is not None:
            self.on_frame(last)
        return items

    def _block(self, ev: Event) -> None:
        """A stream block starts or ends, or a streamed (sub)transaction aborted: the spool's."""
        spool = self.spool
        if spool is None:
            _no_spool(ev)
            return
        if isinstance(ev, StreamStart):
            spool.start(ev)
            self.in_block = True
            return
        if isinstance(ev, StreamAbort):
            spool.abort(ev)
        else:  # StreamStop
            spool.stop()
            self.in_block = False
        self.on_spool()

    def _hand(self, items: Item) -> None:
        """Put one list in the queue; while it is full, answer the source and watch for stop."""
        try:
            self.queue.put_nowait(items)
            return
        except queue.Full:
            pass
        while not self._halt.is_set():
            try:
                self.queue.put(items, timeout=PUT_WAIT_SECONDS)
            except queue.Full:
                self.blocked_waits += 1
                self._answer(min(self.status_interval, BLOCKED_STATUS_SECONDS))
                continue
            self.stream.last_frame = time.monotonic()  # time spent waiting here was not silence
            return

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass  # not nudged

    def _answer(self, interval: float) -> None:
        """Send a status update when a new position was published, a keepalive is asked for, or
        ``interval`` seconds passed since the last one."""
        fb = self.feedback
        if fb.serial != self.sent_serial or fb.poke or time.monotonic() - self.last_sent > interval:
            self._send()

    def _send(self) -> None:
        position, serial, poke = self.feedback.take()
        self.stream.send_status(position, reply=poke)
        self.sent_serial, self.last_sent = serial, time.monotonic()


def _no_spool(ev: object) -> None:
    raise AssertionError(
        f"a streamed transaction's {type(ev).__name__} on a stream that did not ask for them"
    )
