"""Two sites as separate processes, for fault tests.

Site A: Mosquitto (persistence on) and node A, which ingests ``fault/#``.
Site B: nats-server with JetStream (stream ``EV`` on ``ev.>``), optionally a
second Mosquitto, and node B. Node A dials B through a TCP proxy so tests can
partition the link. Nodes run as ``mesh run`` subprocesses that can be killed
with SIGKILL and restarted on the same ports and data directories.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
import paho.mqtt.client as mqtt
import yaml
from nats.js.api import StreamConfig
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mesh.core.codec import Mode, encode_mqtt
from mesh.core.event import Event
from mesh.testing import Mosquitto, NatsServer, TcpProxy, free_port

TOKEN = "chaos"


class NodeProcess:
    """``mesh run FILE`` as a child process; SIGKILL-able, restartable."""

    def __init__(self, name: str, config: dict[str, Any], workdir: Path) -> None:
        self.name = name
        self.port = int(config["node"]["listen"].rsplit(":", 1)[1])
        self.file = workdir / f"{name}.yaml"
        self.file.write_text(yaml.safe_dump(config))
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        # For profiling runs only; not MESH_*, which a node would take for overrides.
        if os.environ.get("CHAOS_CPROFILE_NODE") == self.name:
            return [sys.executable, os.environ["CHAOS_CPROFILE_SCRIPT"], str(self.file)]
        return [sys.executable, "-m", "mesh.cli", "run", str(self.file), "--log-level", "info"]

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"node {self.name} did not come up:\n{self.tail()}")

    def stats(self) -> dict[str, Any]:
        return self._get("/api/stats")

    def routes(self) -> list[dict[str, Any]]:
        body = self._get("/api/routes")
        rows: list[dict[str, Any]] = body["routes"] if isinstance(body, dict) else body
        return rows

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return orjson.loads(r.read())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


class Publisher:
    """A device publishing QoS 1 structured CloudEvents from a thread, at least once.

    Its session is persistent, so paho resends in-flight messages after a broker
    restart and queues new ones while disconnected.
    """

    def __init__(self, url: str, count: int, prefix: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"device-{prefix}",
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=False,
        )
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.count = count
        self.prefix = prefix
        self.sent = 0
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.reached = threading.Event()  # set when a third of the stream is published
        self.thread = threading.Thread(target=self._run, daemon=True)

    def ids(self) -> set[str]:
        return {f"{self.prefix}-{i}" for i in range(self.count)}

    def _run(self) -> None:
        for i in range(self.count):
            ev = Event(
                {
                    "specversion": "1.0",
                    "id": f"{self.prefix}-{i}",
                    "source": "/device",
                    "type": "com.example.reading",
                    "subject": "d1",
                },
                orjson.dumps({"i": i}),
                json_implied=True,
            )
            payload = encode_mqtt(ev, Mode.STRUCTURED, "3.1.1")[0]
            while True:  # a device retries what it could not even send
                info = self.client.publish("fault/readings", payload, qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    break
                time.sleep(0.05)
            self.infos.append(info)
            self.sent = i + 1
            if self.sent == self.count // 3:
                self.reached.set()
            if i % 200 == 199:
                time.sleep(0.02)  # a steady stream rather than one burst

    def start(self) -> None:
        self.thread.start()

    def finish(self, timeout: float = 120.0) -> None:
        self.thread.join(timeout)
        deadline = time.monotonic() + timeout
        for info in self.infos:
            while not info.is_published():
                assert time.monotonic() < deadline, "the broker never acknowledged"
                time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()


class Sites:
    def __init__(self, tmp: Path, *, mqtt_egress: bool = False) -> None:
        self.tmp = tmp
        self.mosquitto_a = Mosquitto(workdir=tmp / "mosquitto-a", persistence=True)
        self.nats_b = NatsServer(workdir=tmp / "nats-b", jetstream=True)
        self.mosquitto_b = Mosquitto(workdir=tmp / "mosquitto-b", persistence=True)
        self.mqtt_egress = mqtt_egress
        self.proxy: TcpProxy | None = None

    async def start(self) -> None:
        self.mosquitto_a.start()
        self.nats_b.start()
        if self.mqtt_egress and self.mosquitto_b.proc is None:
            self.mosquitto_b.start()
        nc = await nats.connect(self.nats_b.url)
        await nc.jetstream().add_stream(StreamConfig(name="EV", subjects=["ev.>"]))
        await nc.close()
        b_port, a_port = free_port(), free_port()
        self.proxy = await TcpProxy(b_port).start()
        egress: dict[str, Any] = (
            {"to": "out", "topic": "site-a/#", "target": "out/readings"}
            if self.mqtt_egress
            else {"to": "js", "topic": "site-a/#", "target": "ev.readings"}
        )
        brokers_b: dict[str, Any] = {
            "js": {"kind": "nats", "url": self.nats_b.url, "jetstream": True}
        }
        if self.mqtt_egress:
            brokers_b["out"] = {"kind": "mqtt", "url": self.mosquitto_b.url}
        self.node_b = NodeProcess(
            "node-b",
            {
                "node": {
                    "id": "site-b",
                    "listen": f"127.0.0.1:{b_port}",
                    "data_dir": str(self.tmp / "data-b"),
                },
                "brokers": brokers_b,
                "accept": [{"id": "site-a", "token": TOKEN}],
                "egress": [egress],
            },
            self.tmp,
        )
        self.node_a = NodeProcess(
            "node-a",
            {
                "node": {
                    "id": "site-a",
                    "listen": f"127.0.0.1:{a_port}",
                    "data_dir": str(self.tmp / "data-a"),
                },
                "brokers": {
                    "plant": {"kind": "mqtt", "url": self.mosquitto_a.url, "protocol": "3.1.1"}
                },
                "peers": [
                    {
                        "id": "site-b",
                        "url": f"ws://127.0.0.1:{self.proxy.port}/mesh",
                        "token": TOKEN,
                    }
                ],
                "ingress": [{"from": "plant", "topic": "fault/#", "mesh_topic": "site-a/{1}"}],
            },
            self.tmp,
        )
        self.node_b.start()
        self.node_b.wait_healthy()
        self.node_a.start()
        self.node_a.wait_healthy()
        await self.wait_linked()

    async def wait_linked(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Linked, and B's subscription learned: an event A takes before that
            # matches nothing yet, and is (rightly) not routed anywhere.
            try:
                peers = (await asyncio.to_thread(self.node_a.stats))["peers"]
                routes = await asyncio.to_thread(self.node_a.routes)
                if (
                    peers
                    and peers[0]["state"] == "up"
                    and any(r["origin"] == "site-b" and r["reachable"] for r in routes)
                ):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("node A never linked to node B:\n" + self.node_a.tail())

    async def stream_count(self) -> int:
        nc = await nats.connect(self.nats_b.url)
        try:
            return int((await nc.jetstream().stream_info("EV")).state.messages)
        finally:
            await nc.close()

    async def wait_stream(self, n: int, timeout: float = 120.0) -> None:
        """Wait until the stream holds ``n`` messages (or the timeout), then a little more."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await self.stream_count() >= n:
                    break
            except (OSError, nats.errors.Error):
                pass
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # a late duplicate would show up now

    async def stream_ids(self) -> list[str]:
        """Every event id in the stream, read with a fresh consumer."""
        nc = await nats.connect(self.nats_b.url)
        js = nc.jetstream()
        total = (await js.stream_info("EV")).state.messages
        durable = f"checker-{time.monotonic_ns()}"
        sub = await js.pull_subscribe("ev.>", durable=durable)
        ids: list[str] = []
        while len(ids) < total:
            for m in await sub.fetch(1000, timeout=10):
                ids.append((m.headers or {})["ce-id"])
                await m.ack()
        await js.delete_consumer("EV", durable)
        await nc.close()
        return ids

    async def close(self) -> None:
        for node in (getattr(self, "node_a", None), getattr(self, "node_b", None)):
            if node is not None:
                node.stop()
        if self.proxy is not None:
            await self.proxy.close()
        for broker in (self.mosquitto_a, self.nats_b, self.mosquitto_b):
            broker.close()
