"""Filters and CESQL expressions come from peers: their size and nesting are bounded."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.core.cesql import MAX_EXPRESSION_LENGTH, compile
from mesh.core.errors import CesqlError, FilterError
from mesh.core.filters import MAX_FILTER_BYTES, MAX_FILTER_DEPTH, compile_filter
from mesh.core.frames import InterestRefused, parse_interest

LEAF: dict[str, Any] = {"exact": {"type": "a"}}


def nested(levels: int, dialect: str = "not") -> Any:
    spec: Any = LEAF
    for _ in range(levels):
        spec = {"not": spec} if dialect == "not" else {dialect: [spec]}
    return spec


@pytest.mark.parametrize("dialect", ["not", "all", "any"])
def test_nesting_up_to_the_limit_compiles(dialect: str) -> None:
    pred = compile_filter(nested(MAX_FILTER_DEPTH - 1, dialect))
    expected = dialect != "not" or (MAX_FILTER_DEPTH - 1) % 2 == 0
    assert pred({"type": "a"}) is expected


@pytest.mark.parametrize("levels", [MAX_FILTER_DEPTH + 1, 200, 300, 5000])
def test_nesting_beyond_the_limit_is_a_filter_error_naming_it(levels: int) -> None:
    with pytest.raises(FilterError, match=f"{MAX_FILTER_DEPTH} levels"):
        compile_filter(nested(levels))


def test_nested_lists_count_as_levels() -> None:
    spec: Any = LEAF
    for _ in range(MAX_FILTER_DEPTH + 1):
        spec = [spec]
    with pytest.raises(FilterError, match=f"{MAX_FILTER_DEPTH} levels"):
        compile_filter(spec)


def test_a_filter_beyond_the_size_limit_is_refused() -> None:
    many = {"any": [{"exact": {"subject": f"s{i:06d}"}} for i in range(3000)]}
    with pytest.raises(FilterError, match=f"exceeds the limit of {MAX_FILTER_BYTES}"):
        compile_filter(many)
    few = {"any": many["any"][:1000]}  # about 30 KB
    assert compile_filter(few)({"subject": "s000999"}) is True


def test_a_long_cesql_expression_is_refused_naming_the_limit() -> None:
    ok = "subject = '" + "x" * (MAX_EXPRESSION_LENGTH - 12) + "'"
    assert len(ok) == MAX_EXPRESSION_LENGTH
    assert compile(ok).matches({"subject": "x" * (MAX_EXPRESSION_LENGTH - 12)})
    with pytest.raises(CesqlError, match=f"limit of {MAX_EXPRESSION_LENGTH}"):
        compile(ok + " ")
    with pytest.raises(FilterError, match=f"limit of {MAX_EXPRESSION_LENGTH}"):
        compile_filter({"sql": " OR ".join(["TRUE"] * 2000)})


def test_deep_cesql_nesting_is_refused() -> None:
    with pytest.raises(FilterError, match="nested"):
        compile_filter({"sql": "(" * 200 + "TRUE" + ")" * 200})


def interest(spec: Any) -> dict[str, Any]:
    return {"origin": "site-c", "pattern": "a/#", "filter": spec, "path": ["site-c", "site-b"]}


@pytest.mark.parametrize(
    ("spec", "limit"),
    [
        (nested(MAX_FILTER_DEPTH + 1), f"{MAX_FILTER_DEPTH} levels"),
        (nested(1000), f"{MAX_FILTER_DEPTH} levels"),
        ({"any": [{"exact": {"subject": "s" * 100}}] * 700}, f"limit of {MAX_FILTER_BYTES}"),
        ({"sql": "TRUE OR " * 600 + "TRUE"}, f"limit of {MAX_EXPRESSION_LENGTH}"),
        ({"sql": "subject LIKE '" + "%a" * 200 + "%b'"}, None),  # bounded LIKE: accepted
    ],
)
def test_a_peer_interest_over_a_limit_is_refused_with_the_reason(
    spec: Any, limit: str | None
) -> None:
    parsed = parse_interest(interest(spec), "site-b")
    if limit is None:
        assert not isinstance(parsed, InterestRefused)
        return
    assert isinstance(parsed, InterestRefused)
    assert parsed.code == "filter"
    assert limit in parsed.detail
