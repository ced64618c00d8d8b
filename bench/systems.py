"""The systems under test, each started on free loopback ports and stopped again.

=====  ==========================================================================
key    system
=====  ==========================================================================
a      ours: MQTT at A -> node A -> peer link -> node B -> NATS at B (durable outboxes)
b      ours: MQTT at A -> node A -> peer link -> node B -> MQTT at B
c      a Mosquitto bridge between two Mosquitto brokers, Mosquitto's default settings
d      the same bridge with ``max_queued_messages 0`` (the lossless configuration)
e      a NATS leafnode pair (leaf A -> hub B), core NATS
=====  ==========================================================================

Reference systems for the harness's own ceiling (not compared): ``ref-mqtt``, one
Mosquitto with the publisher and the sink on it; ``ref-nats``, one nats-server.

Every system exposes where the load generator publishes (``pub``) and where the
sink subscribes (``sub``), with ``{trial}`` in the topic replaced per trial so
that no trial ever sees another's messages.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.procs import MOSQUITTO_DEFAULTS, ConfiguredNats, NodeProcess, new_mosquitto
from mesh.testing import Mosquitto, NatsServer, free_port

__all__ = ["SYSTEMS", "Endpoint", "System", "make_system"]

Proto = Literal["mqtt", "nats"]
TOKEN = "bench-token"


@dataclass(frozen=True)
class Endpoint:
    proto: Proto
    port: int
    topic: str  # with {trial}

    def for_trial(self, trial: str) -> str:
        return self.topic.format(trial=trial)


class System:
    """A system under test: its processes, where to publish and where to subscribe."""

    key = ""
    label = ""
    description = ""
    reference = False

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / self.key
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.brokers: dict[str, Mosquitto | NatsServer] = {}
        self.nodes: dict[str, NodeProcess] = {}

    @property
    def pub(self) -> Endpoint:
        raise NotImplementedError

    @property
    def sub(self) -> Endpoint:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> list[str]:
        """Stop everything; return what went wrong (a node that ignored SIGTERM, an exit code)."""
        problems: list[str] = []
        for name, node in reversed(list(self.nodes.items())):
            killed = node.killed
            try:
                rc = node.stop()
            except Exception as exc:
                problems.append(f"{name}: stop failed: {exc}")
                continue
            if node.killed > killed:
                problems.append(f"{name} did not exit within 15 s of SIGTERM and was killed")
            elif rc not in (None, 0):
                problems.append(f"{name} exited with status {rc}")
        for broker in reversed(list(self.brokers.values())):
            with contextlib.suppress(Exception):
                broker.stop()
        return problems

    def pids(self) -> dict[str, int]:
        """Every process of the system by role (e.g. ``node A``, ``mosquitto B``)."""
        out: dict[str, int] = {}
        for name, b in self.brokers.items():
            if b.proc is not None:
                out[name] = b.proc.pid
        for name, n in self.nodes.items():
            if n.proc is not None:
                out[name] = n.proc.pid
        return out

    def logs(self) -> dict[str, Path]:
        out = {name: b.log for name, b in self.brokers.items()}
        out.update({name: n.log for name, n in self.nodes.items()})
        return out


# -- ours ----------------------------------------------------------------------------


def node_a_config(workdir: Path, mqtt_port: int, b_port: int) -> dict[str, Any]:
    return {
        "node": {"id": "bench-a", "region": "site-a", "data_dir": str(workdir / "data-a")},
        "brokers": {"site": {"kind": "mqtt", "url": f"mqtt://127.0.0.1:{mqtt_port}"}},
        "peers": [{"id": "bench-b", "url": f"ws://127.0.0.1:{b_port}/mesh", "token": TOKEN}],
        "ingress": [
            {
                "from": "site",
                "topic": "bench/+/ev",
                "mesh_topic": "bench/{1}",
                "event": {"type": "com.example.bench", "source": "/bench/{1}"},
            }
        ],
    }


def node_b_config(workdir: Path, out: Proto, broker_port: int) -> dict[str, Any]:
    broker: dict[str, Any]
    if out == "nats":
        broker = {"kind": "nats", "url": f"nats://127.0.0.1:{broker_port}"}
        target = "bench.{1}"
    else:
        broker = {"kind": "mqtt", "url": f"mqtt://127.0.0.1:{broker_port}"}
        target = "bench/{1}/out"
    return {
        "node": {"id": "bench-b", "region": "site-b", "data_dir": str(workdir / "data-b")},
        "brokers": {"site": broker},
        "accept": [{"id": "bench-a", "token": TOKEN}],
        "egress": [{"to": "site", "topic": "bench/+", "target": target, "mode": "binary"}],
    }


class Gateway(System):
    """Two gateway nodes between MQTT at A and NATS or MQTT at B."""

    out: Proto = "nats"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.b_port = free_port()

    def start(self) -> None:
        a = new_mosquitto(self.workdir / "mosquitto-a")
        a.start()
        self.brokers["mosquitto A"] = a
        b: Mosquitto | NatsServer
        if self.out == "nats":
            b = NatsServer(workdir=self.workdir / "nats-b")
            name = "nats-server B"
        else:
            b = new_mosquitto(self.workdir / "mosquitto-b")
            name = "mosquitto B"
        b.start()
        self.brokers[name] = b
        node_b = NodeProcess(
            self.workdir / "node-b", node_b_config(self.workdir, self.out, b.port), self.b_port
        )
        node_b.start()
        self.nodes["node B"] = node_b
        node_a = NodeProcess(
            self.workdir / "node-a", node_a_config(self.workdir, a.port, node_b.port)
        )
        node_a.start()
        self.nodes["node A"] = node_a
        node_a.wait_peers({"bench-b"})

    def start_node_b(self) -> None:
        self.nodes["node B"].start()

    @property
    def pub(self) -> Endpoint:
        return Endpoint("mqtt", self.brokers["mosquitto A"].port, "bench/{trial}/ev")

    @property
    def sub(self) -> Endpoint:
        if self.out == "nats":
            return Endpoint("nats", self.brokers["nats-server B"].port, "bench.{trial}")
        return Endpoint("mqtt", self.brokers["mosquitto B"].port, "bench/{trial}/out")


class GatewayNats(Gateway):
    key = "a"
    label = "ours MQTT→NATS"
    description = (
        "MQTT at A → node A → peer link → node B → NATS at B; durable SQLite outboxes at both "
        "nodes; CloudEvents binary mode at B; Mosquitto A as mesh.testing configures it "
        "(max_queued_messages 0, max_inflight_messages 1000), as the README recommends"
    )
    out: Proto = "nats"


class GatewayMqtt(Gateway):
    key = "b"
    label = "ours MQTT→MQTT"
    description = (
        "MQTT at A → node A → peer link → node B → MQTT 5 at B (binary mode, QoS 1); "
        "Mosquittos as for (a)"
    )
    out: Proto = "mqtt"


# -- Mosquitto bridges -----------------------------------------------------------------


class MosquittoBridge(System):
    """Broker A bridges ``bench/#`` out to broker B at QoS 1."""

    extra = MOSQUITTO_DEFAULTS

    def start(self) -> None:
        b = new_mosquitto(self.workdir / "mosquitto-b", self.extra)
        b.start()
        self.brokers["mosquitto B"] = b
        bridge = f"\nconnection bench-bridge\naddress 127.0.0.1:{b.port}\ntopic bench/# out 1\n"
        a = new_mosquitto(self.workdir / "mosquitto-a", self.extra + bridge)
        a.start()
        self.brokers["mosquitto A"] = a

    @property
    def pub(self) -> Endpoint:
        return Endpoint("mqtt", self.brokers["mosquitto A"].port, "bench/{trial}/ev")

    @property
    def sub(self) -> Endpoint:
        return Endpoint("mqtt", self.brokers["mosquitto B"].port, "bench/{trial}/ev")


class BridgeDefault(MosquittoBridge):
    key = "c"
    label = "Mosquitto bridge (defaults)"
    description = (
        "Mosquitto A with `connection … topic bench/# out 1` to Mosquitto B; both brokers "
        "with Mosquitto 2.0's defaults (max_queued_messages 1000, max_inflight_messages 20, "
        "no persistence)"
    )
    extra = MOSQUITTO_DEFAULTS


class BridgeLossless(MosquittoBridge):
    key = "d"
    label = "Mosquitto bridge (lossless)"
    description = "as (c), with `max_queued_messages 0` (no cap on queued messages) on both brokers"
    extra = "max_queued_messages 0\nmax_inflight_messages 20\n"


# -- NATS leafnodes -------------------------------------------------------------------


class NatsLeaf(System):
    key = "e"
    label = "NATS leafnode pair"
    description = (
        "nats-server A is a leafnode of hub nats-server B (`leafnodes { remotes = [...] }`); "
        "core NATS, at most once; the publisher speaks NATS, not MQTT"
    )

    def start(self) -> None:
        leaf_port = free_port()
        hub = ConfiguredNats(
            self.workdir / "nats-b", f'leafnodes {{\n  listen: "127.0.0.1:{leaf_port}"\n}}\n'
        )
        hub.start()
        self.brokers["nats-server B (hub)"] = hub
        leaf = ConfiguredNats(
            self.workdir / "nats-a",
            "leafnodes {\n  remotes = [\n"
            f'    {{ url: "nats-leaf://127.0.0.1:{leaf_port}" }}\n  ]\n}}\n',
        )
        leaf.start()
        self.brokers["nats-server A (leaf)"] = leaf

    @property
    def pub(self) -> Endpoint:
        return Endpoint("nats", self.brokers["nats-server A (leaf)"].port, "bench.{trial}")

    @property
    def sub(self) -> Endpoint:
        return Endpoint("nats", self.brokers["nats-server B (hub)"].port, "bench.{trial}")


# -- references ------------------------------------------------------------------------


class RefMosquitto(System):
    key = "ref-mqtt"
    label = "one Mosquitto (harness ceiling)"
    description = "publisher and sink on the same lossless Mosquitto: no bridge at all"
    reference = True

    def start(self) -> None:
        m = new_mosquitto(self.workdir / "mosquitto")
        m.start()
        self.brokers["mosquitto"] = m

    @property
    def pub(self) -> Endpoint:
        return Endpoint("mqtt", self.brokers["mosquitto"].port, "bench/{trial}/ev")

    @property
    def sub(self) -> Endpoint:
        return self.pub


class RefNats(System):
    key = "ref-nats"
    label = "one nats-server (harness ceiling)"
    description = "publisher and sink on the same nats-server"
    reference = True

    def start(self) -> None:
        n = NatsServer(workdir=self.workdir / "nats")
        n.start()
        self.brokers["nats-server"] = n

    @property
    def pub(self) -> Endpoint:
        return Endpoint("nats", self.brokers["nats-server"].port, "bench.{trial}")

    @property
    def sub(self) -> Endpoint:
        return self.pub


SYSTEMS: dict[str, type[System]] = {
    cls.key: cls
    for cls in (
        GatewayNats,
        GatewayMqtt,
        BridgeDefault,
        BridgeLossless,
        NatsLeaf,
        RefMosquitto,
        RefNats,
    )
}


def make_system(key: str, workdir: Path) -> System:
    return SYSTEMS[key](workdir)
