"""Cutover: the moment to switch the application to the target.

After a migration has caught up (and its counts matched exactly), every sequence the source owns
for a replicated column (serial, bigserial, identity) is carried to the target: new rows there
continue after the source's last value instead of colliding with copied keys (sequences are not
replicated by logical decoding, TRAPS.md).  Each target does it its own way
(Target.set_next_value): a sequence default on PostgreSQL and DuckDB, AUTO_INCREMENT on MySQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from .model import TableMapping

SEQUENCES_SQL = """
SELECT n.nspname || '.' || c.relname, a.attname, sc.relname,
       coalesce(pg_sequence_last_value(s.seqrelid), s.seqstart - s.seqincrement) + s.seqincrement
FROM pg_depend d
JOIN pg_sequence s ON s.seqrelid = d.objid
JOIN pg_class sc ON sc.oid = s.seqrelid
JOIN pg_class c ON c.oid = d.refobjid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype IN ('a', 'i') AND c.oid = ANY(%s)
ORDER BY 1, 2
"""


def sequences(conn: psycopg.Connection, mappings: Sequence[TableMapping]) -> list[tuple[str, str, str, int]]:
    """(table, source column, sequence name, next value) of every owned sequence of the mapped tables."""
    oids = [m.source_table.oid for m in mappings]
    return [(t, c, s, int(v)) for t, c, s, v in conn.execute(SEQUENCES_SQL, (oids,))]


def carry(target, mappings: Sequence[TableMapping], seqs) -> list[str]:
    """Position the target's sequences / AUTO_INCREMENT after the source's; one line each."""
    by_label = {m.label: m for m in mappings}
    done = []
    with target.connect() as conn:
        for table, column, seq, next_value in seqs:
            m = by_label[table]
            names = dict(zip(m.source_table.column_names, m.view.column_names))
            if column not in names:
                continue  # an excluded column
            done.append(target.set_next_value(conn, m, names[column], next_value, seq))
    return done or ["no sequences owned by the replicated tables"]
