"""What the benchmarks share: a replicator child process measured by a launcher (exit code,
seconds, peak RSS), waits with deadlines, and the log line format.

Peak RSS: each replicator process is started by a small launcher that runs it and reads its
``os.wait4`` ru_maxrss; measured from the benchmark itself, a child would report at least the
benchmark's own RSS (vfork + exec keeps the parent's high-water mark).  Every child runs in its
own session, so a stop (SIGTERM) or kill reaches the whole group; :data:`LIVE` lists the children
still running, for the benchmark's ``finally`` to kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = """
import os, signal, subprocess, sys, time
for s in (signal.SIGTERM, signal.SIGINT):  # meant for the child (same group); exec resets a handler
    signal.signal(s, lambda *_: None)
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {ru.ru_maxrss} {time.perf_counter() - t0}")
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """A run failed: the message carries the process's output tail."""


class Child:
    """``python -m replicator *args --no-progress`` in its own session, run by LAUNCHER; its
    output goes to ``logfile`` (a temporary file when None)."""

    def __init__(self, what: str, *args: str, logfile: Optional[Path] = None):
        self.what = what
        if logfile is None:
            self.log = tempfile.NamedTemporaryFile("w+", prefix="bench-", suffix=".log")
            self.logfile = Path(self.log.name)
        else:
            self.logfile, self.log = logfile, open(logfile, "w+")
        self.res = tempfile.NamedTemporaryFile("r", prefix="bench-", suffix=".res")
        self.argv = [sys.executable, "-m", "replicator", *args, "--no-progress"]
        self.p = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, self.res.name, *self.argv],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        LIVE.append(self)

    def pid(self, timeout: float = 30) -> int:
        """The replicator process itself (the launcher's child)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = subprocess.run(["pgrep", "-P", str(self.p.pid)], capture_output=True, text=True).stdout
            if kids.split():
                return int(kids.split()[0])
            self.check_running()
            time.sleep(0.02)
        raise Failed(f"{self.what}: no replicator process under the launcher after {timeout:.0f}s")

    def tail(self, n: int = 3000) -> str:
        self.log.flush()
        return self.logfile.read_text(errors="replace")[-n:].strip()

    def wait(self, timeout: float) -> dict:
        """Once it exited: {"seconds", "peak_rss_mb"}; Failed unless it exited 0 in time."""
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failed(f"{self.what}: no end after {timeout:.0f}s, killed:\n{self.tail()}") from None
        if self in LIVE:
            LIVE.remove(self)
        words = self.res.read().split()
        if len(words) != 3:
            raise Failed(f"{self.what}: launcher exit {self.p.returncode}:\n{self.tail()}")
        rc, kib, seconds = int(words[0]), int(words[1]), float(words[2])
        if rc != 0:
            raise Failed(f"{self.what}: exit {rc}:\n{self.tail()}")
        return {"seconds": round(seconds, 2), "peak_rss_mb": kib // 1024}

    def check_running(self) -> None:
        if self.p.poll() is not None:
            self.wait(0)  # raises Failed with its output unless it exited 0
            raise Failed(f"{self.what}: exited 0 before it was stopped:\n{self.tail()}")

    def stop(self, timeout: float = 120) -> dict:
        os.killpg(self.p.pid, signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()
        if self in LIVE:
            LIVE.remove(self)


LIVE: list[Child] = []


def wait_for(check, timeout: float, what: str, every: float = 0.2) -> float:
    """Seconds until ``check()`` is true; Failed naming ``what`` after ``timeout``."""
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise Failed(f"{what}: not reached after {timeout:.0f}s")
        time.sleep(every)
    return time.perf_counter() - t0
