"""CESQL v1.0: the CloudEvents SQL expression language, parsed once and evaluated fast.

Usage::

    expr = compile("type = 'com.example.a' AND subject LIKE 'a%'")  # CesqlError if invalid
    expr.matches(event.attrs)                       # filter semantics: True only for TRUE, no error
    value, errors = expr.evaluate(event.attrs)      # fail-fast: at most one error
    value, errors = expr.evaluate(event.attrs, fail_fast=False)  # complete: every error

``compile`` turns the text into a tree of closures: LIKE patterns become
``str`` method calls or a greedy segment matcher (linear in the value for each
``%`` segment, never backtracking), literal casts and ``IN``
sets of literals are done once, and AND/OR chains are flattened. ``attrs`` are
a CloudEvent's context attributes (``str``, or ``int``/``bool`` for typed
extensions); the expression never looks at ``data``.

Semantics follow the v1.0 spec, its ANTLR grammar and the public TCK. Where
they leave a choice open, this module decides as follows:

* AND, OR and XOR share one precedence level and group left to right
  (``a AND b OR c`` is ``(a AND b) OR c``), as the spec prose says; the ANTLR
  grammar marks the rule right-associative. Use parentheses.
* Unary ``NOT`` and ``-`` bind tighter than every binary operator, LIKE and
  IN, as in the grammar: ``NOT a = b`` is ``(NOT a) = b``.
* A sign directly before digits is part of the integer literal, as in the
  grammar's lexer: ``4 -1`` does not parse; write ``4 - 1``.
* In string literals ``\\'`` (``\\"`` in double quotes) and a doubled quote
  both stand for the quote character; any other backslash is kept literally.
  In LIKE patterns only ``\\%`` and ``\\_`` are escapes.
* Fail-fast mode stops at the first error. The node that raised it yields
  its defined value (``ABS(-2147483648)`` is 2147483647, ``LEFT('abc', -2)``
  is ``'abc'``, most others their zero value); every enclosing node yields
  the zero value of its type, so the whole expression returns the raising
  node's value if it is the root, else the root's zero value (``FALSE`` when
  the root is a bare attribute).
* Complete mode evaluates the same nodes (AND/OR still short-circuit; IN
  and function arguments are always evaluated in full) and collects every
  error. Values flow on after an error, except that an operator or function
  whose operand is a missing attribute, or could not be cast, returns its
  zero value without raising errors of its own (``1 / missing`` raises only
  the missing-attribute error).
* Integer results outside int32 (``2147483647 + 1``, ``-(-2147483648)``,
  ``-2147483648 / -1``) raise a math error and saturate, like ``ABS``.
* ``TRIM`` strips Unicode White_Space characters only. ``SUBSTRING`` checks
  ``pos`` range and a negative ``len`` before treating ``pos = 0``.
* An unknown function, or a known one called with the wrong number of
  arguments, parses; evaluating it raises a missing-function error with value
  ``FALSE`` (the TCK's ``CONCAT_WS()`` case).
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, NoReturn, TypeAlias, cast

from mesh.core.errors import CesqlError
from mesh.core.event import AttrValue

__all__ = ["MAX_EXPRESSION_LENGTH", "ErrorKind", "EvalError", "Expression", "Value", "compile"]

Value: TypeAlias = bool | int | str


class ErrorKind(enum.Enum):
    """The CESQL error kinds; the values are the TCK spellings."""

    PARSE = "parse"
    MATH = "math"
    CAST = "cast"
    MISSING_ATTRIBUTE = "missingAttribute"
    MISSING_FUNCTION = "missingFunction"
    FUNCTION_EVALUATION = "functionEvaluation"
    GENERIC = "generic"


@dataclass(frozen=True, slots=True)
class EvalError:
    """One error raised while evaluating an expression."""

    kind: ErrorKind
    message: str


# --------------------------------------------------------------------------
# Evaluation machinery
#
# Every node compiles to a closure ``fn(attrs, errs)``. ``errs`` is None in
# fail-fast mode: an error raises ``_Fail`` and unwinds to ``Expression``.
# In complete mode ``errs`` is a list that errors are appended to; a node
# whose value cannot be had (a missing attribute, a failed implicit cast)
# then returns ``_FAILED`` and its parent returns the parent's zero value.


class _Sentinel(enum.Enum):
    FAILED = "failed"


_FAILED: Final = _Sentinel.FAILED
_Failed: TypeAlias = Literal[_Sentinel.FAILED]
_Out: TypeAlias = Value | _Failed
_Attrs: TypeAlias = Mapping[str, AttrValue]
_Errs: TypeAlias = list[EvalError] | None
_Fn: TypeAlias = Callable[[_Attrs, _Errs], _Out]
_IntFn: TypeAlias = Callable[[_Attrs, _Errs], int | _Failed]
_BoolFn: TypeAlias = Callable[[_Attrs, _Errs], bool | _Failed]
_StrFn: TypeAlias = Callable[[_Attrs, _Errs], str | _Failed]
_Type: TypeAlias = type[bool] | type[int] | type[str]

_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1
_MAX_DEPTH: Final = 100
MAX_EXPRESSION_LENGTH: Final = 4096
"""The longest expression :func:`compile` accepts, in characters."""
_ZERO: Final[dict[_Type | None, Value]] = {bool: False, int: 0, str: "", None: False}
_TYPE_NAME: Final[dict[_Type, str]] = {bool: "Boolean", int: "Integer", str: "String"}
_INT_TEXT: Final = re.compile(r"([+-]?)0*([0-9]{1,10})")
# Unicode White_Space (str.strip() would also strip U+001C..U+001F).
_WHITESPACE: Final = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


class _Fail(Exception):
    """Fail-fast unwinding: the first error, and the raising node's own value."""

    def __init__(self, error: EvalError, value: Value, origin: object) -> None:
        super().__init__(error.message)
        self.error = error
        self.value = value
        self.origin = origin


def _report(
    errs: _Errs, kind: ErrorKind, message: str, value: Value = False, origin: object = None
) -> None:
    """Raise (fail-fast) or record (complete) one error.

    ``value``/``origin`` matter in fail-fast mode only: when ``origin`` is the
    root node's token, the expression's value is ``value``.
    """
    error = EvalError(kind, message)
    if errs is None:
        raise _Fail(error, value, origin)
    errs.append(error)


def _missing(errs: _Errs, name: str) -> None:
    _report(errs, ErrorKind.MISSING_ATTRIBUTE, f"attribute '{name}' is not in the event")


def _show(v: Value) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    return "'" + v.replace("'", "\\'") + "'"


def _to_int(v: Value) -> int | None:
    """CESQL cast to Integer; None when the cast fails."""
    if isinstance(v, str):
        m = _INT_TEXT.fullmatch(v)
        if m is None:
            return None
        n = int(m[2])
        if m[1] == "-":
            n = -n
        return n if _INT_MIN <= n <= _INT_MAX else None
    return int(v)


def _to_bool(v: Value) -> bool | None:
    """CESQL cast to Boolean; None when the cast fails."""
    if isinstance(v, str):
        low = v.lower()
        if low == "true":
            return True
        if low == "false":
            return False
        return None
    return v != 0


def _to_str(v: Value) -> str:
    """CESQL cast to String (never fails)."""
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


_CASTS: Final[dict[type[object], Callable[[Value], Value | None]]] = {
    int: _to_int,
    bool: _to_bool,
    str: _to_str,
}


def _cast_message(v: Value, target: _Type) -> str:
    return f"cannot cast {_show(v)} to {_TYPE_NAME[target]}"


def _saturate(n: int, errs: _Errs, origin: object) -> int:
    if _INT_MIN <= n <= _INT_MAX:
        return n
    clamped = _INT_MAX if n > _INT_MAX else _INT_MIN
    _report(errs, ErrorKind.MATH, f"integer overflow: {n} does not fit in 32 bits", clamped, origin)
    return clamped


class _Node:
    """A compiled subexpression: its closure and what is known statically."""

    __slots__ = ("chain", "const", "depth", "fn", "ident", "tok", "type")

    def __init__(
        self,
        fn: _Fn,
        type_: _Type | None,
        depth: int,
        *,
        const: Value | None = None,
        ident: str | None = None,
        tok: object = None,
        chain: tuple[str, list[_Node]] | None = None,
    ) -> None:
        self.fn = fn
        self.type = type_  # None: only known at run time (an attribute)
        self.depth = depth
        self.const = const  # the value of a literal
        self.ident = ident  # the name of a bare attribute reference
        # Identity used as the origin of this node's own errors.
        self.tok = tok if tok is not None else object()
        self.chain = chain  # ("AND" | "OR", operands) of a flattened chain


def _depth(*nodes: _Node) -> int:
    return 1 + max((n.depth for n in nodes), default=0)


def _const_fn(v: Value) -> _Fn:
    def const(a: _Attrs, e: _Errs) -> _Out:
        return v

    return const


# ---- operands cast to the type an operator or function expects -----------


def _int_operand(node: _Node) -> _IntFn:
    fn = node.fn
    if node.type is int:
        return cast(_IntFn, fn)
    if node.const is not None:
        n = _to_int(node.const)
        if n is not None:
            return cast(_IntFn, _const_fn(n))
    if node.type is bool:

        def from_bool(a: _Attrs, e: _Errs) -> int | _Failed:
            return 1 if fn(a, e) else 0

        return from_bool

    def to_int(a: _Attrs, e: _Errs) -> int | _Failed:
        v = fn(a, e)
        if type(v) is int:
            return v
        if v is _FAILED:
            return v
        n = _to_int(v)
        if n is None:
            _report(e, ErrorKind.CAST, _cast_message(v, int))
            return _FAILED
        return n

    return to_int


def _bool_operand(node: _Node) -> _BoolFn:
    fn = node.fn
    if node.type is bool:
        return cast(_BoolFn, fn)
    if node.const is not None:
        b = _to_bool(node.const)
        if b is not None:
            return cast(_BoolFn, _const_fn(b))
    if node.type is int:

        def from_int(a: _Attrs, e: _Errs) -> bool | _Failed:
            return fn(a, e) != 0

        return from_int

    def to_bool(a: _Attrs, e: _Errs) -> bool | _Failed:
        v = fn(a, e)
        if v is True or v is False or v is _FAILED:
            return v
        b = _to_bool(v)
        if b is None:
            _report(e, ErrorKind.CAST, _cast_message(v, bool))
            return _FAILED
        return b

    return to_bool


def _str_operand(node: _Node) -> _StrFn:
    fn = node.fn
    if node.type is str:
        return cast(_StrFn, fn)
    if node.const is not None:
        return cast(_StrFn, _const_fn(_to_str(node.const)))

    def to_str(a: _Attrs, e: _Errs) -> str | _Failed:
        v = fn(a, e)
        if type(v) is str or v is _FAILED:
            return v
        return _to_str(v)

    return to_str


def _operand(node: _Node, target: _Type | None) -> _Fn:
    if target is int:
        return _int_operand(node)
    if target is bool:
        return _bool_operand(node)
    if target is str:
        return _str_operand(node)
    return node.fn


# ---- leaves ----------------------------------------------------------------


def _literal(v: Value) -> _Node:
    return _Node(_const_fn(v), type(v), 1, const=v)


def _identifier(name: str) -> _Node:
    def attribute(a: _Attrs, e: _Errs) -> _Out:
        try:
            return a[name]
        except KeyError:
            _missing(e, name)
            return _FAILED

    return _Node(attribute, None, 1, ident=name)


def _exists(name: str) -> _Node:
    def exists(a: _Attrs, e: _Errs) -> _Out:
        return name in a

    return _Node(exists, bool, 1)


# ---- unary operators -------------------------------------------------------


def _not(x: _Node) -> _Node:
    fn = _bool_operand(x)
    if x.type is bool:

        def not_bool(a: _Attrs, e: _Errs) -> _Out:
            return not fn(a, e)

        return _Node(not_bool, bool, _depth(x))

    def not_(a: _Attrs, e: _Errs) -> _Out:
        v = fn(a, e)
        if v is _FAILED:
            return False
        return not v

    return _Node(not_, bool, _depth(x))


def _negate(x: _Node) -> _Node:
    fn = _int_operand(x)
    tok = object()

    def negate(a: _Attrs, e: _Errs) -> _Out:
        v = fn(a, e)
        if v is _FAILED:
            return 0
        return _saturate(-v, e, tok)

    return _Node(negate, int, _depth(x), tok=tok)


# ---- binary operators ------------------------------------------------------


def _divide(x: int, y: int, e: _Errs, tok: object) -> int:
    if y == 0:
        _report(e, ErrorKind.MATH, "division by zero", 0, tok)
        return 0
    q = abs(x) // abs(y)
    return _saturate(-q if (x < 0) != (y < 0) else q, e, tok)


def _modulo(x: int, y: int, e: _Errs, tok: object) -> int:
    if y == 0:
        _report(e, ErrorKind.MATH, "division by zero", 0, tok)
        return 0
    q = abs(x) // abs(y)
    return x - y * (-q if (x < 0) != (y < 0) else q)


def _add(x: int, y: int, e: _Errs, tok: object) -> int:
    return _saturate(x + y, e, tok)


def _subtract(x: int, y: int, e: _Errs, tok: object) -> int:
    return _saturate(x - y, e, tok)


def _multiply(x: int, y: int, e: _Errs, tok: object) -> int:
    return _saturate(x * y, e, tok)


_ARITHMETIC: Final[dict[str, Callable[[int, int, _Errs, object], int]]] = {
    "+": _add,
    "-": _subtract,
    "*": _multiply,
    "/": _divide,
    "%": _modulo,
}
_ORDERING: Final[dict[str, Callable[[int, int], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _arithmetic(symbol: str, left: _Node, right: _Node) -> _Node:
    lf, rf = _int_operand(left), _int_operand(right)
    op = _ARITHMETIC[symbol]
    tok = object()

    def arithmetic(a: _Attrs, e: _Errs) -> _Out:
        x = lf(a, e)
        y = rf(a, e)
        if x is _FAILED or y is _FAILED:
            return 0
        return op(x, y, e, tok)

    return _Node(arithmetic, int, _depth(left, right), tok=tok)


def _ordering(symbol: str, left: _Node, right: _Node) -> _Node:
    lf, rf = _int_operand(left), _int_operand(right)
    op = _ORDERING[symbol]

    def ordering(a: _Attrs, e: _Errs) -> _Out:
        x = lf(a, e)
        y = rf(a, e)
        if x is _FAILED or y is _FAILED:
            return False
        return op(x, y)

    return _Node(ordering, bool, _depth(left, right))


def _equality(left: _Node, right: _Node, negate: bool) -> _Node:
    """``=`` / ``!=`` / ``<>``: the left operand is cast to the right operand's type."""
    depth = _depth(left, right)
    lf, rf = left.fn, right.fn
    rv = right.const
    if left.type is not None and left.type is right.type:
        if rv is not None:
            if negate:

                def ne_const(a: _Attrs, e: _Errs) -> _Out:
                    return lf(a, e) != rv

                return _Node(ne_const, bool, depth)

            def eq_const(a: _Attrs, e: _Errs) -> _Out:
                return lf(a, e) == rv

            return _Node(eq_const, bool, depth)

        def same_type(a: _Attrs, e: _Errs) -> _Out:
            return (lf(a, e) == rf(a, e)) is not negate

        return _Node(same_type, bool, depth)

    if rv is not None and left.ident is not None:
        # The hot path: ``attribute = literal``.
        name = left.ident
        rt = type(rv)
        conv = _CASTS[rt]

        def attr_eq(a: _Attrs, e: _Errs) -> _Out:
            try:
                v = a[name]
            except KeyError:
                _missing(e, name)
                return False
            if type(v) is rt:
                return (v == rv) is not negate
            c = conv(v)
            if c is None:
                _report(e, ErrorKind.CAST, _cast_message(v, rt))
                return False
            return (c == rv) is not negate

        return _Node(attr_eq, bool, depth)

    def equality(a: _Attrs, e: _Errs) -> _Out:
        x = lf(a, e)
        y = rf(a, e)
        if x is _FAILED or y is _FAILED:
            return False
        ty = type(y)
        if type(x) is not ty:
            c = _CASTS[ty](x)
            if c is None:
                _report(e, ErrorKind.CAST, _cast_message(x, ty))
                return False
            x = c
        return (x == y) is not negate

    return _Node(equality, bool, depth)


def _and(operands: list[_Node]) -> _Node:
    fns = [_bool_operand(n) for n in operands]
    depth = _depth(*operands)
    if len(fns) == 2:
        lf, rf = fns
        if operands[0].type is bool and operands[1].type is bool:

            def and_bool(a: _Attrs, e: _Errs) -> _Out:
                return lf(a, e) and rf(a, e)

            return _Node(and_bool, bool, depth, chain=("AND", operands))

    def and_(a: _Attrs, e: _Errs) -> _Out:
        # all() stops at the first operand that is FALSE or has no value.
        return all(fn(a, e) is True for fn in fns)

    return _Node(and_, bool, depth, chain=("AND", operands))


def _or(operands: list[_Node]) -> _Node:
    fns = [_bool_operand(n) for n in operands]
    depth = _depth(*operands)
    if len(fns) == 2 and operands[0].type is bool and operands[1].type is bool:
        lf, rf = fns

        def or_bool(a: _Attrs, e: _Errs) -> _Out:
            return lf(a, e) or rf(a, e)

        return _Node(or_bool, bool, depth, chain=("OR", operands))
    first, rest = fns[0], fns[1:]

    def or_(a: _Attrs, e: _Errs) -> _Out:
        # Folds ((x0 OR x1) OR x2)...: an operand without a value makes the
        # OR it is an operand of FALSE, later operands can still make it TRUE.
        x = first(a, e)
        for fn in rest:
            if x is True:
                return True
            y = fn(a, e)
            x = (y is True) if x is False else False
        return x is True

    return _Node(or_, bool, depth, chain=("OR", operands))


def _xor(left: _Node, right: _Node) -> _Node:
    lf, rf = _bool_operand(left), _bool_operand(right)

    def xor(a: _Attrs, e: _Errs) -> _Out:
        x = lf(a, e)
        y = rf(a, e)
        if x is _FAILED or y is _FAILED:
            return False
        return x is not y

    return _Node(xor, bool, _depth(left, right))


# ---- LIKE ------------------------------------------------------------------

_ANY: Final = "%"
_ONE: Final = "_"


def _like_parts(pattern: str) -> list[tuple[str, str]]:
    """Split a LIKE pattern into ("lit", text), ("%", "") and ("_", "") parts."""
    parts: list[tuple[str, str]] = []
    literal: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n and pattern[i + 1] in "%_":
            literal.append(pattern[i + 1])
            i += 2
            continue
        if c in "%_":
            if literal:
                parts.append(("lit", "".join(literal)))
                literal = []
            if not (c == _ANY and parts and parts[-1][0] == _ANY):
                parts.append((c, ""))
        else:
            literal.append(c)
        i += 1
    if literal:
        parts.append(("lit", "".join(literal)))
    return parts


def _like_matcher(pattern: str) -> Callable[[str], bool]:
    """A whole-string, case-sensitive matcher for a LIKE pattern."""
    parts = _like_parts(pattern)
    kinds = tuple(k for k, _ in parts)
    texts = [t for _, t in parts]
    if kinds == ():
        return "".__eq__
    if kinds == ("lit",):
        return texts[0].__eq__
    if kinds == (_ANY,):
        return lambda s: True
    if kinds == ("lit", _ANY):
        prefix = texts[0]
        return lambda s: s.startswith(prefix)
    if kinds == (_ANY, "lit"):
        suffix = texts[1]
        return lambda s: s.endswith(suffix)
    if kinds == (_ANY, "lit", _ANY):
        infix = texts[1]
        return lambda s: infix in s
    return _segment_matcher(parts)


class _Segment(NamedTuple):
    """A run of literals and ``_`` between two ``%``: a fixed number of code points."""

    size: int
    literal: str | None  # the text, when the segment holds no ``_``
    regex: re.Pattern[str] | None  # literals and ``.`` only: no backtracking


def _segments(parts: list[tuple[str, str]]) -> list[_Segment]:
    """The pattern split on ``%``; an empty segment where two ``%`` or an end meet."""
    segments: list[_Segment] = []
    run: list[tuple[str, str]] = []
    for kind, text in [*parts, (_ANY, "")]:
        if kind != _ANY:
            run.append((kind, text))
            continue
        if any(k == _ONE for k, _ in run):
            regex = "".join("." if k == _ONE else re.escape(t) for k, t in run)
            size = sum(1 if k == _ONE else len(t) for k, t in run)
            segments.append(_Segment(size, None, re.compile(regex, re.DOTALL)))
        else:
            literal = "".join(t for _, t in run)
            segments.append(_Segment(len(literal), literal, None))
        run = []
    return segments


def _segment_matcher(parts: list[tuple[str, str]]) -> Callable[[str], bool]:
    """Greedy segment matching: linear in the value for each segment, never backtracking.

    Between two ``%`` every segment has a fixed length, so its leftmost
    occurrence after the previous one is always the best choice: the first
    segment is anchored at the start, the last at the end, and each middle one
    is searched once, left to right. The cost is O(len(value) * len(pattern))
    at worst, where the regex engine's backtracking over ``.*`` was exponential.
    """
    segments = _segments(parts)
    first, middle, last = segments[0], segments[1:-1], segments[-1]
    anchored_both = len(segments) == 1  # no % at all: the whole value is one segment
    floor = sum(seg.size for seg in segments)

    def at(seg: _Segment, s: str, pos: int) -> bool:
        if seg.literal is not None:
            return s.startswith(seg.literal, pos)
        assert seg.regex is not None
        return seg.regex.match(s, pos) is not None

    def find(seg: _Segment, s: str, pos: int) -> int:
        if seg.literal is not None:
            return s.find(seg.literal, pos)
        assert seg.regex is not None
        m = seg.regex.search(s, pos)
        return -1 if m is None else m.start()

    def match(s: str) -> bool:
        n = len(s)
        if anchored_both:
            return n == first.size and at(first, s, 0)
        if n < floor or not at(first, s, 0):
            return False
        pos = first.size
        for seg in middle:
            found = find(seg, s, pos)
            if found < 0:
                return False
            pos = found + seg.size
        start = n - last.size
        return start >= pos and at(last, s, start)

    return match


def _like(x: _Node, pattern: str, negate: bool) -> _Node:
    match = _like_matcher(pattern)
    depth = _depth(x)
    if x.ident is not None:
        name = x.ident

        def attr_like(a: _Attrs, e: _Errs) -> _Out:
            try:
                v = a[name]
            except KeyError:
                _missing(e, name)
                return False
            return match(v if type(v) is str else _to_str(v)) is not negate

        return _Node(attr_like, bool, depth)

    fn = _str_operand(x)

    def like(a: _Attrs, e: _Errs) -> _Out:
        s = fn(a, e)
        if s is _FAILED:
            return False
        return match(s) is not negate

    return _Node(like, bool, depth)


# ---- IN --------------------------------------------------------------------


def _in(x: _Node, items: list[_Node], negate: bool) -> _Node:
    """``x [NOT] IN (...)``: ``=`` semantics with ``x``'s type as the target type."""
    depth = _depth(x, *items)
    xf = x.fn
    if all(item.const is not None for item in items):
        table: dict[type[object], tuple[frozenset[Value], tuple[str, ...]]] = {}
        for target in (bool, int, str):
            values: set[Value] = set()
            problems: list[str] = []
            for item in items:
                v = cast(Value, item.const)
                c = v if type(v) is target else _CASTS[target](v)
                if c is None:
                    problems.append(_cast_message(v, target))
                else:
                    values.add(c)
            table[target] = (frozenset(values), tuple(problems))

        def in_literals(a: _Attrs, e: _Errs) -> _Out:
            v = xf(a, e)
            if v is _FAILED:
                return False
            values, problems = table[type(v)]
            for message in problems:
                _report(e, ErrorKind.CAST, message)
            return (v in values) is not negate

        return _Node(in_literals, bool, depth)

    fns = [item.fn for item in items]

    def in_(a: _Attrs, e: _Errs) -> _Out:
        v = xf(a, e)
        ys = [fn(a, e) for fn in fns]
        if v is _FAILED:
            return False
        tv = type(v)
        found = False
        for y in ys:
            if y is _FAILED:
                return False
            if type(y) is not tv:
                c = _CASTS[tv](y)
                if c is None:
                    _report(e, ErrorKind.CAST, _cast_message(y, tv))
                    continue
                y = c
            if y == v:
                found = True
        return found is not negate

    return _Node(in_, bool, depth)


# ---- functions ---------------------------------------------------------------

_Impl: TypeAlias = Callable[[Sequence[Value], _Errs, object], Value]


@dataclass(frozen=True, slots=True)
class _Function:
    """One overload: fixed parameter types (None: any), an optional variadic tail."""

    name: str
    params: tuple[_Type | None, ...]
    rest: _Type | None  # the type of every extra argument; None: not variadic
    returns: _Type
    impl: _Impl


_FUNCTIONS: dict[str, list[_Function]] = {}


def _register(fn: _Function) -> None:
    """Add an overload, enforcing the spec's rules on arity-only overloading."""
    overloads = _FUNCTIONS.setdefault(fn.name, [])
    fixed = [o for o in overloads if o.rest is None]
    variadic = [o for o in overloads if o.rest is not None]
    arity = len(fn.params)
    if fn.rest is not None:
        if variadic:
            raise ValueError(f"{fn.name}: only one variadic overload is allowed")
        if fixed and arity <= max(len(o.params) for o in fixed):
            raise ValueError(f"{fn.name}: variadic overload must take more fixed arguments")
    else:
        if any(len(o.params) == arity for o in fixed):
            raise ValueError(f"{fn.name}: two overloads with {arity} arguments")
        if any(arity >= len(o.params) for o in variadic):
            raise ValueError(f"{fn.name}: overload clashes with the variadic one")
    overloads.append(fn)


def _resolve(name: str, argc: int) -> _Function | None:
    variadic = None
    for fn in _FUNCTIONS.get(name, ()):
        if fn.rest is None and len(fn.params) == argc:
            return fn
        if fn.rest is not None and argc >= len(fn.params):
            variadic = fn
    return variadic


def _fn_length(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    return len(cast(str, args[0]))


def _fn_concat(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    return "".join(cast(Sequence[str], args))


def _fn_concat_ws(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    return cast(str, args[0]).join(cast(Sequence[str], args[1:]))


def _fn_lower(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    return cast(str, args[0]).lower()


def _fn_upper(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    return cast(str, args[0]).upper()


def _fn_trim(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    return cast(str, args[0]).strip(_WHITESPACE)


def _fn_left(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    s, n = cast(str, args[0]), cast(int, args[1])
    if n < 0:
        _report(e, ErrorKind.FUNCTION_EVALUATION, f"LEFT: negative length {n}", s, tok)
        return s
    return s[:n]


def _fn_right(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    s, n = cast(str, args[0]), cast(int, args[1])
    if n < 0:
        _report(e, ErrorKind.FUNCTION_EVALUATION, f"RIGHT: negative length {n}", s, tok)
        return s
    return s[len(s) - n :] if n < len(s) else s


def _fn_substring(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    s, pos = cast(str, args[0]), cast(int, args[1])
    size = len(s)
    if pos > size or pos < -size:
        _report(
            e,
            ErrorKind.FUNCTION_EVALUATION,
            f"SUBSTRING: position {pos} is outside a string of length {size}",
            "",
            tok,
        )
        return ""
    length = cast(int, args[2]) if len(args) > 2 else None
    if length is not None and length < 0:
        _report(e, ErrorKind.FUNCTION_EVALUATION, f"SUBSTRING: negative length {length}", "", tok)
        return ""
    if pos == 0:
        return ""
    start = pos - 1 if pos > 0 else size + pos
    return s[start:] if length is None else s[start : start + length]


def _fn_abs(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    n = cast(int, args[0])
    if n == _INT_MIN:
        _report(e, ErrorKind.MATH, "ABS(-2147483648) does not fit in 32 bits", _INT_MAX, tok)
        return _INT_MAX
    return abs(n)


def _fn_int(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    n = _to_int(args[0])
    if n is None:
        _report(e, ErrorKind.CAST, _cast_message(args[0], int), 0, tok)
        return 0
    return n


def _fn_bool(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    b = _to_bool(args[0])
    if b is None:
        _report(e, ErrorKind.CAST, _cast_message(args[0], bool), False, tok)
        return False
    return b


def _fn_string(args: Sequence[Value], e: _Errs, tok: object) -> Value:
    return _to_str(args[0])


for _builtin in (
    _Function("LENGTH", (str,), None, int, _fn_length),
    _Function("CONCAT", (), str, str, _fn_concat),
    _Function("CONCAT_WS", (str,), str, str, _fn_concat_ws),
    _Function("LOWER", (str,), None, str, _fn_lower),
    _Function("UPPER", (str,), None, str, _fn_upper),
    _Function("TRIM", (str,), None, str, _fn_trim),
    _Function("LEFT", (str, int), None, str, _fn_left),
    _Function("RIGHT", (str, int), None, str, _fn_right),
    _Function("SUBSTRING", (str, int), None, str, _fn_substring),
    _Function("SUBSTRING", (str, int, int), None, str, _fn_substring),
    _Function("ABS", (int,), None, int, _fn_abs),
    _Function("INT", (None,), None, int, _fn_int),
    _Function("BOOL", (None,), None, bool, _fn_bool),
    _Function("STRING", (None,), None, str, _fn_string),
):
    _register(_builtin)
del _builtin


def _call(name: str, args: list[_Node]) -> _Node:
    depth = _depth(*args)
    tok = object()
    fn = _resolve(name, len(args))
    if fn is None:
        known = _FUNCTIONS.get(name)
        reason = (
            f"function {name} does not take {len(args)} argument(s)"
            if known
            else f"unknown function {name}"
        )
        arg_fns = [arg.fn for arg in args]

        def missing_function(a: _Attrs, e: _Errs) -> _Out:
            _report(e, ErrorKind.MISSING_FUNCTION, reason, False, tok)
            for arg_fn in arg_fns:  # complete mode: the arguments' errors too
                arg_fn(a, e)
            return False

        return _Node(missing_function, bool, depth, tok=tok)

    types = [*fn.params, *[fn.rest] * (len(args) - len(fn.params))]
    fns = [_operand(arg, t) for arg, t in zip(args, types, strict=True)]
    impl = fn.impl
    zero = _ZERO[fn.returns]

    def call(a: _Attrs, e: _Errs) -> _Out:
        values = [f(a, e) for f in fns]
        for v in values:
            if v is _FAILED:
                return zero
        return impl(cast(list[Value], values), e, tok)

    return _Node(call, fn.returns, depth, tok=tok)


# --------------------------------------------------------------------------
# Lexer

_KEYWORDS: Final = frozenset({"AND", "OR", "XOR", "NOT", "LIKE", "EXISTS", "IN", "TRUE", "FALSE"})
_WORD: Final = re.compile(r"[A-Za-z0-9_]+")
_DIGITS: Final = re.compile(r"[0-9]+")
_PUNCT2: Final = frozenset({"!=", "<>", "<=", ">="})
_PUNCT1: Final = frozenset("(),*/%+-=<>")
_SPACE: Final = frozenset(" \t\r\n")


class _Tok(NamedTuple):
    kind: str  # INT STR NAME IDENT FNAME, a keyword, a punctuation symbol, or EOF
    value: Value
    pos: int
    text: str


def _int_literal(src: str, start: int, end: int) -> _Tok:
    text = src[start:end]
    n = _to_int(text)
    if n is None:
        raise CesqlError(src, start, f"integer literal {text} does not fit in 32 bits")
    return _Tok("INT", n, start, text)


def _string_literal(src: str, start: int) -> tuple[str, int]:
    quote = src[start]
    out: list[str] = []
    i, n = start + 1, len(src)
    while i < n:
        c = src[i]
        if c == "\\" and i + 1 < n:
            nxt = src[i + 1]
            out.append(nxt if nxt == quote else c + nxt)
            i += 2
        elif c == quote:
            if i + 1 < n and src[i + 1] == quote:
                out.append(quote)
                i += 2
            else:
                return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise CesqlError(src, start, "unterminated string literal")


def _tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in _SPACE:
            i += 1
            continue
        if c == "'" or c == '"':
            value, end = _string_literal(src, i)
            toks.append(_Tok("STR", value, i, src[i:end]))
            i = end
            continue
        if c in "+-" and i + 1 < n and "0" <= src[i + 1] <= "9":
            # The sign belongs to the literal (as in the grammar's lexer).
            m = _DIGITS.match(src, i + 1)
            assert m is not None
            toks.append(_int_literal(src, i, m.end()))
            i = m.end()
            continue
        word = _WORD.match(src, i) if c != "_" else None
        if word is not None:
            w, end = word[0], word.end()
            if w.isdigit():
                toks.append(_int_literal(src, i, end))
            elif "_" in w:
                if not w[0].isalpha() or any(ch.isdigit() for ch in w):
                    raise CesqlError(src, i, f"invalid name {w!r}")
                toks.append(_Tok("FNAME", w.upper(), i, w))
            elif w.isalpha():
                upper = w.upper()
                if upper in _KEYWORDS:
                    keyword: Value = upper == "TRUE" if upper in ("TRUE", "FALSE") else upper
                    toks.append(_Tok(upper, keyword, i, w))
                else:
                    toks.append(_Tok("NAME", w, i, w))
            else:
                toks.append(_Tok("IDENT", w.lower(), i, w))
            i = end
            continue
        two = src[i : i + 2]
        if two in _PUNCT2:
            toks.append(_Tok(two, two, i, two))
            i += 2
            continue
        if c in _PUNCT1:
            toks.append(_Tok(c, c, i, c))
            i += 1
            continue
        raise CesqlError(src, i, f"unexpected character {c!r}")
    toks.append(_Tok("EOF", "", n, ""))
    return toks


# --------------------------------------------------------------------------
# Parser: precedence climbing over the levels below (higher binds tighter).

_LOGIC: Final = 1
_BINARY: Final[dict[str, int]] = {
    "AND": _LOGIC,
    "OR": _LOGIC,
    "XOR": _LOGIC,
    "=": 2,
    "!=": 2,
    "<>": 2,
    "<": 2,
    "<=": 2,
    ">": 2,
    ">=": 2,
    "+": 3,
    "-": 3,
    "*": 4,
    "/": 4,
    "%": 4,
}
_IN_LEVEL: Final = 5
_LIKE_LEVEL: Final = 6


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0
        self.nesting = 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "EOF":
            self.i += 1
        return tok

    def fail(self, tok: _Tok, reason: str) -> NoReturn:
        raise CesqlError(self.src, tok.pos, reason)

    def unexpected(self, tok: _Tok, expected: str) -> NoReturn:
        if tok.kind == "EOF":
            self.fail(tok, f"unexpected end of expression; expected {expected}")
        if tok.kind == "INT" and tok.text[0] in "+-":
            self.fail(
                tok,
                f"unexpected integer literal {tok.text}: a sign directly before digits is "
                f"part of the number; put a space after '{tok.text[0]}' to add or subtract",
            )
        self.fail(tok, f"unexpected {tok.text!r}; expected {expected}")

    def expect(self, kind: str, expected: str) -> _Tok:
        tok = self.take()
        if tok.kind != kind:
            self.unexpected(tok, expected)
        return tok

    def checked(self, node: _Node, tok: _Tok) -> _Node:
        if node.depth > _MAX_DEPTH:
            self.fail(tok, f"expression is nested more than {_MAX_DEPTH} levels deep")
        return node

    def enter(self, tok: _Tok) -> None:
        self.nesting += 1
        if self.nesting > _MAX_DEPTH:
            self.fail(tok, f"expression is nested more than {_MAX_DEPTH} levels deep")

    def parse(self) -> _Node:
        node = self.expression(_LOGIC)
        tok = self.peek()
        if tok.kind != "EOF":
            self.unexpected(tok, "an operator or the end of the expression")
        return node

    def expression(self, min_level: int) -> _Node:
        self.enter(self.peek())
        left = self.unary()
        while True:
            tok = self.peek()
            level = _BINARY.get(tok.kind)
            if level is not None:
                if level < min_level:
                    break
                self.take()
                right = self.expression(level + 1)
                left = self.checked(self.binary(tok.kind, left, right), tok)
                continue
            negate = tok.kind == "NOT"
            kind = self.peek(1).kind if negate else tok.kind
            if negate and kind not in ("LIKE", "IN"):
                self.unexpected(self.peek(1), "LIKE or IN after NOT")
            if kind == "LIKE" and min_level <= _LIKE_LEVEL:
                self.take()
                if negate:
                    self.take()
                pattern = self.take()
                if pattern.kind != "STR":
                    self.unexpected(pattern, "a string literal as the LIKE pattern")
                left = self.checked(_like(left, cast(str, pattern.value), negate), tok)
            elif kind == "IN" and min_level <= _IN_LEVEL:
                self.take()
                if negate:
                    self.take()
                left = self.checked(_in(left, self.set_items(), negate), tok)
            else:
                break
        self.nesting -= 1
        return left

    def binary(self, kind: str, left: _Node, right: _Node) -> _Node:
        if kind in ("AND", "OR"):
            # (a AND b) AND c evaluates exactly like one AND over [a, b, c]
            # (the same holds for OR), so left-nested chains become one node.
            operands = [left, right]
            if left.chain is not None and left.chain[0] == kind:
                operands = [*left.chain[1], right]
            return _and(operands) if kind == "AND" else _or(operands)
        if kind == "XOR":
            return _xor(left, right)
        if kind in ("=", "!=", "<>"):
            return _equality(left, right, negate=kind != "=")
        if kind in _ORDERING:
            return _ordering(kind, left, right)
        return _arithmetic(kind, left, right)

    def set_items(self) -> list[_Node]:
        self.expect("(", "'(' to start the IN set")
        if self.peek().kind == ")":
            self.fail(self.peek(), "an IN set needs at least one value")
        items = [self.expression(_LOGIC)]
        while True:
            tok = self.take()
            if tok.kind == ")":
                return items
            if tok.kind != ",":
                self.unexpected(tok, "',' or ')' in the IN set")
            items.append(self.expression(_LOGIC))

    def unary(self) -> _Node:
        tok = self.peek()
        if tok.kind in ("NOT", "-"):
            self.take()
            self.enter(tok)
            operand = self.unary()
            self.nesting -= 1
            node = _not(operand) if tok.kind == "NOT" else _negate(operand)
            return self.checked(node, tok)
        return self.primary()

    def primary(self) -> _Node:
        tok = self.take()
        kind = tok.kind
        if kind in ("INT", "STR", "TRUE", "FALSE"):
            return _literal(tok.value)
        if kind == "IDENT":
            return _identifier(cast(str, tok.value))
        if kind in ("NAME", "FNAME"):
            if self.peek().kind == "(":
                return self.call(tok)
            if kind == "FNAME":
                self.fail(tok, f"{tok.text!r} is not a valid attribute name")
            return _identifier(tok.text.lower())
        if kind == "EXISTS":
            name = self.take()
            if name.kind not in ("NAME", "IDENT"):
                self.unexpected(name, "an attribute name after EXISTS")
            return _exists(name.text.lower())
        if kind == "(":
            node = self.expression(_LOGIC)
            self.expect(")", "')'")
            return node
        self.unexpected(tok, "a value, an attribute, a function call, NOT, '-' or '('")

    def call(self, name: _Tok) -> _Node:
        self.take()  # "("
        args: list[_Node] = []
        if self.peek().kind == ")":
            self.take()
        else:
            args.append(self.expression(_LOGIC))
            while True:
                tok = self.take()
                if tok.kind == ")":
                    break
                if tok.kind != ",":
                    self.unexpected(tok, "',' or ')' in the argument list")
                args.append(self.expression(_LOGIC))
        return self.checked(_call(name.text.upper(), args), name)


# --------------------------------------------------------------------------
# Public API


class Expression:
    """A compiled CESQL expression, made by :func:`compile`; immutable and shareable."""

    __slots__ = ("_fn", "_tok", "_zero", "source")

    def __init__(self, source: str, root: _Node) -> None:
        self.source = source
        self._fn = root.fn
        self._tok = root.tok
        self._zero = _ZERO[root.type]

    def evaluate(
        self, attrs: Mapping[str, AttrValue], *, fail_fast: bool = True
    ) -> tuple[bool | int | str, list[EvalError]]:
        """Evaluate against an event's context attributes: (value, errors)."""
        if fail_fast:
            try:
                value = self._fn(attrs, None)
            except _Fail as exc:
                return (exc.value if exc.origin is self._tok else self._zero), [exc.error]
            if value is _FAILED:  # pragma: no cover - fail-fast never yields it
                return self._zero, []
            return value, []
        errors: list[EvalError] = []
        value = self._fn(attrs, errors)
        if value is _FAILED:
            value = self._zero
        return value, errors

    def matches(self, attrs: Mapping[str, AttrValue]) -> bool:
        """Filter semantics: True only if the result is Boolean True and no error was raised."""
        try:
            return self._fn(attrs, None) is True
        except _Fail:
            return False

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compile(expression: str) -> Expression:
    """Parse once; raise mesh.core.errors.CesqlError(expression, position, reason) on a parse error.

    ``position`` is the 0-based offset of the offending token (the length of
    the text when the expression ends too early). An expression longer than
    :data:`MAX_EXPRESSION_LENGTH` or nested more than 100 levels deep is refused.
    """
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CesqlError(
            expression,
            MAX_EXPRESSION_LENGTH,
            f"expression of {len(expression)} characters exceeds the limit of "
            f"{MAX_EXPRESSION_LENGTH}",
        )
    return Expression(expression, _Parser(expression).parse())
