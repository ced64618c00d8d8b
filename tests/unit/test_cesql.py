"""Focused tests of mesh.core.cesql beyond the TCK: parse errors, precedence, error modes."""

from __future__ import annotations

import pytest

from mesh.core.cesql import ErrorKind, EvalError, Expression, compile
from mesh.core.errors import CesqlError, FilterError
from mesh.core.event import AttrValue

EVENT: dict[str, AttrValue] = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "/sensors/7",
    "type": "com.example.a",
    "subject": "a/b.c",
    "hop": "5",
    "count": 3,
    "flag": True,
}


def value(source: str, attrs: dict[str, AttrValue] | None = None) -> bool | int | str:
    result, errors = compile(source).evaluate(EVENT if attrs is None else attrs)
    assert errors == [], errors
    return result


@pytest.mark.parametrize(
    ("source", "position"),
    [
        ("", 0),
        ("   ", 3),
        ("ABC(", 4),
        ("x LIKE 123", 7),
        ("x LIKE y", 7),
        ("1 +", 3),
        ("1 2", 2),
        ("4 -1", 2),  # the sign belongs to the literal: write 4 - 1
        ("a = 'abc", 4),
        ('a = "abc\\"', 4),
        ("a $ b", 2),
        ("a ! b", 2),
        ("x IN ()", 6),
        ("x IN (1, 2", 10),
        ("x IN (1 2)", 8),
        ("my_ext = 1", 0),
        ("a NOT b", 6),
        ("EXISTS 'a'", 7),
        ("(TRUE", 5),
        ("TRUE)", 4),
        ("CONCAT('a' 'b')", 11),
        ("2147483648", 0),
        ("1 + -2147483649", 4),
    ],
)
def test_parse_error_position(source: str, position: int) -> None:
    with pytest.raises(CesqlError) as info:
        compile(source)
    err = info.value
    assert (err.expression, err.position) == (source, position)
    assert err.reason
    assert isinstance(err, FilterError)


def test_int32_literal_bounds() -> None:
    assert value("2147483647") == 2147483647
    assert value("-2147483648") == -2147483648
    assert value("+0007") == 7
    for source in ("2147483648", "-2147483649", "9" * 4000, "- 2147483648"):
        with pytest.raises(CesqlError, match="32 bits"):
            compile(source)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # AND, OR and XOR share one level and group left to right.
        ("TRUE OR TRUE AND FALSE", False),  # (TRUE OR TRUE) AND FALSE
        ("FALSE AND TRUE OR TRUE", True),  # (FALSE AND TRUE) OR TRUE
        ("TRUE XOR TRUE OR TRUE", True),
        ("TRUE OR FALSE XOR TRUE", False),
        ("TRUE OR (TRUE AND FALSE)", True),
        # comparison < additive < multiplicative < IN < LIKE < unary
        ("1 + 2 * 3 = 7", True),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("100 / 10 / 5", 2),
        ("-2 * -3", 6),
        ("- 2 * 3", -6),
        ("NOT TRUE = FALSE", True),  # (NOT TRUE) = FALSE
        ("NOT FALSE AND FALSE", False),
        ("1 + 1 IN (2)", 1),  # 1 + (1 IN (2)) = 1 + FALSE
        ("2 * 2 IN (4)", 0),
        ("'a' LIKE 'a' IN (TRUE)", True),
        ("NOT EXISTS missing", True),
        ("-7 / 2", -3),  # truncated division
        ("-7 % 2", -1),  # sign of the dividend
        ("7 % -2", 1),
    ],
)
def test_precedence_and_arithmetic(source: str, expected: bool | int | str) -> None:
    assert value(source) == expected
    assert type(value(source)) is type(expected)


def test_short_circuit_raises_no_error() -> None:
    for source, expected in [
        ("false AND missing = 1", False),
        ("true OR missing = 1", True),
        ("FALSE AND 1 / 0 = 1", False),
        ("TRUE OR CONCAT_WS() OR 1 / 0 = 0", True),
        ("FALSE AND x AND y AND z", False),
    ]:
        expr = compile(source)
        assert expr.evaluate({}) == (expected, [])
        assert expr.evaluate({}, fail_fast=False) == (expected, [])


def test_matches_is_false_on_any_error_or_non_boolean() -> None:
    assert compile("type = 'com.example.a'").matches(EVENT) is True
    for source in (
        "missing = 1 OR TRUE",  # error first
        "TRUE AND 1 / 0 = 0",
        "NOT missing",
        "INT('x') = 0",
        "ABS(-2147483648) > 0",
        "UNKNOWN(1)",
        "1 + 1",  # Integer, not Boolean
        "'true'",  # String, not Boolean
        "count",
    ):
        assert compile(source).matches(EVENT) is False, source


def test_fail_fast_value_and_first_error() -> None:
    # The raising node's own value when it is the root, else the root's zero value.
    assert compile("ABS(-2147483648)").evaluate({})[0] == 2147483647
    assert compile("ABS(-2147483648) + 0").evaluate({})[0] == 0
    assert compile("LEFT('abc', -1)").evaluate({})[0] == "abc"
    assert compile("CONCAT(LEFT('abc', -1))").evaluate({})[0] == ""
    assert compile("missing").evaluate({}) == (
        False,
        [EvalError(ErrorKind.MISSING_ATTRIBUTE, "attribute 'missing' is not in the event")],
    )
    value_, errors = compile("1 / 0 + missing").evaluate({})
    assert value_ == 0
    assert [e.kind for e in errors] == [ErrorKind.MATH]


def test_complete_mode_collects_every_error() -> None:
    expr = compile("a = 1 OR b = 2 OR 1 / 0 = 1 OR INT('x') = 0")
    result, errors = expr.evaluate({}, fail_fast=False)
    assert [e.kind for e in errors] == [
        ErrorKind.MISSING_ATTRIBUTE,
        ErrorKind.MISSING_ATTRIBUTE,
        ErrorKind.MATH,
        ErrorKind.CAST,
    ]
    assert result is True  # INT('x') is 0 with a cast error: 0 = 0
    assert expr.evaluate({})[1] == [errors[0]]
    # A missing operand: the operator returns its zero value, no error of its own.
    assert compile("1 / missing").evaluate({}, fail_fast=False) == (
        0,
        [EvalError(ErrorKind.MISSING_ATTRIBUTE, "attribute 'missing' is not in the event")],
    )
    result, errors = compile("UNKNOWN(missing)").evaluate({}, fail_fast=False)
    assert result is False
    assert [e.kind for e in errors] == [ErrorKind.MISSING_FUNCTION, ErrorKind.MISSING_ATTRIBUTE]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'a%' LIKE 'a\\%'", True),
        ("'ab' LIKE 'a\\%'", False),
        ("'a_' LIKE 'a\\_'", True),
        ("'ab' LIKE 'a\\_'", False),
        ("'a\\b' LIKE 'a\\b'", True),  # other backslashes are literal
        ("'a\\%' LIKE 'a\\\\%'", True),  # \\% is a backslash then an escaped %
        ("'a.c' LIKE 'a.c'", True),  # regex metacharacters are literal
        ("'abc' LIKE 'a.c'", False),
        ("'(x)+' LIKE '(%)+'", True),
        ("'a\nb' LIKE 'a_b'", True),  # _ and % match newlines too
        ("'a\nb' LIKE 'a%'", True),
        ("'' LIKE ''", True),
        ("'x' LIKE ''", False),
        ("'' LIKE '%'", True),
        ("'abc' LIKE '%%c'", True),
        ("'abc' LIKE '%b%'", True),
        ("'abc' LIKE '%B%'", False),  # case-sensitive
        ("'abc' LIKE 'ab'", False),  # whole string
        ("'é' LIKE '_'", True),  # one code point
        ("hop LIKE '5'", True),
        ("count LIKE '3'", True),  # Integer is cast to String
        ("flag LIKE 'tr%'", True),
        ("subject NOT LIKE 'a/%'", False),
    ],
)
def test_like(source: str, expected: bool) -> None:
    assert value(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'it''s'", "it's"),
        ('"say ""hi"""', 'say "hi"'),
        ("'a\\'b'", "a'b"),
        ('"a\\"b"', 'a"b'),
        ("'a\\\"b'", 'a\\"b'),
        ("'tab\\t'", "tab\\t"),
        ("'😀'", "😀"),
    ],
)
def test_string_literals(source: str, expected: str) -> None:
    assert value(source) == expected


def test_names_and_keywords_are_case_insensitive() -> None:
    assert value("TYPE = 'com.example.a' aNd ExIsTs SUBJECT") is True
    assert value("lower(Type) like 'COM%'") is False
    assert value("Int(HOP) < 6") is True
    assert value("concat_ws('-', 'a', 'b')") == "a-b"


def test_implicit_casts() -> None:
    assert value("hop = 5") is True  # String attribute cast to the right type
    assert value("5 = hop") is True
    assert value("count = '3'") is True
    assert value("flag = 'TRUE'") is False  # right type String: 'true' != 'TRUE'
    assert value("'TRUE' = flag") is True
    assert value("1 = TRUE") is True
    assert value("count + hop") == 8
    assert value("count IN ('1', '3')") is True
    assert value("hop IN (5, 6)") is True  # hop's type (String) is the target: 5 -> '5'
    assert value("hop IN ('05')") is False
    assert value("5 IN ('05')") is True  # Integer target: '05' -> 5
    result, errors = compile("5 IN ('x', 5)").evaluate({}, fail_fast=False)
    assert (result, [e.kind for e in errors]) == (True, [ErrorKind.CAST])
    assert compile("5 IN ('x', 5)").evaluate({}) == (
        False,
        [EvalError(ErrorKind.CAST, "cannot cast 'x' to Integer")],
    )


def test_integer_overflow_is_a_math_error() -> None:
    for source, saturated in [
        ("2147483647 + 1", 2147483647),
        ("-2147483648 - 1", -2147483648),
        ("65536 * 65536", 2147483647),
        ("-(-2147483648)", 2147483647),
        ("-2147483648 / -1", 2147483647),
    ]:
        result, errors = compile(source).evaluate({})
        assert (result, [e.kind for e in errors]) == (saturated, [ErrorKind.MATH]), source
    assert value("-2147483648 % -1") == 0


def test_functions() -> None:
    assert value("SUBSTRING('abc', 3)") == "c"
    assert value("SUBSTRING('abc', -3)") == "abc"
    assert value("SUBSTRING('abc', 2, 0)") == ""
    assert value("SUBSTRING('', 0)") == ""
    assert value("RIGHT('abc', 0)") == ""
    assert value("LEFT('abc', 0)") == ""
    assert value("TRIM('\u3000 x\t\n')") == "x"  # Unicode White_Space
    assert value("TRIM('\x1cx')") == "\x1cx"  # U+001C is not White_Space
    assert value("LENGTH('😀é')") == 2
    assert value("UPPER(count)") == "3"
    assert value("CONCAT(1, TRUE, 'x')") == "1truex"
    assert value("LENGTH(hop + 10)") == 2
    result, errors = compile("SUBSTRING('abc', 1, -1)").evaluate({})
    assert (result, [e.kind for e in errors]) == ("", [ErrorKind.FUNCTION_EVALUATION])
    result, errors = compile("LEFT('abc', 'x')").evaluate({})
    assert (result, [e.kind for e in errors]) == ("", [ErrorKind.CAST])


def test_unknown_function_or_arity_parses_and_fails_at_evaluation() -> None:
    for source in (
        "NOPE()",
        "nope(1, 2)",
        "LOWER()",
        "LOWER('a', 'b')",
        "SUBSTRING('a')",
        "MY_FN(1)",
    ):
        expr = compile(source)
        result, errors = expr.evaluate({})
        assert (result, [e.kind for e in errors]) == (False, [ErrorKind.MISSING_FUNCTION])


def test_nesting_is_bounded() -> None:
    assert value("(" * 50 + "1" + ")" * 50) == 1
    assert value(" OR ".join(["FALSE"] * 400)) is False  # flat chains are one node
    assert value(" AND ".join(["TRUE"] * 400)) is True
    for source in ("(" * 500 + "1" + ")" * 500, "NOT " * 500 + "TRUE", " + ".join(["1"] * 500)):
        with pytest.raises(CesqlError, match="nested"):
            compile(source)


def test_expression_object() -> None:
    source = "type = 'com.example.a' AND subject LIKE 'a%'"
    expr = compile(source)
    assert isinstance(expr, Expression)
    assert expr.source == source
    assert repr(expr) == f"Expression({source!r})"
    assert expr.matches(EVENT) is True
    assert expr.matches({**EVENT, "subject": "b"}) is False
    assert expr.matches({**EVENT, "type": "com.example.b"}) is False
