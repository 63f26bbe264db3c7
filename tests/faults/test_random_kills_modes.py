"""Randomized crash loop with modes (slow; issue 15): SIGKILL two mirrors of history (or
soft_delete) tables, DuckDB and SQLite alternately, at random moments while one source session
changes random keys, restart each at once; at the end every version (or mark) must match the
changes the source recorded with its trigger: none added twice, none lost.

The loop starts once both mirrors stream (their copies done), so every version after the snapshot
is one the source's trigger recorded.  ``REPLICATOR_FAULT_SEED`` replays a run (the seed is
printed); ``REPLICATOR_FAULT_KILLS`` sets the number of kills (default 16).  Run with
``bash scripts/test.sh -m slow tests/faults/test_random_kills_modes.py``.
"""

from __future__ import annotations

import os
import random
import threading
import time

import psycopg
import pytest

from tests.compare import target_select
from tests.faults.harness import Mirror, catch_up_and_stop, wait_caught_up, wait_streaming
from tests.integration import test_history, test_soft_delete


class Churn(threading.Thread):
    """One source session changing random keys in small transactions until stopped (one session:
    the trigger's log is in commit order)."""

    def __init__(self, dsn: str, mod, seed: int):
        super().__init__(daemon=True)
        self.dsn, self.mod, self.rng = dsn, mod, random.Random(seed)
        self.halt, self.error = threading.Event(), None

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                self.mod.churn(self.dsn, self.rng, 10)
        except Exception as e:  # noqa: BLE001  (reported by stop())
            self.error = e

    def stop(self) -> None:
        self.halt.set()
        self.join(120)
        assert not self.is_alive(), "the churn did not stop"
        assert self.error is None, f"the churn failed: {self.error!r}"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["history", "soft_delete"])
def test_random_sigkills_with_a_mode(mode, source_db, duckdb_target_url, sqlite_target_url, tmp_path, tally):
    mod = test_history if mode == "history" else test_soft_delete
    seed = int(os.environ.get("REPLICATOR_FAULT_SEED") or time.time_ns() % 1_000_000)
    kills = int(os.environ.get("REPLICATOR_FAULT_KILLS") or 16)
    rng = random.Random(seed)
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(mod.SETUP)
        if mode == "history":
            c.execute("TRUNCATE acct_log")  # the snapshot holds those rows
    mapping = tmp_path / "m.yaml"
    mapping.write_text(mod.MAPPING)
    urls = {"rk_duckdb": duckdb_target_url, "rk_sqlite": sqlite_target_url}

    def start(name: str) -> Mirror:
        batch = str(rng.choice([50, 500, 50000]))
        return Mirror(
            source_db, urls[name], name=name, args=["--mapping", str(mapping), "--batch-rows", batch]
        )

    mirrors = {n: start(n) for n in urls}
    churn = Churn(source_db, mod, seed)
    try:
        for m in mirrors.values():
            wait_streaming(source_db, m)
            wait_caught_up(source_db, m)
        churn.start()
        for i in range(kills):
            name = list(urls)[i % 2]
            time.sleep(rng.uniform(0.05, 2.0))
            m = mirrors[name]
            assert m.alive(), f"{name} exited on its own ({m.proc.returncode}):\n{m.tail()}"
            m.kill()
            tally.fault()
            m.close()
            mirrors[name] = start(name)
        churn.stop()
        catch_up_and_stop(source_db, mirrors.values())
        for url in urls.values():
            if mode == "history":
                test_history.check_history(source_db, url)
            else:
                test_soft_delete.check_marks(source_db, url)
            tally.compared(int(target_select(url, "SELECT count(*) FROM acct")[0][0]))
    finally:
        churn.halt.set()
        for m in mirrors.values():
            m.close()
    line = (
        f"random kill loop, mode {mode} (seed {seed}): {tally.faults} SIGKILLs, {tally.rows} versions or "
        f"rows checked against the source's trigger log on DuckDB and SQLite"
    )
    print("\n" + line)
    tally.note = line
