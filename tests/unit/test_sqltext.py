"""Row filters must be one SQL expression (issue 9: a filter check accepted and migrate refused)."""

from __future__ import annotations

import pytest

from replicator.sqltext import expression_problem


@pytest.mark.parametrize(
    "text",
    [
        "status <> 'draft'",
        "f(a) > (1)",
        "status <> 'dr)aft'",
        '"we)ird" > 1',
        "$$)$$ = x",
        "$t$ ; ) $t$ = x",
        "E'\\'' = ')'",
        "a /* ) */ > 1",
        "note = 'it''s (so)'",
    ],
)
def test_one_expression_is_accepted(text):
    assert expression_problem(text) is None


@pytest.mark.parametrize(
    "text, why",
    [
        ("aid > 0) OR (1=1", "closes a parenthesis"),
        ("aid > 0)) OR ((1=1", "closes a parenthesis"),
        ("a = 1; DROP TABLE t", "';'"),
        ("x > (1", "not closed"),
        ("x = 'open", "not closed"),
        ("a = 1 -- )", "-- comment"),
        ("   ", "empty"),
    ],
)
def test_text_that_is_not_one_expression_is_refused(text, why):
    assert why in (expression_problem(text) or "")
