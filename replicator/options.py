"""What one run of a stream is given (:class:`Options`) and what it reports (:class:`Summary`).

Contract: :func:`validate` is the first thing every command does with its options (before a
target is opened); it raises ConfigError naming the option.  Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from .errors import ConfigError
from .model import Lsn

if TYPE_CHECKING:
    from .config import MappingConfig

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class Options:
    source: str
    target: Optional[str] = None
    tables: Optional[list[str]] = None
    name: str = "replicator"
    jobs: int = 2
    keep_slot: bool = False
    batch_rows: int = 50_000
    batch_seconds: float = 1.0
    status_interval: float = 10.0
    slot_timeout: float = 300.0
    cutover: bool = False
    mapping: Optional[MappingConfig] = None
    #: large transactions streamed while they run (pgoutput protocol 2) into a spool (spool.py)
    stream_in_progress: bool = True
    spool_dir: Optional[str] = None  # default: spool.default_dir(name)
    spool_limit: int = 50 << 30
    #: a copy from one snapshot and no change capture (``replicator copy``): no slot, no
    #: publication, no replica identity needed (snapshot_only.py)
    snapshot_only: bool = False


@dataclass
class Summary:
    tables: int = 0
    rows_copied: int = 0
    changes_applied: int = 0
    seconds: float = 0.0
    copy_seconds: float = 0.0
    cutover: list = field(default_factory=list)
    applied_lsn: Lsn = Lsn(0)
    counts: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_copied / self.seconds if self.seconds else 0.0


def validate(opts: Options) -> None:
    """``--name`` names the slot and publications; ``--jobs`` at least one worker; the copy's
    piece size setting."""
    if not NAME_RE.match(opts.name or ""):
        raise ConfigError(
            f"--name {opts.name!r}: use lowercase letters, digits and _ "
            f"(at most 63, not starting with a digit): it names the slot"
        )
    if opts.jobs < 1:
        raise ConfigError(f"--jobs {opts.jobs}: must be at least 1")
    from .copyplan import piece_pages

    piece_pages()  # REPLICATOR_COPY_PIECE_PAGES, checked before any slot exists


def inserts_publication(name: str) -> str:
    """The publication of stream ``name`` for its insert-only tables (the other is ``name``)."""
    return f"{name[:55]}_inserts"
