"""sslmode / sslrootcert pass through to every source connection (normal and replication) and to a
PostgreSQL target: a private server with TLS on and a self-signed certificate for 127.0.0.1.
With the right root certificate and sslmode=verify-full everything runs over verified TLS; with
a wrong one nothing connects and nothing is created (docs/security.md)."""

from __future__ import annotations

import os
import shutil
import subprocess

import psycopg
import pytest

from tests import procs
from tests.faults.harness import (
    Mirror,
    compare,
    slot_row,
    slots_of,
    wait_caught_up,
    wait_streaming,
    wait_until,
)
from tests.servers import PostgresServer, unique_name


def self_signed(directory, name: str) -> tuple[str, str]:
    crt, key = os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")
    cp = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            key,
            "-out",
            crt,
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        capture_output=True,
        text=True,
    )
    if cp.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate here: {cp.stderr.strip()[:200]}")
    return crt, key


@pytest.fixture(scope="module")
def tls_pg():
    if os.environ.get("REPLICATOR_TEST_PG_DSN") or not shutil.which("openssl"):
        pytest.skip("needs openssl and a private server")
    srv = PostgresServer(name="tls", start=False)
    try:
        d = srv.basedir  # readable by the server's OS user
        crt, key = self_signed(d, "server")
        other, _ = self_signed(d, "other")
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam(PostgresServer.superuser)
            os.chown(key, pw.pw_uid, pw.pw_gid)
        os.chmod(key, 0o600)
        srv.update_settings({"ssl": "on", "ssl_cert_file": crt, "ssl_key_file": key})
        srv.start()
        yield srv, crt, other
    finally:
        srv.cleanup()


def with_tls(url: str, root: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}sslmode=verify-full&sslrootcert={root}"


def replicator(*args):
    """Run ``replicator *args`` to completion (bounded; tests/procs.py)."""
    return procs.run(*args)


def test_verified_tls_to_source_and_postgres_target(tls_pg):
    srv, root, _ = tls_pg
    src = srv.create_database(unique_name("src"))
    tdb = unique_name("tgt")
    srv.create_database(tdb)
    with psycopg.connect(src, autocommit=True) as c:
        c.execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text);"
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g"
        )
    source, target = with_tls(src, root), with_tls(srv.sqlalchemy_url(tdb), root)
    m = Mirror(source, target)
    try:
        wait_streaming(src, m)
        with psycopg.connect(src, autocommit=True) as c:
            c.execute("INSERT INTO t VALUES (1001, 'streamed')")
        wait_caught_up(src, m)  # the stream's walsender holds the slot (the copy's did before)
        walsender = wait_until(lambda: slot_row(src)["active_pid"], 120, "an active walsender", m)
        with psycopg.connect(src, autocommit=True) as c:
            assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = %s", (walsender,)).fetchone()[0]
        with psycopg.connect(src, autocommit=True) as c:
            plain = c.execute(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                "WHERE a.datname IN (%s, %s) AND a.pid <> pg_backend_pid() AND NOT s.ssl",
                (psycopg.conninfo.conninfo_to_dict(src)["dbname"], tdb),
            ).fetchone()[0]
        assert plain == 0, "a replicator connection is not TLS"
        assert m.stop() == 0, m.tail()
    finally:
        m.close()
    compare(src, srv.sqlalchemy_url(tdb), ["t"])


def test_wrong_root_certificate_is_refused_before_anything_is_created(tls_pg, tmp_path):
    srv, root, other = tls_pg
    src = srv.create_database(unique_name("src"))
    with psycopg.connect(src, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cp = replicator(
        "migrate", "--source", with_tls(src, other), "--target", f"sqlite:///{tmp_path / 'a.sqlite'}"
    )
    assert cp.returncode == 1 and "certificate verify failed" in cp.stderr, cp.stderr[-2000:]
    tdb = unique_name("tgt")
    srv.create_database(tdb)
    cp = replicator(
        "migrate", "--source", with_tls(src, root), "--target", with_tls(srv.sqlalchemy_url(tdb), other)
    )
    assert cp.returncode == 1 and "certificate verify failed" in cp.stderr, cp.stderr[-2000:]
    assert slots_of(src) == []
    assert (
        srv.execute(
            "SELECT pubname FROM pg_publication", dbname=psycopg.conninfo.conninfo_to_dict(src)["dbname"]
        )
        == []
    )
