"""Changes that arrive through real pgoutput: unchanged TOAST ('u'), FULL identity duplicates,
rolled-back work and savepoints, a partitioned table (published through its root; a cross-partition
UPDATE arrives as DELETE + INSERT), TRUNCATE (with CASCADE over a foreign key), and REPLICA
IDENTITY USING INDEX with a change of the identity column and an unchanged TOAST value.

`migrate --keep-slot` copies; changes are made on the source; a second `migrate --keep-slot`
resumes from the kept slot and applies them.  Each target must then equal the source row by row.
"""

from __future__ import annotations

import psycopg

from replicator.pipeline import Options, Pipeline
from tests.compare import assert_same

SETUP = """
CREATE TABLE toasty (id int PRIMARY KEY, big text, small int);
CREATE TABLE toast_full (k int, big text, note text);
ALTER TABLE toast_full REPLICA IDENTITY FULL;
CREATE TABLE dups (a int, b text);
ALTER TABLE dups REPLICA IDENTITY FULL;
INSERT INTO toasty SELECT g, (SELECT string_agg(md5(random()::text || g.g || i), '') FROM generate_series(1, 2000) i), g
  FROM generate_series(1, 5) g(g);
INSERT INTO toast_full SELECT g, (SELECT string_agg(md5(random()::text || g.g || i), '') FROM generate_series(1, 2000) i), 'n'
  FROM generate_series(1, 3) g(g);
INSERT INTO dups VALUES (1, 'x'), (1, 'x'), (1, 'x'), (2, NULL), (2, NULL), (3, 'z');
CREATE TABLE parted (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');
INSERT INTO parted VALUES (1, 'eu', 1), (2, 'us', 2), (3, 'eu', 3);
CREATE TABLE emptied (id int PRIMARY KEY);
INSERT INTO emptied SELECT generate_series(1, 10);
CREATE TABLE by_index (id int PRIMARY KEY, code text NOT NULL, big text, n int);
CREATE UNIQUE INDEX by_index_code ON by_index (code);
ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code;
INSERT INTO by_index SELECT g, 'c' || g, (SELECT string_agg(md5(random()::text || g.g || i), '')
  FROM generate_series(1, 2000) i), g FROM generate_series(1, 4) g(g);
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (1, 1), (2, 2);
"""

CHANGES = [
    s
    for s in """
UPDATE toasty SET small = small + 100 WHERE id <= 3;
UPDATE toasty SET big = 'replaced' WHERE id = 4;
UPDATE toasty SET id = 50 WHERE id = 5;
UPDATE toast_full SET note = 'changed' WHERE k = 1;
DELETE FROM toast_full WHERE k = 2;
DELETE FROM dups WHERE ctid = (SELECT min(ctid) FROM dups WHERE a = 1);
UPDATE dups SET b = 'y' WHERE ctid = (SELECT min(ctid) FROM dups WHERE a = 2);
DELETE FROM dups WHERE ctid = (SELECT min(ctid) FROM dups WHERE a = 2 AND b IS NULL);
BEGIN; INSERT INTO dups VALUES (9, 'rolled back'); ROLLBACK;
BEGIN; INSERT INTO dups VALUES (8, 'kept'); SAVEPOINT s; INSERT INTO dups VALUES (7, 'undone');
ROLLBACK TO s; COMMIT;
UPDATE parted SET region = 'us' WHERE id = 1
UPDATE parted SET v = 30 WHERE id = 3
INSERT INTO parted VALUES (4, 'us', 4)
TRUNCATE emptied
INSERT INTO emptied VALUES (42)
UPDATE by_index SET code = 'changed' WHERE id = 1
UPDATE by_index SET n = 100 WHERE id = 2
DELETE FROM by_index WHERE code = 'c3'
TRUNCATE parent RESTART IDENTITY CASCADE
INSERT INTO parent VALUES (7)
""".strip().splitlines()
]  # one line = one simple query (a multi-statement string is one transaction)


def test_toast_and_full_identity_through_the_stream(source_db, target_url):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(SETUP)
        toasted = c.execute(
            "SELECT count(*) FROM pg_class c WHERE c.relname = 'toasty' "
            "AND pg_relation_size(c.reltoastrelid) > 0"
        ).fetchone()[0]
        assert toasted == 1, "the test values must be stored out of line (TOAST)"
    opts = Options(source=source_db, target=target_url, name="ident", keep_slot=True)
    first = Pipeline(opts).migrate()
    assert first.rows_copied == 5 + 3 + 6 + 3 + 10 + 4 + 2 + 2
    with psycopg.connect(source_db, autocommit=True) as c:
        for stmt in CHANGES:
            c.execute(stmt)
    second = Pipeline(opts).migrate()
    assert second.rows_copied == 0 and second.changes_applied >= 9
    for t in ("toasty", "toast_full", "dups", "parted", "emptied", "by_index", "parent", "child"):
        assert_same(source_db, "public", t, target_url)
