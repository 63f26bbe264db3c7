"""--log-format: one JSON object per line with ts, level, logger, message and extra fields; text
lines as before; never a password in either."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from replicator import logs

DSN = "postgresql://repl:hunter2@db.example:5432/app"
KV = "host=db.example user=repl password='hunter2 x' dbname=app"


class _Err:
    def __init__(self, capsys):
        self.capsys, self.text = capsys, ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def stderr(capsys):
    """What reached sys.stderr (the handler writes to whatever sys.stderr is); restores logging."""
    root = logging.getLogger()
    level = root.level
    yield _Err(capsys)
    for h in list(root.handlers):
        if isinstance(h, logs.StderrHandler):
            root.removeHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_json_lines_have_the_fields_and_extras(stderr):
    logs.setup(0, "json")
    log = logging.getLogger("replicator.test")
    log.info(
        "copied %s: %d rows",
        "public.t",
        10,
        extra={"table": "public.t", "rows": 10, "rate": 1.5, "tags": ["a", DSN], "nested": {"dsn": DSN}},
    )
    log.debug("not shown at INFO")
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["level"] == "INFO" and doc["logger"] == "replicator.test"
    assert doc["message"] == "copied public.t: 10 rows"
    assert doc["ts"].endswith("+00:00") and "T" in doc["ts"]
    assert doc["table"] == "public.t" and doc["rows"] == 10 and doc["rate"] == 1.5
    assert doc["tags"][0] == "a" and doc["nested"]["dsn"] == "postgresql://repl:***@db.example:5432/app"
    assert "hunter2" not in stderr.getvalue()


def test_json_never_shows_a_password(stderr):
    logs.setup(2, "json")
    log = logging.getLogger("replicator.test")
    log.warning("cannot connect to %s", DSN)
    log.debug("conninfo %s", KV, extra={"source": DSN})
    try:
        raise RuntimeError(f"connection to {DSN} failed")
    except RuntimeError:
        log.exception("retrying %s", KV)
    out = stderr.getvalue()
    assert "hunter2" not in out
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["level"] for d in docs] == ["WARNING", "DEBUG", "ERROR"]
    assert docs[0]["message"] == "cannot connect to postgresql://repl:***@db.example:5432/app"
    assert docs[1]["source"] == "postgresql://repl:***@db.example:5432/app"
    assert "RuntimeError" in docs[2]["exception"] and "***" in docs[2]["exception"]


def test_text_format_is_the_classic_line_redacted(stderr):
    logs.setup(0, "text")
    logging.getLogger("replicator.x").info("source %s", DSN)
    out = stderr.getvalue()
    assert " INFO replicator.x: source postgresql://repl:***@db.example:5432/app" in out
    assert "hunter2" not in out


def test_setup_is_idempotent_and_levels_follow_verbose(stderr):
    logs.setup(0, "text")
    logs.setup(0, "json")
    logging.getLogger("replicator.x").info("once")
    assert len(stderr.getvalue().splitlines()) == 1
    assert logs.current_format() == "json"
    assert logs.level_for(0) == logging.INFO and logs.level_for(2) == logging.DEBUG
    with pytest.raises(ValueError):
        logs.setup(0, "xml")


def test_cli_log_format_json_for_a_failing_command():
    """A command whose source cannot be reached: log lines JSON, the error line redacted."""
    cp = subprocess.run(
        [
            sys.executable,
            "-m",
            "replicator",
            "--log-format",
            "json",
            "-vv",
            "check",
            "--source",
            "postgresql://u:hunter2@127.0.0.1:1/x?connect_timeout=5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cp.returncode == 1, cp.stderr
    assert "cannot connect to the source" in cp.stderr
    assert "hunter2" not in cp.stdout + cp.stderr
    docs = [json.loads(line) for line in cp.stderr.splitlines()]  # the final error line too
    assert docs[-1]["level"] == "ERROR" and docs[-1]["kind"] == "error" and docs[-1]["exit_code"] == 1
    assert docs[-1]["message"].startswith("cannot connect to the source")


def test_final_lines_follow_the_format(stderr):
    logs.setup(0, "text")
    assert (
        logs.final_line("problem", f"fix {DSN}") == "problem: fix postgresql://repl:***@db.example:5432/app"
    )
    logs.setup(0, "json")
    doc = json.loads(logs.final_line("error", f"no {KV}", exit_code=2))
    assert doc["kind"] == "error" and doc["exit_code"] == 2 and doc["level"] == "ERROR"
    assert "hunter2" not in json.dumps(doc) and doc["message"].startswith("no host=db.example")
