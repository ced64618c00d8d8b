"""Checking an AsyncAPI document: the official 3.0.0 schema, and every internal ``$ref``.

The schema is ``../shared/conformance/asyncapi-3.0.0.schema.json`` (draft-07,
its definitions addressed by their ``$id``), read in place.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

from tests.shared import SHARED_DIR


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    path = SHARED_DIR / "conformance" / "asyncapi-3.0.0.schema.json"
    schema = json.loads(Path(path).read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


def schema_errors(doc: Any) -> list[str]:
    """What the official AsyncAPI 3.0.0 schema finds wrong in ``doc`` (empty: valid)."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors]


def refs(value: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    """Every ``$ref`` in ``value``, with where it sits."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "$ref" and isinstance(v, str):
                yield where, v
            else:
                yield from refs(v, f"{where}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from refs(v, f"{where}/{i}")


def resolve(doc: Any, ref: str) -> Any:
    """The value a ``#/a/b`` JSON pointer names in ``doc``; KeyError if there is none."""
    assert ref.startswith("#/"), f"not an internal reference: {ref}"
    value = doc
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, list):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"{ref}: no {part!r}")
    return value


def unresolved(doc: Any) -> list[str]:
    """The ``$ref`` s of ``doc`` that point nowhere (every one must be internal)."""
    bad = []
    for where, ref in refs(doc):
        try:
            resolve(doc, ref)
        except (KeyError, IndexError, ValueError, AssertionError) as exc:
            bad.append(f"{where}: {exc}")
    return bad


def assert_valid(doc: Any) -> None:
    """``doc`` passes the official schema and every ``$ref`` in it resolves."""
    assert doc.get("asyncapi") == "3.0.0", doc.get("asyncapi")
    errors = schema_errors(doc)
    assert not errors, "\n".join(errors)
    bad = unresolved(doc)
    assert not bad, "\n".join(bad)
    # An operation's messages are the channel's own (the spec requires it).
    for oid, op in doc.get("operations", {}).items():
        channel = op["channel"]["$ref"]
        for m in op.get("messages", []):
            assert m["$ref"].startswith(channel + "/messages/"), (oid, m)
