"""migrate --cutover carries sequences past the source's values on every target."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from tests.compare import target_rows
from tests.integration.test_migrate import replicator


def test_cutover_sets_next_values(source_db, target_url):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE s (id serial PRIMARY KEY, v text);"
            "CREATE TABLE i (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);"
            "INSERT INTO s (v) SELECT 'x' FROM generate_series(1, 40);"
            "DELETE FROM s WHERE id > 30;"  # the sequence stays at 40
            "INSERT INTO i (v) SELECT 'y' FROM generate_series(1, 12)"
        )
    cp = replicator("migrate", "--source", source_db, "--target", target_url, "--cutover")
    lines = [ln for ln in cp.stdout.splitlines() if ln.startswith("cutover:") and "." in ln.split()[1]]
    assert len(lines) == 2, cp.stdout
    assert "every table verified: switch the application over" in cp.stdout
    if target_url.startswith("sqlite"):
        assert all("by itself" in ln for ln in lines)
        return
    assert any("s.id" in ln and "41" in ln for ln in lines) and any(
        "i.id" in ln and "13" in ln for ln in lines
    )
    eng = sa.create_engine(target_url, poolclass=sa.pool.NullPool)
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO s (v) VALUES ('new')"))
        c.execute(sa.text("INSERT INTO i (v) VALUES ('new')"))
    eng.dispose()
    assert max(r[0] for r in target_rows(target_url, "s", ["id"])) == 41
    assert max(r[0] for r in target_rows(target_url, "i", ["id"])) == 13
