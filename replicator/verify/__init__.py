"""verify: compare source and target per table (row counts, then checksums over key ranges,
drilled down to the differing keys), consistently against a running mirror.

Modules: ``run`` (the tables' checks and re-check rounds), ``ranges`` (scan, classify, drill),
``sql`` (how one table is read on both sides), ``read`` (read-only target access), ``values``
and ``nested`` (one canonical form per type family), ``report`` (the human form).
"""

from .report import render
from .run import Settings, verify

__all__ = ["Settings", "render", "verify"]
