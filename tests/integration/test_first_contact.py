"""The newcomer's path: the README's quick-start commands, run as written, on a fresh pgbench
database (pgbench_history has no key).

One command (`<!-- quickstart:copy -->`) gives a DuckDB file equal to the source row by row; two
(`<!-- quickstart:mirror -->`) give a mirror that follows pgbench load.  Only the source URL,
the DuckDB path and the mapping file's path are replaced by this test's own.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests import procs
from tests.compare import assert_same
from tests.integration.test_mirror import wait_equal_history
from tests.servers import pgbench_run

README = Path(__file__).resolve().parents[2] / "README.md"
PGBENCH = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]
README_SOURCE = "postgresql://me@localhost/bench"
README_TARGET = "duckdb:///bench.duckdb"


def quickstart(name: str) -> list[list[str]]:
    """The command lines of the ```sh block after ``<!-- quickstart:NAME -->`` in README.md."""
    m = re.search(rf"<!-- quickstart:{name} -->\s*```sh\n(.*?)```", README.read_text(), re.S)
    assert m, f"README.md has no quickstart:{name} block"
    return [shlex.split(line) for line in m.group(1).splitlines() if line.strip()]


def localised(argv: list[str], dsn: str, tmp_path: Path) -> tuple[list[str], str | None]:
    """(replicator arguments, file stdout goes to) of a README line, with this test's source,
    target file and working directory."""
    assert argv[0] == "replicator", argv
    out = None
    args = []
    it = iter(argv[1:])
    for a in it:
        if a == ">":
            out = str(tmp_path / next(it))
            continue
        a = a.replace(README_SOURCE, dsn).replace(README_TARGET, f"duckdb:///{tmp_path}/bench.duckdb")
        args.append(str(tmp_path / a) if a.endswith(".yaml") else a)
    return args, out


def test_readme_copy_is_one_command(fresh_pgbench, tmp_path):
    lines = quickstart("copy")
    assert len(lines) == 1, lines
    args, out = localised(lines[0], fresh_pgbench, tmp_path)
    assert out is None
    procs.run(*args, check=True, timeout=600)
    for t in PGBENCH:
        assert_same(fresh_pgbench, "public", t, f"duckdb:///{tmp_path}/bench.duckdb")


def test_readme_mirror_is_two_commands(fresh_pgbench, tmp_path):
    lines = quickstart("mirror")
    assert len(lines) == 2, lines
    (init_args, mapping_file), (mirror_args, _) = (localised(x, fresh_pgbench, tmp_path) for x in lines)
    cp = procs.run(*init_args, check=True, timeout=300)
    assert mapping_file is not None
    Path(mapping_file).write_text(cp.stdout)
    url = f"duckdb:///{tmp_path}/bench.duckdb"
    mirror = procs.Replicator(*mirror_args, "--no-progress", "--batch-seconds", "0.2")
    try:
        pgbench_run(fresh_pgbench, transactions=200, clients=2, builtin="tpcb-like")
        wait_equal_history(fresh_pgbench, url, proc=mirror)
        assert mirror.stop() == 0, mirror.tail()
    finally:
        mirror.close()
    for t in PGBENCH:
        assert_same(fresh_pgbench, "public", t, url)


def test_check_shows_what_it_would_do(fresh_pgbench):
    """The table of tables (text and --json): estimate, size, identity, how rows are found, and
    the key-less table's problem with both ways around it."""
    import json

    cp = procs.run("check", "--source", fresh_pgbench, "--json", timeout=300)
    assert cp.returncode == 1, cp.stderr
    doc = json.loads(cp.stdout)
    by = {t["source"]: t for t in doc["tables"]}
    assert sorted(by) == [f"public.{t}" for t in sorted(PGBENCH)]
    accounts, history = by["public.pgbench_accounts"], by["public.pgbench_history"]
    assert accounts["locate_by"] == "primary key (aid)" and accounts["problems"] == []
    assert accounts["rows_estimate"] == 100_000 and accounts["bytes"] > 10_000_000
    assert history["locate_by"] == "cannot: no key" and len(history["problems"]) == 1
    assert doc["ok"] is False and doc["problems"] == history["problems"] and len(doc["hints"]) == 2
    text = procs.run("check", "--source", fresh_pgbench, timeout=300).stdout
    head, *rows = text.split("\n\n")[0].splitlines()
    assert head.split()[:2] == ["TABLE", "→"] and len(rows) == 4
    assert any(r.startswith("public.pgbench_history") and r.endswith("no: 1 problem(s)") for r in rows)
    assert "hint: to copy every table once" in text
