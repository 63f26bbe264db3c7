"""Which database a driver error came from (cli._side_of): by the module that raised it, so a
psycopg error of the PostgreSQL target is never reported as a source error (issue 9)."""

from __future__ import annotations

import psycopg

from replicator import cli


def _raiser(module: str, inner=None):
    """A function that looks, to a traceback, like it lives in ``module``."""
    scope = {"__name__": module, "psycopg": psycopg, "inner": inner}
    exec(
        "def f():\n    if inner: return list(inner())\n    raise psycopg.OperationalError('server closed the connection')",
        scope,
    )
    return scope["f"]


def _caught(f):
    try:
        f()
    except psycopg.Error as e:
        return e
    raise AssertionError("no error")


def test_a_psycopg_error_raised_in_a_target_module_is_the_targets():
    assert cli._side_of(_caught(_raiser("replicator.target.postgres"))) == "target"


def test_a_psycopg_error_raised_elsewhere_is_the_sources():
    assert cli._side_of(_caught(_raiser("replicator.source.snapshot"))) == "source"
    assert cli._side_of(_caught(_raiser("replicator.bulkcopy"))) == "source"
    assert cli._side_of(psycopg.OperationalError("no traceback")) == "source"


def test_a_source_error_inside_a_target_copy_is_the_sources():
    """The PostgreSQL target's COPY pulls the source's chunks: the innermost frame decides."""
    source_chunks = _raiser("replicator.bulkcopy")
    assert cli._side_of(_caught(_raiser("replicator.target.postgres", inner=source_chunks))) == "source"
