"""Discarding servers: the yardstick that shows the load generator is not the limit.

``python -m bench.discard --proto mqtt|nats`` listens on a free loopback
port, prints ``{"port": P}``, and then throws away everything it receives,
answering only what a publisher needs to go on: CONNACK and a PUBACK per
QoS 1 PUBLISH (MQTT), INFO and PONG (NATS). On end of input it prints the
number of messages it saw and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bench.proto import mqtt_packets

__all__ = ["main"]


class _MqttDiscard(asyncio.Protocol):
    count = 0

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        packets, used = mqtt_packets(buf)
        out: list[bytes] = []
        for first, start, _end in packets:
            kind = first >> 4
            if kind == 3:
                _MqttDiscard.count += 1
                if first & 0x06:
                    tlen = (buf[start] << 8) | buf[start + 1]
                    out.append(b"\x40\x02" + bytes(buf[start + 2 + tlen : start + 4 + tlen]))
            elif kind == 1:
                out.append(b"\x20\x02\x00\x00")
        del buf[:used]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


class _NatsDiscard(asyncio.Protocol):
    count = 0

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b'INFO {"server_id":"discard","version":"0","headers":true}\r\n')

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, n = 0, len(buf)
        pongs = 0
        while pos < n:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            if buf[pos : pos + 4] == b"PUB ":
                size = int(bytes(buf[pos:nl]).rsplit(b" ", 1)[1])
                end = nl + 2 + size + 2
                if end > n:
                    break
                _NatsDiscard.count += 1
                pos = end
                continue
            if buf[pos : pos + 4] == b"PING":
                pongs += 1
            pos = nl + 2
        del buf[:pos]
        if pongs and self.transport is not None:
            self.transport.write(b"PONG\r\n" * pongs)


async def serve(proto: str) -> int:
    loop = asyncio.get_running_loop()
    factory = _MqttDiscard if proto == "mqtt" else _NatsDiscard
    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()
    return factory.count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.discard", description=__doc__)
    p.add_argument("--proto", choices=["mqtt", "nats"], required=True)
    args = p.parse_args(argv)
    count = asyncio.run(serve(args.proto))
    print(json.dumps({"messages": count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
