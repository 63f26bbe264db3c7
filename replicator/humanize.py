"""Figures for people, shared by every text the tool prints (status, check, the progress display).

Contract: pure functions; sizes in decimal units (``216 B``, ``24.6 kB``, ``1.2 MB``), and
:func:`aligned` lays out a table whose columns are as wide as their widest cell.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def size(n: float) -> str:
    """Bytes in decimal units: ``216 B``, ``24.6 kB``, ``1.2 MB``; negative sizes keep their sign."""
    value = float(n)
    for unit in SIZE_UNITS:
        if abs(value) < 1000 or unit == SIZE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000.0
    raise AssertionError("unreachable")  # pragma: no cover


def aligned(rows: Sequence[Sequence[str]], right: Container[int] = ()) -> list[str]:
    """``rows`` (the first one the heading) as lines, columns two spaces apart, the columns whose
    index is in ``right`` aligned right; trailing spaces removed."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in rows
    ]
