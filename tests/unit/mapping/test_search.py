"""The mapping engine's JMESPath search (engine._search, its own functions for names, ``a.b``,
``a[0]`` and ``a || b``) answers what JMESPath answers, whatever the document."""

from __future__ import annotations

from typing import Any

import jmespath
from hypothesis import given, settings
from hypothesis import strategies as st

from m3bng.mapping.engine import _search

EXPRESSIONS = [
    "a",
    "a.b",
    "a.b.c",
    "a[0]",
    "a[-1]",
    "a.b[0]",
    "a.b[1].c",
    "a[0][1]",
    "a || b",
    "a.b[0] || a.b",
    "a.c || a.b || b",
    "a[0:2]",
    "a[*].b",
    "a == 'x'",
    "a.b == `1`",
    "length(a)",
    '"a b".c',
    "_ctx.BngID",
]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["", "x", "1"]), st.just(0.0)
)
keys = st.sampled_from(["a", "b", "c", "a b", "_ctx", "BngID"])
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=400)
@given(documents, st.sampled_from(EXPRESSIONS))
def test_search_answers_what_jmespath_answers(document: Any, expression: str) -> None:
    try:
        expected: Any = ("ok", jmespath.search(expression, document))
    except jmespath.exceptions.JMESPathError as exc:
        expected = ("error", type(exc))
    try:
        got: Any = ("ok", _search(expression, document))
    except jmespath.exceptions.JMESPathError as exc:
        got = ("error", type(exc))
    assert got == expected
