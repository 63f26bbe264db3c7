"""Connection strings: redaction for messages, parsing with safe errors, and the settings every
connection carries (pinned session, keepalives, connect timeout).

Contracts:

* Nothing outside this module formats a DSN or URL for humans; everything that prints one goes
  through :func:`redact`, which never returns a password: neither one written in a URL or keyword
  DSN in the text, nor one :func:`remember_secrets` was told about (the CLI tells it every
  password of its command line, environment and mapping, so even libpq's own messages that
  quote a fragment of a malformed DSN are cleaned).
* :func:`parse_source` and :func:`source_conninfo` raise :class:`ConfigError` (exit 2) for a DSN
  that is not PostgreSQL's or that libpq cannot parse, without quoting any of it.
* Every connection attempt gives up after :func:`connect_timeout` seconds (default 10; the CLI's
  ``--connect-timeout`` sets ``REPLICATOR_CONNECT_TIMEOUT``).  A ``connect_timeout`` written in the
  DSN or target URL itself wins.
"""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Optional, cast
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import ConfigError

if TYPE_CHECKING:
    from psycopg.abc import ConnDict

# Copy path and change path must render values identically: pin the session on every source
# connection (normal and replication) to UTC / ISO / iso_8601 intervals / extra_float_digits=3.
SOURCE_SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c extra_float_digits=3"
    " -c bytea_output=hex"
)

TCP_KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}

CONNECT_TIMEOUT_ENV = "REPLICATOR_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 10.0
MIN_SECRET = 4  # shorter remembered passwords would blank out ordinary words

# scheme://user:PASSWORD@ : the password runs to the last '@' of the token, so one holding '@',
# '/' or '%' is hidden whole (at worst the host goes too)
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.\-]*://[^/:@\s'\"]*:)(?P<pw>[^\s'\"]*)(?P<at>@)", re.I)
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
_SCHEME = re.compile(r"^\s*([a-z][a-z0-9+.\-]*)://", re.I)
_secrets: set[str] = set()


def redact(text: object) -> str:
    """Replace any password in a URL, keyword DSN, or free text containing either, by ``***``;
    and any remembered password wherever it appears."""
    s = str(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        s = s.replace(secret, "***")
    s = _URL_PASSWORD.sub(lambda m: f"{m['pre']}***{m['at']}", s)
    return _KV_PASSWORD.sub(lambda m: f"{m[1]}***", s)


def secrets_in(text: str | None) -> set[str]:
    """The passwords written in ``text`` (a URL or keyword DSN, well-formed or not), as written
    and percent-decoded."""
    found: set[str] = set()
    for m in _URL_PASSWORD.finditer(text or ""):
        found |= {m["pw"], unquote(m["pw"])}
    for m in _KV_PASSWORD.finditer(text or ""):
        v = m[2]
        found |= {v, v[1:-1].replace("\\'", "'").replace("\\\\", "\\")} if v.startswith("'") else {v}
    return {s for s in found if len(s) >= MIN_SECRET and s != "***"}


def remember_secrets(*texts: str | None) -> None:
    """From now on :func:`redact` hides every password found in ``texts``."""
    for t in texts:
        _secrets.update(secrets_in(t))


def connect_timeout() -> float:
    """Seconds a connection attempt may take: ``REPLICATOR_CONNECT_TIMEOUT``, else 10."""
    raw = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{CONNECT_TIMEOUT_ENV}={raw!r}: give a positive number of seconds "
            f"(the --connect-timeout option sets it)"
        )
    return value


def libpq_timeout(seconds: float) -> str:
    """libpq's ``connect_timeout`` takes whole seconds, at least 2."""
    return str(max(2, math.ceil(seconds)))


_PARSE_REASONS = (
    ("percent-encoded", "a %-escape in it is not % followed by two hex digits"),
    ('missing "="', "it is neither a postgresql:// URL nor key=value pairs"),
    ("unterminated quoted", "a quoted value is not closed"),
    ("invalid connection option", "it names a parameter libpq does not know"),
    ("invalid URI query parameter", "its URL query names a parameter libpq does not know"),
)
_PARSE_HINT = (
    "in a URL, percent-encode the password's special characters (% as %25, @ as %40, "
    "/ as %2F, : as %3A), or write a keyword DSN (host, user, dbname and the password "
    "as key=value pairs), or keep the password in PGPASSWORD or ~/.pgpass"
)


MISPLACED = (
    "holds an unencoded special character, so part of it would be read as host, port or "
    "database: percent-encode it (@ as %40, / as %2F, % as %25, : as %3A)"
)


def password_misplaced(url: str, parsed: str | None) -> bool:
    """Whether a URL's password, read up to the last '@', differs from what the URL parser took
    (an unencoded '@' or '/' moves part of it into the host, port or database name)."""
    m = _URL_PASSWORD.search(url or "")
    return m is not None and unquote(m["pw"]) != (parsed or "")


def _password(params: ConnDict) -> str | None:
    """The password of a parsed DSN.  ConnDict values may be ints (keyword arguments of
    conninfo_to_dict), but what libpq parses out of a DSN string is text."""
    return cast(Optional[str], params.get("password"))


def parse_source(dsn: str) -> dict:
    """The libpq parameters of a source DSN; ConfigError naming what is wrong, never quoting it."""
    m = _SCHEME.match(dsn or "")
    scheme = m[1].lower() if m else None
    if scheme and scheme.startswith(("postgresql+", "postgres+")):
        raise ConfigError(
            f"the source is a {scheme}:// URL: write postgresql://user@host/db (a libpq "
            f"URL, no +driver) or a keyword DSN (host=… dbname=…)"
        )
    if scheme and scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"the source is a {scheme}:// URL: the source must be PostgreSQL, given as a "
            f"postgresql://user@host/db URL or a keyword DSN (host=… dbname=…)"
        )
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as e:
        reason = next((r for k, r in _PARSE_REASONS if k in str(e)), "libpq cannot parse it")
        raise ConfigError(f"the source DSN is malformed ({reason}): {_PARSE_HINT}") from None
    if scheme and password_misplaced(dsn, _password(params)):
        raise ConfigError(f"the password in the source URL {MISPLACED}")
    return params


def source_conninfo(dsn: str, **extra) -> str:
    """The libpq conninfo for a source connection: the pinned session options appended, TCP
    keepalives and the connect timeout unless the DSN sets them; ``extra`` overrides all."""
    params = parse_source(dsn)
    opts = params.get("options") or ""
    params["options"] = f"{opts} {SOURCE_SESSION_OPTIONS}".strip()
    params.setdefault("application_name", "replicator")
    for k, v in TCP_KEEPALIVES.items():  # notice a dead TCP path even when nothing is sent
        params.setdefault(k, v)
    params.setdefault("connect_timeout", libpq_timeout(connect_timeout()))
    params.update(extra)
    return make_conninfo(**params)


def endpoint(dsn: str | None) -> str | None:
    """``host:port`` of a libpq DSN or SQLAlchemy URL, for messages; None when it cannot tell."""
    if not dsn:
        return None
    try:
        if _SCHEME.match(dsn) and not dsn.lower().startswith(("postgresql://", "postgres://")):
            import sqlalchemy as sa

            u = sa.make_url(dsn)
            return f"{u.host or 'localhost'}" + (f":{u.port}" if u.port else "")
        p = conninfo_to_dict(dsn)
        return f"{p.get('host') or 'localhost'}:{p.get('port') or 5432}"
    except Exception:  # noqa: BLE001  (a malformed DSN has no endpoint to name)
        return None


def password_of(dsn: str) -> str | None:
    """The password embedded in a DSN, so tests and log filters can look for it."""
    try:
        return _password(conninfo_to_dict(dsn))
    except Exception:  # noqa: BLE001  (an unparsable DSN has no password to find)
        return None


SOURCE_SETTINGS = dict(
    opt.split("=", 1) for opt in SOURCE_SESSION_OPTIONS.replace("-c ", "").split()
)  # the pinned session settings as a dict (asyncpg's server_settings)
_ASYNCPG_DIRECT = {"host": "host", "user": "user", "password": "password", "dbname": "database"}
_ASYNCPG_IGNORED = {"connect_timeout", "application_name", "options", "port", "sslmode", *TCP_KEEPALIVES}
_ASYNCPG_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
_LIBPQ_ONLY_ENV = ("PGSERVICE", "PGSERVICEFILE", "PGHOSTADDR", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY")


def asyncpg_params(dsn: str) -> dict | None:
    """asyncpg ``connect()`` keywords that reach the same server as libpq would with ``dsn``,
    with the pinned session settings; None when the DSN (or the environment) uses something
    only libpq understands (a service file, several hosts, client certificates, options other
    than ``-c name=value``): the caller then reads through psycopg."""
    params = parse_source(dsn)
    if any(os.environ.get(k) for k in _LIBPQ_ONLY_ENV):
        return None
    if set(params) - set(_ASYNCPG_DIRECT) - _ASYNCPG_IGNORED:
        return None
    settings = _options_settings(str(params.get("options") or ""))
    host, port = str(params.get("host") or ""), str(params.get("port") or "")
    if settings is None or "," in host or "," in port or (port and not port.isdigit()):
        return None
    out: dict = {v: params[k] for k, v in _ASYNCPG_DIRECT.items() if params.get(k)}
    if port:
        out["port"] = int(port)
    sslmode = str(params.get("sslmode") or os.environ.get("PGSSLMODE") or "")
    if sslmode:
        if sslmode not in _ASYNCPG_SSLMODES:
            return None
        out["ssl"] = sslmode
    settings.update(SOURCE_SETTINGS)
    settings["application_name"] = str(params.get("application_name") or "replicator")
    out["server_settings"] = settings
    out["timeout"] = float(params.get("connect_timeout") or connect_timeout())
    return out


def _options_settings(options: str) -> dict[str, str] | None:
    """``-c a=b -c c=d`` (libpq's ``options``) as settings; None for anything else."""
    words, out = options.split(), {}
    while words:
        word = words.pop(0)
        if word == "-c" and words:
            word = words.pop(0)
        elif word.startswith("-c"):
            word = word[2:]
        else:
            return None
        name, eq, value = word.partition("=")
        if not eq or not name:
            return None
        out[name] = value
    return out
