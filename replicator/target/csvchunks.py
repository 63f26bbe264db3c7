"""PostgreSQL CSV output re-cut at row ends (a quoted value may hold newlines).

Contract: :func:`whole_rows` yields blocks that each end at a row-ending newline (outside quotes)
and together are exactly the input bytes; it holds at most one chunk plus a partial row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def whole_rows(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Re-cut PostgreSQL CSV chunks at row ends: a ``\\n`` outside quotes (even ``"`` count before it)."""
    carry = b""
    for chunk in chunks:
        buf = carry + chunk if carry else chunk
        cut = _last_row_end(buf)
        carry = buf[cut:]
        if cut:
            yield buf[:cut]
    if carry:
        yield carry


def _last_row_end(buf: bytes) -> int:
    """Offset just past the last row-ending newline of ``buf`` (0 when none)."""
    total = buf.count(b'"')
    after, end = 0, len(buf)
    pos = buf.rfind(b"\n")
    while pos >= 0:
        after += buf.count(b'"', pos, end)
        if (total - after) % 2 == 0:
            return pos + 1
        end, pos = pos, buf.rfind(b"\n", 0, pos)
    return 0
