"""The event catalog in EventCatalog's file layout (pure: file names and their text).

:func:`eventcatalog_files` turns a ``GET /api/catalog`` answer into the files
of an EventCatalog project (https://www.eventcatalog.dev), so a team can build
the catalog site from the running mesh (``mesh catalog --export DIR``):

- ``events/<id>/index.mdx`` per CloudEvent type: front matter ``id`` (the
  type), ``name`` (its last dotted part), ``version``, ``summary`` and, when
  the node knows the type's JSON Schema, ``schemaPath: schema.json`` with
  ``events/<id>/schema.json`` beside it; the body lists sources, mesh topics,
  producing and consuming sites and an example;
- ``services/<site>/index.mdx`` per site: ``sends`` (types it produces) and
  ``receives`` (types it consumes), each as ``{id, version}``.

Names come from peers' reports too, so they are made safe as folder names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["VERSION", "eventcatalog_files", "safe_id"]

VERSION = "0.0.1"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_id(name: str) -> str:
    """``name`` as a folder name: letters, digits, ``.``, ``_``, ``-``; never ``.`` or ``..``."""
    out = _UNSAFE.sub("-", name)[:200]
    if not out.strip("."):
        out = "event-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return out


def _front(meta: Mapping[str, Any], body: str) -> str:
    head = yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n{body}"


def _code(text: str) -> str:
    return "`" + str(text).replace("`", "'") + "`"


def _list(items: list[str]) -> str:
    return ", ".join(_code(i) for i in items) if items else "(none seen)"


def eventcatalog_files(catalog: Mapping[str, Any]) -> dict[str, str]:
    """Relative path → text, for every file of the export."""
    files: dict[str, str] = {}
    sends: dict[str, list[str]] = {}
    receives: dict[str, list[str]] = {}
    node = str(catalog.get("node", ""))
    for ev in catalog.get("events", []):
        type_ = str(ev["type"])
        eid = safe_id(type_)
        name = type_.rsplit(".", 1)[-1] or type_
        producers = [str(p) for p in ev.get("producers", [])]
        consumers = [str(c) for c in ev.get("consumers", [])]
        meta: dict[str, Any] = {
            "id": eid,
            "name": name,
            "version": VERSION,
            "summary": (
                f"CloudEvent type {type_}, produced at {', '.join(producers) or 'no site seen'}"
                f" and consumed at {', '.join(consumers) or 'no site yet'}."
            ),
        }
        schema = ev.get("schema")
        if isinstance(schema, dict):
            meta["schemaPath"] = "schema.json"
            files[f"events/{eid}/schema.json"] = json.dumps(schema, indent=2) + "\n"
        lines = [
            "## Overview",
            "",
            f"Generated from the running mesh by node {_code(node)} (`GET /api/catalog`).",
            "",
            f"- CloudEvent type: {_code(type_)}",
            f"- Sources: {_list(ev.get('sources', []))}",
            f"- Mesh topics: {_list(ev.get('topics', []))}",
            f"- Producing sites: {_list(producers)}",
            f"- Consuming sites: {_list(consumers)}",
            f"- Rate: {ev.get('rate', 0)} events/s over the last minute; {ev.get('count', 0)} seen",
            f"- Reported by: {_list([str(r) for r in ev.get('reported_by', [])])}",
            "",
            "<NodeGraph />",
            "",
        ]
        if schema is not None:
            lines += ["## Schema", "", '<SchemaViewer file="schema.json" />', ""]
        example = ev.get("example")
        if example:
            text = json.dumps(example, indent=2).replace("```", "'''")
            lines += ["## Example", "", "```json", text, "```", ""]
        files[f"events/{eid}/index.mdx"] = _front(meta, "\n".join(lines))
        for p in producers:
            sends.setdefault(p, []).append(eid)
        for c in consumers:
            receives.setdefault(c, []).append(eid)
    for site in sorted(set(sends) | set(receives)):
        sid = safe_id(site)
        meta = {
            "id": sid,
            "name": site,
            "version": VERSION,
            "summary": f"The mesh site {site}: the events it produces and consumes.",
            "sends": [{"id": e, "version": VERSION} for e in sends.get(site, [])],
            "receives": [{"id": e, "version": VERSION} for e in receives.get(site, [])],
        }
        body = (
            "## Overview\n\n"
            f"Site {_code(site)} of the event mesh, as seen by node {_code(node)}.\n\n"
            "<NodeGraph />\n"
        )
        files[f"services/{sid}/index.mdx"] = _front(meta, body)
    return files
