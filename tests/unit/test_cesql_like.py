"""CESQL LIKE: a linear-time matcher that agrees with a regex reference.

A LIKE pattern comes from peers and clients; the regex the matcher used to
build backtracked exponentially on ``'%a%a%a…b'`` (20.9 s for one event).
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mesh.core.cesql import compile


def reference(pattern: str) -> re.Pattern[str]:
    """The LIKE semantics as a regex: % any run, _ one code point, \\% and \\_ literal."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def like(value: str, pattern: str) -> bool:
    assert "'" not in pattern and not pattern.endswith("\\")  # kept literal in the source
    return compile(f"subject LIKE '{pattern}'").matches({"subject": value})


patterns = st.text(alphabet="ab%_\\", max_size=12).filter(lambda p: not p.endswith("\\"))
values = st.text(alphabet="ab%_\\\n", max_size=16)


@settings(max_examples=3000, deadline=None)
@given(patterns, values)
@example("a%b", "ab")
@example("%a_", "aab")
@example("_%_", "a")
@example("\\%%", "%x")
@example("%\\_", "a_")
@example("a%%a", "a")
def test_like_agrees_with_the_regex_reference(pattern: str, value: str) -> None:
    assert like(value, pattern) is (reference(pattern).fullmatch(value) is not None)


@settings(max_examples=500, deadline=None)
@given(patterns, values)
def test_not_like_is_the_negation(pattern: str, value: str) -> None:
    expr = compile(f"subject NOT LIKE '{pattern}'")
    assert expr.matches({"subject": value}) is not like(value, pattern)


@pytest.mark.parametrize(
    ("value", "pattern", "expected"),
    [
        ("a%c", "a\\%c", True),
        ("abc", "a\\%c", False),
        ("a_c", "a\\_c", True),
        ("abc", "a\\_c", False),
        ("a\\c", "a\\c", True),  # a backslash before anything else is literal
        ("abc", "a_c", True),
        ("ac", "a_c", False),
        ("a\nc", "a_c", True),  # _ matches a newline
        ("é", "_", True),  # one code point, not one byte
        ("ABC", "abc", False),  # case-sensitive, as the spec says
        ("ABC", "a%", False),
        ("abc", "%B%", False),
        ("xabcabcx", "%abc_abc%", False),
        ("xabcxabcx", "%abc_abc%", True),
        ("aXbXc", "a%b%c", True),
        ("abcb", "%b", True),
        ("ab", "%ab%ab%", False),  # segments may not overlap
        ("abab", "%ab%ab%", True),
        ("aba", "ab%ba", False),  # nor may the first and the last
    ],
)
def test_like_cases(value: str, pattern: str, expected: bool) -> None:
    assert like(value, pattern) is expected


@pytest.mark.parametrize("tail", ["b", "_b", "a_"])
def test_a_pathological_pattern_is_fast(tail: str) -> None:
    # 200 % segments against 10 KB that nearly matches: a backtracking regex
    # takes longer than the age of the universe here.
    pattern = "%a" * 200 + "%" + tail
    value = "a" * 10_000
    expr = compile(f"subject LIKE '{pattern}'")
    start = time.perf_counter()
    result = expr.matches({"subject": value})
    elapsed = time.perf_counter() - start
    assert result is (tail == "a_")
    assert elapsed < 1.0, f"{elapsed:.2f} s"
