"""verify: compare source and target per table (row counts, then checksums over key ranges,
drilled down to the differing keys), consistently against a running mirror.

Modules: ``run`` (the tables and the re-check rounds), ``table`` (one table's check and
document), ``mirror`` (waiting for a live mirror), ``ranges`` (scan, classify, drill),
``sql`` (how one table is read on both sides), ``read`` (read-only target access), ``values``
and ``nested`` (one canonical form per type family), ``report`` (the human form).
"""

from .report import render
from .run import Settings, verify

__all__ = ["Settings", "render", "verify"]
