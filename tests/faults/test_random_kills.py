"""Randomized crash loop (slow): SIGKILL two mirrors (DuckDB and SQLite, alternately) at random
moments under pgbench load, restart each at once, and at the end compare every table of both
targets with the source row by row.

``REPLICATOR_FAULT_SEED`` replays a run (the seed is printed); ``REPLICATOR_FAULT_KILLS`` sets the
number of kills (default 30).  Run with ``bash scripts/test.sh -m slow -s tests/faults``.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from tests.faults.harness import (
    PGBENCH,
    Load,
    Mirror,
    catch_up_and_stop,
    compare,
    pgbench_source,
)


def phase(log: str) -> str:
    """Where a killed mirror was: starting (slot, copy) or streaming (and whether it had
    committed a batch by then, as far as its log tells)."""
    if "streaming from slot" not in log:
        return "copy" if "copied public." in log or "copying" in log else "start"
    return "stream"


@pytest.mark.slow
def test_random_sigkills_under_load(source_db, duckdb_target_url, sqlite_target_url, tally):
    seed = int(os.environ.get("REPLICATOR_FAULT_SEED") or time.time_ns() % 1_000_000)
    kills = int(os.environ.get("REPLICATOR_FAULT_KILLS") or 30)
    rng = random.Random(seed)
    pgbench_source(source_db, scale=2)
    targets = {"rnd_duckdb": duckdb_target_url, "rnd_sqlite": sqlite_target_url}
    load = Load(source_db, rate=250, clients=3)
    mirrors = {
        n: Mirror(source_db, url, name=n, args=["--batch-rows", str(rng.choice([200, 2000, 50000]))])
        for n, url in targets.items()
    }
    phases: Counter = Counter()
    t0 = time.monotonic()
    try:
        for i in range(kills):
            name = list(targets)[i % 2]
            # the first kill of each mirror comes early, to land in slot creation or the copy
            time.sleep(rng.uniform(0.4, 1.4) if i < 2 else rng.uniform(0.05, 2.5))
            m = mirrors[name]
            assert m.alive(), f"{name} exited on its own ({m.proc.returncode}):\n{m.tail()}"
            m.kill()
            tally.fault()
            phases[phase(m.log())] += 1
            m.close()
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 1.0))  # sometimes the source runs on alone a while
            mirrors[name] = Mirror(
                source_db,
                targets[name],
                name=name,
                args=["--batch-rows", str(rng.choice([200, 2000, 50000]))],
            )
        load.stop()
        catch_up_and_stop(source_db, mirrors.values())
        for url in targets.values():
            compare(source_db, url, PGBENCH, tally)
    finally:
        load.stop()
        for m in mirrors.values():
            m.close()
    line = (
        f"random kill loop (seed {seed}): {tally.faults} SIGKILLs "
        f"({', '.join(f'{n} {k}' for k, n in sorted(phases.items()))}) in "
        f"{time.monotonic() - t0:.0f}s, {tally.rows} rows compared row by row on DuckDB and SQLite"
    )
    print("\n" + line)
    tally.note = line
    assert tally.faults >= 20
