"""verify's range logic without servers: scan (ordered checksums), drill-down, settlement,
range predicates (checked against the sort order by brute force), and the report lines."""

from __future__ import annotations

import itertools

import pytest

from replicator.verify.ranges import OrderError, classify, drill, merge, scan
from replicator.verify.run import Settings, TableCheck, render
from replicator.verify.sql import _Flavour, compile_row, compile_sort_key, lex


def rows(pairs, version=None):
    """(key, payload) pairs → verify rows (sort key, canonical values, raw key, version)."""
    return [(k, (k, v), (k,), version) for k, v in pairs]


def table(n, change=None):
    return rows([(k, change.get(k, f"v{k}") if change else f"v{k}") for k in range(1, n + 1)])


# ----------------------------------------------------------------------------- scan
def test_scan_equal_sides_cut_into_ranges_of_chunk_keys():
    out = list(scan(table(25), table(25), 10))
    assert [(r.lo and r.lo[0], r.hi and r.hi[0]) for r in out] == [(None, 10), (10, 20), (20, None)]
    assert [r.source_rows for r in out] == [10, 10, 5]
    assert all(r.equal for r in out)


def test_scan_points_at_the_range_of_a_changed_missing_or_extra_row():
    tgt = [r for r in table(30, {14: "changed"}) if r[0] != 25] + rows([(40, "v40")])
    out = list(scan(table(30), tgt, 10))
    assert [r.equal for r in out] == [True, False, False]
    assert (out[1].lo[0], out[1].hi[0]) == (10, 20)
    assert (out[1].first[0], out[1].last[0], out[2].first[0], out[2].last[0]) == (11, 20, 21, 40)
    assert (out[2].source_rows, out[2].target_rows) == (10, 10)  # 25 missing, 40 extra (last range)


def test_scan_never_splits_equal_keys_across_ranges():
    src = rows([(1, "a"), (2, "a"), (2, "b"), (2, "c"), (3, "a")])
    out = list(scan(src, list(src), 2))
    assert [r.source_rows for r in out] == [4, 1]
    assert all(r.equal for r in out)


def test_scan_empty_source_puts_every_target_row_in_one_range():
    out = list(scan([], table(3), 10))
    assert len(out) == 1 and (out[0].lo, out[0].hi) == (None, None)
    assert (out[0].source_rows, out[0].target_rows) == (0, 3) and not out[0].equal


def test_scan_digest_tells_minus_one_from_minus_two():
    assert not list(scan(rows([(1, -1)]), rows([(1, -2)]), 10))[0].equal


def test_scan_refuses_rows_out_of_order():
    with pytest.raises(OrderError, match="target rows are not ordered"):
        list(scan(table(3), rows([(2, "v2"), (1, "v1")]), 10))


def test_scan_is_a_stream():
    """Ranges come out while the sides are still being read: nothing is held beyond a range."""
    consumed = []

    def src():
        for r in table(1000):
            consumed.append(r[0])
            yield r

    it = scan(src(), iter(table(1000)), 10)
    next(it)
    assert len(consumed) <= 11


# ----------------------------------------------------------------------------- drill
def test_drill_lists_keys_by_kind_within_subranges():
    src = table(50)
    tgt = [r for r in table(50, {7: "x"}) if r[0] != 33] + rows([(60, "new")])
    d = drill(src, tgt, sub=10, keyed=True, max_diffs=100)
    kinds = [(x.kind, x.sk) for x in d.diffs]
    assert kinds == [("changed", 7), ("missing", 33), ("extra", 60)]
    assert [(s.first[0], s.last[0]) for s in d.subranges] == [(1, 10), (31, 40), (41, 60)]
    assert d.diffs[0].columns == (1,)
    assert (d.source_rows, d.target_rows) == (50, 50)


def test_drill_keeps_at_most_max_diffs_but_counts_all():
    d = drill(table(30), [], sub=10, keyed=True, max_diffs=5)
    assert len(d.diffs) == 5 and d.diff_count == 30


def test_drill_without_key_compares_multisets_of_rows():
    src = rows([(1, "a"), (1, "a"), (2, "b")])
    tgt = rows([(1, "a"), (2, "b"), (2, "b")])
    d = drill(src, tgt, sub=10, keyed=False, max_diffs=10)
    assert [(x.kind, x.sk) for x in d.diffs] == [("missing", 1), ("extra", 2)]


def test_merge_groups_equal_keys_of_both_sides():
    got = [(k, len(s), len(t)) for k, s, t in merge(rows([(1, "a"), (3, "c")]), rows([(2, "b"), (3, "c")]))]
    assert got == [(1, 1, 0), (2, 0, 1), (3, 1, 1)]


# ----------------------------------------------------------------------------- live settlement
def test_classify_confirms_stable_rows_and_retries_moving_ones():
    src = rows([(1, "a"), (2, "b"), (3, "c")], version="100")
    tgt = rows([(1, "x"), (2, "b2"), (3, "c3")])
    diffs = drill(src, tgt, 10, True, 10).diffs
    later = {
        1: (["100"], [(1, "a")]),  # same version in S2: the target must hold it
        2: (["200"], [(2, "b2")]),  # changed, and the target has the new value
        3: (["300"], [(3, "c4")]),
    }  # changed, target holds neither: look again
    confirmed, unsettled = classify(diffs, later)
    assert [d.sk for d in confirmed] == [1] and [d.sk for d in unsettled] == [3]


def test_classify_row_deleted_meanwhile_is_consistent():
    diffs = drill(rows([(5, "a")], version="7"), [], 10, True, 10).diffs
    assert classify(diffs, {}) == ([], [])


# ----------------------------------------------------------------------------- predicates
class V:
    """A SQL value with three-valued comparisons (None is NULL)."""

    def __init__(self, v):
        self.v = v

    def _cmp(self, o, f):
        return None if self.v is None or o is None else f(self.v, o)

    def __gt__(self, o):
        return self._cmp(o, lambda a, b: a > b)

    def __lt__(self, o):
        return self._cmp(o, lambda a, b: a < b)

    def __eq__(self, o):
        return self._cmp(o, lambda a, b: a == b)

    __hash__ = None


def and3(parts):
    parts = list(parts)
    return False if False in parts else None if None in parts else True


def or3(parts):
    parts = list(parts)
    return True if True in parts else None if None in parts else False


def nulls_last(key):
    return tuple((v is None, v if v is not None else 0) for v in key)


@pytest.mark.parametrize("op", [">", "<="])
@pytest.mark.parametrize("nullable", [False, True])
def test_range_predicates_match_the_sort_order(op, nullable):
    domain = [1, 2, None] if nullable else [1, 2, 3]
    keys = list(itertools.product(domain, repeat=2))
    for row, bound in itertools.product(keys, keys):
        f = _Flavour(
            lambda i: V(row[i]),
            lambda i: bound[i],
            lambda i: nullable,
            lambda c: c.v is None,
            lambda c: c.v is not None,
            and3,
            or3,
        )
        got = f.bound(2, op) is True
        want = nulls_last(row) > nulls_last(bound) if op == ">" else nulls_last(row) <= nulls_last(bound)
        assert got == want, (row, op, bound)


def test_lex_shape():
    out = lex(
        2,
        ">",
        lambda i: f"k{i}>b{i}",
        lambda i: f"k{i}<b{i}",
        lambda i: f"k{i}=b{i}",
        lambda p: "(" + " AND ".join(p) + ")",
        lambda p: " OR ".join(p),
    )
    assert out == "(k0>b0) OR (k0=b0 AND k1>b1)"


# ----------------------------------------------------------------------------- generated code
def test_compiled_row_converts_only_what_needs_it():
    calls = []

    def text(v):
        calls.append(v)
        return None if v is None else str(v)

    conv = compile_row([int, text, lambda v: v * 2], ["int4", "text", "numeric"])
    assert conv(("5", "x", 3)) == (5, "x", 6)
    assert conv((5, None, 1)) == (5, None, 2)
    assert calls == [None]  # a str is already canonical text: no call


def test_compiled_sort_key():
    single = compile_sort_key([lambda raw, c: c], [1], [True])
    assert single(("r",), ("a", "b")) == "b"
    multi = compile_sort_key([lambda raw, c: c, lambda raw, c: raw.upper()], [0, 1], [True, False])
    assert multi(("x", "y"), ("a", "b")) == ("a", "Y")


# ----------------------------------------------------------------------------- report
def doc(**t):
    base = {
        "source": "public.t",
        "target": "t",
        "equal": True,
        "source_rows": 123,
        "target_rows": 123,
        "ranges": [],
        "differing_ranges": 0,
        "truncated": False,
        "unsettled": 0,
        "error": None,
    }
    return {"tables": [{**base, **t}], "equal": t.get("equal", True)}


def test_render_lines():
    assert render(doc()) == "public.t: OK 123 rows"
    rng = {
        "from": {"id": 5},
        "to": {"id": 9},
        "missing": [{"id": 7}],
        "extra": [],
        "changed": [{"id": 8}],
        "columns": ["balance"],
    }
    line = render(doc(equal=False, source_rows=10, target_rows=9, ranges=[rng], differing_ranges=1))
    assert line == (
        "public.t: DIFFERS rows source 10 target 9; keys 5..9: missing on target id=7, changed id=8 (balance)"
    )
    assert (
        render(doc(equal=False, error="target table t does not exist"))
        == "public.t: ERROR target table t does not exist"
    )
    assert "2 row(s) changing" in render(doc(unsettled=2))


def _check(max_keys, max_ranges, found):
    from replicator.verify.run import _Found, _Range

    check = TableCheck.__new__(TableCheck)
    check.s = Settings(max_keys=max_keys, max_ranges=max_ranges)
    check.doc = {"ranges": [], "error": None}

    class Plan:
        source_names, key_idx = ("id", "v"), [0]

    check.plan = Plan()
    check.found = []
    for lo, hi, d in found:
        first, last = (lo + 1, (lo + 1, "")), (hi, (hi, ""))
        check.found.append(
            _Found(
                _Range((lo,), (hi,), 0, 0, (first[0], first[1]), (last[0], last[1])),
                [(s.first, s.last, s.diffs) for s in d.subranges],
            )
        )
    check._report([])
    return check.doc


def test_report_caps_keys_then_lists_other_ranges_without_keys():
    d = drill(table(40), [], 10, True, 100)  # 4 sub-ranges of 10 missing keys
    doc = _check(3, 5, [(0, 40, d)])
    assert [(r["from"], r["to"], len(r["missing"])) for r in doc["ranges"]] == [({"id": 1}, {"id": 10}, 3)]
    assert doc["truncated"] and doc["differing_ranges"] == 1 and doc["equal"] is False
    other = drill(rows([(50, "x")]), [], 10, True, 100)
    doc = _check(3, 5, [(0, 40, d), (40, 60, other)])
    assert doc["ranges"][1] == {
        "from": {"id": 41},
        "to": {"id": 60},
        "missing": [],
        "extra": [],
        "changed": [],
        "columns": [],
    }
    assert "keys 41..60 differ; more not listed (2 differing range(s) in all)" in render(
        {"tables": [{**doc, "source": "public.t", "source_rows": 41, "target_rows": 0, "unsettled": 0}]}
    )
    doc = _check(100, 2, [(0, 40, d)])  # ranges capped before keys
    assert len(doc["ranges"]) == 2 and sum(len(r["missing"]) for r in doc["ranges"]) == 20
