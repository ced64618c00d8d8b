"""A TCP proxy for fault tests: forward, cut (reset), blackhole, restore."""

from __future__ import annotations

import asyncio
import contextlib
import enum

from mesh.testing import free_port


class State(enum.Enum):
    FORWARD = "forward"
    BLACKHOLE = "blackhole"  # accept and keep connections, forward nothing
    RESET = "reset"  # close every connection and refuse new ones


class TcpProxy:
    """Listens on ``port`` and forwards to ``127.0.0.1:target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.state = State.FORWARD
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
        self.state = State.RESET
        self._flowing.set()
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._conns.clear()

    def blackhole(self) -> None:
        """Keep connections open but forward nothing (a partition without a reset)."""
        self.state = State.BLACKHOLE
        self._flowing.clear()

    def restore(self) -> None:
        self.state = State.FORWARD
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state is State.RESET:
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
            if self.state is State.RESET or writer.transport.is_closing():
                break
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(Exception):
            writer.write_eof()
