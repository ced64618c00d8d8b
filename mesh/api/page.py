"""The live page at ``GET /``: one self-contained HTML file, no build step, no CDN.

``page.html`` ships as package data and is read once. It holds no data: its
script polls ``/api/status`` every 2 s (loopback clients, or a bearer token
with ``read`` the user pastes into it) and draws the node, its brokers, links,
outboxes, dead letters and the mesh graph from that.

The Content-Security-Policy allows exactly the page's one inline ``<script>``
and one ``<style>`` (by their SHA-256 hashes, computed here from the file as
shipped) and fetches to its own origin; nothing else loads, from anywhere.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

__all__ = ["Page", "handle", "load"]

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Page:
    """The page's bytes and the headers it is served with."""

    body: bytes
    csp: str


def _sources(pattern: re.Pattern[str], text: str, what: str) -> str:
    blocks = pattern.findall(text)
    if not blocks:
        raise ValueError(f"page.html has no inline {what}")
    hashes = (hashlib.sha256(b.encode("utf-8")).digest() for b in blocks)
    return " ".join(f"'sha256-{base64.b64encode(h).decode('ascii')}'" for h in hashes)


@functools.cache
def load() -> Page:
    """``page.html`` from the package, with a CSP naming its inline blocks' hashes."""
    text = resources.files("mesh.api").joinpath("page.html").read_text(encoding="utf-8")
    csp = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sources(_SCRIPT, text, 'script')}",
            f"style-src {_sources(_STYLE, text, 'style')}",
            "connect-src 'self'",
            "img-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return Page(text.encode("utf-8"), csp)


async def handle(request: web.Request) -> web.Response:
    page = load()
    return web.Response(
        body=page.body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": page.csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
        },
    )
