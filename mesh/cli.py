"""The ``mesh`` command.

mesh run FILE             run a node until SIGINT/SIGTERM
mesh validate FILE...     check configuration files; exit 2 listing every error
mesh schema               print the JSON Schema of the configuration file
mesh status [--check]         a node at a glance; --check: exit 1 while it is not ready
mesh routes                   the routing table of a running node, one row per route
mesh peers                    the peer links of a running node
mesh tail PATTERN [--filter JSON] [--count N]   live events entering the node
mesh publish TOPIC [--data DATA] [--type T]     send a test CloudEvent into the node
mesh asyncapi [--yaml]                          a running node's AsyncAPI 3.0.0 document
mesh catalog [--export DIR]                     the event catalog (EventCatalog's layout)
mesh reload | dlq | egress ...                  change a running node

Commands that call a node's API find it with ``--node URL`` (alias ``--url``),
else from ``-c FILE`` (``node.listen``), else at ``http://127.0.0.1:7401``; they
print tables (``--json``: the node's JSON) and exit 1 when the node cannot be
reached or refuses, 2 for a usage or configuration error. They send
``--token`` (default: the
``MESH_API_TOKEN`` environment variable) as ``Authorization: Bearer``; a node
with ``api.tokens`` needs one with ``read`` to show and ``admin`` to change.
An ``https://`` node is verified against ``--cacert`` (default:
``MESH_API_CACERT``, else the system's CAs); ``--cert``/``--key``
(``MESH_API_CERT``/``MESH_API_KEY``) present a client certificate to a node
with ``node.tls.client_auth: required``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from mesh.config import MeshConfig, json_schema, load_config, load_node_settings
from mesh.core.errors import ConfigErrors, MeshError

__all__ = ["main"]

log = logging.getLogger("mesh")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
DEFAULT_NODE = "http://127.0.0.1:7401"


def _print_errors(exc: ConfigErrors) -> None:
    print(f"{exc.source}: {len(exc.errors)} error(s)", file=sys.stderr)
    for e in exc.errors:
        print(f"  {e}", file=sys.stderr)


async def _run(config: MeshConfig, source: str) -> None:
    from mesh.runtime.node import Node

    stop = asyncio.Event()
    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    async with Node(config, source=source).serve() as node:
        _tune_gc()
        while not stop.is_set():
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(hup.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if hup.is_set() and not stop.is_set():
                hup.clear()
                log.info("SIGHUP: reloading %s", source)
                try:
                    await node.reload_from_source()
                except ConfigErrors as exc:
                    log.error("reload refused, keeping the running configuration: %s", exc)
                except MeshError as exc:
                    log.error("reload failed: %s", exc)
        log.info("stopping")


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the latency path.

    Per-event garbage is acyclic and freed by reference counting, yet every
    allocation counts towards the collector's thresholds, so with the defaults
    full collections over all of a node's objects run often under load. What
    exists after start-up is frozen (never scanned again) and collections run
    less often: in bench runs this took the p99 latency at 5,000 events/s
    from 16-27 ms to about 12 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigErrors as exc:
        _print_errors(exc)
        return EXIT_INVALID
    from mesh.runtime.logs import configure_logging

    configure_logging(
        config.logging.format, args.log_level or config.logging.level, node=config.node.id
    )
    try:
        asyncio.run(_run(config, args.file))
    except MeshError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except OSError as exc:
        log.error("cannot start node %s: %s", config.node.id, exc)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        try:
            cfg = load_config(path)
        except ConfigErrors as exc:
            _print_errors(exc)
            status = EXIT_INVALID
            continue
        print(
            f"{path}: ok (node {cfg.node.id}, {len(cfg.brokers)} brokers, "
            f"{len(cfg.peers)} peers, {len(cfg.ingress)} ingress, {len(cfg.egress)} egress)"
        )
    return status


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    url = _admin_url(args) + "/api/reload"
    req = _request("POST", url, args)
    try:
        with urllib.request.urlopen(req, timeout=30, context=_tls(args)) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise SystemExit(_refused("POST", url, exc)) from None
        print(f"reload refused: {_detail(exc)}", file=sys.stderr)
        return EXIT_INVALID if exc.code == 400 else EXIT_FAILURE
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach {url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"node {data['node']}: reloaded ({data['egress']} egress, {data['peers']} peers)")
    return EXIT_OK


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client context for an https:// node: its CA, and a client certificate if given."""
    cafile = getattr(args, "cacert", None) or os.environ.get("MESH_API_CACERT") or None
    cert = getattr(args, "cert", None) or os.environ.get("MESH_API_CERT") or None
    key = getattr(args, "key", None) or os.environ.get("MESH_API_KEY") or None
    try:
        ctx = ssl.create_default_context(cafile=cafile)
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise SystemExit(f"cannot load the TLS files for the node's API: {exc}") from None
    return ctx


def _token(args: argparse.Namespace) -> str | None:
    return getattr(args, "token", None) or os.environ.get("MESH_API_TOKEN") or None


def _request(
    method: str, url: str, args: argparse.Namespace, body: Any = None
) -> urllib.request.Request:
    data = json.dumps(body).encode() if body is not None else None
    if data is None and method != "GET":
        data = b""
    req = urllib.request.Request(url, method=method, data=data)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    token = _token(args)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    return req


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail or f"{exc.code} {exc.reason}")


def _refused(method: str, url: str, exc: urllib.error.HTTPError) -> str:
    """One line for a 401/403: what the node said and how to give a token."""
    hint = "give --token or set MESH_API_TOKEN" if exc.code == 401 else "use a token with the scope"
    return f"{method} {url}: {exc.code} {exc.reason}: {_detail(exc)} ({hint})"


def _call(method: str, url: str, args: argparse.Namespace, body: Any = None) -> Any:
    """The node's JSON answer; SystemExit (exit 1, one line on stderr) if there is none."""
    try:
        req = _request(method, url, args, body)
        with urllib.request.urlopen(req, timeout=30, context=_tls(args)) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise SystemExit(_refused(method, url, exc)) from None
        raise SystemExit(f"{method} {url}: {_detail(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(f"cannot reach {url}: {exc}") from None


def cmd_dlq(args: argparse.Namespace) -> int:
    base = _admin_url(args) + "/api/dlq"
    if args.action == "list":
        data = _call("GET", f"{base}?limit={args.limit}", args)
        if args.json:
            print(json.dumps(data, indent=2))
            return EXIT_OK
        rows = []
        for e in data["entries"]:
            what = e.get("event") or e.get("message") or {}
            name = what.get("id") or what.get("topic") or "-"
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
            rows.append([str(e["id"]), when, e["place"], str(name), e["reason"]])
        _table(rows, ["ID", "TIME", "WHERE", "EVENT", "REASON"])
        print(f"{data['total']} dead letter(s)")
        return EXIT_OK
    if args.action == "show":
        if not args.id:
            raise SystemExit("mesh dlq show ID")
        print(json.dumps(_call("GET", f"{base}/{args.id}", args), indent=2))
        return EXIT_OK
    if args.action == "redrive":
        if args.all == bool(args.id):
            raise SystemExit("mesh dlq redrive ID, or mesh dlq redrive --all")
        data = _call("POST", f"{base}/redrive" if args.all else f"{base}/{args.id}/redrive", args)
        print(f"redriven: {len(data['redriven'])}")
        for s in data["skipped"]:
            print(f"  not redriven {s['id']}: {s['reason']}")
        return EXIT_OK if not data["skipped"] else EXIT_FAILURE
    data = _call("DELETE", base, args)
    print(f"purged: {data['purged']}")
    return EXIT_OK


def cmd_egress(args: argparse.Namespace) -> int:
    base = _admin_url(args) + "/api/egress"
    if args.action == "resume":
        if args.index is None:
            raise SystemExit("mesh egress resume INDEX")
        data = _call("POST", f"{base}/{args.index}/resume", args)
        print(f"egress[{args.index}]: {'resumed' if data['resumed'] else 'was not paused'}")
        return EXIT_OK
    data = _call("GET", base, args)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    rows = [
        [
            str(e["index"]),
            e["to"],
            e["topic"],
            e["target"],
            e["mode"],
            str(e["outbox"]),
            e["paused"] or "",
        ]
        for e in data["egress"]
    ]
    _table(rows, ["#", "TO", "TOPIC", "TARGET", "MODE", "OUTBOX", "PAUSED"])
    return EXIT_OK


def _admin_url(args: argparse.Namespace) -> str:
    if args.node:
        return str(args.node).rstrip("/")
    if args.config:
        # Only where the node listens: the file's other secrets need not be set here.
        try:
            node = load_node_settings(args.config)
        except ConfigErrors as exc:
            _print_errors(exc)
            raise SystemExit(EXIT_INVALID) from None
        host = node.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        scheme = "https" if node.tls is not None else "http"
        return f"{scheme}://{host}:{node.port}"
    return DEFAULT_NODE


def _get(url: str, args: argparse.Namespace) -> Any:
    return _call("GET", url, args)


def _table(rows: list[list[str]], header: list[str], title: str | None = None) -> None:
    """Print a table (rich, imported here so that ``mesh run`` does not load it)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False
    )
    for h in header:
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*(Text(str(c)) for c in r))  # Text: no markup in node data
    # Piped: one line per row, however wide; a terminal wraps cells to fit.
    console = Console(width=None if sys.stdout.isatty() else 10_000, highlight=False)
    console.print(table)


def cmd_routes(args: argparse.Namespace) -> int:
    data = _get(_admin_url(args) + "/api/routes", args)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    rows = [
        [
            r.get("rule") or (f"from {r['next_hop']}" if r.get("next_hop") else "-"),
            r["pattern"],
            json.dumps(r["filter"]) if r["filter"] else "-",
            r["origin"],
            r["next_hop"] or "(local)",
            " > ".join(r["path"]),
            f"{r['age']:.0f}s" if r["age"] is not None else "-",
        ]
        for r in data["routes"]
    ]
    _table(rows, ["RULE", "PATTERN", "FILTER", "ORIGIN", "NEXT HOP", "PATH", "AGE"])
    return EXIT_OK


def cmd_peers(args: argparse.Namespace) -> int:
    data = _get(_admin_url(args) + "/api/peers", args)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    rows = [
        [
            p["id"],
            p["direction"],
            p["state"],
            str(p["sent"]),
            str(p["received"]),
            str(p["outbox"]),
            p.get("refused_reason") or "",
        ]
        for p in data["peers"]
    ]
    _table(rows, ["PEER", "DIRECTION", "STATE", "SENT", "RECEIVED", "OUTBOX", "NOTE"])
    return EXIT_OK


def _canary(p: dict[str, Any]) -> str:
    ok = p.get("canary_ok")
    return "-" if ok is None else ("ok" if ok else "failing")


def _rtt(p: dict[str, Any]) -> str:
    rtt = p.get("rtt")
    return "-" if rtt is None else f"{float(rtt) * 1000:.1f}"


def cmd_status(args: argparse.Namespace) -> int:
    data = _get(_admin_url(args) + "/api/status", args)
    failing = args.check and not data.get("ready")
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_FAILURE if failing else EXIT_OK
    ready = "ready" if data.get("ready") else "NOT READY"
    print(
        f"node {data['node']} (region {data.get('region') or '-'}): {ready}, "
        f"up {float(data.get('uptime') or 0):.0f}s, {data.get('dead_letters', 0)} dead letter(s)"
        + (", store FULL" if data.get("store_full") else "")
    )
    for r in data.get("reasons") or []:
        print(f"  not ready: {r['component']}: {r['reason']}")
    brokers = data.get("brokers") or {}
    if brokers:
        _table(
            [[n, "up" if b["up"] else "down", b.get("reason") or ""] for n, b in brokers.items()],
            ["BROKER", "STATE", "REASON"],
        )
    peers = data.get("peers") or []
    if peers:
        rows = [
            [
                p["id"],
                p["direction"],
                p["state"],
                _canary(p),
                _rtt(p),
                str(p["outbox"]),
                p.get("refused_reason") or "",
            ]
            for p in peers
        ]
        _table(rows, ["LINK", "DIRECTION", "STATE", "CANARY", "RTT MS", "OUTBOX", "NOTE"])
    boxes = data.get("outboxes") or []
    if boxes:
        rows = [
            [b["name"], str(b["depth"]), str(b["bytes"]), str(b["bound"] or "-")] for b in boxes
        ]
        _table(rows, ["OUTBOX", "DEPTH", "BYTES", "BOUND"])
    egress = data.get("egress") or []
    if egress:
        rows = [
            [
                e.get("name", "-"),
                e["to"],
                e["topic"],
                str(e["delivered"]),
                str(e["outbox"]),
                "paused" if e.get("paused") else "",
            ]
            for e in egress
        ]
        _table(rows, ["EGRESS", "TO", "TOPIC", "DELIVERED", "OUTBOX", "PAUSED"])
    return EXIT_FAILURE if failing else EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"topic": args.topic}
    if args.data is not None:
        try:
            body["data"] = json.loads(args.data)
        except ValueError:
            body["data"] = args.data  # not JSON: a string
    for name in ("type", "source", "id"):
        value = getattr(args, name)
        if value is not None:
            body[name] = value
    data = _call("POST", _admin_url(args) + "/api/publish", args, body)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(data["id"])
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    query = {"pattern": args.pattern}
    if args.filter is not None:
        try:
            json.loads(args.filter)
        except ValueError as exc:
            print(f"--filter is not JSON: {exc}", file=sys.stderr)
            return EXIT_INVALID
        query["filter"] = args.filter
    url = f"{_admin_url(args)}/api/tail?{urllib.parse.urlencode(query)}"
    try:
        return asyncio.run(_tail(url, args))
    except KeyboardInterrupt:  # Ctrl-C: the normal way to stop a tail
        return EXIT_OK
    except BrokenPipeError:  # mesh tail ... | head
        sys.stderr.close()
        return EXIT_OK


async def _tail(url: str, args: argparse.Namespace) -> int:
    """Print events until ``--count``, the node closes, or SIGINT/SIGTERM (exit 0)."""
    task = asyncio.current_task()
    assert task is not None
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        task.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Also when started with SIGINT ignored (a background job of a script).
        loop.add_signal_handler(sig, stop)
    try:
        return await _tail_events(url, args)
    except asyncio.CancelledError:
        if stopped:
            return EXIT_OK
        raise


async def _tail_events(url: str, args: argparse.Namespace) -> int:
    import aiohttp

    headers = {}
    token = _token(args)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    ssl_ctx = _tls(args) if url.startswith("https:") else None
    seen = 0
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url, headers=headers, ssl=ssl_ctx or True, heartbeat=30.0) as ws,
        ):
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if frame.get("type") == "dropped":
                    print(f"({frame['count']} event(s) dropped: too slow)", file=sys.stderr)
                    continue
                print(msg.data if args.json else _tail_line(frame), flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    return EXIT_OK
    except aiohttp.WSServerHandshakeError as exc:
        # The handshake's answer carries no body: ask again plainly for the detail.
        _call("GET", url, args)
        raise SystemExit(f"GET {url}: {exc.status} {exc.message}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise SystemExit(f"cannot reach {url}: {exc}") from None
    print(f"the node closed the tail after {seen} event(s)", file=sys.stderr)
    return EXIT_FAILURE


def _tail_line(frame: dict[str, Any]) -> str:
    a = frame.get("attributes", {})
    if "data" in frame:
        data = frame["data"]
    elif "data_base64" in frame:
        data = "base64:" + frame["data_base64"]
    else:
        data = "-"
    return f"{frame['topic']}  {frame['origin']}  {a.get('type')}  {a.get('id')}  {data}"


def cmd_asyncapi(args: argparse.Namespace) -> int:
    """Print the node's AsyncAPI 3.0.0 document: JSON, or YAML with --yaml."""
    import yaml  # only this command writes YAML

    doc = _get(_admin_url(args) + "/api/asyncapi", args)
    if args.yaml:
        print(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), end="")
    else:
        print(json.dumps(doc, indent=2))
    return EXIT_OK


def _asyncapi_parser(sub: Any) -> None:
    a = sub.add_parser("asyncapi", help="print a node's AsyncAPI 3.0.0 document")
    a.add_argument("--yaml", action="store_true", help="YAML instead of JSON")
    _api_options(a)
    a.set_defaults(func=cmd_asyncapi)


def cmd_catalog(args: argparse.Namespace) -> int:
    """The event catalog of a node (the mesh as it knows it); ``--export DIR`` for EventCatalog."""
    from pathlib import Path

    from mesh.core.eventcatalog import eventcatalog_files

    data = _get(_admin_url(args) + "/api/catalog", args)
    if args.export:
        root = Path(args.export)
        files = eventcatalog_files(data)
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        print(f"wrote {len(files)} files for {len(data['events'])} event types to {root}")
        return EXIT_OK
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    rows = [
        [
            e["type"],
            ",".join(e["producers"]) or "-",
            ",".join(e["consumers"]) or "-",
            f"{e['rate']:g}/s",
            str(e["count"]),
            " ".join(e["topics"][:3]),
        ]
        for e in data["events"]
    ]
    _table(rows, ["TYPE", "PRODUCERS", "CONSUMERS", "RATE", "COUNT", "TOPICS"])
    return EXIT_OK


def _token_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token",
        help="bearer token for the node's API (default: $MESH_API_TOKEN)",
    )
    p.add_argument(
        "--cacert",
        metavar="PATH",
        help="CA file to verify an https:// node (default: $MESH_API_CACERT, else system CAs)",
    )
    p.add_argument(
        "--cert",
        metavar="PATH",
        help="client certificate for a node requiring one (default: $MESH_API_CERT)",
    )
    p.add_argument("--key", metavar="PATH", help="the key of --cert (default: $MESH_API_KEY)")


def _api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="the node's configuration file (for node.listen)")
    p.add_argument(
        "--node",
        "--url",
        dest="node",
        metavar="URL",
        help=f"the node's API, e.g. {DEFAULT_NODE} (the default) or https://...",
    )
    p.add_argument("--json", action="store_true", help="print the node's JSON")
    _token_option(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mesh", description="Federated event mesh gateway")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a node")
    r.add_argument("file")
    r.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="overrides logging.level of the file (default: info)",
    )
    r.set_defaults(func=cmd_run)
    v = sub.add_parser("validate", help="check configuration files")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=cmd_validate)
    s = sub.add_parser("schema", help="print the configuration JSON Schema")
    s.set_defaults(func=cmd_schema)
    st = sub.add_parser("status", help="a node at a glance: readiness, brokers, links, outboxes")
    st.add_argument("--check", action="store_true", help="exit 1 while the node is not ready")
    st.set_defaults(func=cmd_status)
    _api_options(st)
    for name, fn, text in (
        ("routes", cmd_routes, "show a node's routing table"),
        ("peers", cmd_peers, "show a node's peer links"),
        ("reload", cmd_reload, "make a running node re-read its file"),
    ):
        q = sub.add_parser(name, help=text)
        _api_options(q)
        q.set_defaults(func=fn)
    t = sub.add_parser("tail", help="print the live events entering a node that match")
    t.add_argument("pattern", help="a mesh-topic pattern, e.g. 'in/#'")
    t.add_argument("--filter", metavar="JSON", help="a CloudEvents filter, e.g. '{\"exact\": ...}'")
    t.add_argument("--count", type=int, metavar="N", help="stop after N events")
    t.set_defaults(func=cmd_tail)
    _api_options(t)
    pub = sub.add_parser("publish", help="send a test CloudEvent into a node")
    pub.add_argument("topic", help="the mesh topic, e.g. in/test")
    pub.add_argument("--data", help="the event's data: JSON if it parses, else a string")
    pub.add_argument("--type", help="the event's type (default: dev.mesh.test)")
    pub.add_argument("--source", help="the event's source (default: /mesh/<node>/cli)")
    pub.add_argument("--id", help="the event's id (default: a new UUID)")
    pub.set_defaults(func=cmd_publish)
    _api_options(pub)
    d = sub.add_parser("dlq", help="the dead-letter queue of a running node")
    d.add_argument("action", choices=["list", "show", "redrive", "purge"])
    d.add_argument("id", nargs="?")
    d.add_argument("--all", action="store_true", help="redrive every entry")
    d.add_argument("--limit", type=int, default=100)
    e = sub.add_parser("egress", help="egress rules of a running node; resume a paused one")
    e.add_argument("action", choices=["list", "resume"], nargs="?", default="list")
    e.add_argument("index", nargs="?", type=int)
    for q in (d, e):
        _api_options(q)
    d.set_defaults(func=cmd_dlq)
    e.set_defaults(func=cmd_egress)
    _asyncapi_parser(sub)
    c = sub.add_parser("catalog", help="the event catalog of a running node")
    c.add_argument("--export", metavar="DIR", help="write it in EventCatalog's layout to DIR")
    _api_options(c)
    c.set_defaults(func=cmd_catalog)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigErrors as exc:
        _print_errors(exc)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
