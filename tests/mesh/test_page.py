"""The live page at ``GET /``, in a real headless Chromium.

The issue's acceptance: the page of the middle node of a three-node line
(a dials b, b dials c; c subscribes to ``in/#`` and a publishes) shows all
three nodes and both links, a non-zero event rate while events flow, and the
b--c link degraded once c is stopped. The browser is the distribution's
``chromium`` driven by Selenium through ``chromium-driver``; a machine without
them fails this test with the command that installs them, it never skips.

Selenium blocks, so every driver call runs in a thread while the nodes run in
the test's event loop. The DOM is read in one ``execute_script`` call per
look, so a re-render between two reads cannot mix two polls.

A third test serves the page beside a stand-in ``/api/status`` to cover what
the line does not: the token form on 401, the canary and RTT columns (a peer
up with ``canary_ok: false`` is degraded) and a hostile peer id kept as text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mesh.api import page
from mesh.runtime.node import Node
from tests.helpers import node_config
from tests.mesh.meshnet import MeshNet

pytestmark = pytest.mark.timeout(90)

DEGRADED = ("degraded", "down")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = (
    "the live page's test needs the distribution's Chromium, its driver and Selenium: "
    "run scripts/bootstrap dev (or apt-get install chromium chromium-driver and "
    "pip install -e '.[dev]')"
)

# Everything the test looks at, read from the rendered DOM in one go.
SNAPSHOT = """
const q = (s) => Array.from(document.querySelectorAll(s));
const one = (s) => document.querySelector(s);
const rate = (cell) => cell && cell.dataset.rate !== "" ? parseFloat(cell.dataset.rate) : null;
return {
  node: one('[data-testid="node-id"]').textContent,
  ready: one('[data-testid="ready"]').dataset.state,
  error: one('[data-testid="error"]').textContent,
  authShown: getComputedStyle(one('[data-testid="auth"]')).display !== "none",
  nodes: q('svg [data-node]').map((e) => e.dataset.node),
  links: Object.fromEntries(q('svg line[data-link]').map((e) => [e.dataset.link, e.dataset.state])),
  rows: Object.fromEntries(q('[data-testid="link-row"]').map((r) => [r.dataset.peer, {
    state: r.dataset.state,
    rateIn: rate(r.querySelector('[data-testid="rate-in"]')),
    rateOut: rate(r.querySelector('[data-testid="rate-out"]')),
    rateInText: r.querySelector('[data-testid="rate-in"]').innerText,
    rateOutText: r.querySelector('[data-testid="rate-out"]').innerText,
    canary: r.querySelector('[data-testid="canary"]').innerText,
  }])),
};
"""


def _browser() -> Any:
    """A headless Chromium under Selenium; fails (never skips) when one is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"selenium is not installed ({exc}): {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@contextlib.asynccontextmanager
async def browser(starting: asyncio.Task[Any]) -> AsyncIterator[Any]:
    driver = await starting
    try:
        yield driver
    finally:
        await asyncio.to_thread(driver.quit)


async def look_until(
    driver: Any, cond: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    """Read the page until ``cond`` holds; fail with the last look after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        seen: dict[str, Any] = await asyncio.to_thread(driver.execute_script, SNAPSHOT)
        if cond(seen):
            return seen
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; page: {seen}")
        await asyncio.sleep(0.25)


def whole_mesh(seen: dict[str, Any]) -> bool:
    return {"a", "b", "c"} <= set(seen["nodes"]) and {"a--b", "b--c"} <= set(seen["links"])


def events_flowing(seen: dict[str, Any]) -> bool:
    """Events come in from a and go out to c, as b's page counts them."""
    into_b = seen["rows"].get("a", {}).get("rateIn") or 0
    out_of_b = seen["rows"].get("c", {}).get("rateOut") or 0
    return bool(into_b > 0 and out_of_b > 0)


def c_degraded(seen: dict[str, Any]) -> bool:
    row = seen["rows"].get("c", {})
    return seen["links"].get("b--c") in DEGRADED and row.get("state") in DEGRADED


async def test_the_middle_nodes_page_shows_the_line_its_rates_and_a_stopped_peer(
    tmp_path: Path,
) -> None:
    starting = asyncio.create_task(asyncio.to_thread(_browser), name="chromium")
    edges = [("a", "b"), ("b", "c")]  # (dialer, acceptor): b keeps c configured
    async with (
        browser(starting) as driver,
        MeshNet(tmp_path, ["a", "b", "c"], edges, {"c": ["in/#"]}) as net,
    ):
        await net.wait_converged()
        await asyncio.to_thread(driver.get, f"http://127.0.0.1:{net.node('b').port}/")

        seen = await look_until(driver, whole_mesh, 10, "nodes a, b, c and links a--b, b--c")
        assert seen["node"] == "b"
        assert seen["error"] == ""
        assert not seen["authShown"], "the inline style did not apply (CSP hash?)"
        assert seen["links"] == {"a--b": "up", "b--c": "up"}, seen
        assert {seen["rows"]["a"]["state"], seen["rows"]["c"]["state"]} == {"up"}

        async def publish() -> None:
            i = 0
            while True:
                await net.publish("a", f"in.page.{i}", f"page-{i}")
                i += 1
                await asyncio.sleep(0.02)  # about 50 events a second

        publisher = asyncio.create_task(publish(), name="publisher")
        try:
            seen = await look_until(driver, events_flowing, 12, "a non-zero event rate")
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        assert net.received()["c"], "the events did not reach c"
        row_a, row_c = seen["rows"]["a"], seen["rows"]["c"]
        assert row_a["rateInText"] not in ("0.0", "—"), row_a
        assert row_c["rateOutText"] not in ("0.0", "—"), row_c

        await net.stop("c")
        seen = await look_until(driver, c_degraded, 15, "the b--c link shown degraded")
        assert seen["links"]["a--b"] == "up", seen
        assert "c" in seen["nodes"]
        assert seen["ready"] == "not-ready"  # b's configured peer c is not linked


async def test_the_page_is_one_self_contained_file_with_a_strict_policy(tmp_path: Path) -> None:
    async with (
        Node(node_config(tmp_path, "solo")).serve() as node,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{node.port}/") as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-store"
        csp = r.headers["Content-Security-Policy"]
        html = await r.text()
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    assert "unsafe" not in csp and "http" not in csp and "*" not in csp
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        [block] = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert directives[directive] == f"'sha256-{digest}'"
    # Nothing from elsewhere: no URL with a scheme or a network path, no loaded resource.
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""\b(src|href)\s*=\s*["']?(//|[a-z]+:)""", html, re.IGNORECASE)
    assert not re.search(r"<script[^>]*\bsrc|<link\b|@import|url\(", html, re.IGNORECASE)
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html
    assert "/api/status" in html


def _status(peers: list[dict[str, Any]], links: list[dict[str, Any]]) -> dict[str, Any]:
    ids = sorted(
        {"me"} | {p["id"] for p in peers} | {n for lk in links for n in (lk["a"], lk["b"])}
    )
    return {
        "node": "me",
        "region": "eu",
        "ready": False,
        "reasons": [{"component": "peer:z", "reason": "not linked yet"}],
        "uptime": 12.0,
        "brokers": {"bus": {"up": True, "reason": None}, "plant": {"up": False, "reason": "gone"}},
        "peers": [
            {"direction": "dialed", "sent": 0, "received": 0, "outbox": 0, "region": None, **p}
            for p in peers
        ],
        "store_full": False,
        "outboxes": [{"name": "peer:x", "depth": 3, "bytes": 120, "bound": 1000}],
        "ingress": {"bus": 5, "plant": 0},
        "egress": [],
        "dead_letters": 2,
        "topology": {"nodes": [{"id": n, "self": n == "me"} for n in ids], "links": links},
    }


async def test_the_page_asks_for_a_token_and_shows_canaries_rtt_and_hostile_ids_as_text() -> None:
    """A stand-in /api/status: the token form, canary and RTT columns, ids as text."""
    hostile = '<img src=x onerror="document.title=1">'
    status = _status(
        [
            {"id": "x", "state": "up", "canary_ok": True, "rtt": 0.0123},
            {"id": "y", "state": "up", "canary_ok": False, "rtt": None},
            {"id": "z", "state": "down"},
            {"id": hostile, "state": "up"},
        ],
        [
            {"a": "me", "b": "x", "up": True},
            {"a": "me", "b": "y", "up": True},
            {"a": "me", "b": "z", "up": False},
            {"a": "me", "b": hostile, "up": True},
            {"a": "w", "b": "x", "up": None},
        ],
    )
    asked: list[str | None] = []

    async def api_status(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer s3cret":
            return web.json_response({"detail": "needs a token"}, status=401)
        return web.json_response(status)

    app = web.Application()
    app.router.add_get("/", page.handle)
    app.router.add_get("/api/status", api_status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with browser(asyncio.create_task(asyncio.to_thread(_browser))) as driver:
            await asyncio.to_thread(driver.get, f"http://127.0.0.1:{port}/")
            seen = await look_until(driver, lambda s: s["authShown"], 10, "the token form")
            assert "needs a token" in seen["error"]  # the answer's detail

            def enter_token() -> None:
                from selenium.webdriver.common.by import By

                driver.find_element(By.CSS_SELECTOR, '[data-testid="token-input"]').send_keys(
                    "s3cret"
                )
                driver.find_element(By.CSS_SELECTOR, '[data-testid="token-save"]').click()

            await asyncio.to_thread(enter_token)
            seen = await look_until(driver, lambda s: len(s["rows"]) == 4, 10, "the links")
            stored = await asyncio.to_thread(
                driver.execute_script, "return sessionStorage.getItem('mesh.api.token')"
            )
            title = await asyncio.to_thread(driver.execute_script, "return document.title")
            images = await asyncio.to_thread(
                driver.execute_script, "return document.querySelectorAll('img').length"
            )
            rtts = await asyncio.to_thread(
                driver.execute_script,
                "return Object.fromEntries(Array.from("
                "document.querySelectorAll('[data-testid=\"link-row\"]')).map("
                "(r) => [r.dataset.peer, r.querySelector('[data-testid=\"rtt\"]').innerText]))",
            )
    finally:
        await runner.cleanup()

    assert "Bearer s3cret" in asked and stored == "s3cret"
    assert not seen["authShown"] and seen["error"] == ""
    rows = seen["rows"]
    assert {p: (r["state"], r["canary"]) for p, r in rows.items()} == {
        "x": ("up", "ok"),
        "y": ("degraded", "degraded"),
        "z": ("down", "—"),
        hostile: ("up", "—"),
    }
    assert rtts == {"x": "12.3 ms", "y": "—", "z": "—", hostile: "—"}
    assert seen["links"] == {
        "me--x": "up",
        "me--y": "degraded",
        "me--z": "down",
        f"me--{hostile}": "up",
        "w--x": "unknown",
    }
    assert set(seen["nodes"]) == {"me", "w", "x", "y", "z", hostile}
    assert images == 0 and title == "me — mesh"  # the id stayed text: no element, no script
