"""MQTT bridge (paho-mqtt, callback API version 2), for MQTT 5 and 3.1.1.

Thin by design: connect, subscribe, hand over deliveries, publish, close.

- Ingress acknowledgement is manual (``manual_ack=True``): a QoS 1 message is
  PUBACKed only when the node calls :meth:`Delivery.ack`, after the event is
  durable. The session is persistent (MQTT 5 ``clean_start=False`` with a
  session expiry; 3.1.1 ``clean_session=False``) so the broker keeps messages
  for the node while it is away. With MQTT 5 the Receive Maximum property
  bounds unacknowledged messages in flight to the node.
- Publishing returns once the broker confirmed each QoS 1 message (PUBACK).
- paho's network loop runs in its own thread (``loop_start``); results cross
  to the event loop with ``call_soon_threadsafe``. paho's own reconnect is
  off: the node's supervisor owns reconnects and backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from mesh.bridge import Delivery, Message, Subscribe
from mesh.config import MqttBroker
from mesh.errors import BrokerUnavailable, PublishError

__all__ = ["MqttBridge"]

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 30.0
_NOTHING: Any = object()


class _Lost:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class MqttBridge:
    """A bridge to one MQTT broker."""

    def __init__(self, name: str, cfg: MqttBroker, node_id: str) -> None:
        self.name = name
        self.cfg = cfg
        self.v5 = cfg.version == "5"
        url = urlsplit(cfg.url)
        self.host = url.hostname or "127.0.0.1"
        self.tls = url.scheme == "mqtts"
        self.port = url.port or (8883 if self.tls else 1883)
        client_id = cfg.client_id or f"mesh-{node_id}-{name}"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self.v5 else False,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        c = self._client
        c.max_inflight_messages_set(cfg.max_inflight)
        c.max_queued_messages_set(0)
        if cfg.username:
            c.username_pw_set(cfg.username, cfg.password)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Delivery | _Lost] = asyncio.Queue()
        self._lock = threading.RLock()
        self._pending: dict[int, asyncio.Future[PublishError | None]] = {}
        self._early: dict[int, PublishError | None] = {}
        self._connack: asyncio.Future[Any] | None = None
        self._subacks: dict[int, asyncio.Future[list[Any]]] = {}
        self._connected = False

    # -- paho thread callbacks -----------------------------------------------------

    def _post(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        def done() -> None:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(rc)

        self._post(done)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._post(self._lost, f"disconnected: {rc}")

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
        self._post(self._queue.put_nowait, Delivery(m, ack))

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        failure = None
        if getattr(rc, "is_failure", False):
            failure = PublishError(self.name, f"broker refused the publish: {rc}")
        with self._lock:
            fut = self._pending.pop(mid, None)
            if fut is None:
                self._early[mid] = failure
                return
        self._post(_settle, fut, failure)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        def done() -> None:
            fut = self._subacks.pop(mid, None)
            if fut is not None and not fut.done():
                fut.set_result(list(rcs))

        self._post(done)

    # -- event loop side -------------------------------------------------------------

    def _ack(self, mid: int, qos: int) -> None:
        if self._connected:
            self._client.ack(mid, qos)

    def _lost(self, reason: str) -> None:
        self._connected = False
        err = PublishError(self.name, f"connection lost ({reason})")
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            _settle(fut, err)
        for suback in self._subacks.values():
            if not suback.done():
                suback.set_exception(BrokerUnavailable(self.name, reason))
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(BrokerUnavailable(self.name, reason))
        self._queue.put_nowait(_Lost(reason))

    async def connect(self, subscriptions: Sequence[Subscribe]) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        c = self._client
        props = None
        if self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.cfg.session_expiry
            props.ReceiveMaximum = self.cfg.max_inflight
        try:
            if self.tls:
                ctx = await asyncio.to_thread(ssl.create_default_context)
                c.tls_set_context(ctx)
            kwargs: dict[str, Any] = {"properties": props, "clean_start": False} if self.v5 else {}
            rc = await asyncio.to_thread(
                c.connect, self.host, self.port, self.cfg.keepalive, **kwargs
            )
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(self.name, f"connect failed: {mqtt.error_string(rc)}")
            c.loop_start()
            code = await asyncio.wait_for(self._connack, CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise BrokerUnavailable(
                self.name, f"cannot connect to {self.host}:{self.port}: {exc or 'timeout'}"
            ) from exc
        if getattr(code, "is_failure", False):
            raise BrokerUnavailable(self.name, f"broker refused the connection: {code}")
        self._connected = True
        for sub in subscriptions:
            topic = f"$share/{sub.queue_group}/{sub.topic}" if sub.queue_group else sub.topic
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
            try:
                codes = await asyncio.wait_for(suback, CONNECT_TIMEOUT)
            except TimeoutError as exc:
                raise BrokerUnavailable(self.name, f"no SUBACK for {topic!r}") from exc
            for code in codes:
                if getattr(code, "is_failure", False) or code == 128:
                    raise BrokerUnavailable(self.name, f"subscription {topic!r} refused: {code}")
        log.debug("mqtt %s connected to %s:%d", self.name, self.host, self.port)

    async def receive(self, limit: int) -> list[Delivery]:
        first = await self._queue.get()
        if isinstance(first, _Lost):
            raise BrokerUnavailable(self.name, first.reason)
        out = [first]
        while len(out) < limit and not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Lost):
                self._queue.put_nowait(item)  # report the loss on the next call
                break
            out.append(item)
        return out

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[PublishError | None]] = []
        c = self._client
        for m in messages:
            fut: asyncio.Future[PublishError | None] = loop.create_future()
            futures.append(fut)
            if not self._connected:
                fut.set_result(PublishError(self.name, "not connected"))
                continue
            props = None
            if self.v5 and (m.content_type or m.user_properties):
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                if m.content_type:
                    props.ContentType = m.content_type
                if m.user_properties:
                    props.UserProperty = list(m.user_properties)
            # paho calls on_publish while holding its own mutex, and on_publish takes
            # self._lock: never hold self._lock around a paho call (lock order).
            try:
                info = c.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, properties=props)
            except (ValueError, TypeError) as exc:  # invalid topic, payload too large
                fut.set_result(
                    PublishError(self.name, f"cannot publish to {m.topic!r}: {exc}", permanent=True)
                )
                continue
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                fut.set_result(
                    PublishError(self.name, f"publish failed: {mqtt.error_string(info.rc)}")
                )
                continue
            with self._lock:
                early = self._early.pop(info.mid, _NOTHING)
                if m.qos == 0:
                    fut.set_result(None)
                elif early is not _NOTHING:
                    fut.set_result(early)
                else:
                    self._pending[info.mid] = fut
        waiting: set[asyncio.Future[PublishError | None]] = set()
        if futures:
            _done, waiting = await asyncio.wait(futures, timeout=PUBLISH_TIMEOUT)
        if waiting:
            with self._lock:
                for mid, fut in list(self._pending.items()):
                    if fut in waiting:
                        del self._pending[mid]
            for fut in waiting:
                fut.set_result(PublishError(self.name, f"no PUBACK within {PUBLISH_TIMEOUT}s"))
        return [f.result() for f in futures]

    async def close(self) -> None:
        c = self._client
        self._connected = False
        with contextlib.suppress(Exception):
            c.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(c.loop_stop)


def _settle(fut: asyncio.Future[PublishError | None], value: PublishError | None) -> None:
    if not fut.done():
        fut.set_result(value)
