"""MQTT bridge (paho-mqtt, callback API version 2), for MQTT 5 and 3.1.1.

Thin by design: connect, subscribe, hand over deliveries, publish, close.

- Ingress acknowledgement is manual (``manual_ack=True``): a QoS 1 message is
  PUBACKed only when the node calls :meth:`Delivery.ack`, after the event is
  durable. The session is persistent (MQTT 5 ``clean_start=False`` with a
  session expiry; 3.1.1 ``clean_session=False``) so the broker keeps messages
  for the node while it is away. With MQTT 5 the Receive Maximum property
  bounds unacknowledged messages in flight to the node.
- Publishing returns once the broker confirmed each QoS 1 message (PUBACK).
  QoS 1 batches bypass paho's per-message machinery: the bridge encodes the
  PUBLISH packets itself (``bridges.mqtt_packets``), writes the batch at once
  through paho's packet queue, and settles PUBACKs straight from the receive
  buffer; packet ids come from paho's generator and ``max_inflight`` bounds
  what is unacknowledged, as paho would (bench/README.md has the numbers).
- paho runs on the node's asyncio loop, not in a thread of its own: the
  socket is watched with ``add_reader``/``add_writer`` (paho's external-loop
  callbacks) and ``loop_misc`` runs once a second for keepalives. Callbacks
  therefore run on the event loop, with no locks, no cross-thread hand-off
  per message, and no competition for the GIL. The socket is wrapped in a
  receive buffer, since paho reads a packet header a byte at a time.
- TCP: Nagle's algorithm is off (``TCP_NODELAY``) and the socket asks for an
  immediate ACK after every read (``TCP_QUICKACK``, Linux). Mosquitto writes
  with Nagle on, so the second PUBACK of a batch waited for our ACK of the
  first, which the kernel delays by up to 40 ms when we have nothing to send:
  a publishing node stalled 40 ms per batch.
- Writes: paho sends each queued packet with its own ``send``; the bridge
  joins the queued packets that need nothing once written (the PUBACKs the
  node acknowledges after one commit, say) into one write.
- paho's own reconnect is off: the node's supervisor owns reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt import _packet as paho_packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import Field, SecretStr, field_validator, model_validator

from bridges.mqtt_packets import publish_packet, publish_properties, scan_pubacks
from bridges.tls import tls_reason
from mesh.config import BrokerModel, ClientTls, EgressRule, IngressRule
from mesh.core.asyncapi import BrokerDoc, server_host
from mesh.core.codec import Mode, decode_mqtt, encode_mqtt
from mesh.core.errors import (
    BridgeError,
    BrokerUnavailable,
    InvalidEvent,
    InvalidTopic,
    PublishError,
)
from mesh.core.event import Event
from mesh.core.templates import literal_text
from mesh.core.topics import TopicSyntax
from mesh.plugins import BridgeContext, BridgeSpec, Capabilities, Delivery, Message, Subscribe
from mesh.runtime.tls import client_context

__all__ = ["MQTT_SYNTAX", "SPEC", "MqttBinding", "MqttBridge", "MqttBrokerConfig"]

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 30.0
CLOSE_SETTLE = 1.0  # seconds close waits for the broker to have read the last acks
RECV_BUFFER = 256 * 1024
READ_SLICE = 64  # packets parsed per turn of the event loop

MQTT_SYNTAX = TopicSyntax("MQTT", "/", "+", "#", reserved=frozenset({"*", ">"}))


class MqttBrokerConfig(BrokerModel):
    kind: Literal["mqtt"] = Field(description="mqtt: an MQTT 5 or 3.1.1 broker")
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        pattern=r"^mqtts?://",
        description="mqtt://host[:1883] or, over TLS, mqtts://host[:8883]",
    )
    protocol: Literal[5, "3.1.1"] = Field(5, description="MQTT protocol version: 5 or 3.1.1")
    client_id: str | None = Field(None, description="Default: mesh-<node id>-<broker name>")
    username: str | None = Field(None, description="User name sent in CONNECT")
    password: SecretStr | None = Field(
        None, description="Password sent in CONNECT with username (a secret: write it as ${VAR})"
    )
    tls: ClientTls | None = Field(
        None,
        description="CA and client certificate for an mqtts:// URL; default with mqtts://: "
        "the system's CAs, no client certificate",
    )
    keepalive: int = Field(30, ge=5, description="Seconds between keepalive PINGREQs")
    session_expiry: int = Field(
        3600, ge=0, description="Seconds the broker keeps the session while the node is away"
    )
    max_inflight: int = Field(
        1000, ge=1, le=65535, description="Unacknowledged QoS 1 messages in flight each way"
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        return 5 if v in ("5", "5.0", 5.0) else v

    @model_validator(mode="after")
    def _secure(self) -> MqttBrokerConfig:
        if self.tls is not None and not self.url.startswith("mqtts://"):
            raise ValueError("tls needs an mqtts:// url; mqtt:// is plain TCP")
        return self

    @property
    def version(self) -> Literal["5", "3.1.1"]:
        return "5" if self.protocol == 5 else "3.1.1"


class MqttBinding:
    """The CloudEvents MQTT binding: MQTT 5 binary and structured, 3.1.1 structured."""

    def __init__(self, protocol: Literal["5", "3.1.1"]) -> None:
        self.protocol = protocol

    def decode(self, message: Message) -> list[Event | InvalidEvent] | None:
        ev = decode_mqtt(
            message.payload, message.content_type, message.user_properties, self.protocol
        )
        return None if ev is None else [ev]

    def encode(self, event: Event, mode: Mode, topic: str) -> Message:
        if mode is Mode.DATA:
            ct = event.content_type if self.protocol == "5" else None
            return Message(topic, event.data or b"", content_type=ct)
        payload, ct, props = encode_mqtt(event, mode, self.protocol)
        return Message(topic, payload, content_type=ct, user_properties=props)


@contextlib.contextmanager
def _mapped(broker: str, doing: str) -> Iterator[None]:
    """paho's and the socket's exceptions as the gateway's (the one mapping of this bridge).

    paho raises ValueError for what it refuses to send (a topic with
    wildcards, a bad share name, a payload over the limit).
    """
    try:
        yield
    except ssl.SSLError as exc:  # before ValueError: SSLCertVerificationError is both
        raise BrokerUnavailable(broker, f"{doing}: {tls_reason(exc)}") from exc
    except (ValueError, TypeError) as exc:
        raise BridgeError(broker, f"{doing}: refused by paho: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise BrokerUnavailable(broker, f"{doing}: {exc or type(exc).__name__}") from exc


class _BufferedSocket:
    """A socket whose ``recv`` serves small reads from one large read.

    paho reads the fixed header of every packet a byte at a time, each a
    system call; this turns a burst of packets into one.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0
        self.tls_error: ssl.SSLError | None = None

    def recv(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            try:
                self._buf = self._sock.recv(RECV_BUFFER)  # raises BlockingIOError when empty
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                # With TLS 1.3 the broker checks the client certificate after the
                # client's handshake is done: its refusal is an alert on the first
                # read, which paho reports only as a lost connection. Kept for the
                # reason of the connect error.
                self.tls_error = exc
                raise
            self._pos = 0
            if _QUICKACK is not None:
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            if not self._buf:
                return b""  # the peer closed
        start = self._pos
        self._pos = min(start + n, len(self._buf))
        return self._buf[start : self._pos]

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buf) - self._pos + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_PUBLISH, _DISCONNECT = 0x30, 0xE0
_PUBLISH_QOS1 = _PUBLISH | 0x02
_PRIVATE = frozenset({"packetType", "types", "names", "properties"})
_TEMPLATE = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


class _FastProperties(Properties):
    """paho's Properties without rebuilding two lookup tables per packet.

    paho builds ``names`` and ``properties`` (27 entries each) in every
    ``__init__`` and probes all 27 names in every ``clear()``: 14 % of an
    ingress node's CPU for MQTT 5. They never change, so instances share
    them; ``clear()`` removes only the properties actually set. Behaviour is
    otherwise paho's own (this is a subclass).
    """

    def __init__(self, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", _TEMPLATE.types)
        object.__setattr__(self, "names", _TEMPLATE.names)
        object.__setattr__(self, "properties", _TEMPLATE.properties)

    def clear(self) -> None:
        for name in [n for n in self.__dict__ if n not in _PRIVATE]:
            delattr(self, name)


# paho creates Properties through these module globals for every packet it parses.
setattr(mqtt, "Properties", _FastProperties)  # noqa: B010 - not exported, set on purpose
setattr(paho_packet, "Properties", _FastProperties)  # noqa: B010


class _Client(mqtt.Client):
    """paho's client with two hot-path shortcuts, both private-API overrides pinned by
    the bridge tests: a buffered socket, and message dispatch straight to
    ``on_message`` (the bridge registers no per-topic callbacks, so paho's topic
    matcher and callback locks would only cost time on every message). Its TLS
    wrapping closes the socket of a failed handshake (pinned by the TLS tests)."""

    def _create_socket(self) -> Any:
        sock: Any = super()._create_socket()
        # paho leaves Nagle's algorithm on: a PUBLISH or PUBACK written while an
        # earlier segment awaits the broker's (delayed) ACK waited up to 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _BufferedSocket(sock)

    def _ssl_wrap_socket(self, tcp_sock: Any) -> ssl.SSLSocket:
        # paho's own leaves the TLS socket open when the handshake fails (a wrong
        # CA): one leaked socket per reconnect attempt. The context always checks
        # the host name (bridges.tls), so paho's extra match is not needed.
        assert self._ssl_context is not None
        sock = self._ssl_context.wrap_socket(
            tcp_sock, server_hostname=self._host, do_handshake_on_connect=False
        )
        try:
            sock.settimeout(self._connect_timeout)
            sock.do_handshake()
        except BaseException:
            sock.close()
            raise
        return sock

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        on_message = self.on_message
        if on_message is not None:
            on_message(self, self._userdata, message)

    on_fast_puback: Callable[[int, int], bool] | None = None

    def send_raw(self, packet: bytes) -> MQTTErrorCode:
        """Queue pre-encoded packets behind paho's own and write what the socket takes now.

        The entry has the shape of paho's ``_packet_queue`` with ``qos`` 1, so
        ``_packet_write`` treats it as a packet that needs nothing on completion
        (a QoS 0 PUBLISH would call ``on_publish``); what the socket does not
        take at once is written by paho when the socket is writable.
        """
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        self._out_packet.append(
            {
                "command": _PUBLISH_QOS1,
                "mid": 0,
                "qos": 1,
                "pos": 0,
                "to_process": len(packet),
                "packet": packet,
                "info": None,
            }
        )
        rc: MQTTErrorCode = self.loop_write()
        return rc

    def _packet_write(self) -> MQTTErrorCode:
        # paho sends each queued packet with its own send(): a batch of PUBACKs
        # was one system call per message. Packets that need nothing once
        # written (all but DISCONNECT and a QoS 0 PUBLISH) are joined first.
        queue = self._out_packet
        if len(queue) > 1:
            n = 0
            for pkt in queue:
                kind = pkt["command"] & 0xF0
                if kind == _DISCONNECT or (kind == _PUBLISH and pkt["qos"] == 0):
                    break
                n += 1
            if n > 1:
                parts = []
                for _ in range(n):
                    pkt = queue.popleft()
                    parts.append(pkt["packet"][pkt["pos"] :] if pkt["pos"] else pkt["packet"])
                joined = b"".join(parts)
                queue.appendleft(
                    {
                        "command": _PUBLISH_QOS1,
                        "mid": 0,
                        "qos": 1,
                        "pos": 0,
                        "to_process": len(joined),
                        "packet": joined,
                        "info": None,
                    }
                )
        rc: MQTTErrorCode = super()._packet_write()
        return rc

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        # A PUBACK of the bridge's own batches goes straight to it: paho's path
        # builds a ReasonCode and a Properties per PUBACK and, in
        # _update_inflight, walks every message in flight on each one.
        on_fast = self.on_fast_puback
        if cmd == "PUBACK" and on_fast is not None:
            packet = self._in_packet["packet"]
            if len(packet) >= 2:
                mid = (packet[0] << 8) | packet[1]
                code = packet[2] if len(packet) > 2 else 0
                if on_fast(mid, code):
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
        rc: MQTTErrorCode = super()._handle_pubackcomp(cmd)
        return rc

    on_pingresp: Any = None  # paho has no callback for PINGRESP

    def _handle_pingresp(self) -> MQTTErrorCode:
        rc: MQTTErrorCode = super()._handle_pingresp()
        if self.on_pingresp is not None:
            self.on_pingresp()
        return rc


class _Batch:
    """The results of one ``publish`` call, settled by PUBACKs in any order.

    ``done`` is set once every message was sent (``seal``) and settled: a batch
    larger than the in-flight window can have all of its first part settled
    while the rest waits for room.
    """

    __slots__ = ("done", "left", "results", "sealed")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.results: list[PublishError | None] = [None] * n
        self.left = 0  # messages sent and not settled yet
        self.sealed = False
        self.done: asyncio.Future[None] = loop.create_future()

    def settle(self, i: int, result: PublishError | None) -> None:
        self.results[i] = result
        self.left -= 1
        if not self.left and self.sealed and not self.done.done():
            self.done.set_result(None)

    def seal(self) -> None:
        self.sealed = True
        if not self.left and not self.done.done():
            self.done.set_result(None)


class MqttBridge:
    """A bridge to one MQTT broker."""

    def __init__(self, cfg: MqttBrokerConfig, ctx: BridgeContext) -> None:
        self.name = name = ctx.broker
        self.cfg = cfg
        self.ctx = ctx
        node_id = ctx.node_id
        self.v5 = cfg.version == "5"
        url = urlsplit(cfg.url)
        self.host = url.hostname or "127.0.0.1"
        self.tls = url.scheme == "mqtts"
        self.port = url.port or (8883 if self.tls else 1883)
        client_id = cfg.client_id or f"mesh-{node_id}-{name}"
        self._client = c = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self.v5 else False,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        c.max_inflight_messages_set(cfg.max_inflight)
        c.max_queued_messages_set(0)
        if cfg.username:
            c.username_pw_set(
                cfg.username, cfg.password.get_secret_value() if cfg.password else None
            )
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        self._loop: asyncio.AbstractEventLoop | None = None
        # Mosquitto 2.0 overshoots its in-flight limit (see _on_readable), so the
        # inbox pauses reading at twice the window.
        self._inbox = ctx.inbox
        self._inbox.resize(max(2 * cfg.max_inflight, 1024))
        self._inbox.on_flow(self._pause, self._resume)
        self._pending: dict[int, tuple[_Batch, int]] = {}  # unacknowledged packet ids
        self._room_waiter: asyncio.Future[None] | None = None  # a publish waits for room
        c.on_fast_puback = self._fast_puback
        self._connack: asyncio.Future[Any] | None = None
        self._pingresp: asyncio.Future[None] | None = None
        c.on_pingresp = self._on_pingresp
        self._subacks: dict[int, asyncio.Future[list[Any]]] = {}
        self._connected = False
        self._sock: Any = None
        self._tls_error: ssl.SSLError | None = None  # what ended the connection, if TLS did
        self._more = False  # a _continue_reading is scheduled
        self._paused = False  # reading stopped: the inbox is full
        self._awaiting_suback = 0  # subscribes whose SUBACK has not been read yet
        self._pause_deferred = False  # the inbox filled while a SUBACK was awaited

    # -- the socket on the event loop ------------------------------------------------

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        # Called from the thread running paho's blocking connect().
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._watch, sock)

    def _watch(self, sock: Any) -> None:
        assert self._loop is not None
        self._sock = sock
        with contextlib.suppress(ValueError, OSError):
            self._loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        """Parse what arrived, a slice at a time so other work is not held up.

        The socket is read 256 KiB at a time, hundreds of packets; after
        ``READ_SLICE`` of them the rest waits for the next turn of the loop
        (scheduled here, since the OS will not signal data already read).
        Reading stops while the node's inbox is paused. The broker's in-flight
        limit (Receive Maximum, max_inflight_messages) should bound what it
        sends before the node acknowledges, but Mosquitto 2.0 overshoots it by
        tens of thousands of messages when acknowledgements trickle in
        (measured: 22k unacknowledged against a limit of 1,000), so the inbox
        bound is what holds, and TCP pushes back on the broker.
        """
        c = self._client
        for _ in range(READ_SLICE):
            if self._paused:
                return
            rc = c.loop_read()
            sock = self._sock
            if self._pending and sock is not None and not c._in_packet["command"]:
                self._take_pubacks(sock)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or sock is None or not sock.pending():
                return
        if self._loop is not None and not self._more:
            self._more = True
            self._loop.call_soon(self._continue_reading)

    def _take_pubacks(self, sock: Any) -> None:
        """The PUBACKs already in the receive buffer, in one pass (paho is between packets)."""
        buffered = getattr(sock, "_buf", None)
        if buffered is None or sock._pos >= len(buffered):
            return
        pos, taken = scan_pubacks(buffered, sock._pos, self.v5, self._fast_puback)
        if taken:
            sock._pos = pos
            self._client._last_bytes_received = time.monotonic()  # as paho's _packet_read

    def _continue_reading(self) -> None:
        self._more = False
        if self._sock is not None and not self._paused:
            self._on_readable()

    def _pause(self) -> None:
        """The inbox is full: stop reading the socket.

        Not while a SUBACK is awaited: on reconnect the broker resends a
        persistent session's unacknowledged messages ahead of it, and the node
        drains the inbox only once connect() has returned, so pausing then
        would wait for the SUBACK for ever. Reading goes on until the SUBACK is
        read (what comes before it is bounded by the broker's in-flight
        window), then pauses.
        """
        if self._awaiting_suback:
            self._pause_deferred = True
            return
        if self._paused or self._sock is None or self._loop is None:
            return
        self._paused = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())

    def _resume(self) -> None:
        self._pause_deferred = False
        self._paused = False
        sock, loop = self._sock, self._loop
        if sock is not None and loop is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.add_reader(sock.fileno(), self._on_readable)
            if not self._more:  # bytes already buffered will not wake the reader
                self._more = True
                loop.call_soon(self._continue_reading)

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        self._tls_error = getattr(sock, "tls_error", None) or self._tls_error
        self._unwatch(sock)

    def _unwatch(self, sock: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(ValueError, OSError):
            fd = sock.fileno()
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        if self._sock is sock:
            self._sock = None

    def _on_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        loop = self._loop
        assert loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.add_writer(sock.fileno(), self._client.loop_write)
        else:  # during the blocking connect(), in its thread
            loop.call_soon_threadsafe(
                lambda: loop.add_writer(sock.fileno(), self._client.loop_write)
            )

    def _on_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_writer(sock.fileno())

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            with _mapped(self.name, "keepalive"):
                self._client.loop_misc()

    # -- paho callbacks (on the event loop) ---------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(rc)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        tls_error = self._tls_error
        self._lost(tls_reason(tls_error) if tls_error is not None else f"disconnected: {rc}")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = msg.properties
        ct = getattr(props, "ContentType", None) if props is not None else None
        user = getattr(props, "UserProperty", None) if props is not None else None
        m = Message(
            msg.topic,
            bytes(msg.payload),
            content_type=ct,
            qos=msg.qos,
            retain=msg.retain,
            user_properties=tuple(user) if user else (),
        )
        mid, qos = msg.mid, msg.qos
        ack = (lambda: self._ack(mid, qos)) if qos > 0 else None
        self._inbox.put(Delivery(m, ack))

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        failure = None
        if getattr(rc, "is_failure", False):
            failure = PublishError(self.name, f"broker refused the publish: {rc}")
        self._resolve(mid, failure)

    def _fast_puback(self, mid: int, code: int) -> bool:
        """A PUBACK for ``mid``: settle it unless paho's own publish owns that id."""
        if mid not in self._pending or mid in self._client._out_messages:
            return False
        failure = None
        if code >= 0x80:
            try:
                why = str(ReasonCode(PacketTypes.PUBACK, identifier=code))
            except KeyError:  # not a code MQTT 5 defines
                why = f"reason code 0x{code:02x}"
            failure = PublishError(self.name, f"broker refused the publish: {why}")
        self._resolve(mid, failure)
        return True

    def _resolve(self, mid: int, result: PublishError | None) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        batch, i = entry
        batch.settle(i, result)
        waiter = self._room_waiter
        if waiter is not None and not waiter.done() and len(self._pending) < self.cfg.max_inflight:
            waiter.set_result(None)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        fut = self._subacks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(list(rcs))

    def _on_pingresp(self) -> None:
        if self._pingresp is not None and not self._pingresp.done():
            self._pingresp.set_result(None)

    def _ack(self, mid: int, qos: int) -> None:
        if self._connected:
            self._client.ack(mid, qos)

    def _lost(self, reason: str) -> None:
        self._connected = False
        err = PublishError(self.name, f"connection lost ({reason})")
        pending, self._pending = self._pending, {}
        for batch, i in pending.values():
            batch.settle(i, err)
        if self._room_waiter is not None and not self._room_waiter.done():
            self._room_waiter.set_result(None)
        for suback in self._subacks.values():
            if not suback.done():
                suback.set_exception(BrokerUnavailable(self.name, reason))
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(BrokerUnavailable(self.name, reason))
        if self._pingresp is not None and not self._pingresp.done():
            self._pingresp.set_result(None)
        self._inbox.lost(reason)

    # -- the bridge interface ----------------------------------------------------------

    async def connect(self, subscriptions: Sequence[Subscribe]) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        c = self._client
        props = None
        if self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.cfg.session_expiry
            props.ReceiveMaximum = self.cfg.max_inflight
        where = f"cannot connect to {self.host}:{self.port}"
        with _mapped(self.name, where):
            if self.tls:
                try:  # reads certificate files: off the loop
                    ctx = await asyncio.to_thread(client_context, self.cfg.tls)
                except ValueError as exc:
                    raise BrokerUnavailable(self.name, f"{where}: {exc}") from exc
                c.tls_set_context(ctx)
            kwargs: dict[str, Any] = {"properties": props, "clean_start": False} if self.v5 else {}
            # connect() blocks on the TCP handshake: off the loop. The socket is
            # handed to the loop by _on_socket_open.
            rc = await asyncio.to_thread(
                c.connect, self.host, self.port, self.cfg.keepalive, **kwargs
            )
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(self.name, f"connect failed: {mqtt.error_string(rc)}")
            self.ctx.tasks.spawn("keepalive", self._keepalive)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                code = await self._connack
        if getattr(code, "is_failure", False):
            raise BrokerUnavailable(self.name, f"broker refused the connection: {code}")
        self._connected = True
        for sub in subscriptions:
            await self._subscribe(loop, sub)
        log.debug("mqtt %s connected to %s:%d", self.name, self.host, self.port)

    async def _subscribe(self, loop: asyncio.AbstractEventLoop, sub: Subscribe) -> None:
        c = self._client
        topic = f"$share/{sub.queue_group}/{sub.topic}" if sub.queue_group else sub.topic
        with _mapped(self.name, f"cannot subscribe to {topic!r}"):
            if self.v5 and not sub.queue_group:
                # No Local: never receive what this connection published (egress), so
                # overlapping ingress and egress topics cannot loop.
                rc, mid = c.subscribe(topic, options=SubscribeOptions(qos=sub.qos, noLocal=True))
            else:
                rc, mid = c.subscribe(topic, qos=sub.qos)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(self.name, f"subscribe {topic!r} failed: {rc}")
            suback: asyncio.Future[list[Any]] = loop.create_future()
            self._subacks[mid or 0] = suback
            self._awaiting_suback += 1
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    codes = await suback
            except TimeoutError as exc:
                raise BrokerUnavailable(self.name, f"no SUBACK for {topic!r}") from exc
            finally:
                self._subacks.pop(mid or 0, None)
                self._awaiting_suback -= 1
                if not self._awaiting_suback and self._pause_deferred:
                    self._pause_deferred = False
                    self._pause()
        for code in codes:
            if getattr(code, "is_failure", False) or code == 128:
                raise BridgeError(self.name, f"subscription {topic!r} refused: {code}")

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        """Publish a batch; return once the broker confirmed or refused each message.

        QoS 1 messages take the batch path: each PUBLISH is encoded here
        (:mod:`bridges.mqtt_packets`, byte for byte what paho would send), the
        batch goes out as one write behind paho's queued packets, and PUBACKs
        settle it without paho's per-message objects. Packet ids come from
        paho's own generator, skipping any still in flight; at most
        ``max_inflight`` messages are unacknowledged at once, as paho limits
        its own. QoS 0 and 2 go through ``Client.publish``. A lost connection
        fails what was not confirmed; the egress retries it on the next
        connection (a bridge is one connection attempt, so nothing is resent
        by paho behind its back).
        """
        batch = _Batch(asyncio.get_running_loop(), len(messages))
        pending = self._pending
        limit = self.cfg.max_inflight
        v5 = self.v5
        parts: list[bytes] = []
        props_cache: dict[tuple[str | None, tuple[tuple[str, str], ...]], bytes] = {}
        full: str | None = None  # why there was no room in flight: fail the rest at once
        for i, m in enumerate(messages):
            if not self._connected:
                batch.results[i] = PublishError(self.name, "not connected")
                continue
            problem = _publish_topic_problem(m.topic)
            if problem is not None:
                batch.results[i] = InvalidTopic(self.name, m.topic, problem)
                continue
            if m.qos != 1:
                self._flush(parts, batch)  # keep the order of the batch on the wire
                self._publish_one(m, batch, i)
                continue
            if len(pending) >= limit and full is None:
                self._flush(parts, batch)
                full = await self._room(limit)
            if full is not None:
                batch.results[i] = PublishError(self.name, full)
                continue
            props = None
            if v5:
                key = (m.content_type, tuple(m.user_properties))
                props = props_cache.get(key)
            mid = self._next_mid()
            try:
                if v5 and props is None:
                    props = props_cache[key] = publish_properties(m.content_type, m.user_properties)
                parts.append(publish_packet(m.topic, m.payload, mid, m.retain, props))
            except ValueError as exc:  # UnicodeEncodeError is one
                batch.results[i] = PublishError(
                    self.name, f"cannot publish to {m.topic!r}: {exc}", permanent=True
                )
                continue
            pending[mid] = (batch, i)
            batch.left += 1
        self._flush(parts, batch)
        batch.seal()
        if not batch.done.done():
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    await batch.done
            except TimeoutError:
                late = PublishError(self.name, f"no PUBACK within {PUBLISH_TIMEOUT}s")
                for mid, (b, _i) in list(pending.items()):
                    if b is batch:
                        self._resolve(mid, late)
        return batch.results

    def _next_mid(self) -> int:
        pending, out = self._pending, self._client._out_messages
        while True:
            mid: int = self._client._mid_generate()
            if mid not in pending and mid not in out:
                return mid

    def _flush(self, parts: list[bytes], batch: _Batch) -> None:
        """Write the encoded PUBLISH packets of ``parts`` (emptied) in one go."""
        if not parts:
            return
        data = b"".join(parts)
        parts.clear()
        try:
            with _mapped(self.name, "publish"):
                rc = self._client.send_raw(data)
        except BridgeError as exc:
            rc, reason = MQTTErrorCode.MQTT_ERR_CONN_LOST, exc.reason
        else:
            reason = f"publish failed: {mqtt.error_string(rc)}"
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # A lost connection has already failed them (_lost); anything else here.
            err = PublishError(self.name, reason)
            for mid, (b, _i) in list(self._pending.items()):
                if b is batch:
                    self._resolve(mid, err)

    async def _room(self, limit: int) -> str | None:
        """Wait until fewer than ``limit`` messages are unacknowledged; else why not."""
        assert self._loop is not None
        while len(self._pending) >= limit:
            if not self._connected:
                return "not connected"
            waiter = self._room_waiter
            if waiter is None or waiter.done():
                waiter = self._room_waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    await asyncio.shield(waiter)
            except TimeoutError:
                return f"in-flight window full: no PUBACK within {PUBLISH_TIMEOUT}s"
        return None if self._connected else "not connected"

    def _publish_one(self, m: Message, batch: _Batch, i: int) -> None:
        """A QoS 0 or 2 message, through paho's ``Client.publish``."""
        props = None
        if self.v5 and (m.content_type or m.user_properties):
            props = _FastProperties(PacketTypes.PUBLISH)
            if m.content_type:
                props.ContentType = m.content_type
            if m.user_properties:
                props.UserProperty = list(m.user_properties)
        try:
            with _mapped(self.name, f"cannot publish to {m.topic!r}"):
                info = self._client.publish(
                    m.topic, m.payload, qos=m.qos, retain=m.retain, properties=props
                )
        except BridgeError as exc:
            # paho refuses it (a payload over the limit): retrying cannot help.
            permanent = not isinstance(exc, BrokerUnavailable)
            batch.results[i] = PublishError(self.name, exc.reason, permanent=permanent)
            return
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            batch.results[i] = PublishError(
                self.name, f"publish failed: {mqtt.error_string(info.rc)}"
            )
        elif m.qos > 0 and not info.is_published():
            # PUBACK/PUBCOMP arrive through _on_readable, on this same loop, later.
            self._pending[info.mid] = (batch, i)
            batch.left += 1

    async def _settle(self) -> None:
        """A PINGREQ round trip: the broker has read every PUBACK sent before it.

        Without it the PUBACKs written just before DISCONNECT could be lost
        when the next connection of the same session took it over first (seen
        with Mosquitto): acknowledged messages came back after a reconnect.
        Uses paho's ``_send_pingreq`` (private, pinned by the conformance suite).
        """
        if self._loop is None or self._paused or self._sock is None:
            return  # not reading: no PINGRESP could arrive
        self._pingresp = self._loop.create_future()
        with _mapped(self.name, "PINGREQ"):
            if self._client._send_pingreq() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_SETTLE):
                await self._pingresp

    async def close(self) -> None:
        if self._connected:
            with contextlib.suppress(BridgeError):
                await self._settle()
        self._connected = False
        await self.ctx.tasks.aclose()
        c = self._client
        with contextlib.suppress(ValueError, OSError, ssl.SSLError):
            c.disconnect()
            c.loop_write()  # send DISCONNECT now; paho closes the socket after it
        sock = self._sock
        if sock is not None:
            self._unwatch(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self._inbox.lost("closed")


def _publish_topic_problem(topic: str) -> str | None:
    """Why an MQTT broker would refuse a PUBLISH to ``topic``."""
    if not topic:
        return "empty topic"
    if "+" in topic or "#" in topic:
        return "a publish topic cannot contain the wildcards + or #"
    if "\x00" in topic:
        return "a topic cannot contain U+0000"
    if len(topic.encode("utf-8", "surrogatepass")) > 65535:
        return "topics are at most 65,535 bytes"
    return None


def _check_ingress(cfg: MqttBrokerConfig, rule: IngressRule) -> list[tuple[str, str]]:
    out = []
    group = rule.queue_group
    if group is not None and (not group or any(c in group for c in "/+#")):
        out.append(("queue_group", "an MQTT share name cannot be empty or contain /, + or #"))
    if "\x00" in rule.topic:
        out.append(("topic", "a topic filter cannot contain U+0000"))
    return out


def _check_egress(cfg: MqttBrokerConfig, rule: EgressRule) -> list[tuple[str, str]]:
    literal = literal_text(rule.target)
    if re.search(r"[+#]", literal):
        return [("target", "an MQTT publish topic cannot contain + or #")]
    return []


_V5 = Capabilities(redelivery=True, queue_groups=True, no_local=True, confirm=True)
_V311 = Capabilities(
    modes=frozenset({Mode.STRUCTURED, Mode.DATA}),
    redelivery=True,
    queue_groups=True,
    no_local=False,
    confirm=True,
)
_BINDINGS = {"5": MqttBinding("5"), "3.1.1": MqttBinding("3.1.1")}


def _asyncapi(cfg: MqttBrokerConfig) -> BrokerDoc:
    def bindings(rule: IngressRule | EgressRule) -> dict[str, Any]:
        # MQTT operation binding 0.2.0: qos and retain (a subscription has no retain).
        mqtt_binding: dict[str, Any] = {"qos": rule.qos}
        if isinstance(rule, EgressRule):
            mqtt_binding["retain"] = rule.retain
        mqtt_binding["bindingVersion"] = "0.2.0"
        return {"mqtt": mqtt_binding}

    secure = cfg.url.startswith("mqtts://")
    return BrokerDoc(
        protocol="secure-mqtt" if secure else "mqtt",
        syntax=MQTT_SYNTAX,
        host=server_host(cfg.url),
        protocol_version=cfg.version,
        bindings=bindings,
    )


SPEC = BridgeSpec(
    kind="mqtt",
    config=MqttBrokerConfig,
    syntax=MQTT_SYNTAX,
    factory=MqttBridge,
    binding=lambda cfg: _BINDINGS[cfg.version],
    capabilities=lambda cfg: _V5 if cfg.version == "5" else _V311,
    check_ingress=_check_ingress,
    check_egress=_check_egress,
    summary="MQTT 5 and 3.1.1 (paho-mqtt)",
    describe=lambda cfg: f"MQTT {cfg.version}",
    asyncapi=_asyncapi,
)
