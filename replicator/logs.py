"""Log set-up for the command line: human lines or one JSON object per line, never a password.

* ``text``: ``2024-05-01 12:00:00,123 INFO replicator.bulkcopy: copied public.t → t: 10 rows in 0.1s``
* ``json``: ``{"ts": "2024-05-01T12:00:00.123+00:00", "level": "INFO", "logger": "replicator.bulkcopy",
  "message": "copied …", ...extra}``: every ``extra={...}`` field of the record is a key of its own.

Both pass the message (and every string field, and tracebacks) through :func:`replicator.dsn.redact`.
The handler writes to whatever ``sys.stderr`` is at the time of the record, so a live progress
display that redirects stderr (rich.live) prints log lines above itself instead of through itself.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from .dsn import redact

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# attributes every LogRecord has: anything else on a record came from extra={...}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_format = "text"


def current_format() -> str:
    """The format the last :func:`setup` chose (``text`` before any)."""
    return _format


def level_for(verbose: int) -> int:
    """The root level for ``-v`` count (unchanged CLI behaviour: INFO by default, -vv DEBUG)."""
    return logging.WARNING - 10 * verbose if verbose else logging.INFO


def _clean(v: Any) -> Any:
    """A JSON-ready, redacted copy of an extra field's value."""
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, str):
        return redact(v)
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_clean(x) for x in v]
    return redact(v)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_") and k not in doc:
                doc[k] = _clean(v)
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            doc["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(doc, ensure_ascii=False, default=str)


def final_line(kind: str, message: object, **fields: Any) -> str:
    """A command's last word on stderr (``error: …``, ``problem: …``), redacted: the text line, or
    with ``json`` one object shaped like the log lines (``level`` ERROR, ``kind``, ``fields``)."""
    text = redact(message)
    if _format != "json":
        return f"{kind}: {text}"
    doc: dict[str, Any] = {
        "ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "level": "ERROR",
        "logger": "replicator",
        "message": text,
        "kind": kind,
    }
    doc.update({k: _clean(v) for k, v in fields.items()})
    return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, redacted as a whole (message, arguments and traceback)."""

    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class StderrHandler(logging.StreamHandler):
    """A StreamHandler bound to the *current* ``sys.stderr`` at each record."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup(verbose: int = 0, fmt: str = "text") -> logging.Handler:
    """Configure the root logger (idempotent: replaces the handler an earlier call installed)."""
    global _format
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    _format = fmt
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, StderrHandler):
            root.removeHandler(h)
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level_for(verbose))
    logging.captureWarnings(fmt == "json")  # Python warnings become JSON lines too
    return handler
