"""Stop requests: SIGINT/SIGTERM set one process-wide flag that every long wait of the tool watches.

Contract (DESIGN.md invariant 12): no wait ignores a stop request for more than about a second.
Waits sleep through :func:`sleep` (which returns early on a stop), polls call :func:`check`, and a
blocked driver call is cancelled by whoever watches it (the copy supervisor, slot creation).  A
second signal raises KeyboardInterrupt at once, for an operator who will not wait.
"""

from __future__ import annotations

import logging
import signal
import threading

from .errors import ReplicatorError

log = logging.getLogger(__name__)
_signalled = threading.Event()
_signal_name = ["a signal"]


class Interrupted(ReplicatorError):
    """A stop was requested (SIGINT/SIGTERM) before the work was done."""

    exit_code = 130


def install() -> None:
    """Route SIGINT and SIGTERM to the stop flag (main thread only; idempotent)."""
    _signalled.clear()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def _on_signal(signum: int, _frame: object) -> None:
    if _signalled.is_set():  # the second request: stop now, whatever is running
        raise KeyboardInterrupt
    _signal_name[0] = signal.Signals(signum).name
    log.warning("%s received: stopping (send it again to stop at once)", _signal_name[0])
    _signalled.set()


def request() -> None:
    """Ask every wait to end, as a signal would (tests, embedding code)."""
    _signalled.set()


def reset() -> None:
    _signalled.clear()


def requested() -> bool:
    return _signalled.is_set()


def sleep(seconds: float) -> bool:
    """Sleep up to ``seconds``; True (at once) when a stop was requested."""
    return _signalled.wait(max(0.0, seconds))


def check(doing: str) -> None:
    """Raise :class:`Interrupted` when a stop was requested; ``doing`` completes the message."""
    if _signalled.is_set():
        raise Interrupted(f"stopped by {_signal_name[0]} while {doing}")
