"""The container image (Dockerfile, .dockerignore, scripts/image-build.sh) and the compose example
(docker-compose.yml, mappings/compose_pgbench.yaml), checked without a Docker engine.

* The builder stage is replayed: its COPY instructions are carried out from this checkout
  through .dockerignore into a temp dir, and its RUN line runs there with ``/bin/sh -c`` (as
  Docker runs a shell-form RUN) and the stage's ENV, the venv path swapped for a temp one.  pip
  may use its cache here (the image sets PIP_NO_CACHE_DIR); about 15 s on 2 cores with a warm
  cache.  The venv's ``replicator`` and its target modules must then work on their own.
* The runtime stage is read: only that venv copied in, a non-root USER, ENTRYPOINT replicator.
* The compose file is read with yaml: the replicator service's command and environment parse
  with the real click CLI, its mapping loads with the project's loader, and then the seed and
  replicator services' own commands run against a throwaway PostgreSQL, the image's venv doing
  the mirroring, with their mounts mapped to temp dirs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from tests import procs
from tests.servers import find_pg_bindir, pgbench_run

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
BUILD_SCRIPT = "scripts/image-build.sh"
BASE_IMAGE = "python:3.11-slim"
PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers")
TARGET_MODULES = ("duckdb", "sqlite", "mysql", "postgres")

# ------------------------------------------------------------------ Dockerfile


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments): comment lines dropped (also inside a
    continuation, as Docker does), backslash continuations joined."""
    stages: list[list[tuple[str, str]]] = []
    logical, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    for line in logical:
        word, _, args = line.partition(" ")
        word, args = word.upper(), args.strip()
        if word == "FROM":
            stages.append([])
        assert stages, f"{word} before the first FROM"
        stages[-1].append((word, args))
    return stages


def instructions(stage, word: str) -> list[str]:
    return [args for w, args in stage if w == word]


def env_of(stage) -> dict[str, str]:
    """ENV key=value pairs of a stage (the form this Dockerfile uses)."""
    out = {}
    for args in instructions(stage, "ENV"):
        for item in shlex.split(args):
            key, eq, value = item.partition("=")
            assert eq, f"ENV {args!r}: write key=value"
            out[key] = value
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def builder_and_runtime():
    stages = dockerfile_stages()
    assert len(stages) == 2, "a builder stage and a runtime stage"
    return stages[0], stages[-1]


def build_run_line(builder) -> tuple[str, str]:
    """The builder's one RUN (shell form) and the venv directory it builds."""
    runs = instructions(builder, "RUN")
    assert len(runs) == 1, f"the builder stage runs exactly {BUILD_SCRIPT}, nothing else: {runs}"
    argv = shlex.split(runs[0])
    assert argv[:-1] == ["bash", BUILD_SCRIPT], runs[0]
    return runs[0], argv[-1]


# ------------------------------------------------------------------ .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex (Go filepath.Match plus ``**``, as Docker reads it)."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
        i += 1
    return re.compile(out)


def dockerignore():
    """A predicate: is this context-relative path left out of the build context?  The last
    matching pattern decides; a pattern matching a parent directory matches its contents."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(line)))

    def ignored(rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negate, rx in rules:
            if any(rx.fullmatch(c) for c in candidates):
                result = not negate
        return result

    return ignored


def copy_into_stage(stage, workdir: Path) -> None:
    """Carry out a stage's COPY instructions from the checkout (through .dockerignore) into
    ``workdir``, which stands for the stage's WORKDIR."""
    ignored = dockerignore()
    for args in instructions(stage, "COPY"):
        argv = shlex.split(args)
        assert not any(a.startswith("--") for a in argv), f"COPY {args}: flags in the builder"
        *sources, dest = argv
        for src in sources:
            assert not set(src) & set("*?["), f"COPY {src}: name it, no wildcard"
            assert not ignored(src), f"COPY {src}: .dockerignore leaves it out of the context"
            to = workdir / dest
            if len(sources) > 1 or dest.endswith("/"):
                to = to / Path(src).name
            path = ROOT / src
            if path.is_dir():
                for dirpath, dirnames, filenames in os.walk(path):
                    rel_dir = Path(dirpath).relative_to(ROOT)
                    dirnames[:] = [d for d in dirnames if not ignored(f"{rel_dir}/{d}")]
                    for f in filenames:
                        if not ignored(f"{rel_dir}/{f}"):
                            target = to / Path(dirpath).relative_to(path) / f
                            target.parent.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(Path(dirpath) / f, target)
            else:
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, to)


# ------------------------------------------------------------------ the image's venv


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory):
    """The builder stage replayed: COPY into a temp /src, then its RUN line with the venv in a
    temp dir.  Returns (venv, seconds the RUN took)."""
    builder, _ = builder_and_runtime()
    run_line, venv_in_image = build_run_line(builder)
    base = tmp_path_factory.mktemp("image")
    src, venv = base / "src", base / "venv"
    src.mkdir()
    copy_into_stage(builder, src)
    env = {**os.environ, **env_of(builder)}
    env.pop("PIP_NO_CACHE_DIR", None)  # the image builds without a cache; here it may use one
    env["PYTHON"] = sys.executable  # python:3.11-slim's python3; here the interpreter of the tests
    t0 = time.monotonic()
    cp = subprocess.run(
        ["/bin/sh", "-c", run_line.replace(venv_in_image, shlex.quote(str(venv)))],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - t0
    assert cp.returncode == 0, (
        f"RUN {run_line} failed ({cp.returncode}):\n{cp.stdout[-3000:]}{cp.stderr[-3000:]}"
    )
    return venv, seconds


def venv_python(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -I -c code`` in the venv: isolated, so nothing from this checkout is importable."""
    return subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_image_build_script_makes_a_working_venv(image_venv, tmp_path, record_property):
    venv, seconds = image_venv
    record_property("image_build_seconds", round(seconds, 1))
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    cp = subprocess.run(
        [str(venv / "bin/replicator"), "--version"], cwd=tmp_path, capture_output=True, text=True
    )
    assert cp.returncode == 0 and version in cp.stdout, cp.stdout + cp.stderr
    cp = subprocess.run(
        [str(venv / "bin/replicator"), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    for command in ("check", "migrate", "mirror", "status", "verify", "drop"):
        assert re.search(rf"^\s+{command}\b", cp.stdout, re.M), f"{command} missing from --help:\n{cp.stdout}"

    probe = f"""
import importlib, importlib.util, json, pathlib
for m in {[f"replicator.target.{t}" for t in TARGET_MODULES] + ["replicator.cli"]!r}:
    importlib.import_module(m)
import duckdb, psycopg, sqlalchemy, asyncpg, pyarrow, setproctitle
for url in ("duckdb:///:memory:", "sqlite://", "mysql+pymysql://u@h/db", "postgresql+psycopg://u@h/db"):
    sqlalchemy.create_engine(url).dispose()  # dialect plugins and drivers load (no connection)
duckdb.connect().execute("SELECT 1").fetchall()
import replicator
print(json.dumps({{
    "replicator": str(pathlib.Path(replicator.__file__).resolve()),
    "libpq": psycopg.pq.__impl__,
    "pytest": importlib.util.find_spec("pytest") is not None,
    "hypothesis": importlib.util.find_spec("hypothesis") is not None,
}}))
"""
    cp = venv_python(venv, probe, tmp_path)
    assert cp.returncode == 0, cp.stderr[-4000:]
    found = json.loads(cp.stdout.strip().splitlines()[-1])
    assert Path(found["replicator"]).is_relative_to(venv.resolve()), f"not installed into the venv: {found}"
    assert found["libpq"] == "binary", f"python:3.11-slim has no libpq: psycopg must bring its own ({found})"
    assert not found["pytest"] and not found["hypothesis"], f"test extras installed: {found}"


def test_dockerfile_builds_with_the_script_and_runs_replicator_as_non_root():
    builder, runtime = builder_and_runtime()
    from_builder = instructions(builder, "FROM")[0].split()
    assert from_builder[0] == BASE_IMAGE and [w.upper() for w in from_builder[1:2]] == ["AS"], from_builder
    builder_name = from_builder[2]
    _, venv = build_run_line(builder)
    assert (ROOT / BUILD_SCRIPT).is_file()

    assert instructions(runtime, "FROM")[0].split()[0] == BASE_IMAGE
    copies = [shlex.split(a) for a in instructions(runtime, "COPY")]
    assert copies == [[f"--from={builder_name}", venv, venv]], f"only the venv, at its own path: {copies}"
    assert env_of(runtime)["PATH"].startswith(f"{venv}/bin:"), env_of(runtime)
    assert not any(re.search(r"\bpip\b", r) for r in instructions(runtime, "RUN")), "pip in the runtime stage"

    users = instructions(runtime, "USER")
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0"), users[-1]
    if user.isdigit():  # a numeric uid must be the one the stage creates
        assert any(f"--uid {user}" in r for r in instructions(runtime, "RUN")), users[-1]

    assert exec_form(instructions(runtime, "ENTRYPOINT")[-1]) == ["replicator"]
    assert exec_form(instructions(runtime, "CMD")[-1]) == ["--help"]
    assert "/data" in exec_form(instructions(runtime, "VOLUME")[-1])
    assert instructions(runtime, "WORKDIR")[-1] == "/data"


def test_dockerignore_keeps_the_context_to_the_package():
    ignored = dockerignore()
    for path in (
        ".git",
        ".git/HEAD",
        ".venv/bin/python",
        "build/lib/replicator/cli.py",
        "replicator.egg-info/PKG-INFO",
        "replicator/__pycache__/cli.cpython-311.pyc",
        "replicator/target/__pycache__/duckdb.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".hypothesis/examples/x",
        ".ruff_cache/CACHEDIR.TAG",
        ".mypy_cache/3.11/x.json",
        "tests/conftest.py",
        "bench/bench_apply.py",
        "replica.duckdb",
        "replica.duckdb.wal",
        "docker-compose.yml",
    ):
        assert ignored(path), f"{path} would be sent to the Docker daemon"
    for path in (
        "pyproject.toml",
        "README.md",
        "replicator/cli.py",
        "replicator/target/duckdb.py",
        BUILD_SCRIPT,
    ):
        assert not ignored(path), f"{path} is needed by the build"


# ------------------------------------------------------------------ docker-compose.yml

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value, env: dict[str, str]):
    """Compose's interpolation (``$$``, ``${VAR}``, ``${VAR:-default}``) over a loaded value."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def compose(env: dict[str, str] | None = None) -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})


def mounts(service: dict, volume_dir: Path) -> list[tuple[str, Path]]:
    """(container path, host path) per volume: bind mounts relative to the compose file, named
    volumes as directories under ``volume_dir``."""
    out = []
    for spec in service.get("volumes", []):
        src, dst, *_ = spec.split(":")
        host = (COMPOSE.parent / src) if src.startswith((".", "/")) else volume_dir / src
        out.append((dst, host.resolve() if src.startswith((".", "/")) else host))
    return out


def to_host(value: str, mounted: list[tuple[str, Path]]) -> str:
    """A container path inside ``value`` (also inside a URL) as the host path of its mount."""
    if not mounted:
        return value
    hosts = dict(mounted)
    points = "|".join(re.escape(d) for d in sorted(hosts, key=len, reverse=True))
    return re.sub(rf"(?<![\w.])({points})(?=/|$)", lambda m: str(hosts[m.group(1)]), value)


def parse_cli(argv: list[str], env: dict[str, str], monkeypatch):
    """``replicator *argv`` parsed by the real click CLI with ``env``: the subcommand's context."""
    from replicator.cli import main

    for key in [k for k in os.environ if k.startswith("REPLICATOR_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = main.make_context("replicator", list(argv))
    rest = [*(getattr(ctx, "_protected_args", None) or ctx.protected_args), *ctx.args]
    name, command, args = main.resolve_command(ctx, rest)
    return name, command.make_context(name, args, parent=ctx)


def test_compose_replicator_service_parses_and_its_mapping_loads(tmp_path, monkeypatch):
    doc = compose()
    services = doc["services"]
    assert {"postgres", "mariadb", "seed", "replicator"} <= set(services)
    for name in ("postgres", "mariadb"):
        assert services[name]["healthcheck"]["test"], name
    assert "wal_level=logical" in services["postgres"]["command"]
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert (
        "${POSTGRES_PASSWORD"
        in yaml.safe_load(COMPOSE.read_text())["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    )

    seed = services["seed"]
    assert seed["image"] == services["postgres"]["image"]
    assert seed["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert seed["environment"]["PGPASSWORD"] == password and seed["environment"]["PGHOST"] == "postgres"

    svc = services["replicator"]
    build = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
    assert (COMPOSE.parent / build / "Dockerfile").resolve() == DOCKERFILE
    assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert svc["depends_on"]["seed"]["condition"] == "service_completed_successfully"
    env = {k: str(v) for k, v in svc["environment"].items()}
    assert env["PGPASSWORD"] == password, "the source password comes from the postgres service's variable"

    mounted = mounts(svc, tmp_path / "volumes")
    mount_points = dict(mounted)
    assert "/data" in mount_points, svc.get("volumes")
    named = next(v for v in svc["volumes"] if v.split(":")[1] == "/data").split(":")[0]
    assert named in doc.get("volumes", {}), f"the /data volume {named!r} is not declared"
    for dst, host in mounted:
        if dst != "/data":
            assert host.exists(), f"bind mount {host} → {dst} does not exist"

    # The source names the compose postgres service; the target lies on the /data volume.
    source = conninfo_to_dict(env["REPLICATOR_SOURCE"])
    assert (source["host"], str(source.get("port", 5432)), source["dbname"]) == (
        "postgres",
        "5432",
        "postgres",
    )
    assert "password" not in source, "the password belongs in PGPASSWORD, not in the URL"
    from sqlalchemy.engine import make_url

    target = make_url(env["REPLICATOR_TARGET"])
    assert target.drivername == "duckdb" and target.database.startswith("/data/"), target

    host_env = {k: to_host(v, mounted) for k, v in env.items()}
    argv = list(svc["command"]) if isinstance(svc["command"], list) else shlex.split(svc["command"])
    argv = [to_host(a, mounted) for a in argv]
    name, ctx = parse_cli(argv, host_env, monkeypatch)
    assert name == "mirror"
    assert ctx.params["source"] == env["REPLICATOR_SOURCE"]
    assert ctx.params["target"] == host_env["REPLICATOR_TARGET"]
    mapping = ctx.params["mapping"]
    assert mapping, "the service mirrors without a mapping: pgbench_history has no key"
    assert Path(mapping).is_file(), f"{mapping} is not mounted from the checkout"
    assert Path(mapping).resolve().is_relative_to(ROOT / "mappings")

    from replicator import config

    cfg = config.load(mapping)
    assert cfg.name
    by_source = {e.source: e for e in cfg.tables if e.source}
    assert by_source["public.pgbench_history"].insert_only, "pgbench_history has no key: insert_only"


# ------------------------------------------------------------------ the compose example, run


def test_compose_seed_and_mirror_commands_work_with_the_image_venv(image_venv, source_db, tmp_path):
    """The seed service's command (twice: the second leaves the data alone), then the replicator
    service's entrypoint and command from the image's venv, with the service's environment and
    mounts, until the pgbench tables are mirrored, a workload applied and verified, and SIGTERM."""
    venv, _ = image_venv
    services = compose()["services"]
    info = conninfo_to_dict(source_db)
    server = {
        "PGHOST": str(info.get("host") or "127.0.0.1"),
        "PGPORT": str(info.get("port") or 5432),
        "PGUSER": str(info.get("user") or "postgres"),
        "PGDATABASE": str(info["dbname"]),
        **({"PGPASSWORD": str(info["password"])} if info.get("password") else {}),
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "REPLICATOR_"))}
    base["PATH"] = f"{find_pg_bindir()}{os.pathsep}{base.get('PATH', '')}"

    seed = services["seed"]
    seed_env = {**base, **{k: str(v) for k, v in seed["environment"].items()}, **server}
    seed_argv = seed["command"] if isinstance(seed["command"], list) else shlex.split(seed["command"])

    def run_seed() -> str:
        cp = subprocess.run(seed_argv, env=seed_env, capture_output=True, text=True, timeout=300)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return cp.stdout + cp.stderr

    run_seed()
    with psycopg.connect(source_db, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pgbench_accounts").fetchone()[0] == 100_000
        c.execute("UPDATE pgbench_accounts SET abalance = 42 WHERE aid = 1")
    out = run_seed()
    with psycopg.connect(source_db) as c:
        kept = c.execute("SELECT abalance FROM pgbench_accounts WHERE aid = 1").fetchone()[0]
    assert kept == 42, f"a second seed re-loaded the pgbench tables:\n{out}"

    _, runtime = builder_and_runtime()
    svc = services["replicator"]
    mounted = mounts(svc, tmp_path / "volumes")
    for _, host in mounted:
        host.mkdir(parents=True, exist_ok=True)
    env = {**base, **{k: to_host(str(v), mounted) for k, v in svc["environment"].items()}}
    env["REPLICATOR_SOURCE"] = source_db  # host "postgres" is the compose network's name
    if "PGPASSWORD" in server:
        env["PGPASSWORD"] = server["PGPASSWORD"]
    workdir = Path(to_host(instructions(runtime, "WORKDIR")[-1], mounted))
    entry = exec_form(instructions(runtime, "ENTRYPOINT")[-1])
    argv = [str(venv / "bin" / entry[0]), *entry[1:], *(to_host(a, mounted) for a in svc["command"])]

    def replicator(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(venv / "bin/replicator"), *args],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    log = tmp_path / "mirror.log"
    with open(log, "wb") as f:
        mirror = procs.track(subprocess.Popen(argv, env=env, cwd=workdir, stdout=f, stderr=subprocess.STDOUT))
    deadline, states = time.monotonic() + 240, {}
    while time.monotonic() < deadline:
        assert mirror.poll() is None, f"mirror exited {mirror.returncode}:\n{log.read_text()[-4000:]}"
        cp = replicator("status", "--json")
        if cp.returncode == 0:
            states = {t["source"]: t["state"] for t in json.loads(cp.stdout)["tables"]}
            if states == {f"public.{t}": "r" for t in PGBENCH_TABLES}:
                break
        time.sleep(0.5)
    else:
        raise AssertionError(f"tables not streaming in time: {states}\n{log.read_text()[-4000:]}")

    pgbench_run(source_db, transactions=25, clients=2)
    cp = replicator("verify", timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    for t in PGBENCH_TABLES:
        assert re.search(rf"^public\.{t}: OK", cp.stdout, re.M), cp.stdout

    mirror.send_signal(signal.SIGTERM)
    assert mirror.wait(120) == 0, log.read_text()[-4000:]
    import duckdb
    from sqlalchemy.engine import make_url

    target = Path(make_url(env["REPLICATOR_TARGET"]).database)
    assert target.is_relative_to(tmp_path / "volumes"), f"{target} is not on the /data volume"
    with duckdb.connect(str(target), read_only=True) as db:
        counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in PGBENCH_TABLES}
    assert counts == {
        "pgbench_accounts": 100_000,
        "pgbench_branches": 1,
        "pgbench_history": 50,
        "pgbench_tellers": 10,
    }
