"""MySQL / MariaDB target: strict sessions, a binary no-pad type map, LOAD DATA LOCAL INFILE copies.

Contracts
---------
* URL: ``mysql://``, ``mariadb://`` or ``mysql+pymysql://``; always driven by pymysql with
  ``charset=utf8mb4`` and ``local_infile`` on (the server needs ``local_infile=1`` too).
* Every connection runs a strict session (:data:`SQL_MODE`, ``time_zone='+00:00'``): a value MySQL
  cannot hold is an error, never a silent truncation or a zero date.
* Type map: ``mysql_types.py`` (docs/typemap.md).  Text is ``utf8mb4`` with a *binary,
  no-pad* collation (MariaDB ``utf8mb4_nopad_bin``, MySQL 8 ``utf8mb4_0900_bin``): keys that differ
  only by case, accents or trailing spaces stay apart as in PostgreSQL.  Key columns of unbounded types become VARCHAR/VARBINARY sized to InnoDB's 3072-byte index limit;
  a key that cannot fit is a TargetError when the table is built.  Integer keys never get
  AUTO_INCREMENT (a 0 key must stay 0).
* Copy path (``mysql_copy.py``; ``load_copy`` reads ``out.chunks()``): PostgreSQL CSV (``NULL 'NULL'``; PostgreSQL quotes a real
  string ``'NULL'``, MySQL reads only the unquoted word as NULL) is written chunk by chunk to a temp
  file and loaded with ``LOAD DATA LOCAL INFILE ... ESCAPED BY ''`` (the column's ``copy`` form:
  booleans as 0/1, timestamptz as UTC without offset, bytea as hex through ``UNHEX``, arrays as
  JSON; value policies applied in the copy query).  LOCAL loads turn bad values into warnings, so
  any warning fails the load: ValueRangeError naming table, column, key and value (values the
  copy query marked as refused, over-long strings), TargetError otherwise.
* Change path: the generic executemany applier; ``value_loader`` yields the values the copy path
  stores (Decimal, naive UTC datetime, bytes, bool, JSON text, text) with the same policies.
  pymysql sets CLIENT.FOUND_ROWS, so an UPDATE that changes nothing still counts as found.  FULL
  identity without key uses ``DELETE/UPDATE ... LIMIT 1``.  Truncate stays DELETE (transactional).
* Note: MySQL commits implicitly before DDL, so ``ensure_table`` ends the caller's transaction.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.mysql import reflection as mysql_reflection
from sqlalchemy.engine import Connection

from ..dsn import connect_timeout
from ..errors import ConfigError, TargetError, ValueRangeError
from ..failpoints import failpoint
from ..model import Column, TableMapping
from . import names, swap
from .mysql_copy import MySQLLoadData
from .mysql_types import MAX_COLUMNS, RawJSON, mysql_conv, row_problems
from .stage_apply import StagedApplier
from .typemap import Conv

log = logging.getLogger(__name__)

SQL_MODE = (
    "STRICT_ALL_TABLES,STRICT_TRANS_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO"
)
SESSION_SQL = f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00', innodb_strict_mode = ON"
INDEX_BYTES = 3072  # InnoDB (DYNAMIC rows) index key limit
ROW_BYTES = 60000  # inline VARCHAR budget, below MySQL's 65,535-byte row limit
MIN_KEY_CHARS = 32


UNBOUNDED = (mysql.LONGTEXT, mysql.LONGBLOB, RawJSON)  # need a bound to be indexed


# SQLAlchemy's MySQL reflection keeps a backtick inside a column name doubled (``a``b`` for
# ``a`b``), in columns and in keys: unescape it, process-wide (the pipeline and tests reflect too).
def _unescaping(parse):
    def wrapper(self, line, state):
        n = len(state.columns)
        parse(self, line, state)
        for col in state.columns[n:]:
            col["name"] = self.preparer._unescape_identifier(col["name"])

    return wrapper


def _unescaped_keys(parse):
    def wrapper(self, identifiers):
        return [(self.preparer._unescape_identifier(c), n, mod) for c, n, mod in parse(self, identifiers)]

    return wrapper


if not getattr(mysql_reflection.MySQLTableDefinitionParser, "_replicator_unescapes", False):
    _P: Any = mysql_reflection.MySQLTableDefinitionParser  # Any: methods replaced at run time
    _P._parse_column = _unescaping(_P._parse_column)
    _P._parse_keyexprs = _unescaped_keys(_P._parse_keyexprs)
    _P._replicator_unescapes = True


def mysql_url(url: str) -> sa.URL:
    """``mysql://``/``mariadb://``/``mysql+pymysql://`` → a pymysql URL with utf8mb4 and local_infile."""
    u = sa.make_url(url)
    if u.get_backend_name() not in ("mysql", "mariadb") or u.get_driver_name() not in ("pymysql", "mysqldb"):
        raise ConfigError(
            f"{u.drivername}://: the MySQL target uses pymysql; write mysql+pymysql://user@host/db"
        )
    return u.set(drivername="mysql+pymysql").update_query_dict({"charset": "utf8mb4", "local_infile": "1"})


# client/server codes that mean "try again": can't connect, gone away, lost connection, lock wait
# timeout, deadlock, server shutting down, too many connections
MYSQL_TRANSIENT = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013, 2055}


class MySQLTarget(MySQLLoadData):
    """MySQL 8 / MariaDB ≥ 10.3 through pymysql."""

    applier_class = StagedApplier  # set-based apply through a temporary table (stage_apply.py)

    name = "mysql"

    def transient(self, e: BaseException) -> bool:
        args = getattr(getattr(e, "orig", None), "args", None)
        code = args[0] if args else None
        return code in MYSQL_TRANSIENT or super().transient(e)

    copy_options = "FORMAT csv, NULL 'NULL', ENCODING 'UTF8'"
    decimal_default = (10, 0)
    max_columns, max_columns_why = MAX_COLUMNS, "InnoDB's limit"

    def __init__(self, url: str):
        super().__init__(url)
        self.url = mysql_url(url)
        self._collation: str | None = None
        self._lower_case_names: int | None = None
        self._table_names: dict[tuple, tuple[str, str]] = {}

    # ---------------------------------------------------------------- connections
    def create_engine(self):
        args = {"local_infile": True, "charset": "utf8mb4"}
        # nothing waits forever (DESIGN.md 12): pymysql's connect_timeout bounds only the TCP
        # connect, so the server's greeting is read under a read_timeout lifted once connected
        bounded = "read_timeout" not in self.url.query
        args.update(
            {k: connect_timeout() for k in ("connect_timeout", "read_timeout") if k not in self.url.query}
        )
        eng = sa.create_engine(self.url, hide_parameters=True, pool_pre_ping=True, connect_args=args)

        @sa.event.listens_for(eng, "connect")
        def _strict_session(dbapi_conn, _record):
            if bounded:
                dbapi_conn._read_timeout = None  # pymysql applies it before its next read
            with dbapi_conn.cursor() as cur:
                cur.execute(SESSION_SQL)

        return eng

    def collation(self) -> str:
        """The server's binary NO PAD utf8mb4 collation (utf8mb4_bin pads: 'a' = 'a ')."""
        if self._collation is None:
            with self.engine.connect() as c:
                have = {
                    r[0]
                    for r in c.exec_driver_sql(
                        "SELECT collation_name FROM information_schema.collations "
                        "WHERE collation_name IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')"
                    )
                }
            self._collation = next(
                (x for x in ("utf8mb4_nopad_bin", "utf8mb4_0900_bin") if x in have), "utf8mb4_bin"
            )
            if self._collation == "utf8mb4_bin":
                log.warning("no NO PAD binary collation on this server: trailing spaces compare equal")
        return self._collation

    # ---------------------------------------------------------------- schema
    def conv(self, col: Column) -> Conv:
        return mysql_conv(col)

    def text_conv(self, col: Column) -> Conv:
        return Conv(mysql.LONGTEXT())

    def identifier_problems(self, m: TableMapping) -> list[str]:
        """Column names are case-insensitive (every letter); names hold 64 BMP characters; with
        ``lower_case_table_names`` ≠ 0, table names are case-insensitive too (checked against the
        tables seen by earlier calls)."""
        out = names.case_collisions(m, "MySQL", self.display(m), str.lower) + names.bad_names(
            m, "MySQL", self.display(m), names.mysql_name_problem
        )
        key = (m.target_schema, m.target_name.lower())
        label, name = self._table_names.setdefault(key, (m.label, m.target_name))
        if label != m.label and name != m.target_name and self.lower_case_table_names():
            out.append(
                f"{label} and {m.label}: target tables {name!r} and {m.target_name!r} would be "
                f"the same MySQL table (lower_case_table_names={self.lower_case_table_names()}): "
                f"map one of them to another name in the mapping (target:)"
            )
        return out

    def limit_problems(self, m: TableMapping) -> list[str]:
        """No columns, InnoDB's 1017 columns, a key over 3072 bytes, a row over InnoDB's record
        (8126 bytes) or MySQL's row (65,535 bytes): see ``mysql_types.row_problems``."""
        out = super().limit_problems(m)
        if out:
            return out
        try:
            col_types = self._column_types(m)
        except TargetError as e:
            return [str(e)]
        nullable = sum(self.nullable(c, m) for c in m.view.columns)
        return row_problems(m.label, self.display(m), col_types, nullable, bool(m.view.primary_key))

    def lower_case_table_names(self) -> int:
        """The server's lower_case_table_names (0 when it cannot be asked)."""
        if self._lower_case_names is None:
            try:
                with self.engine.connect() as c:
                    value = c.exec_driver_sql("SELECT @@lower_case_table_names").scalar()
                    assert value is not None  # a server variable always has a value
                    self._lower_case_names = int(value)
            except sa.exc.SQLAlchemyError:
                return 0
        return self._lower_case_names

    def column_type(self, col: Column, key_chars: int | None = None) -> Any:
        """The MySQL type; ``key_chars`` bounds an unbounded type that a key must index."""
        t = self.column_conv(col).ddl
        if key_chars is None or not isinstance(t, UNBOUNDED):
            return t
        if isinstance(t, RawJSON):
            raise TargetError(f"json column {col.name} cannot be part of a MySQL key")
        return mysql.VARBINARY(key_chars * 4) if isinstance(t, mysql.LONGBLOB) else mysql.VARCHAR(key_chars)

    def table(self, m: TableMapping) -> sa.Table:
        if self.table_key(m) not in self._tables:
            col_types = self._column_types(m)
            pk, key = m.view.primary_key, m.view.key
            cols = [
                sa.Column(c.name, col_types[c.name], autoincrement=False, nullable=self.nullable(c, m))
                for c in m.view.columns
            ]
            extra: list[sa.schema.SchemaItem] = [sa.PrimaryKeyConstraint(*pk)] if pk else []
            if key and tuple(key) != tuple(pk):
                extra.append(sa.Index(f"rk_{m.target_name}"[:64], *key))
            self._tables[self.table_key(m)] = sa.Table(
                m.target_name,
                self.metadata,
                *cols,
                *extra,
                schema=m.target_schema,
                quote=True,
                mysql_engine="InnoDB",
                mysql_charset="utf8mb4",
                mysql_collate=self.collation(),
                mysql_row_format="DYNAMIC",
            )
        return self._tables[self.table_key(m)]

    def _column_types(self, m: TableMapping) -> dict[str, Any]:
        """Key columns first (sized to the index limit), then the rest within the row budget."""
        keys = [c for c in m.view.columns if c.name in set(m.view.primary_key) | set(m.view.key)]
        out = self._key_types(m, keys)
        budget = ROW_BYTES - sum(_bytes(t) for t in out.values())
        for c in m.view.columns:
            if c.name not in out:
                t = self.column_type(c)
                if _bytes(t) > budget:  # PostgreSQL enforces the length; MySQL keeps the text
                    t = mysql.LONGTEXT()
                out[c.name], budget = t, budget - _bytes(t)
        return out

    def _key_types(self, m: TableMapping, keys: list[Column]) -> dict[str, Any]:
        """Bounded key types share InnoDB's index limit; unbounded ones split what is left."""
        bounded = {c.name: self.column_type(c) for c in keys}
        unbounded = [c for c in keys if isinstance(bounded[c.name], UNBOUNDED)]
        room = INDEX_BYTES - sum(_bytes(t) for t in bounded.values() if not isinstance(t, UNBOUNDED))
        chars = min((room - 2 * len(unbounded)) // 4 // max(len(unbounded), 1), INDEX_BYTES // 4)
        if room < 0 or unbounded and chars < MIN_KEY_CHARS:
            raise TargetError(
                f"{m.label}: key ({', '.join(c.name for c in keys)}) cannot be indexed by MySQL: "
                f"InnoDB keys hold {INDEX_BYTES} bytes and utf8mb4 takes 4 bytes per character; "
                f"declare a shorter key in the mapping"
            )
        try:
            return {**bounded, **{c.name: self.column_type(c, chars) for c in unbounded}}
        except TargetError as e:
            raise TargetError(f"{m.label}: {e}") from None

    # ---------------------------------------------------------------- changes
    def apply(self, conn: Connection, m: TableMapping, changes) -> None:
        """The generic applier; MySQL's refusals name the table."""
        try:
            super().apply(conn, m, changes)
        except sa.exc.DataError as e:
            raise ValueRangeError(
                f"{m.label}: the mysql target refused a value in {self.display(m)}: {e.orig}"
            ) from None
        except sa.exc.IntegrityError as e:
            raise TargetError(
                f"{m.label}: the mysql target refused a change in {self.display(m)}: {e.orig}"
            ) from None

    def delete_one(self, conn: Connection, t: sa.Table, match) -> int:
        return conn.execute(sa.delete(t).where(match).with_dialect_options(mysql_limit=1)).rowcount

    def update_one(self, conn: Connection, t: sa.Table, match, sets: dict) -> int:
        stmt = sa.update(t).where(match).values(sets).with_dialect_options(mysql_limit=1)
        return conn.execute(stmt).rowcount

    # ---------------------------------------------------------------- re-sync beside the table
    transactional_ddl = False  # DDL commits the open transaction, and itself

    def name_problem(self, name: str) -> str | None:
        return names.mysql_name_problem(name)

    def swap_table(self, conn: Connection, m: TableMapping, shadow: TableMapping) -> None:
        """``RENAME TABLE t TO <t>__resync_old, <shadow> TO t`` (atomic, but it commits by itself:
        the caller holds no open batch), then DROP of the old table.  Called again after a crash
        between the two (the shadow gone, the old table parked), it drops the old table."""
        live = swap.quoted(conn, m.target_name, m.target_schema)
        old = swap.quoted(conn, swap.parked_name(self, m.target_name), m.target_schema)
        if swap.exists(conn, shadow):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {old}")
            first = f"{live} TO {old}, " if swap.exists(conn, m) else ""
            sh = swap.quoted(conn, shadow.target_name, shadow.target_schema)
            conn.exec_driver_sql(f"RENAME TABLE {first}{sh} TO {live}")
            failpoint("resync.renamed", m.label)
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {old}")

    def set_next_value(
        self, conn: Connection, m: TableMapping, column: str, next_value: int, sequence: str
    ) -> str:
        """The key column becomes AUTO_INCREMENT, starting at ``next_value``."""
        q, t = conn.dialect.identifier_preparer, self.table(m)
        typ = t.c[column].type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(
            f"ALTER TABLE {q.format_table(t)} MODIFY {q.quote(column)} {typ} NOT NULL AUTO_INCREMENT"
        )
        conn.exec_driver_sql(f"ALTER TABLE {q.format_table(t)} AUTO_INCREMENT = {int(next_value)}")
        return f"{self.display(m)}.{column}: AUTO_INCREMENT set to {next_value}"


def _bytes(t: Any) -> int:
    """Inline bytes a column type takes in a row / an index (strings: 4 bytes per character)."""
    if isinstance(t, mysql.VARBINARY):
        assert t.length is not None  # the type map sizes every string type it makes
        return t.length + 2
    if isinstance(t, (mysql.VARCHAR, mysql.CHAR)):
        assert t.length is not None
        return t.length * (1 if getattr(t, "charset", None) == "ascii" else 4) + 2
    return 16
