"""No secret is ever shown: a node with a secret in every place one can be,
driven through everything it answers, and searched.

The node under test (site-a) runs as a real process (``mesh run``) with
every secret passed as ``${VAR}`` from its environment: API tokens (publish,
read, admin), the token of the peer it dials (site-b) and of the peers it
accepts (site-c, and site-d, which dials with a wrong one), the MQTT password
of a Mosquitto that refuses anonymous clients, the token of a nats-server that
requires one, a webhook header and a webhook URL with a password. The test
then uses HTTP ingress (accepted and every refusal), a webhook that fails so
events dead-letter, every ``/api`` endpoint, ``/metrics``, reloads (a rotated
token, files that are not YAML with a secret on the bad line) and every
``mesh`` command, and searches each response body and header, each command's
output and the node's whole log for every secret, also base64- and
URL-encoded. The peers run in this process; their log records are searched
too. What the test itself sends (its own Authorization headers) is not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import pytest
import yaml
from aiohttp import web

from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer, free_port
from tests.helpers import node_config, unique, wait_for


def _secret(what: str) -> str:
    return f"{what}-{secrets.token_hex(16)}"


class Secrets:
    """Distinct, recognisable random secrets, one per place, fresh per run."""

    def __init__(self) -> None:
        self.ingest = _secret("ingest")
        self.ingest_next = _secret("ingestnext")
        self.ops = _secret("ops")
        self.admin = _secret("admin")
        self.link_ab = _secret("linkab")  # site-a dials site-b
        self.link_ca = _secret("linkca")  # site-c dials site-a
        self.link_d = _secret("linkd")  # site-a's entry for site-d, never sent
        self.wrong_link = _secret("wronglink")  # what site-d presents instead
        self.wrong_api = _secret("wrongapi")  # a bearer token nobody configured
        self.cookie = _secret("cookie")  # a client's cookie on a refused request
        self.mqtt_password = _secret("mqttpw")
        self.nats_token = _secret("natstoken")
        self.hook_header = _secret("hookheader")
        self.hook_password = _secret("hookpw")
        self.hook_query = _secret("hookquery")  # a webhook's ?key=, as Slack-style hooks do
        self.in_bad_file = _secret("badfile")

    def env(self) -> dict[str, str]:
        """What site-a's environment carries for its file's ``${VAR}`` references."""
        return {
            "INGEST_TOKEN": self.ingest,
            "INGEST_NEXT": self.ingest_next,
            "OPS_TOKEN": self.ops,
            "ADMIN_TOKEN": self.admin,
            "LINK_AB": self.link_ab,
            "LINK_CA": self.link_ca,
            "LINK_D": self.link_d,
            "MQTT_PASSWORD": self.mqtt_password,
            "NATS_TOKEN": self.nats_token,
            "HOOK_HEADER": self.hook_header,
            "HOOK_PASSWORD": self.hook_password,
            "HOOK_QUERY": self.hook_query,
        }

    def all(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if isinstance(v, str)}


def forms(secret: str) -> Iterator[str]:
    """The secret's random part as it is, URL-encoded and base64-encoded (both alphabets)."""
    raw = secret.rpartition("-")[2]
    yield raw
    yield urllib.parse.quote(secret, safe="")
    for text in (secret, f"hook:{secret}"):  # the second: a URL's user:password as Basic
        encoded = base64.b64encode(text.encode()).decode()
        yield encoded.rstrip("=")
        yield base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


class Seen:
    """Everything the node (and the commands) answered, by where it came from."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    async def call(
        self,
        http: aiohttp.ClientSession,
        method: str,
        url: str,
        token: str | None = None,
        **kw: Any,
    ) -> tuple[int, str]:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with http.request(method, url, headers=headers, **kw) as r:
            body = await r.text()
            where = f"{method} {urllib.parse.urlsplit(url).path} -> {r.status}"
            self.add(where, body)
            self.add(where + " headers", "\n".join(f"{k}: {v}" for k, v in r.headers.items()))
            return r.status, body

    def leaks(self, named: dict[str, str]) -> list[str]:
        found = []
        for name, secret in named.items():
            for form in forms(secret):
                for where, text in self.texts:
                    if form in text:
                        at = text.index(form)
                        found.append(f"{name} in {where}: ...{text[max(0, at - 120) : at + 60]!r}")
        return found


def event_headers(**extra: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": unique("e"),
        "ce-source": "/test",
        "ce-type": "com.example.t",
        "content-type": "text/plain",
        **extra,
    }


@contextlib.asynccontextmanager
async def webhook_server() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """Webhooks: ``/ok/...`` answers 200 and records the headers, ``/fail/...`` 400."""
    received: list[dict[str, str]] = []

    async def ok(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.Response(status=200)

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=400, text="this hook refuses everything")

    app = web.Application()
    app.router.add_post("/ok/{rest:.*}", ok)
    app.router.add_post("/fail/{rest:.*}", fail)
    # The receiver is the hook's owner, not the node: its own access log would show
    # the ?key= it was sent, which is not the node's to hide.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, received
    finally:
        await runner.cleanup()


def site_a_config(
    tmp_path: Path, port: int, b_port: int, hook_port: int, mqtt: str, nats_url: str, ingest: str
) -> dict[str, Any]:
    hook = f"http://hook:${{HOOK_PASSWORD}}@127.0.0.1:{hook_port}"
    return {
        "node": {"id": "site-a", "listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "a")},
        "brokers": {
            "plant": {
                "kind": "mqtt",
                "url": mqtt,
                "username": "gateway",
                "password": "${MQTT_PASSWORD}",
            },
            "core": {"kind": "nats", "url": nats_url, "token": "${NATS_TOKEN}"},
            "web": {"kind": "http", "timeout": 5, "headers": {"X-Hook-Secret": "${HOOK_HEADER}"}},
        },
        "peers": [
            {"id": "site-b", "url": f"ws://127.0.0.1:{b_port}/mesh", "token": "${LINK_AB}"},
        ],
        "accept": [
            {"id": "site-c", "token": "${LINK_CA}"},
            {"id": "site-d", "token": "${LINK_D}"},
        ],
        "ingress": [
            {"from": "web", "topic": "in/#"},
            {"from": "plant", "topic": "plant/#"},
        ],
        "egress": [
            {"to": "web", "topic": "in/ok/#", "target": hook + "/ok/{1}?key=${HOOK_QUERY}"},
            {"to": "web", "topic": "in/fail/#", "target": hook + "/fail/{1}"},
            {"to": "core", "topic": "in/nats/#", "target": "out.{1}"},
            {"to": "plant", "topic": "in/mqtt/#", "target": "out/{1}"},
        ],
        "api": {
            "tokens": [
                {"token": ingest, "scopes": ["publish"]},
                {"token": "${OPS_TOKEN}", "scopes": ["read"]},
                {"token": "${ADMIN_TOKEN}", "scopes": ["read", "admin"]},
            ]
        },
    }


def bad_files(s: Secrets) -> list[str]:
    """Files that are no valid configuration, each with a secret on the line at fault."""
    head = "node: {id: site-a}\n"
    return [
        # not closed
        head + f'api: {{tokens: [{{token: "{s.in_bad_file}", scopes: [publish]}}\n',
        # a password that starts with '!' is read as a YAML tag
        head
        + f"brokers: {{plant: {{kind: mqtt, url: 'mqtt://h:1', password: !{s.in_bad_file}}}}}\n",
        # ... and one that starts with '*' as an alias
        head + f"api:\n  tokens:\n    - token: *{s.in_bad_file}\n      scopes: [publish]\n",
        # a ': ' inside an unquoted value
        head + f"api:\n  tokens:\n    - token: {s.in_bad_file}: {s.admin}\n",
        # YAML, but not a configuration: the secret is a value of the wrong kind
        head + f"api: {{tokens: [{{token: {s.in_bad_file}, scopes: [{s.admin}]}}]}}\n",
        head + f"limits: {{batch_size: {s.in_bad_file}}}\n",
        head + f"peers: [{{id: site-b, url: '{s.in_bad_file}', token: x}}]\n",
    ]


def environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(extra)
    return env


def run_cli(seen: Seen, env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mesh.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    out = proc.stdout + proc.stderr
    seen.add("mesh " + " ".join(a for a in args if len(a) < 40), out)
    return proc.returncode, out


@pytest.fixture
def mosquitto_with_password(tmp_path: Path) -> Iterator[tuple[Mosquitto, str]]:
    password = _secret("mqttpw")
    broker = Mosquitto(workdir=tmp_path / "mosquitto", users={"gateway": password})
    broker.start()
    yield broker, password
    broker.close()


@pytest.fixture
def nats_with_token(tmp_path: Path) -> Iterator[tuple[NatsServer, str]]:
    token = _secret("natstoken")
    server = NatsServer(workdir=tmp_path / "nats", token=token)
    server.start()
    yield server, token
    server.close()


async def test_no_secret_in_any_response_output_or_log(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mosquitto_with_password: tuple[Mosquitto, str],
    nats_with_token: tuple[NatsServer, str],
) -> None:
    caplog.set_level(logging.DEBUG)
    s = Secrets()
    mosq, s.mqtt_password = mosquitto_with_password
    nats_server, s.nats_token = nats_with_token
    seen = Seen()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg_file = tmp_path / "site-a.yaml"
    log_file = tmp_path / "site-a.log"
    env = environment(s.env())

    b_cfg = node_config(
        tmp_path,
        "site-b",
        brokers={"bus": {"kind": "memory", "name": unique("bus")}},
        accept=[{"id": "site-a", "token": s.link_ab}],
        egress=[{"to": "bus", "topic": "in/b/#", "target": "b/{1}"}],
    )
    c_cfg = node_config(
        tmp_path,
        "site-c",
        peers=[{"id": "site-a", "url": f"ws://127.0.0.1:{port}/mesh", "token": s.link_ca}],
    )
    d_cfg = node_config(
        tmp_path,
        "site-d",
        peers=[{"id": "site-a", "url": f"ws://127.0.0.1:{port}/mesh", "token": s.wrong_link}],
    )
    async with (
        Node(b_cfg).serve() as b,
        webhook_server() as (hook_port, hooked),
        aiohttp.ClientSession() as http,
    ):
        data = site_a_config(
            tmp_path, port, b.port, hook_port, mosq.url, nats_server.url, "${INGEST_TOKEN}"
        )
        await asyncio.to_thread(cfg_file.write_text, yaml.safe_dump(data))
        proc = _start_node(cfg_file, log_file, env)
        try:
            await drive(s, seen, http, proc, base, env, cfg_file, data, b, c_cfg, d_cfg, hooked)
        except* AssertionError as group:
            # What site-a was doing, to tell a slow machine from a bug (its secrets
            # are this test's own). A failure inside a node's `serve()` arrives
            # wrapped in an ExceptionGroup, hence except*.
            tail = log_file.read_text(errors="replace")[-6000:]
            state = await _site_a_state(http, base, s.ops)
            first: BaseException = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise AssertionError(
                f"{first}\n--- site-a's state ---\n{state}"
                f"\n--- site-a's log, last lines ---\n{tail}"
            ) from first
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(proc.wait, 20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
    log_text = log_file.read_text(errors="replace")
    seen.add("site-a's log", log_text)
    seen.add("this process's log", "\n".join(r.getMessage() for r in caplog.records))
    seen.add("this process's log records", "\n".join(str(r.__dict__) for r in caplog.records))
    # The run went where it should: brokers connected with their credentials,
    # links up, the wrong token refused, a clean stop.
    assert "broker plant connected" in log_text and "broker core connected" in log_text
    assert "link site-b up" in log_text and "link site-c up" in log_text, log_text[-3000:]
    assert "wrong token for node 'site-d'" in log_text, log_text[-3000:]
    assert "node site-a stopped" in log_text and proc.returncode == 0, log_text[-3000:]
    assert "Traceback" not in log_text, log_text[-3000:]
    leaks = seen.leaks(s.all())
    assert not leaks, "\n".join(leaks)


async def _site_a_state(http: aiohttp.ClientSession, base: str, token: str) -> str:
    out = []
    for path in ("/api/status", "/api/egress"):
        try:
            async with http.get(base + path, headers={"Authorization": f"Bearer {token}"}) as r:
                out.append(f"{path}: {await r.text()}")
        except aiohttp.ClientError as exc:
            out.append(f"{path}: {exc}")
    return "\n".join(out)


async def drive(
    s: Secrets,
    seen: Seen,
    http: aiohttp.ClientSession,
    proc: subprocess.Popen[bytes],
    base: str,
    env: dict[str, str],
    cfg_file: Path,
    data: dict[str, Any],
    b: Node,
    c_cfg: Any,
    d_cfg: Any,
    hooked: list[dict[str, str]],
) -> None:
    nc = await nats.connect(nats_url(data), token=s.nats_token)
    delivered: list[bytes] = []

    async def on_msg(msg: Any) -> None:
        delivered.append(msg.data)

    await nc.subscribe("out.>", cb=on_msg)
    await nc.flush()
    try:
        # Up, brokers connected (ingress answers 202 only then).
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, "site-a exited"
            with contextlib.suppress(aiohttp.ClientError):
                status, _ = await seen.call(
                    http,
                    "POST",
                    f"{base}/events/in/nats/x",
                    s.ingest,
                    data=b"1",
                    headers=event_headers(),
                )
                if status == 202:
                    break
            assert time.monotonic() < deadline, "site-a did not accept events"
            await asyncio.sleep(0.1)
        async with Node(c_cfg).serve() as c, Node(d_cfg).serve() as d:
            await wait_for(lambda: "site-a" in b.sessions and "site-a" in c.sessions, what="links")
            await asyncio.sleep(1.0)  # site-d dials and is refused at least once
            await exercise(s, seen, http, base, env, cfg_file, data, hooked, delivered)
            assert "site-a" in b.sessions and "site-a" in c.sessions, "a link dropped"
            assert "site-a" not in d.sessions
    finally:
        await nc.close()


def nats_url(data: dict[str, Any]) -> str:
    return str(data["brokers"]["core"]["url"])


async def exercise(
    s: Secrets,
    seen: Seen,
    http: aiohttp.ClientSession,
    base: str,
    env: dict[str, str],
    cfg_file: Path,
    data: dict[str, Any],
    hooked: list[dict[str, str]],
    delivered: list[bytes],
) -> None:
    events = f"{base}/events"
    # -- ingress, accepted and refused ---------------------------------------------
    for topic in ("in/ok/x", "in/fail/x", "in/mqtt/x", "in/nats/y"):
        status, body = await seen.call(
            http, "POST", f"{events}/{topic}", s.ingest, data=b"1", headers=event_headers()
        )
        assert status == 202, (topic, body)
    refusals = [
        (401, None, {}),  # no token
        (401, s.wrong_api, {}),  # a token nobody configured
        (403, s.ops, {}),  # a token without publish
        (403, s.admin, {}),
    ]
    for want, token, extra in refusals:
        status, body = await seen.call(
            http, "POST", f"{events}/in/nats/z", token, data=b"1", headers=event_headers(**extra)
        )
        assert status == want, body
    # Refused after the token check: each request carries secrets in its headers.
    carrying = {"Cookie": f"session={s.cookie}", "X-Api-Key": s.cookie}
    status, body = await seen.call(
        http,
        "POST",
        f"{events}/in/nats/bad",
        s.ingest,
        data=b"1",
        headers={**event_headers(**carrying), "ce-specversion": "0.1"},
    )
    assert status == 400, body
    status, body = await seen.call(
        http,
        "POST",
        f"{events}/in/nats/big",
        s.ingest,
        data=b"x" * (300 * 1024),
        headers=event_headers(**carrying),
    )
    assert status == 413, body
    status, body = await seen.call(
        http,
        "POST",
        f"{events}/in/nats/structured",
        s.ingest,
        data=b"{not json",
        headers={"content-type": "application/cloudevents+json", **carrying},
    )
    assert status == 400, body
    # The webhook got the secret header and the URL's credentials (so they were
    # used), the NATS subscriber its events; the failing hook dead-letters.
    await wait_for(lambda: hooked, what="the webhook")
    assert hooked[0]["X-Hook-Secret"] == s.hook_header
    basic = base64.b64encode(f"hook:{s.hook_password}".encode()).decode()
    assert hooked[0]["Authorization"] == f"Basic {basic}"
    await wait_for(lambda: len(delivered) >= 2, what="NATS deliveries")

    async def dead_letters() -> list[dict[str, Any]]:
        async with http.get(f"{base}/api/dlq", headers={"Authorization": f"Bearer {s.ops}"}) as r:
            entries: list[dict[str, Any]] = (await r.json())["entries"]
            return entries

    for _ in range(200):
        entries = await dead_letters()
        if any(e["place"].startswith("egress") for e in entries) and len(entries) >= 4:
            break
        await asyncio.sleep(0.05)
    places = sorted(e["place"] for e in entries)
    assert len(entries) >= 4 and any(p.startswith("egress") for p in places), entries
    # -- every API endpoint, read with each token that may -------------------------
    paths = ["/api/stats", "/api/status", "/api/routes", "/api/peers", "/api/dlq", "/api/egress"]
    paths += ["/api/health", "/api/asyncapi", "/api/asyncapi?format=yaml", "/api/catalog"]
    paths += [f"/api/dlq/{e['id']}" for e in entries]
    for path in paths:
        for token in (s.ops, s.admin):
            status, body = await seen.call(http, "GET", base + path, token)
            assert status == 200, (path, body)
        await seen.call(http, "GET", base + path)  # 401
        await seen.call(http, "GET", base + path, s.ingest)  # 403
    for path in ("/metrics", "/healthz", "/readyz", "/", "/mesh", "/nowhere"):
        await seen.call(http, "GET", base + path)
    status, body = await seen.call(http, "GET", f"{base}/api/egress", s.ops)
    assert "hook:***@" in body, body
    # -- the CLI, every command, with --token and with MESH_API_TOKEN --------------
    first = str(entries[0]["id"])
    url = ["--url", base]
    with_config = ["-c", str(cfg_file)]
    reads = [
        ["routes"], ["routes", "--json"], ["peers"], ["peers", "--json"],
        ["dlq", "list"], ["dlq", "list", "--json"], ["dlq", "show", first],
        ["egress"], ["egress", "list", "--json"], ["asyncapi"], ["asyncapi", "--yaml"],
    ]  # fmt: skip
    changes = [["egress", "resume", "0"], ["dlq", "redrive", first], ["reload"]]
    for args in reads:
        code, out = await asyncio.to_thread(run_cli, seen, env, *args, *url, "--token", s.ops)
        assert code == 0, (args, out)
        code, out = await asyncio.to_thread(
            run_cli, seen, {**env, "MESH_API_TOKEN": s.admin}, *args, *with_config
        )
        assert code == 0, (args, out)
        code, out = await asyncio.to_thread(run_cli, seen, env, *args, *url, "--token", s.wrong_api)
        assert code != 0 and "401" in out, (args, out)
        code, out = await asyncio.to_thread(run_cli, seen, env, *args, *url, "--token", s.ingest)
        assert code != 0 and "403" in out, (args, out)
    for args in changes:
        code, out = await asyncio.to_thread(run_cli, seen, env, *args, *url, "--token", s.ops)
        assert code != 0 and "403" in out, (args, out)
        code, out = await asyncio.to_thread(
            run_cli, seen, {**env, "MESH_API_TOKEN": s.admin}, *args, *url
        )
        assert code in (0, 1), (args, out)  # a redrive into the failing hook may be skipped
    code, out = await asyncio.to_thread(run_cli, seen, env, "validate", str(cfg_file))
    assert code == 0 and "ok" in out, out
    code, out = await asyncio.to_thread(run_cli, seen, env, "schema")
    assert code == 0
    # -- reload: a rotated token (a new ${VAR}), then files that are not valid ------
    rotated = site_a_config(
        Path(data["node"]["data_dir"]).parent, 0, 0, 0, "", "", "${INGEST_NEXT}"
    )
    data["api"] = rotated["api"]
    await asyncio.to_thread(cfg_file.write_text, yaml.safe_dump(data))
    status, body = await seen.call(http, "POST", f"{base}/api/reload", s.admin)
    assert status == 200, body
    status, _ = await seen.call(
        http, "POST", f"{events}/in/nats/r", s.ingest, data=b"1", headers=event_headers()
    )
    assert status == 401
    status, body = await seen.call(
        http, "POST", f"{events}/in/nats/r", s.ingest_next, data=b"1", headers=event_headers()
    )
    assert status == 202, body
    good = await asyncio.to_thread(cfg_file.read_text)
    bad_dir = cfg_file.parent / "bad"
    bad_dir.mkdir()
    for i, text in enumerate(bad_files(s)):
        await asyncio.to_thread(cfg_file.write_text, text)
        status, body = await seen.call(http, "POST", f"{base}/api/reload", s.admin)
        assert status == 400, body
        code, out = await asyncio.to_thread(run_cli, seen, env, "reload", *url, "--token", s.admin)
        assert code == 2 and "reload refused" in out, out
        bad = bad_dir / f"bad-{i}.yaml"
        bad.write_text(text)
        code, out = await asyncio.to_thread(run_cli, seen, env, "validate", str(bad))
        assert code == 2, out
        code, out = await asyncio.to_thread(run_cli, seen, env, "run", str(bad))
        assert code == 2, out
    await asyncio.to_thread(cfg_file.write_text, good)
    # A value from the environment that does not fit its key.
    code, out = await asyncio.to_thread(
        run_cli,
        seen,
        {**env, "MESH_LIMITS__BATCH_SIZE": s.in_bad_file},
        "validate",
        good_path(cfg_file),
    )
    assert code == 2, out
    code, out = await asyncio.to_thread(
        run_cli,
        seen,
        {**env, "MESH_API__TOKENS__0__SCOPES": f"[{s.in_bad_file}]"},
        "validate",
        good_path(cfg_file),
    )
    assert code == 2, out
    # Still serving the rotated configuration; dead letters purged last.
    status, body = await seen.call(http, "GET", f"{base}/api/stats", s.admin)
    assert status == 200, body
    code, out = await asyncio.to_thread(
        run_cli, seen, {**env, "MESH_API_TOKEN": s.admin}, "dlq", "redrive", "--all", *url
    )
    code, out = await asyncio.to_thread(
        run_cli, seen, {**env, "MESH_API_TOKEN": s.admin}, "dlq", "purge", *url
    )
    assert code == 0 and "purged" in out, out
    assert orjson.loads(body)  # JSON all along


def good_path(cfg_file: Path) -> str:
    return str(cfg_file)


def _start_node(cfg_file: Path, log_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``mesh run`` as a child process, its whole output in ``log_file``."""
    with open(log_file, "wb") as log_out:
        return subprocess.Popen(
            [sys.executable, "-m", "mesh.cli", "run", str(cfg_file), "--log-level", "debug"],
            stdout=log_out,
            stderr=subprocess.STDOUT,
            env=env,
        )
