"""Connection strings: redaction for messages, and the session settings every source connection pins.

Contract: nothing outside this module formats a DSN or URL for humans; everything that prints one
goes through :func:`redact`, which never returns a password.
"""
from __future__ import annotations

import re

from psycopg.conninfo import conninfo_to_dict, make_conninfo

# Copy path and change path must render values identically: pin the session on every source
# connection (normal and replication) to UTC / ISO / iso_8601 intervals / extra_float_digits=3.
SOURCE_SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c extra_float_digits=3"
    " -c bytea_output=hex"
)

TCP_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                  "keepalives_count": "3"}

_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.\-]*://[^/:@]*:)(?P<pw>[^@/]*)(?P<at>@)", re.I)
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact(text: object) -> str:
    """Replace any password in a URL, keyword DSN, or free text containing either, by ``***``."""
    s = str(text)
    s = _URL_PASSWORD.sub(lambda m: f"{m['pre']}***{m['at']}", s)
    return _KV_PASSWORD.sub(lambda m: f"{m[1]}***", s)


def source_conninfo(dsn: str, **extra) -> str:
    """The libpq conninfo for a source connection, with the pinned session options appended."""
    params = conninfo_to_dict(dsn)
    opts = params.get("options") or ""
    params["options"] = f"{opts} {SOURCE_SESSION_OPTIONS}".strip()
    params.setdefault("application_name", "replicator")
    for k, v in TCP_KEEPALIVES.items():  # notice a dead TCP path even when nothing is sent
        params.setdefault(k, v)
    params.update(extra)
    return make_conninfo(**params)


def password_of(dsn: str) -> str | None:
    """The password embedded in a DSN, so tests and log filters can look for it."""
    try:
        return conninfo_to_dict(dsn).get("password")
    except Exception:
        return None
