"""Input checks without servers (issue 9): connect timeouts in every conninfo, source DSNs and
target URLs refused with messages that never quote them, remembered secrets, must-exist opening."""

from __future__ import annotations

import pytest

from replicator import dsn
from replicator.errors import ConfigError, TargetError
from replicator.target import check_url, open_target

CANARY = "S3cr3tCanary"


def test_every_source_conninfo_has_a_connect_timeout(monkeypatch):
    monkeypatch.delenv(dsn.CONNECT_TIMEOUT_ENV, raising=False)
    assert "connect_timeout=10" in dsn.source_conninfo("postgresql://u@h/db")
    monkeypatch.setenv(dsn.CONNECT_TIMEOUT_ENV, "2.5")
    assert "connect_timeout=3" in dsn.source_conninfo("host=h dbname=db")
    monkeypatch.setenv(dsn.CONNECT_TIMEOUT_ENV, "0.5")  # libpq's minimum is 2 s
    assert "connect_timeout=2" in dsn.source_conninfo("host=h dbname=db")
    # the DSN's own setting wins
    assert "connect_timeout=30" in dsn.source_conninfo("postgresql://u@h/db?connect_timeout=30")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_connect_timeout_in_the_environment_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv(dsn.CONNECT_TIMEOUT_ENV, value)
    with pytest.raises(ConfigError, match=dsn.CONNECT_TIMEOUT_ENV):
        dsn.source_conninfo("host=h")


@pytest.mark.parametrize(
    "source, words",
    [
        (f"postgresql://u:{CANARY}%zz@h/db", "%-escape"),
        (f"postgresql://u:{CANARY}@x@h/db", "percent-encode"),
        (f"postgresql://u:{CANARY}/x@h/db", "percent-encode"),
        (f"host=h password='{CANARY}", "quoted value"),
        (f"host=h nonsense={CANARY}", "parameter libpq does not know"),
        (f"mysql://u:{CANARY}@h/db", "must be PostgreSQL"),
        (f"https://u:{CANARY}@h/db", "must be PostgreSQL"),
        (f"postgresql+psycopg://u:{CANARY}@h/db", "no +driver"),
    ],
)
def test_a_bad_source_is_refused_without_quoting_it(source, words):
    with pytest.raises(ConfigError) as e:
        dsn.source_conninfo(source)
    assert words in str(e.value) and CANARY not in str(e.value)


@pytest.mark.parametrize(
    "url, words",
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("duckdb://", "in-memory"),
        ("duckdb:///:memory:", "in-memory"),
        (f"mysql+pymysql://root:{CANARY}@127.0.0.1:3306", "put the database name in the URL"),
        (f"mariadb://root:{CANARY}@127.0.0.1", "put the database name in the URL"),
        (f"nosuchdb://u:{CANARY}@h/x", "duckdb:///path.duckdb, sqlite:///path.sqlite, mysql"),
        (f"mysql+pymysql://root:{CANARY}@x@127.0.0.1/db", "percent-encode"),
        (f"mysql+pymysql://root:{CANARY}@127.0.0.1:notaport/db", "not an SQLAlchemy URL"),
    ],
)
def test_a_bad_target_url_is_refused_without_quoting_it(url, words):
    with pytest.raises(ConfigError) as e:
        check_url(url)
    assert words in str(e.value) and CANARY not in str(e.value)
    assert "any installed SQLAlchemy dialect" in str(e.value) or not url.startswith("nosuchdb")


def test_remembered_secrets_are_redacted_even_in_free_text(monkeypatch):
    monkeypatch.setattr(dsn, "_secrets", set())
    dsn.remember_secrets(f"postgresql://u:{CANARY}%zz@h/db", f"host=h password='{CANARY} two'")
    assert (
        dsn.redact(f'invalid percent-encoded token: "{CANARY}%zz"') == 'invalid percent-encoded token: "***"'
    )
    assert CANARY not in dsn.redact(f"value {CANARY} two seen")
    assert (
        dsn.redact(f"mysql+pymysql://root:{CANARY}@x/y@127.0.0.1/db")
        == "mysql+pymysql://root:***@127.0.0.1/db"
    )


@pytest.mark.parametrize("scheme", ["sqlite", "duckdb"])
def test_must_exist_never_creates_an_embedded_target(tmp_path, scheme):
    path = tmp_path / f"missing.{scheme}"
    with pytest.raises(TargetError, match="does not exist"):
        open_target(f"{scheme}:///{path}", must_exist=True)
    assert not path.exists()
    assert open_target(f"{scheme}:///{path}") is not None  # without the flag: opened lazily
    assert not path.exists()
