"""Network faults between the mirror and its servers, through tests/faults/proxy.py.

The mirror's ``--source`` (or its target URL) points at the proxy; the test's own connections go
to the server directly.  The source (``fault_pg``) drops a silent walsender after 5 s
(wal_sender_timeout).  After each fault the mirror must reconnect by itself and catch up, with
every table equal to the source row by row.
"""

from __future__ import annotations

import uuid

import pytest

from tests import targets
from tests.faults.harness import (
    PGBENCH,
    Load,
    Mirror,
    compare,
    pgbench_source,
    slot_confirmed,
    slot_row,
    target_applied,
    under_load,
    wait_caught_up,
    wait_streaming,
    wait_until,
)
from tests.faults.proxy import Proxy


@pytest.fixture
def proxied(fault_pg, fault_db):
    """(direct DSN, DSN through the proxy, proxy) of a pgbench database on ``fault_pg``."""
    pgbench_source(fault_db, scale=1)
    with Proxy(fault_pg.host, fault_pg.port) as px:
        via = fault_db.replace(f":{fault_pg.port}/", f":{px.port}/")
        assert via != fault_db
        yield fault_db, via, px


def new_walsender(dsn: str, old_pid: int):
    def check():
        row = slot_row(dsn)
        return bool(row and row["active"] and row["active_pid"] != old_pid)

    return check


def test_all_connections_dropped(proxied, sqlite_target_url, tally):
    """Every connection of the mirror to the source is closed under load, twice."""
    dsn, via, px = proxied
    with under_load(dsn, sqlite_target_url, tally, mirror_source=via) as m:
        for _ in range(2):
            wait_caught_up(dsn, m)  # streaming (again) under load
            pid = slot_row(dsn)["active_pid"]
            assert px.drop() >= 1
            tally.fault()
            wait_until(new_walsender(dsn, pid), 120, "the mirror to reconnect", m)


def test_stall_longer_than_wal_sender_timeout(proxied, duckdb_target_url, tally):
    """Nothing moves in either direction, connections stay open, until the source has dropped the
    silent walsender (wal_sender_timeout, 5 s); when the network moves again the mirror sees its
    connection closed, reconnects and catches up."""
    dsn, via, px = proxied
    with under_load(dsn, duckdb_target_url, tally, mirror_source=via) as m:
        wait_caught_up(dsn, m)
        pid = slot_row(dsn)["active_pid"]
        px.stall()
        tally.fault()
        wait_until(
            lambda: not slot_row(dsn)["active"],
            120,
            "the source to drop the stalled walsender (wal_sender_timeout 5s)",
            m,
        )
        px.resume()
        wait_until(new_walsender(dsn, pid), 120, "the mirror to reconnect", m)


def test_half_open_replication_connection(proxied, sqlite_target_url, tally):
    """The source side of every connection is closed while the mirror's side stays open and
    silent (a NAT or firewall forgot the connection).  The mirror asks for a keepalive every
    second when idle and the source answers at once, so after 2 × wal_sender_timeout (10 s) of
    silence it must give the connection up and reconnect (without that it would wait for TCP's
    own timeouts, hours); a generous 120 s deadline keeps a busy machine from failing it."""
    dsn, via, px = proxied
    with under_load(dsn, sqlite_target_url, tally, mirror_source=via) as m:
        wait_caught_up(dsn, m)
        pid = slot_row(dsn)["active_pid"]
        assert px.half_open() >= 1
        tally.fault()
        wait_until(new_walsender(dsn, pid), 120, "the mirror to notice and reconnect", m)


@pytest.mark.parametrize("kind", targets.params("mysql", "pg"))
def test_target_connection_cut_while_a_batch_commits(source_db, request, tally, kind):
    """The COMMIT of a batch reaches the target, which executes it, and the connection ends before
    the answer comes back: the mirror cannot know the batch committed and never confirms it.  It
    retries from the target's recorded position and skips the transactions the source sends
    again, so the batch is there exactly once."""
    pgbench_source(source_db, scale=1)
    name = f"tgt_{uuid.uuid4().hex[:8]}"
    if kind == "mysql":
        srv = request.getfixturevalue("fault_mariadb")
        srv.create_database(name)
        direct = srv.url_for(name)
    else:
        srv = request.getfixturevalue("fault_pg_target")
        srv.create_database(name)
        direct = srv.sqlalchemy_url(name)
    with Proxy(srv.host, srv.port) as px:
        via = direct.replace(f":{srv.port}/", f":{px.port}/")
        m = Mirror(source_db, via)
        load = Load(source_db, rate=200)
        try:
            wait_streaming(source_db, m)
            wait_caught_up(source_db, m)  # the copy is over: every cut lands on the stream's work
            ambiguous = 0
            while not ambiguous and px.cuts < 5:  # a cut may hit a read-only poll's COMMIT
                load.more(20, m)  # batches are being committed
                wait_caught_up(source_db, m)  # streaming again, not restarting after the last cut
                cuts = px.cuts
                retries, resets = m.log().count("retrying in"), m.log().count("Exception during reset")
                # MySQL: the COMMIT query packet itself (a new connection's SET AUTOCOMMIT = 0 holds
                # "COMMIT" too: cutting that one tests connecting, not an ambiguous commit)
                px.cut_on(b"\x03COMMIT" if kind == "mysql" else b"COMMIT")
                wait_until(lambda: px.cuts > cuts, 120, "a COMMIT to cut", m, every=0.01)
                tally.fault()
                # the server executed the COMMIT it read before the connection ended: the target
                # holds a batch the source was never told about, and will send again
                ambiguous += target_applied(direct) > slot_confirmed(source_db)
                # a COMMIT acknowledged before the cut lands leaves the mirror nothing to retry:
                # only handing that connection back to the pool fails (SQLAlchemy logs the reset)
                wait_until(
                    lambda: (
                        m.log().count("retrying in") > retries
                        or m.log().count("Exception during reset") > resets
                    ),
                    120,
                    "the mirror to retry",
                    m,
                )
            assert ambiguous, "no cut landed on the COMMIT of a batch"
            load.stop()
            wait_caught_up(source_db, m)
            assert m.stop() == 0, m.tail()
            compare(source_db, direct, PGBENCH, tally)
        finally:
            load.stop()
            m.close()
