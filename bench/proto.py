"""Minimal wire protocols for the load generator, the sink and the discard servers.

The harness speaks MQTT 3.1.1 and the NATS client protocol directly on asyncio
sockets instead of going through paho-mqtt or nats-py, so that the load
generator and the sink cost a few microseconds per message and are not what
limits a measurement (``python -m bench`` checks the generator against a
discarding server to show it).

Payloads are 256-byte JSON documents, the same for every system::

    {"run":"<trial id>","seq":<n>,"ts":<CLOCK_MONOTONIC ns at send>,"pad":"xxx…"}

``seq`` is ``-1`` for warm-up probes, which the sink reports but never counts.
``ts`` is ``time.monotonic_ns()``; on Linux that clock is system-wide, so the
sink (another process on the same machine) can subtract it from its own clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import mmap
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "PAYLOAD_SIZE",
    "PROGRESS",
    "MqttPublisher",
    "MqttSubscriber",
    "NatsPublisher",
    "NatsSubscriber",
    "PayloadMaker",
    "Publisher",
    "SinkCounter",
    "mqtt_connect",
    "mqtt_packets",
    "mqtt_publish",
    "open_progress",
    "parse_payload",
    "varint",
]

PAYLOAD_SIZE = 256

# The sink publishes its progress to the generator through a 16-byte shared file:
# the highest sequence number delivered so far and the number delivered (little-endian).
PROGRESS = struct.Struct("<qq")


def open_progress(path: str, create: bool) -> mmap.mmap:
    """Map the shared progress file (the sink creates it, the generator reads it)."""
    mode = "w+b" if create else "r+b"
    with open(path, mode) as f:
        if create:
            f.write(PROGRESS.pack(-1, 0))
            f.flush()
        return mmap.mmap(f.fileno(), PROGRESS.size)


# -- payloads ------------------------------------------------------------------------


class PayloadMaker:
    """Builds the fixed-size JSON payload for a trial."""

    def __init__(self, run: str, size: int = PAYLOAD_SIZE) -> None:
        self.prefix = b'{"run":"' + run.encode() + b'","seq":'
        self.size = size
        self._pads = [b"x" * n for n in range(size)]

    def make(self, seq: int, ts: int) -> bytes:
        head = b"%s%d,%s%d,%s" % (self.prefix, seq, b'"ts":', ts, b'"pad":"')
        pad = self.size - len(head) - 2
        if pad < 0:
            raise ValueError("payload header longer than the payload size")
        return head + self._pads[pad] + b'"}'


def parse_payload(payload: bytes, prefix: bytes) -> tuple[int, int] | None:
    """(seq, ts) of a harness payload of this trial (``prefix``), or None for anything else."""
    if not payload.startswith(prefix):
        return None
    start = len(prefix)
    try:
        comma = payload.index(b",", start)
        end = payload.index(b",", comma + 6)
        return int(payload[start:comma]), int(payload[comma + 6 : end])
    except ValueError:
        return None


# -- MQTT 3.1.1 encoding ---------------------------------------------------------------


def varint(n: int) -> bytes:
    """MQTT variable byte integer."""
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def mqtt_connect(client_id: str, *, clean: bool = True, keepalive: int = 0) -> bytes:
    body = _str("MQTT") + b"\x04" + (b"\x02" if clean else b"\x00")
    body += keepalive.to_bytes(2, "big") + _str(client_id)
    return b"\x10" + varint(len(body)) + body


def mqtt_publish(topic: bytes, pid: int, payload: bytes, qos: int = 1) -> bytes:
    var = _str(topic) + (pid.to_bytes(2, "big") if qos else b"")
    return bytes([0x30 | (qos << 1)]) + varint(len(var) + len(payload)) + var + payload


def mqtt_subscribe(pid: int, topic: str, qos: int = 1) -> bytes:
    body = pid.to_bytes(2, "big") + _str(topic) + bytes([qos])
    return b"\x82" + varint(len(body)) + body


MQTT_DISCONNECT = b"\xe0\x00"


def mqtt_packets(buf: bytearray) -> tuple[list[tuple[int, int, int]], int]:
    """Complete packets in ``buf`` as (first byte, body start, body end), and bytes consumed."""
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(buf)
    while i + 2 <= n:
        first = buf[i]
        length, mult, j = 0, 1, i + 1
        while True:
            if j >= n:
                return out, i
            b = buf[j]
            length += (b & 0x7F) * mult
            j += 1
            if not b & 0x80:
                break
            mult *= 128
        if j + length > n:
            break
        out.append((first, j, j + length))
        i = j + length
    return out, i


# -- publishers ------------------------------------------------------------------------


@dataclass
class PublishStats:
    """What a publisher did; times are ``time.monotonic()`` seconds."""

    sent: int = 0
    acked: int = 0
    first_send: float = 0.0
    last_send: float = 0.0
    last_ack: float = 0.0
    max_lag: float = 0.0  # how far sending fell behind the schedule (paced runs)
    final_lag: float = 0.0
    window_waits: int = 0
    e2e_waits: int = 0  # times the end-to-end window was full
    errors: list[str] = field(default_factory=list)


class Publisher(asyncio.Protocol):
    """Common part of the MQTT and NATS publishers: a window of unconfirmed messages."""

    def __init__(self, target: str, run: str, capacity: int, window: int) -> None:
        self.target = target.encode()
        self.maker = PayloadMaker(run)
        self.window = window
        self.acked_map = bytearray(capacity)
        self.stats = PublishStats()
        self.inflight = 0
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._room = asyncio.Event()
        self._room.set()
        self._writable = asyncio.Event()
        self._writable.set()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.on_connected()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.stats.errors.append(f"connection lost: {exc}")
        if not self._ready.done():
            self._ready.set_exception(ConnectionError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)
        self._room.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self.on_data()

    # subclass hooks
    def on_connected(self) -> None:
        raise NotImplementedError

    def on_data(self) -> None:
        raise NotImplementedError

    def write_batch(self, first_seq: int, n: int, ts: int) -> None:
        raise NotImplementedError

    def _confirmed(self, n: int) -> None:
        self.inflight -= n
        self.stats.acked += n
        self.stats.last_ack = time.monotonic()
        if self.inflight <= self.window * 3 // 4:
            self._room.set()

    async def ready(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._ready, timeout)

    async def run(
        self,
        count: int,
        rate: float,
        duration: float,
        *,
        chunk: int = 128,
        start_seq: int = 0,
        e2e_window: int = 0,
        progress: mmap.mmap | None = None,
    ) -> PublishStats:
        """Send up to ``count`` messages for at most ``duration`` seconds.

        ``rate`` 0 is closed loop: as fast as the window of unconfirmed
        messages allows. Otherwise messages follow an open-loop schedule of
        ``rate`` per second, in ticks of about a millisecond.

        With ``e2e_window`` and the sink's ``progress``, the loop is also
        closed end to end: a message is sent only while its sequence number
        is less than ``e2e_window`` ahead of the highest one delivered.
        """
        st = self.stats
        seq = start_seq
        end_seq = start_seq + count
        t0 = time.monotonic()
        deadline = t0 + duration
        st.first_send = t0
        loop_sleep = asyncio.sleep
        while seq < end_seq:
            now = time.monotonic()
            if now >= deadline or self.closed.done():
                break
            if rate > 0:
                due = min(end_seq, start_seq + int((now - t0) * rate) + 1)
                want = due - seq
                if want <= 0:
                    await loop_sleep(max(0.0, t0 + (seq - start_seq) / rate - now))
                    continue
                lag = now - (t0 + (seq - start_seq) / rate)
                if lag > st.max_lag:
                    st.max_lag = lag
            else:
                want = end_seq - seq
            if e2e_window and progress is not None:
                ahead = e2e_window - (seq - PROGRESS.unpack_from(progress, 0)[0] - 1)
                if ahead <= 0:
                    st.e2e_waits += 1
                    await loop_sleep(0.0005)
                    continue
                want = min(want, ahead)
            room = self.window - self.inflight
            if room <= 0:
                st.window_waits += 1
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), 1.0)
                continue
            if not self._writable.is_set():
                await self._writable.wait()
                continue
            n = min(want, room, chunk)
            self.inflight += n
            self.write_batch(seq, n, time.monotonic_ns())
            seq += n
            st.sent += n
            st.last_send = time.monotonic()
            if rate <= 0:
                # Give acknowledgements a chance to be read between chunks.
                await loop_sleep(0)
        if rate > 0 and st.sent:
            st.final_lag = max(0.0, st.last_send - (t0 + (st.sent - 1) / rate))
        return st

    async def wait_confirmed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.inflight > 0 and time.monotonic() < deadline and not self.closed.done():
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), 0.2)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class MqttPublisher(Publisher):
    """MQTT 3.1.1 QoS 1 publisher; a message is confirmed by its PUBACK."""

    def __init__(
        self, target: str, run: str, capacity: int, window: int, client_id: str = ""
    ) -> None:
        super().__init__(target, run, capacity, window)
        self.client_id = client_id or f"bench-pub-{run}"
        self._pid_seq = [0] * 65536
        self._pid = 0

    def on_connected(self) -> None:
        assert self.transport is not None
        self.transport.write(mqtt_connect(self.client_id))

    def on_data(self) -> None:
        buf = self._buf
        packets, used = mqtt_packets(buf)
        acked = 0
        amap, pseq = self.acked_map, self._pid_seq
        for first, start, _end in packets:
            kind = first >> 4
            if kind == 4:  # PUBACK
                seq = pseq[(buf[start] << 8) | buf[start + 1]]
                if 0 <= seq < len(amap) and not amap[seq]:
                    amap[seq] = 1
                    acked += 1
            elif kind == 2 and not self._ready.done():  # CONNACK
                if buf[start + 1] != 0:
                    self._ready.set_exception(ConnectionError(f"CONNACK refused: {buf[start + 1]}"))
                else:
                    self._ready.set_result(None)
        del buf[:used]
        if acked:
            self._confirmed(acked)

    def write_batch(self, first_seq: int, n: int, ts: int) -> None:
        assert self.transport is not None
        topic = len(self.target).to_bytes(2, "big") + self.target
        make = self.maker.make
        pseq = self._pid_seq
        parts = []
        pid = self._pid
        for seq in range(first_seq, first_seq + n):
            pid = pid % 65535 + 1
            pseq[pid] = seq
            payload = make(seq, ts)
            parts.append(b"\x32" + varint(len(topic) + 2 + len(payload)))
            parts.append(topic)
            parts.append(pid.to_bytes(2, "big"))
            parts.append(payload)
        self._pid = pid
        self.transport.write(b"".join(parts))

    def publish_probe(self) -> None:
        """One QoS 0 probe message (seq -1), not counted anywhere."""
        assert self.transport is not None
        self.transport.write(
            mqtt_publish(self.target, 0, self.maker.make(-1, time.monotonic_ns()), 0)
        )

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(MQTT_DISCONNECT)
        super().close()


_NATS_CONNECT = (
    b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":false,'
    b'"protocol":1,"echo":false,"lang":"python-bench","version":"0","name":"%s"}\r\nPING\r\n'
)


class NatsPublisher(Publisher):
    """Core NATS publisher; a batch is confirmed when the PONG to the PING after it arrives."""

    def __init__(self, target: str, run: str, capacity: int, window: int) -> None:
        super().__init__(target, run, capacity, window)
        self._batches: collections.deque[tuple[int, int]] = collections.deque()
        self._greeted = False

    def on_connected(self) -> None:
        pass  # wait for INFO

    def on_data(self) -> None:
        buf = self._buf
        done = 0
        while True:
            nl = buf.find(b"\r\n")
            if nl < 0:
                break
            line = bytes(buf[:nl])
            del buf[: nl + 2]
            if line.startswith(b"INFO"):
                if not self._greeted:
                    self._greeted = True
                    assert self.transport is not None
                    self.transport.write(_NATS_CONNECT % b"bench-pub")
            elif line == b"PONG":
                if not self._ready.done():
                    self._ready.set_result(None)
                elif self._batches:
                    first, n = self._batches.popleft()
                    self.acked_map[first : first + n] = b"\x01" * n
                    done += n
            elif line == b"PING":
                assert self.transport is not None
                self.transport.write(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                self.stats.errors.append(line.decode(errors="replace"))
        if done:
            self._confirmed(done)

    def write_batch(self, first_seq: int, n: int, ts: int) -> None:
        assert self.transport is not None
        make = self.maker.make
        head = b"PUB " + self.target + b" "
        parts = []
        for seq in range(first_seq, first_seq + n):
            payload = make(seq, ts)
            parts.append(b"%s%d\r\n%s\r\n" % (head, len(payload), payload))
        parts.append(b"PING\r\n")
        self._batches.append((first_seq, n))
        self.transport.write(b"".join(parts))

    def publish_probe(self) -> None:
        assert self.transport is not None
        payload = self.maker.make(-1, time.monotonic_ns())
        self.transport.write(b"PUB %s %d\r\n%s\r\n" % (self.target, len(payload), payload))


# -- subscribers (the sink's network side) ---------------------------------------------


class SinkCounter:
    """Counts a trial's messages by sequence number: delivered, duplicates, latencies."""

    def __init__(self, run: str, capacity: int, progress: mmap.mmap | None = None) -> None:
        self.prefix = b'{"run":"' + run.encode() + b'","seq":'
        self.progress = progress
        self.max_seq = -1
        self.seen = bytearray(capacity)
        self.delivered = 0
        self.duplicates = 0
        self.foreign = 0
        self.out_of_range = 0
        self.probes = 0
        self.first_recv = 0.0
        self.last_recv = 0.0
        self.latencies_us: list[int] = []
        self.timeline: collections.Counter[int] = collections.Counter()  # 100 ms buckets

    def count(self, payloads: list[bytes]) -> None:
        now_ns = time.monotonic_ns()
        now = now_ns / 1e9
        seen, lat = self.seen, self.latencies_us
        cap = len(seen)
        prefix = self.prefix
        got = 0
        for p in payloads:
            parsed = parse_payload(p, prefix)
            if parsed is None:
                self.foreign += 1
                continue
            seq, ts = parsed
            if seq < 0:
                self.probes += 1
                continue
            if seq >= cap:
                self.out_of_range += 1
                continue
            if seen[seq]:
                self.duplicates += 1
                continue
            seen[seq] = 1
            got += 1
            if seq > self.max_seq:
                self.max_seq = seq
            lat.append((now_ns - ts) // 1000)
        if got:
            if self.progress is not None:
                PROGRESS.pack_into(self.progress, 0, self.max_seq, self.delivered + got)
            if not self.delivered:
                self.first_recv = now
            self.delivered += got
            self.last_recv = now
            self.timeline[int(now * 10)] += got


class _Subscriber(asyncio.Protocol):
    def __init__(self, topic: str, counter: SinkCounter) -> None:
        self.topic = topic
        self.counter = counter
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        loop = asyncio.get_running_loop()
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.on_probe: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.on_connected()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(str(exc or "closed by the server"))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        probes = self.counter.probes
        self.on_data()
        if self.counter.probes != probes and self.on_probe is not None:
            self.on_probe()

    def on_connected(self) -> None:
        raise NotImplementedError

    def on_data(self) -> None:
        raise NotImplementedError


class MqttSubscriber(_Subscriber):
    """MQTT 3.1.1 subscriber at QoS 1 that PUBACKs every message at once."""

    def __init__(self, topic: str, counter: SinkCounter, client_id: str) -> None:
        super().__init__(topic, counter)
        self.client_id = client_id

    def on_connected(self) -> None:
        assert self.transport is not None
        self.transport.write(mqtt_connect(self.client_id) + mqtt_subscribe(1, self.topic, 1))

    def on_data(self) -> None:
        buf = self._buf
        packets, used = mqtt_packets(buf)
        payloads: list[bytes] = []
        acks: list[bytes] = []
        for first, start, end in packets:
            kind = first >> 4
            if kind == 3:
                pos = start + 2 + ((buf[start] << 8) | buf[start + 1])
                if first & 0x06:
                    acks.append(b"\x40\x02" + buf[pos : pos + 2])
                    pos += 2
                payloads.append(bytes(buf[pos:end]))
            elif kind == 9 and not self.subscribed.done():  # SUBACK
                if buf[start + 2] == 0x80:
                    self.subscribed.set_exception(ConnectionError("subscription refused"))
                else:
                    self.subscribed.set_result(None)
        del buf[:used]
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))
        if payloads:
            self.counter.count(payloads)


class NatsSubscriber(_Subscriber):
    """Core NATS subscriber (MSG and HMSG), answering the server's PINGs."""

    def __init__(self, topic: str, counter: SinkCounter) -> None:
        super().__init__(topic, counter)
        self._greeted = False
        self.errors: list[str] = []

    def on_connected(self) -> None:
        pass

    def on_data(self) -> None:
        buf = self._buf
        payloads: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos < n:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            op = buf[pos : pos + 4]
            if op == b"MSG " or op == b"HMSG":
                parts = bytes(buf[pos:nl]).split()
                total = int(parts[-1])
                hdr = int(parts[-2]) if op == b"HMSG" else 0
                end = nl + 2 + total
                if end + 2 > n:
                    break
                payloads.append(bytes(buf[nl + 2 + hdr : end]))
                pos = end + 2
                continue
            line = bytes(buf[pos:nl])
            pos = nl + 2
            if line.startswith(b"INFO") and not self._greeted:
                self._greeted = True
                assert self.transport is not None
                sub = b"SUB %s 1\r\n" % self.topic.encode()
                self.transport.write((_NATS_CONNECT % b"bench-sink") + sub + b"PING\r\n")
            elif line == b"PING":
                assert self.transport is not None
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG":
                if not self.subscribed.done():
                    self.subscribed.set_result(None)
            elif line.startswith(b"-ERR"):
                self.errors.append(line.decode(errors="replace"))
        del buf[:pos]
        if payloads:
            self.counter.count(payloads)
