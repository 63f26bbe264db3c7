"""The processes behind ``DevServer`` (devserver.py): where the PostgreSQL binaries are, free ports,
running a server command as the OS user ``postgres`` when we are root, the watchdog that
stops a server whose owner died, and the server's temporary directory.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from .errors import ReplicatorError

_PORT_IN_USE = re.compile(
    r"address already in use|could not bind|could not create any tcp/ip sockets", re.IGNORECASE
)


class DevServerError(ReplicatorError):
    """The throwaway PostgreSQL could not be created, started or used."""


def find_pg_bindir() -> Path:
    """Directory holding initdb, pg_ctl, postgres (and pgbench)."""

    def ok(d) -> bool:
        return bool(d) and all(
            os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")
        )

    env = os.environ.get("REPLICATOR_PG_BINDIR")
    if env:
        if not ok(env):
            raise DevServerError(f"REPLICATOR_PG_BINDIR={env} has no initdb/pg_ctl/postgres")
        return Path(env)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            d = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            d = ""
        if ok(d):
            return Path(d)

    def version(p: str) -> tuple:
        return tuple(int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split("."))

    for d in sorted(
        glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin"), key=version, reverse=True
    ):
        if ok(d):
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and ok(os.path.dirname(initdb)):
        return Path(os.path.dirname(initdb))
    raise DevServerError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install the "
        "'postgresql' package (Debian/Ubuntu), set REPLICATOR_PG_BINDIR, or give "
        "--source to use an existing server"
    )


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port, preferably below the kernel's ephemeral range (no clash with client ports),
    never one this process was given before."""
    try:
        lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    for port in random.sample(range(10000, lo), min(100, max(0, lo - 10000))):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    _handed_out.add(port)
    return port


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _as_user(user: Optional[str], argv: Sequence[Any]) -> list[str]:
    argv = [str(a) for a in argv]
    if user is None:
        return argv
    runuser = shutil.which("runuser") or (
        "/usr/sbin/runuser" if os.path.exists("/usr/sbin/runuser") else None
    )
    if runuser:
        return [runuser, "-u", user, "--", *argv]
    return ["su", "-s", "/bin/sh", user, "-c", shlex.join(argv)]


def _server_env() -> dict[str, str]:
    """The environment without PG* client variables (they would redirect initdb/pg_ctl)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _run(argv: Sequence[Any], what: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env=_server_env(),
            **kw,
        )
    except subprocess.TimeoutExpired:
        raise DevServerError(f"{what} timed out after {timeout:.0f}s") from None
    except FileNotFoundError as e:
        raise DevServerError(f"{what}: executable not found: {e}") from None


def _quote(value: Any) -> str:
    if isinstance(value, bool):
        value = "on" if value else "off"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_WATCHDOG = r"""
import json, os, shutil, signal, subprocess, sys, time
spec = json.loads(sys.argv[1])
for s in (signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while os.getppid() == spec["owner"]:
    time.sleep(0.5)
try:
    subprocess.run(spec["stop"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60, cwd="/")
except Exception:
    pass
try:
    with open(spec["pidfile"]) as f:
        os.kill(int(f.readline().strip()), signal.SIGKILL)
except Exception:
    pass
time.sleep(0.5)
if spec["rmtree"]:
    shutil.rmtree(spec["rmtree"], ignore_errors=True)
"""
_PORT_ATTEMPTS = 5


def start_watchdog(
    pidfile: Path, rmtree: Optional[Path], stop: Sequence[Any] = ()
) -> Optional[subprocess.Popen]:
    """A detached process that, once this process is gone, runs ``stop``, SIGKILLs the pid in
    ``pidfile`` and deletes ``rmtree`` (None: nothing).  None when it cannot be started."""
    spec = {
        "owner": os.getpid(),
        "pidfile": str(pidfile),
        "rmtree": str(rmtree) if rmtree else None,
        "stop": [str(a) for a in stop] or ["true"],
    }
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )
    except OSError:
        return None


def make_basedir(
    name: str, parent: Optional[os.PathLike | str] = None, os_user: Optional[str] = None
) -> Path:
    """A new temp directory ``replicator-<name>-*`` (under ``parent``, else the temp dir), owned by
    ``os_user`` when given (as root: the server's user, who must be able to reach it)."""
    parent = Path(parent or tempfile.gettempdir()).resolve()
    if os_user and not all(p.stat().st_mode & 0o001 for p in [parent, *parent.parents]):
        parent = Path("/tmp")
    base = Path(tempfile.mkdtemp(prefix=f"replicator-{name}-", dir=parent)).resolve()
    if os_user:
        import pwd

        try:
            pw = pwd.getpwnam(os_user)
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            raise DevServerError(
                f"running as root, but the OS user {os_user!r} that must run the "
                f"server does not exist: install the server's package"
            ) from None
        os.chown(base, pw.pw_uid, pw.pw_gid)
    os.chmod(base, 0o755)
    return base
