"""Several real nodes, each with its own nats-server, linked in a given topology.

Node ``n`` ingests CloudEvents published on its NATS at ``in.>`` (mesh topic
``in/...``) and delivers what it subscribed to on ``out.<origin>.<id>``. Links
can go through :class:`mesh.testing.TcpProxy` so tests can cut them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import yaml
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mesh.config import MeshConfig
from mesh.core.codec import Mode, encode_nats
from mesh.core.event import Event
from mesh.runtime.node import Node
from mesh.testing import NatsServer, TcpProxy
from tests.helpers import config_data, node_config, wait_for

TOKEN = "mesh-net"


@dataclass
class Member:
    name: str
    server: NatsServer
    node: Node | None = None
    nc: NATS | None = None
    received: list[str] = field(default_factory=list)  # event ids, in arrival order
    # The node's own lifespan, closed by MeshNet.stop or, at the latest, with the net.
    lifespan: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)


class MeshNet:
    def __init__(
        self,
        tmp_path: Path,
        names: list[str],
        edges: list[tuple[str, str]],
        interests: dict[str, list[str]],
        *,
        proxied: Iterable[tuple[str, str]] = (),
        node_options: dict[str, dict[str, Any]] | None = None,
        rules: dict[tuple[str, str], dict[str, Any]] | None = None,
    ) -> None:
        self.tmp = tmp_path
        self.names = names
        self.edges = edges  # (dialer, acceptor)
        self.interests = interests  # node -> mesh-topic patterns it subscribes to
        self.proxied = set(proxied)
        self.node_options = node_options or {}  # node -> extra keyword arguments of Node
        # (node, peer) -> import/export keys of node's entry for peer (peers[] or accept)
        self.rules = rules or {}
        self.members: dict[str, Member] = {}
        self.proxies: dict[tuple[str, str], TcpProxy] = {}
        self.ports: dict[str, int] = {}
        self._stack = contextlib.AsyncExitStack()

    # -- set-up ----------------------------------------------------------------------

    def config(self, name: str, ports: dict[str, int]) -> MeshConfig:
        peers = []
        for dialer, acceptor in self.edges:
            if dialer == name:
                port = ports[acceptor]
                if (dialer, acceptor) in self.proxies:
                    port = self.proxies[(dialer, acceptor)].port
                url = f"ws://127.0.0.1:{port}/mesh"
                rules = self.rules.get((name, acceptor), {})
                peers.append({"id": acceptor, "url": url, "token": TOKEN, **rules})
        accept: list[dict[str, Any]] = [
            {"id": dialer, "token": TOKEN, **self.rules[(name, dialer)]}
            for dialer, acceptor in self.edges
            if acceptor == name and (name, dialer) in self.rules
        ]
        return node_config(
            self.tmp,
            name,
            brokers={"bus": {"kind": "nats", "url": self.members[name].server.url}},
            peers=peers,
            accept=[*accept, {"id": "*", "token": TOKEN}],
            ingress=[{"from": "bus", "topic": "in.>"}],
            egress=[
                {"to": "bus", "topic": t, "target": "out.{node}.{id}"}
                for t in self.interests.get(name, [])
            ],
        )

    async def __aenter__(self) -> MeshNet:
        for name in self.names:
            server = NatsServer(workdir=self.tmp / f"nats-{name}")
            server.start()
            self._stack.callback(server.close)
            self.members[name] = Member(name, server)
        # Acceptors first, so every node knows its own port before others dial it.
        ports: dict[str, int] = {}
        order = self._start_order()
        for name in order:
            for edge in self.edges:
                if edge in self.proxied and edge[0] == name:
                    proxy = await TcpProxy(ports[edge[1]]).start()
                    self._stack.push_async_callback(proxy.close)
                    self.proxies[edge] = proxy
            self.ports = ports
            config = self.config(name, ports)
            source = str(self.write_config(name, config))
            options = self.node_options.get(name, {})
            m = self.members[name]
            self._stack.push_async_callback(m.lifespan.aclose)
            node = await m.lifespan.enter_async_context(
                Node(config, source=source, **options).serve()
            )
            ports[name] = node.port
            m.node = node
            m.nc = await nats.connect(m.server.url)
            self._stack.push_async_callback(m.nc.close)
            await m.nc.subscribe("out.>", cb=self._collector(m))
            await m.nc.flush()
            await node.ready()
        return self

    def write_config(self, name: str, config: MeshConfig) -> Path:
        """The node's configuration as a YAML file, for ``mesh reload``."""
        path = self.tmp / f"{name}.yaml"
        data = config_data(config, exclude_defaults=True)
        path.write_text(yaml.safe_dump(data))
        return path

    def set_rules(self, name: str, peer: str, rules: dict[str, Any]) -> Path:
        """Rewrite a node's file with new rules for one peer (apply with mesh reload)."""
        self.rules[(name, peer)] = rules
        return self.write_config(name, self.config(name, self.ports))

    def set_interests(self, name: str, patterns: list[str]) -> Path:
        """Rewrite a node's file with new egress subscriptions (apply with mesh reload)."""
        self.interests[name] = patterns
        return self.write_config(name, self.config(name, self.ports))

    def _start_order(self) -> list[str]:
        """Every acceptor starts before the nodes that dial it (edges form a DAG)."""
        order: list[str] = []
        pending = list(self.names)
        while pending:
            for name in pending:
                if all(acc in order for dial, acc in self.edges if dial == name):
                    order.append(name)
                    pending.remove(name)
                    break
            else:
                raise AssertionError("the dial graph has a cycle")
        return order

    async def stop(self, name: str) -> None:
        """Stop one node (its server and links; its nats-server keeps running).

        Call it from the task that entered the net: the node's task group belongs to it.
        """
        await self.members[name].lifespan.aclose()

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _collector(self, m: Member) -> Any:
        async def on_msg(msg: Msg) -> None:
            m.received.append(msg.subject.split(".", 2)[2])

        return on_msg

    # -- topology facts ------------------------------------------------------------------

    def node(self, name: str) -> Node:
        node = self.members[name].node
        assert node is not None
        return node

    def distances(self, source: str) -> dict[str, int]:
        adj: dict[str, set[str]] = {n: set() for n in self.names}
        for a, b in self.edges:
            adj[a].add(b)
            adj[b].add(a)
        dist = {source: 0}
        queue = deque([source])
        while queue:
            n = queue.popleft()
            for m in adj[n]:
                if m not in dist:
                    dist[m] = dist[n] + 1
                    queue.append(m)
        return dist

    def converged(self) -> bool:
        """Every node routes every other node's interests over a shortest path."""
        for name in self.names:
            dist = self.distances(name)
            routes = self.node(name).table.routes()
            for other in self.names:
                if other == name:
                    continue
                for pattern in self.interests.get(other, []):
                    best = [
                        r
                        for r in routes
                        if r.origin == other and r.pattern == pattern and r.reachable
                    ]
                    if not best or len(best[0].path) != dist[other]:
                        return False
        return True

    async def wait_converged(self, timeout: float = 15.0) -> None:
        await wait_for(self.converged, timeout, "routing tables to converge")

    # -- traffic ---------------------------------------------------------------------------

    async def publish(self, at: str, subject: str, event_id: str) -> None:
        ev = Event(
            {"specversion": "1.0", "id": event_id, "source": f"/{at}", "type": "t"},
            b"{}",
            json_implied=True,
        )
        payload, headers = encode_nats(ev, Mode.BINARY)
        nc = self.members[at].nc
        assert nc is not None
        await nc.publish(subject, payload, headers=headers)

    async def flush(self) -> None:
        for m in self.members.values():
            assert m.nc is not None
            await m.nc.flush()

    def link_sends(self) -> int:
        return sum(self.node(n).metrics.total("mesh_link_sent_events_total") for n in self.names)

    def duplicates(self) -> int:
        return sum(self.node(n).metrics.total("mesh_link_duplicates_total") for n in self.names)

    def received(self) -> dict[str, list[str]]:
        return {n: list(m.received) for n, m in self.members.items()}


@contextlib.asynccontextmanager
async def mesh_net(
    tmp_path: Path,
    names: list[str],
    edges: list[tuple[str, str]],
    interests: dict[str, list[str]],
    **kw: Any,
) -> AsyncIterator[MeshNet]:
    async with MeshNet(tmp_path, names, edges, interests, **kw) as net:
        yield net


async def settle(net: MeshNet, expected_total: int, timeout: float = 20.0) -> None:
    await wait_for(
        lambda: sum(len(v) for v in net.received().values()) >= expected_total,
        timeout,
        f"{expected_total} deliveries",
    )
    await asyncio.sleep(0.3)
