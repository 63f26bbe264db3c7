# syntax=docker/dockerfile:1
# replicator in a container (README "Containers"):
#
#   docker build -t replicator .
#   docker run --rm replicator                                  # --help
#   docker run --rm -v replica:/data -e PGPASSWORD=secret replicator \
#       migrate --source postgresql://postgres@db.example:5432/app --target duckdb:////data/replica.duckdb
#
# Builder stage: scripts/image-build.sh creates the venv and installs the package (non-editable, no
# test extras) -- the same script runs outside Docker (tests/integration/test_container.py).  The
# runtime stage gets only that venv: no compiler, no pip cache, no sources.  Every dependency ships
# manylinux wheels (psycopg[binary] brings its own libpq), so the slim base needs no apt packages.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY replicator ./replicator
COPY scripts/image-build.sh ./scripts/image-build.sh
RUN bash scripts/image-build.sh /opt/venv

FROM python:3.11-slim
# A fixed numeric uid and gid (10001, user and group "replicator"), so runAsNonRoot-style
# checks can verify it; /data belongs to it, and a new named volume mounted there takes that
# ownership.
RUN groupadd --system --gid 10001 replicator \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin replicator \
    && mkdir /data \
    && chown replicator:replicator /data
# The venv was built at /opt/venv (its scripts name that interpreter path): same path here.
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# DuckDB / SQLite target files: duckdb:////data/replica.duckdb, sqlite:////data/replica.sqlite
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["replicator"]
CMD ["--help"]
