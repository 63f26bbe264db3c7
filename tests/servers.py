"""Throwaway database servers for the test-suite.

Plain library (no pytest dependency) that starts private PostgreSQL and
MariaDB instances in temporary directories on random free ports, and stops
and removes them again.  ``tests/conftest.py`` builds its fixtures on it, but
it is equally usable from scripts and benchmarks::

    from tests.servers import PostgresServer, MariaDBServer, pgbench_init

    with PostgresServer() as pg:
        dsn = pg.create_database("demo")
        pgbench_init(dsn, scale=1)

Details
-------
* :class:`PostgresServer` is ``replicator.devserver.DevServer`` (the server of
  ``replicator demo``: binary lookup, initdb, pg_ctl start with port retry,
  stop/restart, settings, watchdog, cleanup) with the test-suite's settings
  and helpers (databases, slots, psql, external servers).  MariaDB binaries
  come from ``$REPLICATOR_MARIADB_BINDIR``, ``$PATH``, ``/usr/sbin`` and
  ``/usr/bin``.
* When running as root, PostgreSQL runs as the OS user ``postgres`` and
  MariaDB as ``mysql`` (the server refuses to run as root).
* The servers listen on 127.0.0.1 only; the PostgreSQL unix socket lives in
  its data directory, so the machine's own servers are never touched.
* Ports are chosen outside the kernel's ephemeral port range so that a
  server restarted on the same port cannot collide with an outgoing client
  connection; a start that still loses a port race is retried on another
  port (unless the port was fixed by the caller or the server has already
  been handed out with that port).
* Each server has a small watchdog process: should the owning Python process
  die without cleaning up (SIGKILL, CI timeout), the watchdog stops the
  server and deletes its directory.  ``REPLICATOR_TEST_KEEP_SERVERS=1`` keeps
  the directories (logs!) after a normal cleanup.
* ``PostgresServer.from_env()`` / ``MariaDBServer.from_env()`` return a
  wrapper around an existing server when ``REPLICATOR_TEST_PG_DSN``,
  ``REPLICATOR_TEST_PG_TARGET_DSN`` or ``REPLICATOR_TEST_MYSQL_URL`` is set;
  such external servers cannot be stopped/restarted (``managed`` is False).
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from replicator import devprocs, devserver

__all__ = [
    "ServerError",
    "PostgresServer",
    "MariaDBServer",
    "find_pg_bindir",
    "free_port",
    "unique_name",
    "pgbench_init",
    "pgbench_run",
]

PG_DEFAULT_SETTINGS: dict[str, Any] = {
    "wal_level": "logical",
    "max_replication_slots": 40,
    "max_wal_senders": 40,
    "max_connections": 200,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "wal_sender_timeout": "60s",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] %q%a ",
}

MARIADB_DEFAULT_OPTIONS: dict[str, Any] = {
    "local-infile": 1,
    "skip-log-bin": None,
    "skip-name-resolve": None,
    "innodb-flush-log-at-trx-commit": 0,
    "innodb-doublewrite": 0,
    "innodb-buffer-pool-size": "128M",
    "innodb-buffer-pool-dump-at-shutdown": 0,
    "innodb-buffer-pool-load-at-startup": 0,
    "max-allowed-packet": "256M",
    "max-connections": 500,
    "character-set-server": "utf8mb4",
    "collation-server": "utf8mb4_bin",
}

START_TIMEOUT = float(os.environ.get("REPLICATOR_TEST_START_TIMEOUT", "90"))
_PORT_RETRIES = 5
_PORT_IN_USE = re.compile(
    r"address already in use|could not bind|could not create any tcp/ip sockets"
    r"|bind on tcp/ip port|do you already have another (mysqld|mariadbd) server running",
    re.IGNORECASE,
)

#: a throwaway server could not be created, started or stopped (the package's error for its own)
ServerError = devserver.DevServerError
free_port = devserver.free_port  # never the same port twice in one process


# --------------------------------------------------------------------------- helpers


def _tail(path: Path | str | None, lines: int = 40) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def unique_name(prefix: str = "t", hint: str = "", maxlen: int = 63) -> str:
    """A lower-case identifier ``<prefix>_<hint>_<8 hex>`` safe for PG and MySQL."""
    hint = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")
    suffix = uuid.uuid4().hex[:8]
    room = maxlen - len(prefix) - len(suffix) - 2
    parts = [prefix] + ([hint[: max(0, room - 1)].rstrip("_")] if hint and room > 1 else []) + [suffix]
    return "_".join(p for p in parts if p)


def _server_env() -> dict[str, str]:
    """Environment for server processes: without PG*/MYSQL* client variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL", "MARIADB"))}


def _run(
    argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 120, env=None, what: str = ""
) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise ServerError(
            f"{what or argv[0]} timed out after {timeout}s: {shlex.join(map(str, argv))}\n{e.output or ''}"
        ) from None
    except FileNotFoundError as e:
        raise ServerError(f"{what or argv[0]}: executable not found: {e}") from None
    return cp


_live_servers: set[Any] = set()


@atexit.register
def _cleanup_all() -> None:
    for server in list(_live_servers):
        try:
            server.cleanup()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


def _keep_dirs() -> bool:
    return os.environ.get("REPLICATOR_TEST_KEEP_SERVERS", "") not in ("", "0", "false", "no")


class _Server:
    """What every throwaway server answers: context manager, repr, log tail, managed-only calls.

    Subclasses set ``name``, ``managed``, ``host``, ``port``, ``datadir``, ``logfile``, ``_cleaned``
    and ``kind``, and implement ``_external`` (the external server's URL) and ``cleanup``.
    """

    kind = "server"

    @property
    def _external(self) -> str:
        raise NotImplementedError

    def _require_managed(self, what: str) -> None:
        if not self.managed:
            raise ServerError(f"cannot {what} external {self.kind} server {self._external!r}")
        if self._cleaned:
            raise ServerError(f"cannot {what}: server was cleaned up")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        where = self._external if not self.managed else f"{self.host}:{self.port} {self.datadir}"
        return f"<{type(self).__name__} {self.name} {where}>"

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.logfile, lines)


# ------------------------------------------------------------------------ PostgreSQL


def find_pg_bindir() -> Path:
    """Directory with initdb/pg_ctl/postgres/pgbench (the package's own lookup)."""
    return devserver.find_pg_bindir()


def _pg_quote(value: Any) -> str:
    return devserver._quote(value)


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresServer(_Server, devserver.DevServer):
    """A private PostgreSQL cluster (:class:`replicator.devserver.DevServer` with
    :data:`PG_DEFAULT_SETTINGS` and ``settings``), or a wrapper around an external one
    (``external_dsn``: SQL helpers only; start/stop/reconfigure raise :data:`ServerError`).

    ``datadir_parent``: where its temp directory is made; ``port``: fixed port; ``start=False``:
    initdb only (edit its files, then :meth:`start`).  ``startup_seconds``: how long creation took.
    """

    superuser = "postgres"
    kind = "PostgreSQL"

    def __init__(
        self,
        datadir_parent: str | os.PathLike | None = None,
        port: int | None = None,
        settings: Mapping[str, Any] | None = None,
        *,
        external_dsn: str | None = None,
        start: bool = True,
        start_timeout: float = START_TIMEOUT,
        name: str = "pg",
    ):
        self.external_dsn = external_dsn
        self.managed = external_dsn is None
        self.startup_seconds: float | None = None
        if not self.managed:
            from psycopg.conninfo import conninfo_to_dict

            info = conninfo_to_dict(external_dsn)
            self.name, self._cleaned, self._ext_info = name, False, info
            self.host = str(info.get("host") or "127.0.0.1")
            self.port = int(info.get("port") or 5432)
            self.basedir = self.datadir = self.logfile = self.bindir = None
            self.settings = {}
            return
        t0 = time.monotonic()
        devserver.DevServer.__init__(
            self,
            {**PG_DEFAULT_SETTINGS, **(settings or {})},
            name=name,
            start_timeout=start_timeout,
            port=port,
            parent=datadir_parent,
            start=start,
            keep=_keep_dirs(),
        )
        self.startup_seconds = time.monotonic() - t0

    @classmethod
    def from_env(cls, env_var: str = "REPLICATOR_TEST_PG_DSN", **kwargs) -> PostgresServer:
        dsn = os.environ.get(env_var)
        if dsn:
            return cls(external_dsn=dsn, **kwargs)
        return cls(**kwargs)

    @property
    def _external(self) -> str:
        return self.external_dsn

    # -- lifecycle: DevServer's, for managed servers only
    def is_running(self) -> bool:
        return True if not self.managed else devserver.DevServer.is_running(self)

    def start(self) -> None:
        self._require_managed("start")
        devserver.DevServer.start(self)

    def stop(self, mode: str = "fast") -> None:
        self._require_managed("stop")
        devserver.DevServer.stop(self, mode)

    def update_settings(self, settings: Mapping[str, Any], *, restart: bool = False) -> None:
        self._require_managed("reconfigure")
        devserver.DevServer.update_settings(self, settings, restart=restart)

    def cleanup(self) -> None:
        """Stop the server immediately and delete its directory. Idempotent."""
        if self.managed:
            devserver.DevServer.cleanup(self)
        self._cleaned = True

    # -- addressing
    @property
    def dsn(self) -> str:
        """libpq URL of the ``postgres`` database."""
        if not self.managed:
            return self.external_dsn  # type: ignore[return-value]
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        """libpq connection string for database ``dbname`` on this server."""
        if self.managed:
            return devserver.DevServer.dsn_for(self, dbname)
        dsn = self.external_dsn or ""
        if dsn.startswith(("postgresql://", "postgres://")):
            parts = urlsplit(dsn)
            return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))
        from psycopg.conninfo import make_conninfo

        return make_conninfo(dsn, dbname=dbname)

    def sqlalchemy_url(self, dbname: str = "postgres", driver: str = "psycopg") -> str:
        """SQLAlchemy URL (``postgresql+psycopg://...``) for ``dbname``."""
        if self.managed:
            return f"postgresql+{driver}://{self.superuser}@{self.host}:{self.port}/{quote(dbname, safe='')}"
        from sqlalchemy.engine import URL

        info = self._ext_info
        query = {
            k: str(v)
            for k, v in info.items()
            if k not in ("host", "port", "user", "password", "dbname") and v is not None
        }
        return URL.create(
            f"postgresql+{driver}",
            username=info.get("user"),
            password=info.get("password"),
            host=info.get("host"),
            port=int(info["port"]) if info.get("port") else None,
            database=dbname,
            query=query,
        ).render_as_string(hide_password=False)

    # -- SQL helpers
    def connect(self, dbname: str = "postgres", **kwargs):
        import psycopg

        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 10)
        return psycopg.connect(self.dsn_for(dbname), **kwargs)

    def execute(
        self, sql: str, params: Sequence | Mapping | None = None, dbname: str = "postgres"
    ) -> list[tuple]:
        """Run one statement in autocommit mode and return its rows (or [])."""
        with self.connect(dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def psql(self, sql: str, dbname: str = "postgres", timeout: float = 300) -> str:
        """Run SQL through the ``psql`` binary (ON_ERROR_STOP); returns stdout."""
        cp = subprocess.run(
            [
                str((self.bindir or find_pg_bindir()) / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn_for(dbname),
            ],
            input=sql,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if cp.returncode != 0:
            raise ServerError(f"psql failed (exit {cp.returncode}): {cp.stderr.strip()}")
        return cp.stdout

    def create_database(self, name: str | None = None, template: str = "template0") -> str:
        """Create database ``name`` (default: a unique name); returns its DSN."""
        name = name or unique_name("db")
        self.execute(f"CREATE DATABASE {_pg_ident(name)} TEMPLATE {_pg_ident(template)} ENCODING 'UTF8'")
        return self.dsn_for(name)

    def drop_replication_slots(self, dbname: str, timeout: float = 30) -> None:
        """Drop all replication slots of ``dbname``, terminating walsenders using them."""
        deadline = time.monotonic() + timeout
        with self.connect() as conn:
            while True:
                slots = conn.execute(
                    "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", (dbname,)
                ).fetchall()
                if not slots:
                    return
                for slot, pid in slots:
                    if pid is not None:
                        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        continue
                    try:
                        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    except Exception:
                        pass  # became active again, or dropped concurrently: loop
                if time.monotonic() > deadline:
                    raise ServerError(f"could not drop replication slots of {dbname}: {slots}")
                time.sleep(0.1)

    def standby(
        self, name: str = "standby", settings: Mapping[str, Any] | None = None, timeout: float = 300
    ) -> PostgresServer:
        """A hot standby of this (managed) server, streaming from it: ``pg_basebackup -R`` into a
        new server's directory, its own port, socket and ``settings`` written over the copied
        ones, then started; read-only queries work on it as soon as this returns."""
        self._require_managed("start a standby of")
        sb = PostgresServer(name=name, start=False, settings={"hot_standby": "on", **(settings or {})})
        try:
            shutil.rmtree(sb.datadir)
            argv = [sb.bindir / "pg_basebackup", "-h", self.host, "-p", str(self.port), "-U"]
            argv += [self.superuser, "-D", sb.datadir, "-R", "-X", "stream", "-c", "fast", "--no-sync"]
            cp = _run(devprocs._as_user(sb.os_user, argv), cwd=sb.basedir, env=_server_env(), timeout=timeout)
            if cp.returncode != 0:
                raise ServerError(f"pg_basebackup failed (exit {cp.returncode}):\n{cp.stdout[-3000:]}")
            sb._write_conf()  # the copied replicator_demo.conf names the primary's port and socket
            sb.start()
        except BaseException:
            sb.cleanup()
            raise
        return sb

    def drop_database(self, name: str) -> None:
        """Drop ``name`` even when in use: slots, subscriptions, sessions, prepared xacts."""
        import psycopg

        with self.connect() as conn:
            exists = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            return
        self.drop_replication_slots(name)
        try:
            with self.connect(name) as conn:
                for (gid,) in conn.execute(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
                ).fetchall():
                    conn.execute(f"ROLLBACK PREPARED {_pg_quote(gid)}")
                for (sub,) in conn.execute(
                    "SELECT subname FROM pg_subscription WHERE subdbid = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchall():
                    conn.execute(f"ALTER SUBSCRIPTION {_pg_ident(sub)} DISABLE")
                    conn.execute(f"ALTER SUBSCRIPTION {_pg_ident(sub)} SET (slot_name = NONE)")
                    conn.execute(f"DROP SUBSCRIPTION {_pg_ident(sub)}")
        except psycopg.Error:
            pass  # best effort; DROP DATABASE below reports real problems
        for attempt in range(20):
            try:
                self.execute(f"DROP DATABASE IF EXISTS {_pg_ident(name)} WITH (FORCE)")
                return
            except psycopg.errors.ObjectInUse:
                if attempt == 19:
                    raise
                self.drop_replication_slots(name)
                time.sleep(0.25)


# --------------------------------------------------------------------------- pgbench


def _pgbench(bindir: str | os.PathLike | None) -> str:
    return str(Path(bindir or find_pg_bindir()) / "pgbench")


def pgbench_init(
    dsn: str,
    scale: int = 1,
    *,
    foreign_keys: bool = False,
    unlogged: bool = False,
    extra_args: Iterable[str] = (),
    bindir: str | os.PathLike | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """``pgbench -i -s scale`` against ``dsn`` (100000 accounts per scale unit)."""
    argv = [_pgbench(bindir), "-i", "-q", "-s", str(scale)]
    if foreign_keys:
        argv.append("--foreign-keys")
    if unlogged:
        argv.append("--unlogged-tables")
    argv += [*extra_args, dsn]
    cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if cp.returncode != 0:
        raise ServerError(f"pgbench -i failed (exit {cp.returncode}):\n{cp.stderr}{cp.stdout}")
    return cp


def pgbench_run(
    dsn: str,
    seconds: float | None = None,
    transactions: int | None = None,
    clients: int = 2,
    *,
    jobs: int | None = None,
    builtin: str | None = None,
    script: str | None = None,
    script_file: str | os.PathLike | None = None,
    no_vacuum: bool = False,
    rate: float | None = None,
    extra_args: Iterable[str] = (),
    background: bool = False,
    check: bool = True,
    bindir: str | os.PathLike | None = None,
    timeout: float | None = None,
):
    """Run pgbench against ``dsn``.

    ``seconds`` (``-T``) or ``transactions`` per client (``-t``); ``builtin`` is
    a built-in script name (``tpcb-like``, ``simple-update``, ``select-only``),
    ``script`` an inline custom script, ``script_file`` a file.  Returns a
    :class:`subprocess.CompletedProcess` (raising on failure when ``check``) or,
    with ``background=True``, a :class:`subprocess.Popen` whose combined
    stdout/stderr is available via ``communicate()``.
    """
    if seconds is not None and transactions is not None:
        raise ValueError("give seconds or transactions, not both")
    argv = [_pgbench(bindir), "-c", str(clients), "-j", str(jobs or min(clients, os.cpu_count() or 1))]
    if seconds is not None:
        argv += ["-T", str(int(seconds) if float(seconds).is_integer() else seconds)]
    if transactions is not None:
        argv += ["-t", str(transactions)]
    if builtin:
        argv += ["-b", builtin]
    tmp_script = None
    if script is not None:
        fd, tmp_script = tempfile.mkstemp(prefix="pgbench-", suffix=".sql")
        with os.fdopen(fd, "w") as f:
            f.write(script)
        script_file = tmp_script
    if script_file is not None:
        argv += ["-f", str(script_file)]
    if no_vacuum or script_file is not None:
        argv.append("-n")
    if rate is not None:
        argv += ["-R", str(rate)]
    argv += [*extra_args, dsn]
    if background:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:  # ended at the end of the test if the test does not end it (tests/conftest.py)
            from tests.procs import track
        except ImportError:  # used outside the test suite
            return proc
        return track(proc)
    try:
        cp = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    finally:
        if tmp_script:
            os.unlink(tmp_script)
    if check and cp.returncode != 0:
        raise ServerError(f"pgbench failed (exit {cp.returncode}):\n{cp.stdout}")
    return cp


# --------------------------------------------------------------------------- MariaDB


def _find_exe(names: Sequence[str], extra_dirs: Sequence[str]) -> str | None:
    env = os.environ.get("REPLICATOR_MARIADB_BINDIR")
    dirs = ([env] if env else []) + os.environ.get("PATH", "").split(os.pathsep) + list(extra_dirs)
    for n in names:
        for d in dirs:
            p = os.path.join(d, n)
            if d and os.access(p, os.X_OK) and os.path.isfile(p):
                return p
    return None


def _mysql_quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _mysql_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class MariaDBServer(_Server):
    """A private MariaDB instance (or a wrapper around an external MySQL/MariaDB)."""

    def __init__(
        self,
        datadir_parent: str | os.PathLike | None = None,
        port: int | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        external_url: str | None = None,
        start: bool = True,
        start_timeout: float = START_TIMEOUT,
        name: str = "mariadb",
    ):
        self.name = name
        self.start_timeout = start_timeout
        self.options = {**MARIADB_DEFAULT_OPTIONS, **(options or {})}
        self.external_url = external_url
        self.managed = external_url is None
        self.startup_seconds: float | None = None
        self.proc: subprocess.Popen | None = None
        self._fixed_port = port is not None
        self._port_published = False
        self._watchdog: subprocess.Popen | None = None
        self._cleaned = False
        self.basedir: Path | None = None
        self.datadir: Path | None = None
        self.logfile: Path | None = None
        self._os_user = "mysql" if devserver._is_root() else None
        self.user, self.password = "root", ""

        if not self.managed:
            from sqlalchemy.engine import make_url

            u = make_url(external_url)
            self._ext_url = u
            self.host = u.host or "127.0.0.1"
            self.port = int(u.port or 3306)
            self.user, self.password = u.username or "root", u.password or ""
            return

        self.mariadbd = _find_exe(["mariadbd", "mysqld"], ["/usr/sbin", "/usr/bin", "/usr/libexec"])
        self.install_db = _find_exe(["mariadb-install-db", "mysql_install_db"], ["/usr/bin", "/usr/sbin"])
        if not self.mariadbd or not self.install_db:
            raise ServerError(
                "MariaDB server binaries (mariadbd, mariadb-install-db) not found; "
                "install the 'mariadb-server' package or set REPLICATOR_MARIADB_BINDIR"
            )
        self.host = "127.0.0.1"
        self.port = port or free_port()
        t0 = time.monotonic()
        self.basedir = devserver.make_basedir(name, datadir_parent, self._os_user)
        self.datadir = self.basedir / "data"
        self.logfile = self.basedir / "server.log"
        self.socket = self.basedir / "mysqld.sock"
        self.pidfile = self.basedir / "mysqld.pid"
        _live_servers.add(self)
        try:
            self._install()
            self._watchdog = devserver.start_watchdog(self.pidfile, None if _keep_dirs() else self.basedir)
            if start:
                self.start()
        except BaseException:
            self.cleanup()
            raise
        self.startup_seconds = time.monotonic() - t0

    @classmethod
    def from_env(cls, env_var: str = "REPLICATOR_TEST_MYSQL_URL", **kwargs) -> MariaDBServer:
        url = os.environ.get(env_var)
        if url:
            return cls(external_url=url, **kwargs)
        return cls(**kwargs)

    def _install(self) -> None:
        argv = [
            self.install_db,
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]
        if self._os_user:
            argv.append(f"--user={self._os_user}")
        cp = _run(argv, cwd=self.basedir, env=_server_env(), timeout=300, what="mariadb-install-db")
        if cp.returncode != 0:
            raise ServerError(f"mariadb-install-db failed (exit {cp.returncode}):\n{cp.stdout}")

    def _argv(self) -> list[str]:
        argv = [
            self.mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.pidfile}",
            f"--log-error={self.logfile}",
        ]
        if self._os_user:
            argv.append(f"--user={self._os_user}")
        for k, v in self.options.items():
            argv.append(f"--{k}" if v is None else f"--{k}={v}")
        return argv

    kind = "MySQL"

    @property
    def _external(self) -> str:
        return self.external_url

    def is_running(self) -> bool:
        if not self.managed:
            return True
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self._require_managed("start")
        if self.is_running():
            return
        import pymysql

        can_move = not (self._fixed_port or self._port_published)
        deadline = time.monotonic() + self.start_timeout
        first_start = not self._port_published
        attempt = 0
        while True:
            attempt += 1
            offset = _size(self.logfile)
            stdout_log = self.basedir / "stdout.log"
            with open(stdout_log, "ab") as out:
                self.proc = subprocess.Popen(
                    self._argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.basedir,
                    env=_server_env(),
                    start_new_session=True,
                )
            last_err = None
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    conn = pymysql.connect(
                        unix_socket=str(self.socket), user="root", password="", connect_timeout=2
                    )
                except pymysql.MySQLError as e:
                    last_err = e
                    time.sleep(0.1)
                    continue
                try:
                    if first_start:
                        self._bootstrap(conn)
                finally:
                    conn.close()
                self._check_tcp()
                self._port_published = True
                return
            new_log = _read_from(self.logfile, offset) + _tail(stdout_log, 20)
            last = f"{new_log}\nlast connection error: {last_err}"
            if self.proc.poll() is None:  # timed out
                self._terminate(kill=True)
                raise ServerError(
                    f"MariaDB ({self.datadir}) did not accept connections within "
                    f"{self.start_timeout}s on port {self.port}:\n{_tail(self.logfile)}"
                )
            if not _PORT_IN_USE.search(new_log) or time.monotonic() > deadline:
                break
            if can_move:
                if attempt >= _PORT_RETRIES:
                    break
                self.port = free_port()
            else:
                time.sleep(0.5)
        raise ServerError(
            f"MariaDB ({self.datadir}) failed to start on port {self.port} "
            f"(exit {self.proc.returncode}):\n{last.strip()}\n"
            f"--- server log tail ({self.logfile}) ---\n{_tail(self.logfile)}"
        )

    def _bootstrap(self, conn) -> None:
        with conn.cursor() as cur:
            for host in ("127.0.0.1", "%"):
                cur.execute(f"CREATE USER IF NOT EXISTS 'root'@'{host}' IDENTIFIED BY ''")
                cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' WITH GRANT OPTION")
            cur.execute("CREATE DATABASE IF NOT EXISTS test CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            cur.execute("FLUSH PRIVILEGES")
        conn.commit()

    def _check_tcp(self) -> None:
        conn = self.connect(connect_timeout=5)
        conn.close()

    def _terminate(self, kill: bool = False, timeout: float = 60) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: 'fast' = SIGTERM (clean), 'immediate' = SIGKILL (crash)."""
        self._require_managed("stop")
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"bad stop mode {mode!r}")
        self._terminate(kill=(mode == "immediate"))

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def cleanup(self) -> None:
        """Stop the server immediately (SIGKILL) and delete its directory. Idempotent."""
        if self._cleaned or not self.managed:
            self._cleaned = True
            return
        try:
            self._terminate(kill=True)
        finally:
            self._cleaned = True
            if self._watchdog is not None and self._watchdog.poll() is None:
                self._watchdog.kill()
                self._watchdog.wait(5)
            if self.basedir and not _keep_dirs():
                shutil.rmtree(self.basedir, ignore_errors=True)
            _live_servers.discard(self)

    # -- addressing
    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``test`` database."""
        return self.url_for("test")

    def url_for(self, database: str) -> str:
        if self.managed:
            return (
                f"mysql+pymysql://root@{self.host}:{self.port}/{quote(database, safe='')}"
                f"?charset=utf8mb4&local_infile=1"
            )
        u = self._ext_url.set(database=database)
        query = dict(u.query)
        query.setdefault("charset", "utf8mb4")
        query.setdefault("local_infile", "1")
        return u.set(query=query).render_as_string(hide_password=False)

    def connect(self, database: str | None = None, **kwargs):
        """pymysql connection over TCP (autocommit, LOCAL INFILE allowed)."""
        import pymysql

        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("local_infile", True)
        kwargs.setdefault("charset", "utf8mb4")
        kwargs.setdefault("connect_timeout", 10)
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database,
            **kwargs,
        )

    def execute(self, sql: str, params: Any = None, database: str | None = None) -> list[tuple]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str | None = None) -> str:
        """Create database ``name`` (default: unique); returns its SQLAlchemy URL."""
        name = name or unique_name("db")
        self.execute(f"CREATE DATABASE {_mysql_ident(name)} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                    (name,),
                )
                for (pid,) in cur.fetchall():
                    try:
                        cur.execute(f"KILL {int(pid)}")
                    except Exception:
                        pass
                cur.execute(f"DROP DATABASE IF EXISTS {_mysql_ident(name)}")
        finally:
            conn.close()
