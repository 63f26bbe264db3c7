"""`replicator verify` against real servers, on every target.

* A faithful copy (made by `replicator migrate` through a mapping with many types, a composite
  text key, a key-less FULL table, and a table with a row filter, excluded and renamed columns)
  verifies equal; after target rows are changed, deleted and added directly, verify exits 1 naming
  the table, the key range and the keys, and the row-count difference.
* Against a running mirror under a light pgbench load: no false alarm, and a row corrupted on the
  target meanwhile is still found.
* 200k rows verify with a small Python heap (sampled allocated blocks), streamed.
"""

from __future__ import annotations

import json
import re
import signal
import time

import psycopg
import pytest
import sqlalchemy as sa

from tests import targets
from tests.faults.harness import Load
from tests.integration.test_migrate import replicator
from tests.integration.test_mirror import start_mirror, table_states
from tests.servers import pgbench_init

SCHEMA = """
CREATE TABLE items (
  id int PRIMARY KEY, name text, code char(6), price numeric(12,2), big numeric, ratio float8,
  f4 real, flag bool, born date, at_ts timestamp, at_tz timestamptz, t time, uid uuid, doc jsonb,
  js json, raw bytea, tags text[], nums int[], span interval);
INSERT INTO items
SELECT g, 'name ' || g, lpad((g % 1000)::text, 4, '0'), g * 1.25, g::numeric / 7, g / 3.0, g / 7.0,
       g % 2 = 0, DATE '2020-01-01' + g, TIMESTAMP '2020-01-01' + g * interval '1 minute 0.5 second',
       TIMESTAMPTZ '2020-01-01 00:00:00+00' + g * interval '37.125 seconds',
       TIME '00:00:00' + g * interval '1.25 second', md5(g::text)::uuid,
       jsonb_build_object('g', g, 'half', g / 2.0, 'tags', jsonb_build_array('x', g)),
       ('{"k": ' || g || ', "k2": [1.50, null]}')::json, decode(lpad(to_hex(g), 8, '0'), 'hex'),
       ARRAY['t' || g, NULL, 'a b'], ARRAY[g, -g], make_interval(days => g % 40, secs => g % 60)
FROM generate_series(1, 3000) g;
UPDATE items SET name = NULL, price = NULL, doc = NULL, tags = NULL WHERE id % 97 = 0;
UPDATE items SET doc = 'null', js = '"text"' WHERE id % 89 = 0;  -- JSON null is not SQL NULL

CREATE TABLE orders (order_no int PRIMARY KEY, cust_id int, status text, amount numeric(12,2), secret text);
INSERT INTO orders SELECT g, g % 20, CASE WHEN g % 5 = 0 THEN 'draft' ELSE 'paid' END, g * 1.5, 's' || g
FROM generate_series(1, 600) g;

CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
INSERT INTO pairs SELECT g % 3, w || g, g
FROM generate_series(1, 300) g, unnest(ARRAY['a', 'Z', 'é', '日本', '😀', 'a b']) w WHERE g % 6 = length(w) % 6;

CREATE TABLE log (at timestamptz, what text);
ALTER TABLE log REPLICA IDENTITY FULL;
INSERT INTO log SELECT TIMESTAMPTZ '2024-01-01 00:00:00+00' + (g % 50) * interval '1 minute',
                       CASE WHEN g % 7 = 0 THEN NULL ELSE 'w' || (g % 13) END
FROM generate_series(1, 250) g;
INSERT INTO log SELECT * FROM log WHERE extract(minute FROM at) < 10;  -- 50 duplicate rows
"""

MAPPING = """
tables:
  - source: public.items
  - source: public.orders
    target: sales
    columns:
      exclude: [secret]
      rename: {cust_id: customer_id}
    where: "order_no % 3 <> 0"
  - source: public.pairs
  - source: public.log
"""


def run_sql(dsn, *stmts):
    with psycopg.connect(dsn, autocommit=True) as c:
        for s in stmts:
            c.execute(s)


def target_sql(url, *stmts, seconds=60):
    """Run statements on the target directly (in one transaction), waiting while a mirror holds
    an embedded file."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if url.startswith("duckdb"):
                import duckdb

                with duckdb.connect(url.split(":///", 1)[1]) as con:
                    for s in stmts:
                        con.execute(s)
                return
            eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
            try:
                with eng.begin() as c:
                    for s in stmts:
                        c.execute(sa.text(s))
            finally:
                eng.dispose()
            return
        except Exception as e:  # busy file: try again
            if "lock" not in str(e).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def verify(env, *args, json_out=True):
    cp = replicator("verify", *args, *(["--json"] if json_out else []), env=env, check=False)
    assert cp.returncode in (0, 1) and (cp.stdout or not json_out), cp.stderr[-3000:]
    return cp, ({t["source"]: t for t in json.loads(cp.stdout)["tables"]} if json_out else None)


def kinds(table):
    """{kind: [(key, range)]} over the reported ranges of one table."""
    out = {"missing": [], "extra": [], "changed": []}
    for r in table["ranges"]:
        for kind in out:
            out[kind] += [(k, r) for k in r[kind]]
    return out


def test_verify_faithful_copy_then_changed_deleted_added_rows(source_db, target_url, tmp_path):
    run_sql(source_db, SCHEMA)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": target_url}
    replicator("migrate", "--mapping", str(mapping), env=env)

    cp, _ = verify(env, "--mapping", str(mapping), "--chunk-rows", "100", json_out=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr[-3000:]
    assert cp.stdout.splitlines() == [
        "public.items: OK 3000 rows",
        "public.log: OK 300 rows",
        "public.orders: OK 400 rows",
        "public.pairs: OK 300 rows",
    ]

    target_sql(
        target_url,
        "UPDATE items SET name = 'changed' WHERE id = 1234",
        "DELETE FROM items WHERE id = 2345",
        "INSERT INTO items (id, name) VALUES (5000, 'extra')",
        "DELETE FROM pairs WHERE b = 'é151'",
        "UPDATE sales SET customer_id = 99 WHERE order_no = 10",
    )
    cp, doc = verify(env, "--mapping", str(mapping), "--chunk-rows", "100")
    assert cp.returncode == 1
    items = doc["public.items"]
    assert not items["equal"] and items["source_rows"] == items["target_rows"] == 3000
    found = kinds(items)
    assert [k for k, _ in found["changed"]] == [{"id": 1234}]
    assert [k for k, _ in found["missing"]] == [{"id": 2345}]
    assert [k for k, _ in found["extra"]] == [{"id": 5000}]
    for kind, key in (("changed", 1234), ("missing", 2345), ("extra", 5000)):
        rng = found[kind][0][1]
        assert rng["from"]["id"] <= key <= rng["to"]["id"] and rng["to"]["id"] - rng["from"]["id"] < 2200
    assert found["changed"][0][1]["columns"] == ["name"]
    pairs = doc["public.pairs"]
    assert (pairs["source_rows"], pairs["target_rows"]) == (300, 299)
    assert [k for k, _ in kinds(pairs)["missing"]] == [{"a": 1, "b": "é151"}]
    orders = doc["public.orders"]  # renamed column: reported by its source name
    assert [k for k, _ in kinds(orders)["changed"]] == [{"order_no": 10}]
    assert orders["ranges"][0]["columns"] == ["cust_id"] and orders["target"] == "sales"
    assert doc["public.log"]["equal"]

    cp, _ = verify(env, "--mapping", str(mapping), "--chunk-rows", "100", "--tables", "items", json_out=False)
    assert re.fullmatch(
        r"public\.items: DIFFERS rows source 3000 target 3000; "
        r"keys 1201\.\.1300: changed id=1234 \(name\); "
        r"keys 2301\.\.2400: missing on target id=2345; "
        r"keys 2901\.\.5000: extra on target id=5000\n",
        cp.stdout,
    ), cp.stdout


def test_verify_reports_a_missing_target_table_and_filters_tables(source_db, sqlite_target_url):
    run_sql(
        source_db,
        "CREATE TABLE a (id int PRIMARY KEY)",
        "CREATE TABLE b (id int PRIMARY KEY)",
        "INSERT INTO a SELECT generate_series(1, 10)",
    )
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": sqlite_target_url}
    replicator("migrate", "--tables", "a", env=env)
    cp, _ = verify(env, "--tables", "a", json_out=False)
    assert (cp.returncode, cp.stdout) == (0, "public.a: OK 10 rows\n")
    cp, doc = verify(env)  # without --tables: the stream's own tables (its state lists a only)
    assert cp.returncode == 0 and list(doc) == ["public.a"], doc
    cp, doc = verify(env, "--tables", "a,b")
    assert cp.returncode == 1 and doc["public.b"]["error"] == "target table b does not exist"
    assert doc["public.a"]["equal"]


EDGE = r"""
CREATE TABLE edge (id int PRIMARY KEY, f float8, r real, n numeric, d date, ts timestamp, tz timestamptz,
                   t time, txt text, b bytea, a int[], m text[][], j jsonb, i interval);
INSERT INTO edge VALUES
  (1, 'NaN', 'Infinity', 'NaN', 'infinity', '-infinity', 'infinity', '24:00:00', '', '\x', '{}',
   '{{a,b},{c,d}}', '{"é": "😀", "n": 1e40}', '-1 mon 2 days -00:00:01.5'),
  (2, '-Infinity', '-0', '-0.000', '0044-03-15 BC', '0044-03-15 12:00:00.25 BC', '0001-01-01 00:00:00+00',
   '00:00:00', e'tab\tnew\nline \\ back', '\x00ff', '{NULL}', '{{"",NULL},{"x y",z}}', '[]', '0'),
  (3, 1e308, 1.17549435e-38, 1e-30, '9999-12-31', '9999-12-31 23:59:59.999999',
   '2024-02-29 12:00:00+05:30', '23:59:59.999999', 'NULL', '\x5c', '{-2147483648,2147483647}',
   '{{"\"q\""}}', 'null', '178000000 years');
"""


@pytest.mark.parametrize("kind", targets.params("duckdb", "pg"))
def test_special_values_verify_equal(source_db, kind, request):
    """NaN, ±Infinity, infinite and BC dates, 24:00:00, empty and multi-dimensional arrays, escapes:
    what DuckDB and PostgreSQL hold for them compares equal to the source."""
    url = request.getfixturevalue(targets.fixture(kind))
    run_sql(source_db, EDGE)
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": url}
    replicator("migrate", env=env)
    cp, doc = verify(env)
    assert cp.returncode == 0, json.dumps(doc, indent=1) + cp.stderr[-2000:]
    target_sql(url, "UPDATE edge SET txt = 'tab' WHERE id = 2")
    cp, doc = verify(env)
    assert [k for k, _ in kinds(doc["public.edge"])["changed"]] == [{"id": 2}]


@pytest.mark.parametrize("kind", targets.params("sqlite", "mysql"))
def test_values_stored_by_a_policy_compare_as_replication_stored_them(source_db, kind, request, tmp_path):
    """NaN and Infinity under policy null, infinite timestamps under clamp: the target holds what
    the policy made of them, and verify compares with that, not with the source's raw value."""
    url = request.getfixturevalue(targets.fixture(kind))
    run_sql(
        source_db,
        "CREATE TABLE p (id int PRIMARY KEY, f float8, ts timestamptz)",
        "INSERT INTO p VALUES (1, 'NaN', 'infinity'), (2, 1.5, '2024-01-01 00:00:00+00'), "
        "(3, '-Infinity', '-infinity')",
    )
    mapping = tmp_path / "p.yaml"
    mapping.write_text('tables:\n  - source: public.p\n    columns:\n      policy: {f: "null", ts: clamp}\n')
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": url}
    replicator("migrate", "--mapping", str(mapping), env=env)
    cp, _ = verify(env, "--mapping", str(mapping), json_out=False)
    assert (cp.returncode, cp.stdout) == (0, "public.p: OK 3 rows\n"), cp.stderr[-2000:]
    target_sql(url, "UPDATE p SET f = 2.5 WHERE id = 1")
    cp, _ = verify(env, "--mapping", str(mapping), json_out=False)
    assert cp.stdout == "public.p: DIFFERS rows source 3 target 3; keys 1..3: changed id=1 (f)\n"


def test_sliced_duckdb_reads_equal_one_streamed_read(source_db, duckdb_target_url):
    """A live DuckDB target is read in keyset slices: equal keys (duplicates of a key-less table,
    NULLs) never straddle two slices, composite text keys continue where they stopped."""
    from replicator.pipeline import Options, Pipeline
    from replicator.verify.read import TargetReader
    from replicator.verify.sql import TablePlan

    run_sql(source_db, SCHEMA)
    replicator("migrate", "--source", source_db, "--target", duckdb_target_url, "--tables", "log,pairs")
    p = Pipeline(Options(source=source_db, target=duckdb_target_url, tables=["log", "pairs"]))
    whole, sliced = TargetReader(p.target), TargetReader(p.target, slice_seconds=0.5)
    sliced.slice_rows = 7
    try:
        for m in p.plan():
            plan = TablePlan(m, p.target, whole.reflect(m))
            want = list(whole.rows(plan))
            assert list(sliced.rows(plan)) == want and len(want) == 300
    finally:
        whole.close()


# ----------------------------------------------------------------------------- live mirror
def _wait_ready(dsn, url, n, mirror, timeout=90):
    deadline = time.monotonic() + timeout
    st = {}
    while time.monotonic() < deadline:
        if mirror.poll() is not None:
            raise AssertionError(f"the mirror exited {mirror.returncode}: {mirror.communicate()[1][-3000:]}")
        try:
            st = table_states(dsn, url)
        except AssertionError:  # embedded file busy: try again
            st = {}
        if len(st) == n and set(st.values()) == {"r"}:
            return
        time.sleep(0.3)
    raise AssertionError(f"tables never became ready: {st}")


def test_verify_against_a_running_mirror_under_load(source_db, target_url):
    pgbench_init(source_db, scale=1)
    run_sql(
        source_db,
        "ALTER TABLE pgbench_history REPLICA IDENTITY FULL",
        "DELETE FROM pgbench_accounts WHERE aid > 5000",  # pgbench's other updates find no row
        "CREATE TABLE cold (id int PRIMARY KEY, v text)",
        "INSERT INTO cold SELECT g, 'v' || g FROM generate_series(1, 1000) g",
    )
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": target_url}
    mirror = start_mirror(source_db, target_url)
    bench = None
    try:
        t0 = time.monotonic()
        _wait_ready(source_db, target_url, 5, mirror)
        print(f"ready after {time.monotonic() - t0:.1f}s")
        bench = Load(source_db, rate=20)  # runs until stopped: verify sees writes in flight
        bench.more(10, mirror)
        t0 = time.monotonic()
        cp, doc = verify(env, "--chunk-rows", "1000")
        print(f"verify {time.monotonic() - t0:.1f}s")
        assert "re-checked at consistent points" in cp.stderr
        assert cp.returncode == 0, json.dumps(doc, indent=1) + cp.stderr[-2000:]
        assert all(t["equal"] and t["error"] is None for t in doc.values())
        assert doc["public.pgbench_accounts"]["source_rows"] == 5000

        target_sql(target_url, "UPDATE cold SET v = 'corrupt' WHERE id = 777")
        t0 = time.monotonic()
        cp, doc = verify(env, "--chunk-rows", "1000")
        print(f"verify {time.monotonic() - t0:.1f}s")
        assert cp.returncode == 1, cp.stderr[-2000:]
        assert [t for t, d in doc.items() if not d["equal"]] == ["public.cold"]
        assert [k for k, _ in kinds(doc["public.cold"])["changed"]] == [{"id": 777}]
    finally:
        if bench is not None:
            bench.stop()
        mirror.send_signal(signal.SIGTERM)
        _, err = mirror.communicate(timeout=60)
    assert mirror.returncode == 0, err[-3000:]


def test_a_mirror_that_never_confirms_leaves_differences_unverified(source_db, sqlite_target_url):
    """An active slot whose consumer never confirms: verify waits --wait seconds for it, then
    says it could not check the differing range at a consistent point (exit 1), and does not
    call it a difference; an equal table is OK."""
    run_sql(
        source_db,
        "CREATE TABLE a (id int PRIMARY KEY, v text)",
        "CREATE TABLE b (id int PRIMARY KEY)",
        "INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 100) g",
        "INSERT INTO b VALUES (1)",
    )
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": sqlite_target_url}
    replicator("migrate", "--keep-slot", env=env)
    target_sql(sqlite_target_url, "UPDATE a SET v = 'x' WHERE id = 50")
    repl = psycopg.connect(source_db, replication="database", autocommit=True)
    try:  # a consumer that never confirms: the slot is active, its position stays
        repl.execute(
            "START_REPLICATION SLOT replicator LOGICAL 0/0 "
            "(proto_version '1', publication_names 'replicator')"
        )
        run_sql(source_db, "CREATE TABLE unrelated (x int PRIMARY KEY)")  # WAL past the slot's position
        t0 = time.monotonic()
        cp, doc = verify(env, "--wait", "2", "--tables", "a,b")
        assert time.monotonic() - t0 < 30
    finally:
        repl.close()
    assert cp.returncode == 1 and "re-checked at consistent points" in cp.stderr
    assert doc["public.b"]["equal"]
    a = doc["public.a"]
    assert not a["equal"] and "did not confirm the source's position within 2s" in a["error"]
    assert a["differing_ranges"] == 1 and not any(r["changed"] for r in a["ranges"])


# ----------------------------------------------------------------------------- size
class HeapPeak:
    """Peak growth of the Python heap, sampled: ``sys.getallocatedblocks()`` counts every live
    object allocation (no tracing overhead, unlike tracemalloc, so the real rate is measured)."""

    def __enter__(self):
        import sys
        import threading

        self.base = self.peak = sys.getallocatedblocks()
        self.stop = threading.Event()

        def sample():
            while not self.stop.wait(0.002):
                self.peak = max(self.peak, sys.getallocatedblocks())

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base


def test_verify_200k_rows_in_bounded_memory(source_db, duckdb_target_url):
    from replicator.pipeline import Options
    from replicator.verify import Settings
    from replicator.verify import verify as verify_tables

    run_sql(
        source_db,
        "CREATE TABLE big (id bigint PRIMARY KEY, payload text, amount numeric(12,2), at timestamptz)",
        "INSERT INTO big SELECT g, repeat(md5(g::text), 3), g / 100.0, "
        "TIMESTAMPTZ '2024-01-01 00:00:00+00' + g * interval '1 second' FROM generate_series(1, 200000) g",
        "CREATE TABLE small AS SELECT * FROM big WHERE id <= 20000",
        "ALTER TABLE small ADD PRIMARY KEY (id)",
    )
    replicator("migrate", "--source", source_db, "--target", duckdb_target_url)
    run_sql(
        source_db,
        "UPDATE big SET payload = 'changed' WHERE id = 150000",  # after the copy
        "UPDATE small SET payload = 'changed' WHERE id = 15000",
    )
    for _ in range(2):  # the first run also warms caches up
        with HeapPeak() as ref:
            verify_tables(Options(source=source_db, target=duckdb_target_url, tables=["small"]))
    opts = Options(source=source_db, target=duckdb_target_url, tables=["big"])
    with HeapPeak() as heap:
        t0 = time.monotonic()
        doc = verify_tables(opts, Settings())
        seconds = time.monotonic() - t0
    big = doc["tables"][0]
    assert big["source_rows"] == big["target_rows"] == 200_000
    assert [r["changed"] for r in big["ranges"]] == [[{"id": 150000}]]
    # 10 times the rows, not more memory: a few fetch batches and one drilled range at a time
    # (holding 200k rows would add over a million objects: tuples, strings, numbers per row)
    assert heap.growth < 1.5 * ref.growth + 10_000, (
        f"heap grew by {heap.growth} blocks, {ref.growth} for 20k rows"
    )
    assert seconds < 60, f"{seconds:.1f}s"
    print(
        f"verify: 200000 rows in {seconds:.1f}s ({200_000 / seconds:.0f} rows/s), heap growth "
        f"{heap.growth} blocks ({ref.growth} for 20k rows)"
    )


def test_verify_reads_duckdb_date_and_timestamp_arrays(source_db, duckdb_target_url):
    """DuckDB date[]/timestamptz[] columns are read back as VARCHAR lists (an AttributeError
    before: sa.types.DDL does not exist)."""
    run_sql(
        source_db,
        "CREATE TABLE arr (id int PRIMARY KEY, ds date[], ts timestamptz[]);"
        "INSERT INTO arr SELECT g, ARRAY[DATE '2020-01-01' + g, NULL], "
        "ARRAY[TIMESTAMPTZ '2020-01-01 00:00:00+00' + g * interval '1 hour'] FROM generate_series(1, 50) g",
    )
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": duckdb_target_url}
    replicator("migrate", "--tables", "arr", env=env)
    cp, doc = verify(env, "--tables", "arr")
    assert cp.returncode == 0 and doc["public.arr"]["equal"], (cp.stdout, cp.stderr[-2000:])
