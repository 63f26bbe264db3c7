"""Planning: what goes where, and every reason it cannot (DESIGN.md invariant 9).

Contract: :meth:`Planner.plan` only reads (the source catalog, the target's tables and state) and
creates nothing, not even the target's state tables; it returns the table mappings or raises
CheckError (a list of problems), ConfigError or TargetError, before any slot, publication or table
exists.  Every command plans through it: ``check``, ``verify``, ``resync`` and the pipeline.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from . import mapping, problems
from .errors import CheckError, ConfigError, TargetError
from .model import TableMapping
from .options import Options, inserts_publication, validate
from .source import catalog, snapshot
from .state import StateStore
from .target import open_target


class Planner:
    """Plans stream ``opts.name`` from ``opts.source`` into ``target`` (``store``: its state)."""

    def __init__(self, opts: Options, target, store: StateStore):
        self.opts = opts
        self.target = target
        self.store = store
        self.publication = opts.name
        self.publication_inserts = inserts_publication(opts.name)

    @classmethod
    def for_options(cls, opts: Options) -> Planner:
        """A planner with the target and state store ``opts`` name (options checked first)."""
        validate(opts)
        return cls(opts, open_target(opts.target), StateStore(opts.name))

    def plan(self, check_target: bool = True) -> list[TableMapping]:
        """Resolve what goes where and check it all; ``check_target`` False skips looking at the
        target's existing tables (``check`` without --target, or a target not yet created)."""
        with snapshot.connect(self.opts.source) as c:
            ms = self._from_mapping(c) if self.opts.mapping is not None else self._from_tables(c)
            self._check_filters(c, ms)
            if self.opts.snapshot_only:  # no slot, no publication: a plain reader is enough
                found = problems.version_problems(c)
            else:
                found = problems.server_problems(c, self.opts.name) + self._publish_problems(c, ms)
            if found:
                raise CheckError(found)
        if not ms:
            raise ConfigError(
                "no tables to replicate: the source has no user tables "
                "(or --tables / the mapping matched none)"
            )
        names = problems.target_limit_problems(self.target, ms)
        if names:
            raise CheckError(names)
        dup = problems.duplicate_target(self.target, ms)
        if dup:
            raise ConfigError(dup)
        if check_target:
            self._check_existing_target_tables(ms)
        return ms

    def _from_tables(self, c) -> list[TableMapping]:
        """--tables (or every table) as it is on the source; each needs a usable identity."""
        tables = catalog.select_tables(catalog.list_tables(c), self.opts.tables)
        schemas = catalog.load_schemas(c, tables)
        found = [] if self.opts.snapshot_only else problems.identity_problems(schemas)
        if found:
            raise CheckError(found, problems.IDENTITY_HINTS)
        return [TableMapping(s, s.name) for s in schemas]

    def _from_mapping(self, c) -> list[TableMapping]:
        """Resolve the mapping file against the whole catalog; --tables narrows the result."""
        assert self.opts.mapping is not None  # plan() comes here only with a mapping
        schemas = catalog.load_schemas(c, catalog.list_tables(c))
        ms = mapping.resolve(self.opts.mapping, schemas, capture=not self.opts.snapshot_only)
        if self.opts.tables:
            keep = {
                t[0]
                for t in catalog.select_tables(
                    [(m.view.oid, m.view.schema, m.view.name, "") for m in ms], self.opts.tables
                )
            }
            ms = [m for m in ms if m.view.oid in keep]
        return ms

    def _publish_problems(self, c, ms: list[TableMapping]) -> list[str]:
        """Creating or changing the publications needs privileges a replication role may lack."""
        full, inserts = mapping.publications(ms)
        return problems.publish_problems(c, self.publication, full) + problems.publish_problems(
            c, self.publication_inserts, inserts
        )

    @staticmethod
    def _check_filters(c, ms: list[TableMapping]) -> None:
        """Each row filter must be valid SQL over its table (tried with LIMIT 0, read only)."""
        for m in ms:
            if not m.where:
                continue
            t = m.source_table
            try:
                c.execute(
                    sql.SQL("SELECT 1 FROM {} WHERE ({}) LIMIT 0").format(
                        sql.Identifier(t.schema, t.name), sql.SQL(m.where)
                    )
                )
            except psycopg.Error as e:
                c.rollback()
                raise ConfigError(
                    f"row filter of {m.label} is not valid: {m.where!r}: {str(e).strip().splitlines()[0]}"
                ) from None

    def _check_existing_target_tables(self, ms: list[TableMapping]) -> None:
        """A table we did not create must have every column; ours follow the source's schema
        changes through the stream, so they may lag behind the catalog until it gets there."""
        import sqlalchemy as sa

        with self.target.connect(readonly=True) as conn:
            ours = self.store.load_tables(conn) if self.store.exists(conn) else {}
            insp = sa.inspect(conn)
            for m in ms:
                if m.label in ours or not insp.has_table(m.target_name, schema=m.target_schema):
                    continue
                have = {c["name"] for c in insp.get_columns(m.target_name, schema=m.target_schema)}
                missing = [c for c in m.view.column_names if c not in have]
                if missing:
                    raise TargetError(
                        f"target table {self.target.display(m)} exists but lacks column(s) "
                        f"{', '.join(missing)} of {m.label}: add them, or drop the target table"
                    )
