"""A throwaway PostgreSQL for ``replicator demo``: started from the installed binaries, in a temp
directory, on a random free port, with ``wal_level=logical``; stopped and deleted afterwards.

The one PostgreSQL server lifecycle of the project: the test-suite's ``tests/servers.py`` builds
its ``PostgresServer`` on :class:`DevServer` (the package never imports ``tests/``).

* binaries from ``$REPLICATOR_PG_BINDIR``, else ``pg_config --bindir``, else the newest
  ``/usr/lib/postgresql/*/bin``, else ``$PATH``;
* as root the server runs as the OS user ``postgres`` (PostgreSQL refuses to run as root);
* it listens on 127.0.0.1 only, its unix socket lives in its data directory, so the machine's own
  servers are never touched; authentication is ``trust`` for the superuser ``postgres``;
* a start that loses a port race moves to another free port until the server first ran; from
  then on it keeps its port (clients know it) and waits for it to become free;
* a small watchdog process stops the server and deletes its directory should this process die
  without cleaning up (SIGKILL, a closed terminal).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from .devprocs import (  # noqa: F401  (re-exported: tests/servers.py builds on them)
    _PORT_ATTEMPTS,
    _PORT_IN_USE,
    _WATCHDOG,
    DevServerError,
    _as_user,
    _is_root,
    _quote,
    _run,
    _server_env,
    _tail,
    find_pg_bindir,
    free_port,
    make_basedir,
    start_watchdog,
)

SETTINGS: dict[str, Any] = {
    "wal_level": "logical",
    "max_replication_slots": 10,
    "max_wal_senders": 10,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
}


class DevServer:
    """A private PostgreSQL cluster: ``with DevServer() as pg: dsn = pg.create_database("demo")``.

    ``settings`` are added to :data:`SETTINGS` (postgresql.conf; booleans as on/off).  ``port``
    fixes the port (else a free one, moved when a start loses a port race, until the first start
    succeeded: from then on the port is published and a start waits for it).  ``parent``: where
    the temp directory is made.  ``start=False``: initdb only (edit files, then :meth:`start`).
    ``keep``: :meth:`cleanup` stops the server but leaves its directory (logs).
    """

    superuser = "postgres"

    def __init__(
        self,
        settings: Optional[Mapping[str, Any]] = None,
        name: str = "demo",
        start_timeout: float = 60.0,
        *,
        port: Optional[int] = None,
        parent: Optional[os.PathLike | str] = None,
        start: bool = True,
        keep: bool = False,
    ):
        self.name = name
        self.settings = {**SETTINGS, **(settings or {})}
        self.start_timeout = start_timeout
        self.bindir = find_pg_bindir()
        self.host, self.port = "127.0.0.1", port or free_port()
        self._port_fixed = port is not None  # also once a start succeeded
        self.keep = keep
        self.os_user = self.superuser if _is_root() else None
        self.basedir = make_basedir(name, parent, self.os_user)
        self.datadir = self.basedir / "data"
        self.logfile = self.basedir / "server.log"
        self._watchdog: Optional[subprocess.Popen] = None
        self._cleaned = False
        atexit.register(self.cleanup)
        try:
            self._initdb()
            self._start_watchdog()
            if start:
                self.start()
        except BaseException:
            self.cleanup()
            raise

    # -------------------------------------------------------------- setup
    def _initdb(self) -> None:
        base = [
            self.bindir / "initdb",
            "-D",
            self.datadir,
            "-U",
            self.superuser,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
        for locale in (["--locale=C.UTF-8"], ["--no-locale"]):
            cp = _run(_as_user(self.os_user, base + locale), "initdb", cwd=self.basedir)
            if cp.returncode == 0:
                break
            shutil.rmtree(self.datadir, ignore_errors=True)
        else:
            raise DevServerError(f"initdb failed (exit {cp.returncode}):\n{cp.stdout[-3000:]}")
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\ninclude 'replicator_demo.conf'\n")
        self._write_conf()

    def _write_conf(self) -> None:
        conf = {
            **self.settings,
            "port": self.port,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.datadir),
        }
        path = self.datadir / "replicator_demo.conf"
        path.write_text("".join(f"{k} = {_quote(v)}\n" for k, v in conf.items()))
        if self.os_user:
            st = self.datadir.stat()
            os.chown(path, st.st_uid, st.st_gid)

    def _pg_ctl(self, *args: Any, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run(
            _as_user(self.os_user, [self.bindir / "pg_ctl", "-D", self.datadir, *args]),
            "pg_ctl",
            timeout=timeout,
            cwd=self.basedir,
        )

    def _start_watchdog(self) -> None:
        stop = [self.bindir / "pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "-t", "30", "stop"]
        self._watchdog = start_watchdog(
            self.datadir / "postmaster.pid", None if self.keep else self.basedir, _as_user(self.os_user, stop)
        )

    # -------------------------------------------------------------- lifecycle
    def is_running(self) -> bool:
        if self._cleaned or not self.datadir.exists():
            return False
        return self._pg_ctl("status").returncode == 0

    def start(self) -> None:
        """Start (nothing when running); a lost port race moves an unpublished port (see class)."""
        if self.is_running():
            return
        deadline = time.monotonic() + self.start_timeout
        for _attempt in range(_PORT_ATTEMPTS):
            offset = self.logfile.stat().st_size if self.logfile.exists() else 0
            remaining = max(5, int(deadline - time.monotonic()))
            cp = self._pg_ctl(
                "-l", self.logfile, "-w", "-t", str(remaining), "-s", "start", timeout=remaining + 30
            )
            if cp.returncode == 0:
                self._port_fixed = True
                return
            try:
                new_log = self.logfile.read_text(errors="replace")[offset:]
            except OSError:
                new_log = ""
            if self.is_running():  # pg_ctl gave up waiting, but the postmaster lives
                self.stop("immediate")
            if not _PORT_IN_USE.search(new_log) or time.monotonic() > deadline:
                break
            if self._port_fixed:
                time.sleep(0.5)  # our port is taken: wait for it to become free
            else:
                self.port = free_port()  # lost a port race: try another one
                self._write_conf()
        raise DevServerError(
            f"PostgreSQL ({self.datadir}) failed to start on port {self.port}:\n"
            f"{cp.stdout.strip()}\n{_tail(self.logfile)}"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode`` is 'smart', 'fast' or 'immediate' (crash-like)."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"bad stop mode {mode!r}")
        if not self.is_running():
            return
        cp = self._pg_ctl("-m", mode, "-w", "-t", "60", "-s", "stop", timeout=90)
        if cp.returncode != 0 and self.is_running():
            if mode != "immediate":
                cp = self._pg_ctl("-m", "immediate", "-w", "-t", "30", "-s", "stop", timeout=60)
            if self.is_running():
                self._kill_postmaster()
        if self.is_running():
            raise DevServerError(
                f"could not stop PostgreSQL ({self.datadir}):\n{cp.stdout}\n{_tail(self.logfile)}"
            )

    def restart(self, mode: str = "fast") -> None:
        """Stop (``mode`` as for :meth:`stop`) and start again on the same port."""
        self.stop(mode)
        self.start()

    def update_settings(self, settings: Mapping[str, Any], *, restart: bool = False) -> None:
        """Change settings: written to the conf file, then reloaded (or restarted when ``restart``)."""
        self.settings.update(settings)
        self._write_conf()
        if restart:
            self.restart()
        elif self.is_running():
            self._pg_ctl("-s", "reload")

    def _kill_postmaster(self) -> None:
        try:
            os.kill(int((self.datadir / "postmaster.pid").read_text().splitlines()[0]), signal.SIGKILL)
            time.sleep(1)
        except (OSError, ValueError, IndexError):
            pass

    def cleanup(self) -> None:
        """Stop the server at once and delete its directory (unless ``keep``).  Idempotent."""
        if self._cleaned:
            return
        self._cleaned = True
        try:
            if (self.datadir / "postmaster.pid").exists():
                cp = self._pg_ctl("-m", "immediate", "-w", "-t", "30", "-s", "stop", timeout=60)
                if cp.returncode != 0 and (self.datadir / "postmaster.pid").exists():
                    self._kill_postmaster()
        except DevServerError:
            self._kill_postmaster()
        finally:
            if self._watchdog is not None and self._watchdog.poll() is None:
                self._watchdog.kill()
                self._watchdog.wait(5)
            if not self.keep:
                shutil.rmtree(self.basedir, ignore_errors=True)

    def __enter__(self) -> DevServer:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -------------------------------------------------------------- use
    @property
    def version(self) -> str:
        cp = _run([self.bindir / "postgres", "--version"], "postgres --version")
        m = re.search(r"\(PostgreSQL\) (\S+)", cp.stdout)
        return m.group(1) if m else "?"

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its libpq URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as c:
            c.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
            )
        return self.dsn_for(name)


# ------------------------------------------------------------------ pgbench


def pgbench(
    dsn: str,
    args: Iterable[str],
    bindir: Optional[Path] = None,
    timeout: float = 600,
    background: bool = False,
):
    """Run ``pgbench ARGS DSN`` (the binary next to the server's, else on $PATH)."""
    exe = None
    try:
        d = bindir or find_pg_bindir()
        exe = str(d / "pgbench") if os.access(d / "pgbench", os.X_OK) else None
    except DevServerError:
        pass
    exe = exe or shutil.which("pgbench")
    if exe is None:
        raise DevServerError(
            "pgbench not found: install the postgresql-contrib (or postgresql-client) "
            "package, or set REPLICATOR_PG_BINDIR"
        )
    argv = [exe, *args, dsn]
    if background:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    cp = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if cp.returncode != 0:
        raise DevServerError(f"pgbench {' '.join(args)} failed (exit {cp.returncode}):\n{cp.stdout[-3000:]}")
    return cp
