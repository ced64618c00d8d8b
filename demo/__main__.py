"""Run the three-site demo mesh on localhost.

    shop (eu-west, MQTT 5)      cart, e-mail service, IoT devices
    core (us-east, NATS)        payment and orders services, telemetry monitor
    warehouse (eu-central, HTTP) shipping and invoice services behind webhooks

Each site gets its own broker on a free port and its own gateway node
(``mesh run config/<site>.yaml``); the services talk only to their local
broker. A live summary shows events per site and link and orders completed.
Ctrl-C stops everything. With ``--duration S`` the demo ends by itself and
exits 0 only if every order completed and all telemetry arrived. With
``--catalog-out DIR`` it writes each site's ``/api/catalog`` to ``DIR/<site>.json``
before stopping, once every site's catalog lists every type any site saw
(catalogs travel between nodes every 10 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from mesh.testing import Mosquitto, NatsServer, free_port

ROOT = Path(__file__).resolve().parents[1]
SITES = ("shop", "core", "warehouse")
GRACE = 15.0  # seconds past --duration to let in-flight events land


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = ROOT / "var" / "demo"
        self.status_dir = self.base / "status"
        self.logs = self.base / "logs"
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.brokers: list[Mosquitto | NatsServer] = []
        self.ports = {
            name: free_port()
            for name in ("shop_node", "core_node", "warehouse_node", "shipping", "invoice")
        }

    # -- processes -------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SHOP_MQTT_PORT": str(self.mqtt.port),
                "CORE_NATS_PORT": str(self.nats.port),
                "SHOP_NODE_PORT": str(self.ports["shop_node"]),
                "CORE_NODE_PORT": str(self.ports["core_node"]),
                "WAREHOUSE_NODE_PORT": str(self.ports["warehouse_node"]),
                "SHIPPING_PORT": str(self.ports["shipping"]),
                "INVOICE_PORT": str(self.ports["invoice"]),
                "MESH_DATA": str(self.base / "data"),
                "MESH_TOKEN": self.token,
                "PYTHONPATH": str(ROOT),
            }
        )
        return env

    def spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()
        self.procs.append((name, proc))

    def start(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.token = secrets.token_urlsafe(16)
        self.mqtt = Mosquitto(workdir=self.base / "shop-mosquitto")
        self.nats = NatsServer(workdir=self.base / "core-nats")
        for b in (self.mqtt, self.nats):
            b.start()
            self.brokers.append(b)
        say(f"brokers: shop Mosquitto on {self.mqtt.port}, core nats-server on {self.nats.port}")
        py = sys.executable
        for site in SITES:
            self.spawn(f"node-{site}", [py, "-m", "mesh.cli", "run", f"config/{site}.yaml"])
        self.wait_for_mesh()
        for site in SITES:
            say(f"{site}: live page http://127.0.0.1:{self.ports[site + '_node']}/")
        status = ["--status-dir", str(self.status_dir)]
        warehouse = f"http://127.0.0.1:{self.ports['warehouse_node']}"
        a = self.args
        self.spawn(
            "shipping",
            [
                py,
                "-m",
                "demo.services.webhooks",
                "shipping",
                "--port",
                str(self.ports["shipping"]),
                "--node",
                warehouse,
                *status,
            ],
        )
        self.spawn(
            "invoice",
            [
                py,
                "-m",
                "demo.services.webhooks",
                "invoice",
                "--port",
                str(self.ports["invoice"]),
                "--node",
                warehouse,
                *status,
            ],
        )
        for svc in ("payment", "orders", "monitor"):
            self.spawn(
                svc, [py, "-m", "demo.services.nats_service", svc, "--nats", self.nats.url, *status]
            )
        self.spawn("email", [py, "-m", "demo.services.email", "--mqtt", self.mqtt.url, *status])
        self.wait_ready(["shipping", "invoice", "payment", "orders", "monitor", "email"])
        self.spawn(
            "cart",
            [
                py,
                "-m",
                "demo.services.cart",
                "--mqtt",
                self.mqtt.url,
                "--orders",
                str(a.orders),
                "--rate",
                str(a.rate),
                *status,
            ],
        )
        self.spawn(
            "devices",
            [
                py,
                "-m",
                "demo.services.devices",
                "--mqtt",
                self.mqtt.url,
                "--devices",
                str(a.devices),
                "--interval",
                str(a.interval),
                "--count",
                str(a.readings),
                *status,
            ],
        )

    def wait_for_mesh(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        want = {
            "shop": {"core", "warehouse"},
            "core": {"shop", "warehouse"},
            "warehouse": {"core", "shop"},
        }
        while time.monotonic() < deadline:
            self.check_alive()
            up = {
                s: {
                    p["id"]
                    for p in (self.api(s, "/api/peers") or {}).get("peers", [])
                    if p["state"] == "up"
                }
                for s in SITES
            }
            if all(up[s] >= want[s] for s in SITES):
                say("nodes up, all peer links established")
                time.sleep(0.5)  # interests travel right after the hello
                return
            time.sleep(0.2)
        raise SystemExit("the mesh did not come up; see var/demo/logs/node-*.log")

    def wait_ready(self, services: list[str], timeout: float = 30.0) -> None:
        """Wait until every consumer has subscribed, so no early event finds nobody."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            st = self.status()
            if all(st.get(s, {}).get("ready") for s in services):
                return
            time.sleep(0.1)
        raise SystemExit(f"services not ready after {timeout:.0f}s; see var/demo/logs/")

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise SystemExit(
                    f"{name} exited with code {proc.returncode}; see var/demo/logs/{name}.log"
                )

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for b in self.brokers:
            b.stop()

    # -- observation -----------------------------------------------------------------

    def api(self, site: str, path: str) -> Any:
        url = f"http://127.0.0.1:{self.ports[site + '_node']}{path}"
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
        return None

    def status(self) -> dict[str, dict[str, Any]]:
        out = {}
        for f in self.status_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                out[f.stem] = json.loads(f.read_text())
        return out

    def progress(self) -> dict[str, int]:
        st = self.status()
        return {
            "requested": st.get("cart", {}).get("requested", 0),
            "completed": st.get("cart", {}).get("completed", 0),
            "emails": st.get("email", {}).get("emails", 0),
            "invoices": st.get("invoice", {}).get("invoices", 0),
            "telemetry_sent": st.get("devices", {}).get("sent", 0),
            "telemetry_received": st.get("monitor", {}).get("telemetry", 0),
            "audited": st.get("monitor", {}).get("audited", 0),
        }

    def summary(self, elapsed: float) -> str:
        p = self.progress()
        lines = [
            f"--- t={elapsed:5.1f}s  orders {p['completed']}/{p['requested']} completed, "
            f"{p['emails']} e-mails, {p['invoices']} invoices; "
            f"telemetry {p['telemetry_received']}/{p['telemetry_sent']} arrived",
            f"{'site':<10} {'ingress':>8} {'egress':>8} {'link':<26} {'sent':>7} {'recv':>7} "
            f"{'outbox':>6}",
        ]
        for site in SITES:
            stats = self.api(site, "/api/stats")
            if stats is None:
                lines.append(f"{site:<10} (not answering)")
                continue
            m = stats["metrics"]
            ingress = sum(s["value"] for s in m.get("mesh_ingress_events_total", []))
            egress = sum(s["value"] for s in m.get("mesh_egress_events_total", []))
            first = True
            for peer in stats["peers"]:
                link = f"-> {peer['id']} ({peer['state']})"
                head = f"{site:<10} {ingress:>8} {egress:>8}" if first else " " * 28
                lines.append(
                    f"{head} {link:<26} {peer['sent']:>7} {peer['received']:>7} {peer['outbox']:>6}"
                )
                first = False
        return "\n".join(lines)

    def save_catalogs(self, out: Path, timeout: float = 25.0) -> None:
        """Each site's catalog, once every one lists every type some site saw itself."""
        out.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            cats = {s: self.api(s, "/api/catalog") or {"events": []} for s in SITES}
            seen = {e["type"] for s in SITES for e in cats[s]["events"] if s in e["reported_by"]}
            complete = all({e["type"] for e in cats[s]["events"]} >= seen for s in SITES)
            if complete or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for site, cat in cats.items():
            (out / f"{site}.json").write_text(json.dumps(cat, indent=2))
        say(f"catalogs of {', '.join(SITES)} written to {out} ({len(seen)} event types)")

    def done(self) -> bool:
        p = self.progress()
        st = self.status()
        return (
            p["requested"] == self.args.orders
            and p["completed"] == p["requested"]
            and st.get("devices", {}).get("done", False)
            and p["telemetry_received"] == p["telemetry_sent"]
        )


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=0,
        help="stop after this many seconds and exit 0 only if every order "
        "completed and all telemetry arrived (default: run until Ctrl-C)",
    )
    ap.add_argument("--orders", type=int, default=None, help="orders the cart places")
    ap.add_argument("--rate", type=float, default=4.0, help="orders per second")
    ap.add_argument("--devices", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between readings")
    ap.add_argument("--readings", type=int, default=None, help="readings per device")
    ap.add_argument(
        "--catalog-out",
        type=Path,
        metavar="DIR",
        help="before stopping, write each site's event catalog to DIR/<site>.json",
    )
    args = ap.parse_args()
    if args.duration:
        busy = max(1.0, args.duration * 0.5)  # produce for half the time, then let it drain
        args.orders = args.orders or max(1, int(busy * args.rate))
        args.readings = args.readings or max(1, int(busy / args.interval))
    else:
        args.orders = args.orders or 1_000_000
        args.readings = args.readings or 0
    demo = Demo(args)
    stopping = False

    def interrupt(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    start = time.monotonic()
    try:
        demo.start()
        while not stopping:
            elapsed = time.monotonic() - start
            say(demo.summary(elapsed))
            demo.check_alive()
            if args.duration and elapsed >= args.duration:
                # Producers stopped at half time; give in-flight events a grace period.
                if demo.done() or elapsed >= args.duration + GRACE:
                    break
                if elapsed < args.duration + 1:
                    say(f"waiting up to {GRACE:.0f}s for events still in flight ...")
            for _ in range(10):
                if stopping:
                    break
                time.sleep(0.1)
        if args.catalog_out is not None:
            demo.save_catalogs(args.catalog_out)
    finally:
        say("stopping: services, nodes, brokers ...")
        demo.stop()
    p = demo.progress()
    say(
        f"final: orders {p['completed']}/{p['requested']} completed "
        f"({p['audited']} audited by the core's transform), "
        f"telemetry {p['telemetry_received']}/{p['telemetry_sent']} arrived. "
        f"Logs in var/demo/logs/"
    )
    if args.duration:
        ok = demo.done()
        say(
            "demo OK: every order completed and all telemetry arrived"
            if ok
            else "demo FAILED: not every order completed or not all telemetry arrived"
        )
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
