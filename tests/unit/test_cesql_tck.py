"""The public CESQL v1.0 TCK (cloudevents/spec ``cesql/cesql_tck``), one test per case.

The YAML files are read in place from ``../shared/conformance/cesql_tck``;
they are third-party data and are never copied into the project. The checks
are stricter than the reference Go runner: error cases must raise the TCK's
error kind first and return the TCK's (fail-fast) value.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mesh.core.cesql import ErrorKind, compile
from mesh.core.errors import CesqlError
from mesh.core.event import AttrValue, validate_attributes
from tests.shared import SHARED_DIR

TCK_DIR = SHARED_DIR / "conformance" / "cesql_tck"

# The snapshot documented in ../shared/conformance/README.md (cesql@v1.0.0).
EXPECTED_FILES = 18
EXPECTED_CASES = 275

# Any valid event will do, but it must not carry the attributes the TCK
# expects to be missing: missing, myext, x, hop, ttl, sequence, firstname,
# lastname.
DEFAULT_EVENT: dict[str, AttrValue] = {
    "specversion": "1.0",
    "id": "tck-0001",
    "source": "/cesql/tck",
    "type": "io.cloudevents.cesql.tck",
    "subject": "tck-subject",
    "time": "2024-06-11T10:20:30Z",
    "datacontenttype": "application/json",
}
MUST_BE_ABSENT = ("missing", "myext", "x", "hop", "ttl", "sequence", "firstname", "lastname")

# The one case we override, and why. not_operator.yaml "Invalid int cast"
# expects NOT 10 to give TRUE with a cast error. That predates CESQL v1, which
# made Integer -> Boolean a required cast (0 -> false, anything else -> true):
# NOT 10 is therefore FALSE with no error. The Go SDK's copy of the TCK
# expects exactly that. See ../shared/reference/cloudevents-bindings.md 7.8.
STALE_CASE = ("not_operator.yaml", "Invalid int cast")
STALE_EXPECTED = {"result": True, "error": "cast"}  # what the stale file says
STALE_OVERRIDE = {"result": False, "error": None}  # what CESQL v1 requires


class _TypedLoader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver.

    Unquoted times such as ``2018-04-26T14:48:09+02:00`` stay the strings
    they were written as: CESQL sees a Timestamp attribute as its RFC 3339
    text, exactly as received.
    """


_TypedLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_cases() -> list[Any]:
    """One pytest.param per TCK case, or one failing placeholder if the TCK is absent."""
    files = sorted(TCK_DIR.glob("*.yaml")) if TCK_DIR.is_dir() else []
    if not files:
        return [pytest.param(None, None, id="cesql_tck-not-found")]
    params = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        # YAML 1.1 turns `expression: TRUE` into a bool and `expression: -10`
        # into an int (and `name: TRUE` too): names and expressions come from
        # a load that keeps every scalar a string, everything else from a
        # typed load (results and extension values are typed on purpose).
        raw = yaml.load(text, Loader=yaml.BaseLoader)  # only str/list/dict
        typed = yaml.load(text, Loader=_TypedLoader)  # a SafeLoader subclass
        assert len(raw["tests"]) == len(typed["tests"]), path
        for raw_case, case in zip(raw["tests"], typed["tests"], strict=True):
            case = {**case, "name": raw_case["name"], "expression": raw_case["expression"]}
            params.append(pytest.param(path.name, case, id=f"{path.name}::{case['name']}"))
    return params


CASES = _load_cases()


def _tck_missing() -> None:
    pytest.fail(
        f"CESQL TCK not found: no *.yaml in {TCK_DIR}. The tests read the public TCK "
        "in place from ../shared/conformance/cesql_tck (see "
        "../shared/conformance/README.md); restore that directory, do not copy it here."
    )


def _event_for(case: dict[str, Any]) -> dict[str, AttrValue]:
    if "event" in case:
        attrs = {k: v for k, v in case["event"].items() if k not in ("data", "data_base64")}
    else:
        attrs = dict(DEFAULT_EVENT)
    attrs.update(case.get("eventOverrides") or {})
    for name, value in attrs.items():
        assert isinstance(value, str | int), f"attribute {name!r} loaded as {type(value)}"
    validate_attributes(attrs)
    return attrs


def test_default_event_lacks_the_attributes_the_tck_expects_missing() -> None:
    validate_attributes(DEFAULT_EVENT)
    assert not set(MUST_BE_ABSENT) & DEFAULT_EVENT.keys()


def test_tck_is_complete() -> None:
    if CASES[0].values[0] is None:
        _tck_missing()
    assert len({p.values[0] for p in CASES}) == EXPECTED_FILES
    assert len(CASES) == EXPECTED_CASES
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids)), "duplicate case names"


def test_stale_case_is_still_stale() -> None:
    """The override must go once the TCK is fixed upstream."""
    if CASES[0].values[0] is None:
        _tck_missing()
    (case,) = [p.values[1] for p in CASES if (p.values[0], p.values[1]["name"]) == STALE_CASE]
    assert {k: case.get(k) for k in STALE_EXPECTED} == STALE_EXPECTED


@pytest.mark.parametrize(("file", "case"), CASES)
def test_tck_case(file: str | None, case: dict[str, Any] | None) -> None:
    if file is None or case is None:
        _tck_missing()
        return
    expected = {"result": case.get("result"), "error": case.get("error")}
    if (file, case["name"]) == STALE_CASE:
        expected = dict(STALE_OVERRIDE)
    source = case["expression"]
    assert isinstance(source, str)

    if expected["error"] == "parse":
        with pytest.raises(CesqlError) as info:
            compile(source)
        assert 0 <= info.value.position <= len(source)
        return

    expr = compile(source)
    attrs = _event_for(case)
    value, errors = expr.evaluate(attrs)
    result = expected["result"]
    assert (type(value), value) == (type(result), result)
    if expected["error"] is None:
        assert errors == []
        assert expr.evaluate(attrs, fail_fast=False) == (value, [])
        assert expr.matches(attrs) is (value is True)
    else:
        kind = ErrorKind(expected["error"])
        assert [e.kind for e in errors] == [kind], "fail-fast stops at the first error"
        _, all_errors = expr.evaluate(attrs, fail_fast=False)
        assert all_errors and all_errors[0].kind is kind
        assert expr.matches(attrs) is False
