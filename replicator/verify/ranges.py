"""Verify, ranges: ordered checksums over key ranges and the drill-down, without I/O.

Both sides arrive as iterators of rows sorted by the table's key: ``(sort_key, values, key, version)``
tuples, ``values`` canonical (``values``), ``key`` the raw key values a later query binds,
``version`` the source row's ``xmin`` (None elsewhere).  Memory stays bounded whatever the table size:

* :func:`scan` cuts the source into ranges of ``chunk`` keys (never splitting equal keys), takes the
  target rows up to each range's last source key, and yields one :class:`RangeSum` per range:
  row counts and an order-independent digest (sum of row hashes, see :func:`row_hash`) per side.  A range is
  ``(lo, hi]``: ``lo`` the previous range's last key (None: from the start), ``hi`` its own last
  key (None for the last range, which also takes every target row past the source's end).
* :func:`drill` re-reads one differing range as groups of equal keys, splits it into sub-ranges of
  ``sub`` keys and compares key by key: rows missing on the target, extra on the target, changed.
* :func:`classify` settles the differences found on a live mirror (see ``verify.py``).

A side whose sort keys go down is a bug in the ORDER BY pairing, raised as :class:`OrderError`
rather than reported as a difference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from marshal import dumps as _dumps
from typing import Optional

SK, VALUES, KEY, VERSION = 0, 1, 2, 3
MASK = (1 << 64) - 1


def _sk(row: tuple):
    return row[SK]


class OrderError(RuntimeError):
    """Rows of one side are not in the order the merge expects."""


def row_hash(values: tuple) -> int:
    """The hash of one canonical row: SipHash of its ``marshal`` bytes.  Version 2 writes no
    back-references, so equal values give equal bytes (canonical values are plain: None, bool,
    int, float, str, bytes, tuples).  Python's own tuple hash would be faster but
    ``hash(-1) == hash(-2)``."""
    return hash(_dumps(values, 2))


@dataclass
class RangeSum:
    """One range of the scan: ``(lo, hi]`` as rows (None: open end), counts and digests."""

    lo: Optional[tuple]
    hi: Optional[tuple]
    source_rows: int
    target_rows: int
    source_digest: int
    target_digest: int
    first: Optional[tuple] = None  # the range's lowest and highest row, either side (for reports)
    last: Optional[tuple] = None

    @property
    def equal(self) -> bool:
        return self.source_rows == self.target_rows and self.source_digest == self.target_digest


class _Side:
    """A sorted row iterator with one row of look-ahead and an order check."""

    def __init__(self, rows: Iterable[tuple], name: str):
        self.it, self.name = iter(rows), name
        self.head = next(self.it, None)
        self.last_sk = None

    def pop(self) -> tuple:
        row = self.head
        assert row is not None, "pop() past the end"  # callers pop only while head is not None
        if self.last_sk is not None and row[SK] < self.last_sk:
            raise OrderError(f"{self.name} rows are not ordered by key: {row[SK]!r} after {self.last_sk!r}")
        self.last_sk = row[SK]
        self.head = next(self.it, None)
        return row


def scan(source: Iterable[tuple], target: Iterable[tuple], chunk: int) -> Iterator[RangeSum]:
    """Ranges of ``chunk`` source keys with their counts and digests on both sides.

    (The hot loop of verify: written out with local variables rather than :class:`_Side`.)"""
    src, tgt = iter(source), iter(target)
    s_head, t_head = next(src, None), next(tgt, None)
    s_last = t_last = None
    lo = None
    while True:
        n = digest = 0
        last: Optional[tuple] = None
        s_first, t_first = s_head, t_head
        # past ``chunk`` rows (chunk >= 1) ``last`` is set: the range ends with the last row of its key
        while s_head is not None and (n < chunk or (last is not None and s_head[SK] == last[SK])):
            if s_last is not None and s_head[SK] < s_last:
                raise OrderError(f"source rows are not ordered by key: {s_head[SK]!r} after {s_last!r}")
            last, s_last = s_head, s_head[SK]
            n += 1
            digest += hash(_dumps(last[VALUES], 2))
            s_head = next(src, None)
        hi = last if s_head is not None else None
        hi_sk = hi[SK] if hi is not None else None
        tn = tdigest = 0
        t_row = None
        while t_head is not None and (hi is None or t_head[SK] <= hi_sk):
            if t_last is not None and t_head[SK] < t_last:
                raise OrderError(f"target rows are not ordered by key: {t_head[SK]!r} after {t_last!r}")
            t_last, t_row = t_head[SK], t_head
            tn += 1
            tdigest += hash(_dumps(t_head[VALUES], 2))
            t_head = next(tgt, None)
        yield _range_sum(lo, hi, (n, digest, s_first, last), (tn, tdigest, t_first, t_row))
        if hi is None:
            return
        lo = hi


def _range_sum(lo: Optional[tuple], hi: Optional[tuple], src: tuple, tgt: tuple) -> RangeSum:
    """The :class:`RangeSum` of ``(lo, hi]`` from each side's ``(rows, digest sum, first row
    read, last row read)``: digests masked, a side's first row counted only if it read any."""
    n, digest, s_first, last = src
    tn, tdigest, t_first, t_row = tgt
    firsts = [r for r, k in ((s_first, n), (t_first, tn)) if k and r is not None]  # k: r is a row
    lasts = [r for r in (last, t_row) if r is not None]
    return RangeSum(
        lo,
        hi,
        n,
        tn,
        digest & MASK,
        tdigest & MASK,
        min(firsts, key=_sk) if firsts else None,
        max(lasts, key=_sk) if lasts else None,
    )


def merge(source: Iterable[tuple], target: Iterable[tuple]) -> Iterator[tuple[object, list, list]]:
    """``(sort_key, source rows, target rows)`` per distinct key, in key order."""
    src, tgt = _Side(source, "source"), _Side(target, "target")
    while src.head is not None or tgt.head is not None:
        if tgt.head is None or (src.head is not None and src.head[SK] <= tgt.head[SK]):
            assert src.head is not None  # the loop runs while one side has a row
            sk = src.head[SK]
        else:
            sk = tgt.head[SK]
        s = []
        while src.head is not None and src.head[SK] == sk:
            s.append(src.pop())
        t = []
        while tgt.head is not None and tgt.head[SK] == sk:
            t.append(tgt.pop())
        yield sk, s, t


@dataclass
class Diff:
    """One differing key: ``kind`` is missing (on the target), extra (on the target) or changed."""

    kind: str
    sk: object
    row: tuple  # a representative row (source's when there is one)
    columns: tuple[int, ...] = ()  # changed: positions of the differing columns
    versions: tuple = ()  # source row versions (xmin) seen for this key
    target_values: tuple = ()  # the target's canonical rows for this key (Counter-comparable)


@dataclass
class SubRange:
    """A sub-range of one drilled range holding differences: first and last row seen in it."""

    first: tuple
    last: tuple
    diffs: list[Diff] = field(default_factory=list)


@dataclass
class Drilled:
    """What :func:`drill` found in one range: per-side counts and the differing sub-ranges."""

    source_rows: int = 0
    target_rows: int = 0
    subranges: list[SubRange] = field(default_factory=list)
    diff_count: int = 0  # every differing key, also those beyond ``max_diffs``

    @property
    def diffs(self) -> list[Diff]:
        return [d for s in self.subranges for d in s.diffs]


def compare_group(sk, s: Sequence[tuple], t: Sequence[tuple], keyed: bool) -> list[Diff]:
    """The differences of one key: nothing when both sides hold the same multiset of rows."""
    sv, tv = [r[VALUES] for r in s], [r[VALUES] for r in t]
    if sv == tv or Counter(sv) == Counter(tv):
        return []
    versions = tuple(sorted(str(r[VERSION]) for r in s))
    tvals = tuple(tv)
    if keyed and s and t:
        cols = tuple(i for i, (a, b) in enumerate(zip(sv[0], tv[0])) if a != b)
        return [Diff("changed", sk, s[0], cols, versions, tvals)]
    if keyed:
        return [Diff("missing" if s else "extra", sk, (s or t)[0], (), versions, tvals)]
    more = Counter(sv)
    more.subtract(Counter(tv))
    kind = "missing" if sum(max(n, 0) for n in more.values()) else "extra"
    return [Diff(kind, sk, (s or t)[0], (), versions, tvals)]


def drill(source: Iterable[tuple], target: Iterable[tuple], sub: int, keyed: bool, max_diffs: int) -> Drilled:
    """Compare one range key by key; differences are grouped in sub-ranges of ``sub`` source keys
    (target-only keys join the current one).  At most ``max_diffs`` differences are kept."""
    out = Drilled()
    current: Optional[SubRange] = None
    keys_in_sub = 0
    for sk, s, t in merge(source, target):
        out.source_rows += len(s)
        out.target_rows += len(t)
        if current is None or (s and keys_in_sub >= sub):
            if current is not None and current.diffs:
                out.subranges.append(current)
            row = (s or t)[0]
            current, keys_in_sub = SubRange(row, row), 0
        keys_in_sub += 1 if s else 0
        current.last = (s or t)[0]
        for d in compare_group(sk, s, t, keyed):
            out.diff_count += 1
            if out.diff_count <= max_diffs:
                current.diffs.append(d)
    if current is not None and current.diffs:
        out.subranges.append(current)
    return out


def classify(diffs: Sequence[Diff], later: dict) -> tuple[list[Diff], list[Diff]]:
    """Settle differences found against source snapshot S using a later snapshot S2 taken after
    the target was read: ``later`` maps a sort key to ``(versions, canonical rows)`` in S2.

    The target was read at a point between S and S2.  A key whose source row versions are the same
    in S and S2 did not change in between, so the target must hold it: a real difference
    (*confirmed*).  A key that changed in between is consistent when the target equals S2 (it
    simply moved on) and otherwise *unsettled*: try again.  Returns (confirmed, unsettled)."""
    confirmed, unsettled = [], []
    for d in diffs:
        versions, rows = later.get(d.sk, ((), ()))
        if tuple(sorted(versions)) == d.versions:
            confirmed.append(d)
        elif Counter(rows) != Counter(d.target_values):
            unsettled.append(d)
    return confirmed, unsettled
