"""JSON and RFC 9457 problem responses, shared by the API and HTTP bridges."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

__all__ = ["json_response", "problem"]


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj, option=orjson.OPT_INDENT_2),
        status=status,
        content_type="application/json",
    )


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """An RFC 9457 problem response; ``extra`` members go into the body."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/problem+json",
        headers=headers,
    )
