"""The API's access check (mesh.api.auth) against the real routes, with mocked peer addresses.

The mesh test (tests/mesh/test_api_auth.py) drives a real node; these cases
pin the address check for peers no test machine can be, such as 10.0.0.5.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from mesh.api import auth
from mesh.api.guard import ConnectionGuard
from mesh.api.ingress import HttpRoutes
from mesh.api.server import build_app


async def _links(request: web.Request) -> web.StreamResponse:
    return web.Response()


def _app() -> web.Application:
    return build_app(
        mock.Mock(), HttpRoutes(), _links, max_body=1 << 20, guard=ConnectionGuard(10, 256, print)
    )


async def _request(
    method: str, path: str, peer: tuple[Any, ...] | None, headers: dict[str, str] | None = None
) -> web.Request:
    app = _app()
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        peer if name == "peername" else default
    )
    req = make_mocked_request(method, path, headers=headers, app=app, transport=transport)
    req._match_info = await app.router.resolve(req)  # what the server does before middlewares
    return req


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("POST", "/events/a/b/c", "publish"),
        ("GET", "/api/stats", "read"),
        ("GET", "/api/dlq/7", "read"),
        ("POST", "/api/reload", "admin"),
        ("POST", "/api/dlq/7/redrive", "admin"),
        ("DELETE", "/api/dlq", "admin"),
        ("POST", "/api/egress/0/resume", "admin"),
        ("GET", "/api/tail", "read"),
        ("POST", "/api/publish", "admin"),
        ("GET", "/healthz", None),
        ("GET", "/api/health", None),
        ("GET", "/metrics", None),
        ("GET", "/mesh", None),
        ("GET", "/api/nothing-here", "read"),  # unknown: closed like the API
        ("PUT", "/healthz", None),  # the router answers 405; nothing behind it
    ],
)
async def test_each_route_needs_its_scope(method: str, path: str, scope: str | None) -> None:
    assert auth.required_scope(await _request(method, path, ("127.0.0.1", 1))) == scope


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        (("127.0.0.1", 1234), True),
        (("127.8.9.10", 1234), True),
        (("::1", 1234, 0, 0), True),
        (("::ffff:127.0.0.1", 1234, 0, 0), True),
        (("10.0.0.5", 1234), False),
        (("192.0.2.2", 1234), False),
        (("::ffff:10.0.0.5", 1234, 0, 0), False),
        (("fd00::2", 1234, 0, 0), False),
        (None, False),
    ],
)
async def test_loopback_is_the_socket_peer_address(
    peer: tuple[Any, ...] | None, loopback: bool
) -> None:
    assert auth.is_loopback(await _request("GET", "/api/stats", peer)) is loopback


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/events/x"), ("GET", "/api/dlq"), ("POST", "/api/reload")]
)
async def test_without_tokens_a_non_loopback_client_is_refused(method: str, path: str) -> None:
    refusal = auth.check(await _request(method, path, ("10.0.0.5", 1234)), ())
    assert refusal is not None and refusal.status == 403
    assert refusal.content_type == "application/problem+json"
    assert refusal.body is not None and b"own host" in refusal.body
    assert auth.check(await _request(method, path, ("127.0.0.1", 1234)), ()) is None


async def test_open_endpoints_stay_open_to_any_client() -> None:
    for path in ("/healthz", "/api/health", "/metrics", "/mesh"):
        assert auth.check(await _request("GET", path, ("10.0.0.5", 1234)), ()) is None


async def test_tokens_decide_even_for_loopback_clients() -> None:
    grants = auth.grants([("p-token", ["publish"]), ("r-token", ["read"])])
    peer = ("127.0.0.1", 1)
    missing = auth.check(await _request("POST", "/events/x", peer), grants)
    assert missing is not None and missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = auth.check(await _request("POST", "/events/x", peer, bearer("r-token")), grants)
    assert wrong is not None and wrong.status == 403
    assert wrong.body is not None and b"r-token" not in wrong.body
    assert orjson.loads(wrong.body)["status"] == 403
    assert auth.check(await _request("POST", "/events/x", peer, bearer("p-token")), grants) is None
    # A remote client with the right token is let in.
    remote = ("10.0.0.5", 1)
    assert auth.check(await _request("GET", "/api/dlq", remote, bearer("r-token")), grants) is None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_same_token_twice_holds_both_entries_scopes() -> None:
    grants = auth.grants([("t", ["read"]), ("u", ["publish"]), ("t", ["admin"])])
    assert auth.scopes_of("t", grants) == {"read", "admin"}
    assert auth.scopes_of("tt", grants) is None
    assert auth.scopes_of("", grants) is None


def test_a_grant_shows_its_scopes_not_its_token() -> None:
    (grant,) = auth.grants([("secret-value", ["read"])])
    assert "secret" not in repr(grant) and grant.digest.hex() not in repr(grant)


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Host": "127.0.0.1:7401"}, None),
        ({"Host": "localhost:7401"}, None),
        ({"Host": "[::1]:7401"}, None),
        ({"Host": "127.0.0.1:7401", "Origin": "http://127.0.0.1:7401"}, None),  # the page
        ({"Host": "127.0.0.1:7401", "Origin": "https://evil.example"}, "cross-origin"),
        ({"Host": "127.0.0.1:7401", "Origin": "null"}, "opaque origin"),
        ({"Host": "evil.example:7401"}, "not a loopback name"),  # DNS rebinding
        ({"Host": "evil.example:7401", "Origin": "http://evil.example:7401"}, "loopback"),
    ],
)
async def test_without_tokens_a_web_page_in_a_local_browser_is_not_a_local_client(
    headers: dict[str, str], refused: str | None
) -> None:
    for method, path in (("GET", "/api/tail"), ("POST", "/api/publish"), ("GET", "/api/stats")):
        req = await _request(method, path, ("127.0.0.1", 1234), headers)
        answer = auth.check(req, ())
        if refused is None:
            assert answer is None, (method, path, headers)
        else:
            assert answer is not None and answer.status == 403, (method, path, headers)
            assert refused in orjson.loads(answer.body)["detail"]  # type: ignore[arg-type]
