"""Child processes of the test suite: ``python -m replicator ...`` and background load.

Every ``replicator`` process a test starts goes through :class:`Replicator` (or its subclass
:class:`Mirror`); background pgbench runs are registered with :func:`track`.  Both are ended by
:func:`end_all`, which tests/conftest.py calls at the end of every test, passed or failed, so a
failed assertion never leaves a mirror streaming (or pgbench writing) into the next test.

A child's stdout and stderr go to temporary files, never to pipes: a long run cannot fill a pipe
and block, and the log can be read while the process runs (:meth:`Replicator.log`,
:meth:`Replicator.tail`).  Every wait is bounded: :meth:`Replicator.wait` kills the process and
raises an AssertionError quoting the log's tail when the deadline passes.

The object also answers the parts of the :class:`subprocess.Popen` interface tests used before
this module existed (``poll``, ``returncode``, ``pid``, ``send_signal``, ``terminate``,
``communicate`` returning ``(stdout, stderr)`` as text).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Optional

#: generous default deadline (seconds) for a replicator process to end on its own
DEFAULT_TIMEOUT = 300.0

# background processes that are not Replicator instances (pgbench), ended by end_all()
_tracked: list[subprocess.Popen] = []


def track(proc: subprocess.Popen) -> subprocess.Popen:
    """Register a background process so :func:`end_all` ends it if the test does not."""
    _tracked.append(proc)
    return proc


def _end_popen(proc: subprocess.Popen) -> None:
    """SIGINT (pgbench stops its clients), then SIGKILL; output pipes are drained and closed."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.communicate(timeout=30)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass


class Replicator:
    """``python -m replicator [pre_args] <command> [args]`` as a child process.

    ``source``/``target``/``failpoints`` go into REPLICATOR_SOURCE/REPLICATOR_TARGET/
    REPLICATOR_FAILPOINTS when given (``failpoints=""`` clears an inherited one); ``env`` adds or
    overrides variables.  Every instance is registered in :attr:`instances` until
    :func:`end_all` closes it."""

    instances: list[Replicator] = []
    what = "replicator"

    def __init__(
        self,
        command: str,
        *args: str,
        source: Optional[str] = None,
        target: Optional[str] = None,
        failpoints: Optional[str] = None,
        env: Optional[dict] = None,
        pre_args: Iterable[str] = (),
    ):
        self.command = command
        full_env = dict(os.environ)
        for var, value in (
            ("REPLICATOR_SOURCE", source),
            ("REPLICATOR_TARGET", target),
            ("REPLICATOR_FAILPOINTS", failpoints),
        ):
            if value is not None:
                full_env[var] = value
        full_env.update(env or {})
        self.argv = [sys.executable, "-m", "replicator", *pre_args, command, *args]
        self._out = tempfile.NamedTemporaryFile(prefix=f"{command}-", suffix=".out", delete=False)
        self._err = tempfile.NamedTemporaryFile(prefix=f"{command}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            self.argv, env=full_env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err
        )
        Replicator.instances.append(self)
        self.started = time.monotonic()

    # ---------------------------------------------------------------- state and output

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll()

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    @staticmethod
    def _read(path: str) -> str:
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self._read(self._err.name)

    def output(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self._read(self._out.name)

    def tail(self, n: int = 4000) -> str:
        return self.log()[-n:]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid {self.proc.pid} {' '.join(self.argv[3:])!r}>"

    # ---------------------------------------------------------------- ending it

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """The exit code; past ``timeout`` seconds the process is killed and the test fails
        with the tail of its log."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.what} ({' '.join(self.argv[3:5])}) did not exit within "
                f"{timeout}s; killed. Its log ends with:\n{self.tail()}"
            ) from None

    def communicate(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, str]:
        """Like Popen.communicate: (stdout, stderr) once the process has exited (bounded)."""
        self.wait(timeout)
        return self.output(), self.log()

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    send_signal = signal

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL (a crash: no cleanup, no last feedback), and reap it."""
        if self.alive():
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM (finish the batch, confirm, exit 0); the exit code, bounded by ``timeout``."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self) -> None:
        """Kill it if it still runs and remove its output files."""
        if self.alive():
            self.kill()
        for f in (self._out, self._err):
            try:
                f.close()
                os.unlink(f.name)
            except OSError:
                pass
        try:
            Replicator.instances.remove(self)
        except ValueError:
            pass


class Mirror(Replicator):
    """``replicator mirror --name NAME --no-progress --batch-seconds S`` (the fault suite's
    signature): ``Mirror(source, target, name=, failpoints=, args=, env=, batch_seconds=)``."""

    what = "mirror"

    def __init__(
        self,
        source: str,
        target: str,
        *,
        name: str = "replicator",
        failpoints: str = "",
        args: Iterable[str] = (),
        env: Optional[dict] = None,
        batch_seconds: float = 0.2,
        pre_args: Iterable[str] = (),
    ):
        self.source, self.target, self.name = source, target, name
        super().__init__(
            "mirror",
            "--name",
            name,
            "--no-progress",
            "--batch-seconds",
            str(batch_seconds),
            *args,
            source=source,
            target=target,
            failpoints=failpoints,
            env=env,
            pre_args=pre_args,
        )


def run(
    *args: str, env: Optional[dict] = None, timeout: float = DEFAULT_TIMEOUT, check: bool = False
) -> subprocess.CompletedProcess:
    """Run ``replicator *args`` to completion: a CompletedProcess with text stdout and stderr.
    Past ``timeout`` the process is killed and the test fails with its log; with ``check`` a
    non-zero exit fails the test too."""
    if not args:
        raise ValueError("run() needs a command")
    p = Replicator(args[0], *args[1:], env=env)
    try:
        rc = p.wait(timeout)
        cp = subprocess.CompletedProcess(p.argv, rc, p.output(), p.log())
    finally:
        p.close()
    if check and rc != 0:
        raise AssertionError(f"replicator {args[0]} exited {rc}:\n{cp.stderr[-4000:]}")
    return cp


def running() -> set[int]:
    """Ids of the processes registered so far (for :func:`end_all`'s ``keep``)."""
    return {id(p) for p in Replicator.instances} | {id(p) for p in _tracked}


def end_all(keep: Iterable[int] = ()) -> list[str]:
    """Kill every registered replicator process still running and end every tracked background
    process, except those whose id is in ``keep``; returns a description of those that were
    still running."""
    keep = set(keep)
    left = []
    for p in [p for p in Replicator.instances if id(p) not in keep]:
        if p.alive():
            left.append(repr(p))
        p.close()
    for proc in [p for p in _tracked if id(p) not in keep]:
        if proc.poll() is None:
            left.append(f"<background pid {proc.pid} {os.path.basename(str(proc.args[0]))}>")
        _end_popen(proc)
        _tracked.remove(proc)
    return left
