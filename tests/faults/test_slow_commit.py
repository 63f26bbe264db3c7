"""A target commit that outlasts the source's wal_sender_timeout (issue 13, "decode beside
apply"): the receiving thread answers the source while the applier waits, so the replication
connection survives the slow batch; nothing is confirmed before the target holds it.

The source runs with wal_sender_timeout = 5 s (``fault_db``); a failpoint makes one batch
commit take 8 s.  Before the receiving thread existed the walsender dropped the silent mirror
during that commit, and the mirror reconnected ("retrying in" in its log, a new walsender)."""

from __future__ import annotations

from tests.faults.harness import (
    PGBENCH,
    Load,
    Mirror,
    compare,
    pgbench_source,
    slot_confirmed,
    slot_row,
    target_applied,
    wait_caught_up,
    wait_streaming,
    wait_until,
)

STALL_SECONDS = 8  # longer than the source's wal_sender_timeout (5 s)


def test_a_commit_longer_than_wal_sender_timeout_keeps_the_connection(fault_db, sqlite_target_url, tally):
    pgbench_source(fault_db, scale=1)
    url = sqlite_target_url
    m = Mirror(fault_db, url, failpoints=f"apply.before_commit=sleep:{STALL_SECONDS}@3")
    load = Load(fault_db, rate=200)
    try:
        wait_streaming(fault_db, m)
        walsender = slot_row(fault_db)["active_pid"]
        wait_until(lambda: "failpoint apply.before_commit: sleeping" in m.log(), 120, "the slow commit", m)
        tally.fault()
        confirmed = slot_confirmed(fault_db)
        applied = target_applied(url)
        assert applied is not None and confirmed <= applied, f"confirmed {confirmed}, target holds {applied}"
        load.more(STALL_SECONDS * 100, m)  # the load goes on through and past the slow commit
        load.stop()
        wait_caught_up(fault_db, m)
        row = slot_row(fault_db)
        assert row["active"] and row["active_pid"] == walsender, (
            f"the replication connection was replaced (walsender {walsender} → {row['active_pid']})\n{m.tail()}"
        )
        assert "retrying in" not in m.log(), m.tail()
        assert m.stop() == 0, m.tail()
        compare(fault_db, url, PGBENCH, tally)
    finally:
        load.stop()
        m.close()
