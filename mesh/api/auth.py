"""Who may use HTTP ingress and the admin API: one middleware decides for every request.

- ``/mesh`` (the link hello has its own token), ``/healthz``, ``/readyz``,
  ``/api/health``, ``/metrics`` and the page at ``/`` are open: they carry no
  payloads and no secrets;
- with ``api.tokens`` configured, ``POST /events/<topic>`` needs a token with
  ``publish``, ``GET /api/*`` one with ``read``, and every other method under
  ``/api`` (reload, dead-letter redrive and purge, egress resume) one with
  ``admin``. No token, or one that is not configured: 401 with
  ``WWW-Authenticate: Bearer``; a token without the scope: 403;
- with no tokens configured, only clients on the node's own host (a loopback
  peer address) may use them; any other client gets 403. A web page open in a
  browser on that host is not such a client: a request carrying an ``Origin``
  other than the node itself, or a ``Host`` that is not a loopback name (a
  DNS-rebinding page), is refused with 403 too. With tokens, a page has no
  token to send.

Every answer is ``application/problem+json`` and never quotes a token. The
tokens are read from :meth:`mesh.api.protocol.NodeApi.api_grants` on every
request, so ``mesh reload`` changes them at once. A presented token is
compared, in constant time, against every configured one (their SHA-256
digests, so that lengths do not show either), and the scopes of all that
match are granted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from mesh.api.responses import problem

__all__ = ["OPEN_PATHS", "Grant", "check", "grants", "is_loopback", "required_scope", "scopes_of"]

Scope = Literal["publish", "read", "admin"]

OPEN_PATHS = frozenset({"/", "/mesh", "/healthz", "/readyz", "/api/health", "/metrics"})
_READS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Grant:
    """A configured token, kept as its SHA-256 digest, and its scopes."""

    digest: bytes
    scopes: frozenset[str]

    def __repr__(self) -> str:  # never the digest
        return f"Grant(scopes={sorted(self.scopes)})"


def grants(tokens: Iterable[tuple[str, Iterable[str]]]) -> tuple[Grant, ...]:
    """Grants from (secret, scopes) pairs."""
    return tuple(Grant(_digest(secret), frozenset(scopes)) for secret, scopes in tokens)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def scopes_of(presented: str, configured: Sequence[Grant]) -> frozenset[str] | None:
    """The scopes ``presented`` holds, None if it matches no configured token.

    Compares against every grant, never stopping at the first match.
    """
    digest = _digest(presented)
    found = False
    scopes: set[str] = set()
    for grant in configured:
        if hmac.compare_digest(digest, grant.digest):
            found = True
            scopes |= grant.scopes
    return frozenset(scopes) if found else None


def required_scope(request: web.Request) -> Scope | None:
    """The scope a request needs; None for the open endpoints.

    Decided by the route that matched when one did (so no spelling of a path
    reaches a handler under another rule), else by the path; anything that is
    neither open nor ingress is treated as the admin API.
    """
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    if path in OPEN_PATHS:
        return None
    if path.startswith("/events/"):
        return "publish"
    return "read" if request.method in _READS else "admin"


def is_loopback(request: web.Request) -> bool:
    """Whether the client's address (the socket's peer, not a header) is a loopback one."""
    remote = request.remote
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _loopback_name(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _browser_refusal(request: web.Request) -> str | None:
    """Why a loopback request looks like a web page's, not a local client's; None if not."""
    host = request.headers.get("Host")  # a browser always sends one; HTTP/1.0 need not
    if host is not None and not _loopback_name(host):
        return (
            f"Host {host[:80]!r} is not a loopback name: without api.tokens the API "
            "answers only requests to 127.0.0.1, [::1] or localhost"
        )
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        if origin.split("://", 1)[-1].lower() != (host or "").lower():
            return (
                f"a cross-origin request (from {origin[:80]}) is refused: without api.tokens "
                "the API answers only the node's own host and page"
            )
    elif origin == "null":
        return "a request from an opaque origin is refused"
    return None


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return value


def _unauthorized(detail: str) -> web.Response:
    return problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="mesh"'})


def check(request: web.Request, configured: Sequence[Grant]) -> web.Response | None:
    """The refusal for ``request``, or None if it may go on."""
    scope = required_scope(request)
    if scope is None:
        return None
    where = "/events" if scope == "publish" else "/api"
    if not configured:
        if is_loopback(request):
            browser = _browser_refusal(request)
            if browser is None:
                return None
            return problem(403, "Forbidden", browser)
        return problem(
            403,
            "Forbidden",
            f"no api.tokens are configured, so {where} is only open to clients on the "
            "node's own host",
        )
    presented = _bearer(request)
    if presented is None:
        return _unauthorized(f"{where} needs a bearer token (Authorization: Bearer <token>)")
    held = scopes_of(presented, configured)
    if held is None:
        return _unauthorized("the bearer token is not one this node accepts")
    if scope not in held:
        return problem(
            403,
            "Forbidden",
            f"the token lacks the {scope!r} scope that {request.method} {where} needs",
        )
    return None
