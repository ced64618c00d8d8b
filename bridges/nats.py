"""NATS bridge (nats-py): core NATS, and JetStream when ``jetstream: true``.

Thin by design: connect, subscribe, hand deliveries to the node's inbox,
publish, close. nats-py's own reconnect is off: the node's supervisor owns
reconnects. nats-py's exceptions are mapped in one place (:func:`_mapped`).

Core NATS: ingress is at-most-once (the server does not redeliver, so a
message in flight when the node stops is lost) and cannot be paused: when
the node's inbox is full, further messages are dropped as a slow consumer
would be, each drop counted in ``mesh_ingress_dropped_total{broker,
reason="slow consumer"}``. A publish is confirmed by a flush (a PING/PONG
round trip after the batch). A batch's PUB/HPUB commands are written into
nats-py's buffer directly (its ``_pending`` list, a private API the bridge
tests pin) rather than one ``publish`` coroutine per message.

JetStream: ingress pulls from a durable consumer per subscription, only as
much as the inbox has room for, and acks each message only when the node
calls :meth:`Delivery.ack`, after the event is durable; unacknowledged
messages are redelivered. Egress publishes with ``Nats-Msg-Id`` = the
event's (source, id), so the stream de-duplicates a re-publish after a crash,
and a message counts as delivered only when its PubAck arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.protocol.command import hpub_cmd, pub_cmd
from pydantic import Field, SecretStr, model_validator

from bridges.tls import tls_reason
from mesh.config import BrokerModel, ClientTls, EgressRule, IngressRule
from mesh.core.asyncapi import BrokerDoc, server_host
from mesh.core.codec import Mode, decode_nats, encode_nats
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

__all__ = ["NATS_SYNTAX", "SPEC", "NatsBinding", "NatsBridge", "NatsBrokerConfig"]

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0
FLUSH_TIMEOUT = 10
PUBLISH_TIMEOUT = 10.0
FETCH_BATCH = 256
PENDING_MSGS = 65536  # nats-py's own per-subscription bound (our callback only enqueues)
PENDING_BYTES = 64 << 20

NATS_SYNTAX = TopicSyntax("NATS", ".", "*", ">", reserved=frozenset({"+", "#"}))
_TOKEN = re.compile(r"[^\s.*>]+")
_NEWLINES = str.maketrans("", "", "\r\n")


class NatsBrokerConfig(BrokerModel):
    kind: Literal["nats"] = Field(description="nats: a NATS server (core NATS or JetStream)")
    url: str = Field(
        "nats://127.0.0.1:4222",
        pattern=r"^(nats|tls)://",
        description="nats://host[:4222] or, over TLS, tls://host[:4222]",
    )
    jetstream: bool = Field(
        False,
        description="Ingress from durable JetStream consumers, acknowledged after the node "
        "committed; egress published to JetStream with Nats-Msg-Id, confirmed by its ack. "
        "Core NATS (false) is at-most-once at ingress",
    )
    tls: ClientTls | None = Field(
        None,
        description="CA and client certificate for a tls:// URL; default with tls://: "
        "the system's CAs, no client certificate",
    )
    user: str | None = Field(None, description="User name; with password")
    password: SecretStr | None = Field(
        None, description="The user's password (a secret: write it as ${VAR}); needs user"
    )
    token: SecretStr | None = Field(
        None, description="Authentication token (a secret: write it as ${VAR})"
    )
    nkey: Path | None = Field(
        None,
        description="File holding the NKey seed (SU...) of an nkey user; the file is a secret, "
        "its path is not. Relative to the node's working directory",
    )
    creds: Path | None = Field(
        None,
        description="Credentials file (user JWT and NKey seed) for a server in operator/JWT "
        "mode; a secret file, like nkey. Relative to the node's working directory",
    )

    @model_validator(mode="after")
    def _secure(self) -> NatsBrokerConfig:
        if self.tls is not None and not self.url.startswith("tls://"):
            # nats-py would upgrade only if the server asked for TLS, else send
            # everything in clear: a tls block must mean TLS.
            raise ValueError("tls needs a tls:// url; with nats:// TLS would be up to the server")
        if self.password is not None and not self.user:
            raise ValueError("password is set without user")
        given = [
            name
            for name, value in (
                ("token", self.token),
                ("user", self.user),
                ("nkey", self.nkey),
                ("creds", self.creds),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"{' and '.join(given)} are set: use at most one of token, user (+ password), "
                "nkey, creds"
            )
        return self


class NatsBinding:
    """The CloudEvents NATS binding: binary (``ce-`` headers) and structured; ``data`` too."""

    def decode(self, message: Message) -> list[Event | InvalidEvent] | None:
        ev = decode_nats(message.payload, message.headers)
        return None if ev is None else [ev]

    def encode(self, event: Event, mode: Mode, topic: str) -> Message:
        if mode is Mode.DATA:
            return Message(topic, event.data or b"", headers={})
        payload, headers = encode_nats(event, mode)
        return Message(topic, payload, headers=headers)


def _publish_subject_problem(subject: str) -> str | None:
    """Why nats-server would refuse to publish to ``subject`` (it says so only in an -ERR)."""
    if not subject:
        return "empty subject"
    for tok in subject.split("."):
        if tok in ("*", ">"):
            return "a publish subject cannot contain the wildcards * or >"
        if not _TOKEN.fullmatch(tok):
            return "subjects are non-empty tokens separated by '.', without spaces"
    return None


def _command(m: Message) -> bytes:
    """The PUB or HPUB protocol command for one message."""
    if not m.headers and m.dedup_id is None:
        return pub_cmd(m.topic, "", m.payload)
    items = dict(m.headers)
    if m.dedup_id is not None:
        items["Nats-Msg-Id"] = m.dedup_id
    hdr = (
        "NATS/1.0\r\n"
        + "".join(f"{k}: {str(v).translate(_NEWLINES)}\r\n" for k, v in items.items())
        + "\r\n"
    )
    return hpub_cmd(m.topic, "", hdr.encode(), m.payload)


class _TlsNotOffered(nats.errors.Error):
    """The server's INFO does not ask for TLS although the URL is tls://."""


class _Client(Client):
    """nats-py's client, refusing to go on in clear when TLS was asked for.

    nats-py upgrades to TLS only when the server's INFO says ``tls_required``,
    whatever the URL's scheme: to a server without TLS a ``tls://`` URL would
    connect in clear and send the credentials. Overrides ``_process_info``
    (private, called with the first INFO before CONNECT; pinned by the TLS tests).
    """

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection and "tls" in self.options and not info.get("tls_required"):
            raise _TlsNotOffered
        await super()._process_info(info, initial_connection)


def _check_key_files(cfg: NatsBrokerConfig) -> None:
    """Read ``nkey`` or ``creds`` once, before nats-py does (blocking: run it in a thread).

    nats-py reads them while it connects: a creds file without a JWT section
    makes it loop forever, and a bad seed raises an nkeys error it does not
    wrap. Raises ValueError naming the key and the path, never the contents.
    """
    import nkeys  # a dependency of nkey and creds only, as for nats-py

    for key, path in (("nkey", cfg.nkey), ("creds", cfg.creds)):
        if path is None:
            continue
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{key} {path}: {exc.strerror or type(exc).__name__}") from exc
        lines = [line.strip() for line in text.splitlines()]
        if key == "creds":
            jwt = _section(lines, b"BEGIN NATS USER JWT")
            if not jwt:
                raise ValueError(f"creds {path}: no NATS USER JWT section")
            seed = _section(lines, b"BEGIN USER NKEY SEED")
        else:
            seed = next((line for line in lines if line), b"")
        try:
            nkeys.from_seed(bytearray(seed)).wipe()
        except Exception as exc:  # nkeys raises its own and binascii errors
            raise ValueError(f"{key} {path}: not a valid NKey seed") from exc


def _section(lines: list[bytes], begin: bytes) -> bytes:
    """The first line after the ``-----BEGIN ...-----`` line of a creds file."""
    for i, line in enumerate(lines[:-1]):
        if begin in line:
            return lines[i + 1]
    return b""


@contextlib.contextmanager
def _mapped(broker: str, doing: str) -> Iterator[None]:
    """nats-py's exceptions as the gateway's (the one mapping of this bridge)."""
    try:
        yield
    except nats.errors.BadSubjectError as exc:
        raise BridgeError(broker, f"{doing}: invalid subject") from exc
    except nats.errors.MaxPayloadError as exc:
        raise PublishError(broker, f"{doing}: {exc}", permanent=True) from exc
    except ssl.SSLError as exc:
        raise BrokerUnavailable(broker, f"{doing}: {tls_reason(exc)}") from exc
    except _TlsNotOffered as exc:
        raise BrokerUnavailable(
            broker,
            f"{doing}: the server does not offer TLS; the tls:// url asks for it, so nothing "
            "(no credentials) was sent",
        ) from exc
    except (
        OSError,  # includes TimeoutError, and nats-py's TimeoutError
        nats.errors.ConnectionClosedError,
        nats.errors.NoServersError,
        nats.errors.StaleConnectionError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.OutboundBufferLimitError,
        nats.errors.AuthorizationError,
        nats.errors.SecureConnRequiredError,
    ) as exc:
        raise BrokerUnavailable(broker, f"{doing}: {exc or type(exc).__name__}") from exc
    except nats.errors.Error as exc:
        raise BridgeError(broker, f"{doing}: {exc or type(exc).__name__}") from exc


def _is_reset(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, BrokenPipeError | ConnectionResetError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _tls_error(nc: Client) -> ssl.SSLError | None:
    """The TLS error that closed a connection being set up, if one did.

    With TLS 1.3 a server checks the client certificate after the client's
    handshake is done; its refusal (an alert) ends the stream, and nats-py only
    reports "Connection lost". The stream reader keeps the SSL error (nats-py's
    ``_transport._io_reader``, private, pinned by the TLS tests).
    """
    reader = getattr(nc._transport, "_io_reader", None)
    with contextlib.suppress(Exception):
        exc = reader.exception() if reader is not None else None
        if isinstance(exc, ssl.SSLError):
            return exc
    return None


async def _discard(nc: Client) -> None:
    """Close a client whose connect failed, and its socket.

    A refused connect (bad credentials) leaves nats-py's socket open. After a
    failed TLS upgrade nats-py's ``close`` waits forever for the plain stream
    (its transport was handed to the TLS layer), so it gets a second, and the
    sockets are aborted. Uses nats-py's ``_transport`` and its ``_io_writer`` /
    ``_bare_io_writer`` (private, pinned by the TLS tests).
    """
    transport = nc._transport
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await nc.close()
    for name in ("_io_writer", "_bare_io_writer"):
        writer = getattr(transport, name, None)
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.transport.abort()


async def _flush(nc: Client) -> None:
    """``nc.flush()``: write what is buffered and wait for the server's PONG.

    nats-py waits with ``asyncio.wait_for``, which in Python 3.11 swallows a
    cancellation arriving just as the PONG does: the egress worker publishing
    then carries on after a reload or shutdown cancelled it. This waits with
    ``asyncio.timeout`` instead, and shields the PONG future (nats-py resolves
    it when the PONG arrives and must not find it cancelled). Uses nats-py's
    ``_send_ping`` and ``_reading_task`` (private, pinned by the bridge tests).
    """
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if nc._reading_task is None or nc._reading_task.done():
        await nc.flush(FLUSH_TIMEOUT)  # nats-py's fallback without a read loop
        return
    pong: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    await nc._send_ping(pong)
    async with asyncio.timeout(FLUSH_TIMEOUT):
        await asyncio.shield(pong)


class NatsBridge:
    """A bridge to one NATS server."""

    def __init__(self, cfg: NatsBrokerConfig, ctx: BridgeContext) -> None:
        self.name = ctx.broker
        self.cfg = cfg
        self.ctx = ctx
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._born: dict[str, str] = {}  # stream -> when it was created, for message ids
        self._dropping = False

    async def connect(self, subscriptions: Sequence[Subscribe]) -> None:
        opts: dict[str, Any] = {}
        if self.cfg.user:
            opts["user"] = self.cfg.user
            password = self.cfg.password
            opts["password"] = password.get_secret_value() if password else None
        if self.cfg.token:
            opts["token"] = self.cfg.token.get_secret_value()
        where = f"cannot connect to {self.cfg.url}"
        try:  # files: off the loop
            if self.cfg.nkey is not None or self.cfg.creds is not None:
                await asyncio.to_thread(_check_key_files, self.cfg)
            if self.cfg.url.startswith("tls://"):
                opts["tls"] = await asyncio.to_thread(client_context, self.cfg.tls)
                opts["tls_hostname"] = urlsplit(self.cfg.url).hostname
        except ValueError as exc:
            raise BrokerUnavailable(self.name, f"{where}: {exc}") from exc
        if self.cfg.nkey is not None:
            opts["nkeys_seed"] = str(self.cfg.nkey)
        if self.cfg.creds is not None:
            opts["user_credentials"] = str(self.cfg.creds)
        inbox = self.ctx.inbox

        async def closed() -> None:
            inbox.lost("connection closed")

        async def error(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                self._dropped(1)
            else:
                log.debug("nats %s: %s", self.name, exc)

        nc = _Client()
        try:
            with _mapped(self.name, where):
                await nc.connect(
                    self.cfg.url,
                    name=f"mesh-{self.ctx.node_id}-{self.name}",
                    allow_reconnect=False,
                    # Even without reconnects nats-py's connect retries an unreachable
                    # server max_reconnect_attempts (60) times, reconnect_time_wait (2 s)
                    # apart: two minutes before a stopped server raised. Two quick
                    # attempts, then BrokerUnavailable; the supervisor owns the backoff.
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0,
                    # Never receive our own publishes (egress), so ingress cannot loop them.
                    no_echo=True,
                    connect_timeout=CONNECT_TIMEOUT,  # type: ignore[arg-type]  # a float works (wait_for)
                    closed_cb=closed,
                    error_cb=error,
                    **opts,
                )
        except BrokerUnavailable as exc:
            tls_error = _tls_error(nc)
            await _discard(nc)
            if tls_error is None and self._lost_after_tls(exc):
                # The server ended the session right after the handshake, and its
                # alert was lost with the connection (a reset discards it): under TLS
                # 1.3 that is how a refused or missing client certificate looks.
                raise BrokerUnavailable(
                    self.name,
                    f"{exc.reason}: the broker closed the TLS session at once; it probably "
                    "wants a client certificate"
                    + (" (set tls.cert and tls.key)" if self._no_client_cert() else "")
                    + " or refused this one",
                ) from exc
            if tls_error is None:
                raise
            # "Connection lost" while connecting: the server's TLS alert says why.
            raise BrokerUnavailable(self.name, f"{where}: {tls_reason(tls_error)}") from exc
        except BaseException:
            await _discard(nc)
            raise
        self._nc = nc
        with _mapped(self.name, "cannot subscribe"):
            if self.cfg.jetstream:
                self._js = js = nc.jetstream()
                for sub in subscriptions:
                    psub = await js.pull_subscribe(sub.topic, durable=sub.durable)
                    self.ctx.tasks.spawn(f"pull[{sub.topic}]", functools.partial(self._pull, psub))
            else:
                for sub in subscriptions:
                    await nc.subscribe(
                        sub.topic,
                        queue=sub.queue_group or "",
                        cb=self._on_msg,
                        pending_msgs_limit=PENDING_MSGS,
                        pending_bytes_limit=PENDING_BYTES,
                    )
            await nc.flush(FLUSH_TIMEOUT)

    def _lost_after_tls(self, exc: BrokerUnavailable) -> bool:
        return self.cfg.url.startswith("tls://") and _is_reset(exc)

    def _no_client_cert(self) -> bool:
        return self.cfg.tls is None or self.cfg.tls.cert is None

    def _dropped(self, n: int) -> None:
        self.ctx.metrics.inc(
            "mesh_ingress_dropped_total", n, broker=self.name, reason="slow consumer"
        )
        if not self._dropping:
            self._dropping = True
            log.warning(
                "nats %s: the node is behind; dropping core NATS messages as a slow consumer "
                "(counted in mesh_ingress_dropped_total)",
                self.name,
                extra={"broker": self.name},
            )

    async def _on_msg(self, msg: Msg) -> None:
        if self.ctx.inbox.offer(Delivery(_message(msg))):
            self._dropping = False
        else:
            self._dropped(1)

    async def _pull(self, psub: JetStreamContext.PullSubscription) -> None:
        """Fetch from a durable consumer whenever the inbox has room."""
        inbox = self.ctx.inbox
        while True:
            await inbox.wait_for_room()
            try:
                with _mapped(self.name, "JetStream fetch failed"):
                    try:
                        msgs = await psub.fetch(max(1, min(FETCH_BATCH, inbox.room)), timeout=5)
                    except (TimeoutError, nats.js.errors.FetchTimeoutError):
                        continue
            except BrokerUnavailable as exc:
                inbox.lost(exc.reason)
                return
            for m in msgs:
                message = _message(m)
                # The stream (and when it was made: a recreated stream counts from 1
                # again) and the sequence name the message across redeliveries.
                meta = m.metadata
                born = self._born.get(meta.stream) or await self._stream_born(meta.stream)
                message.identity = f"jetstream:{meta.stream}:{born}:{meta.sequence.stream}"
                inbox.put(Delivery(message, m.ack, m.nak))

    async def _stream_born(self, stream: str) -> str:
        """When ``stream`` was created (asked once per stream and connection)."""
        born = ""
        if self._js is not None:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, TimeoutError):
                info = await self._js.stream_info(stream)
                born = info.created.isoformat() if info.created else ""
        self._born[stream] = born or "?"
        return self._born[stream]

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return [PublishError(self.name, "not connected")] * len(messages)
        results: list[PublishError | None] = [None] * len(messages)
        valid: list[tuple[int, Message]] = []
        for i, m in enumerate(messages):
            problem = _publish_subject_problem(m.topic)
            if problem is not None:
                results[i] = InvalidTopic(self.name, m.topic, problem)
            elif len(m.payload) > nc.max_payload:
                results[i] = PublishError(
                    self.name,
                    f"payload of {len(m.payload)} bytes exceeds the server's "
                    f"max_payload {nc.max_payload}",
                    permanent=True,
                )
            else:
                valid.append((i, m))
        if self._js is not None:
            for (i, _m), res in zip(valid, await self._publish_js(self._js, valid), strict=True):
                results[i] = res
            return results
        commands = [_command(m) for _i, m in valid]
        try:
            with _mapped(self.name, "publish not confirmed"):
                # The whole batch goes into nats-py's write buffer at once (one write,
                # one PING after it) instead of one coroutine and flusher wake-up per
                # message, which cost a sixth of an egress node's CPU.
                nc._pending.extend(commands)
                nc._pending_data_size += sum(len(c) for c in commands)
                nc.stats["out_msgs"] += len(commands)
                await _flush(nc)
        except BridgeError as exc:
            err = exc if isinstance(exc, PublishError) else PublishError(self.name, exc.reason)
            return [r or err for r in results]
        return results

    async def _publish_js(
        self, js: JetStreamContext, messages: list[tuple[int, Message]]
    ) -> list[PublishError | None]:
        futures: list[asyncio.Future[Any] | PublishError] = []
        for _i, m in messages:
            headers = dict(m.headers)
            if m.dedup_id is not None:
                headers["Nats-Msg-Id"] = m.dedup_id
            try:
                with _mapped(self.name, f"cannot publish to {m.topic!r}"):
                    futures.append(await js.publish_async(m.topic, m.payload, headers=headers))
            except BridgeError as exc:
                futures.append(
                    exc if isinstance(exc, PublishError) else PublishError(self.name, exc.reason)
                )
        pending = [f for f in futures if isinstance(f, asyncio.Future)]
        if pending:
            await asyncio.wait(pending, timeout=PUBLISH_TIMEOUT)
        results: list[PublishError | None] = []
        for f in futures:
            if isinstance(f, PublishError):
                results.append(f)
            elif not f.done():
                f.cancel()
                results.append(PublishError(self.name, "no JetStream ack in time"))
            elif f.exception() is not None:
                # Transient, even "no stream": the event waits in its outbox until a
                # stream captures the subject, rather than being dead-lettered.
                failure = f.exception()
                reason = f"JetStream refused the publish: {failure or type(failure).__name__}"
                results.append(PublishError(self.name, reason))
            else:
                results.append(None)
        return results

    async def close(self) -> None:
        await self.ctx.tasks.aclose()
        self.ctx.inbox.lost("closed")
        if self._nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._nc.close()


def _message(msg: Msg) -> Message:
    headers = msg.headers or {}
    ct = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    return Message(msg.subject, msg.data, headers, ct)


def _check_ingress(cfg: NatsBrokerConfig, rule: IngressRule) -> list[tuple[str, str]]:
    out = []
    if any(not tok or any(c.isspace() for c in tok) for tok in rule.topic.split(".")):
        out.append(("topic", "subjects are non-empty tokens separated by '.', without spaces"))
    if rule.queue_group is not None and not re.fullmatch(r"[^\s*>]+", rule.queue_group):
        out.append(("queue_group", "a NATS queue group is one word without spaces, * or >"))
    if rule.durable is not None and not re.fullmatch(r"[^\s.*>/\\]+", rule.durable):
        out.append(("durable", "a JetStream durable name cannot contain spaces, . * > / or \\"))
    return out


def _check_egress(cfg: NatsBrokerConfig, rule: EgressRule) -> list[tuple[str, str]]:
    literal = literal_text(rule.target)
    if re.search(r"[*>\s]", literal):
        return [("target", "a NATS subject cannot contain *, > or spaces")]
    return []


_BINDING = NatsBinding()


def _capabilities(cfg: NatsBrokerConfig) -> Capabilities:
    return Capabilities(
        redelivery=cfg.jetstream,
        queue_groups=not cfg.jetstream,  # JetStream replicas share a durable consumer instead
        no_local=True,
        confirm=True,
        dedup_ids=cfg.jetstream,
    )


def _asyncapi(cfg: NatsBrokerConfig) -> BrokerDoc:
    def bindings(rule: IngressRule | EgressRule) -> dict[str, Any]:
        # NATS operation binding 0.1.0 has only the queue (group) of a subscription.
        if isinstance(rule, IngressRule) and rule.queue_group is not None:
            return {"nats": {"queue": rule.queue_group, "bindingVersion": "0.1.0"}}
        return {}

    return BrokerDoc(
        protocol="nats", syntax=NATS_SYNTAX, host=server_host(cfg.url), bindings=bindings
    )


SPEC = BridgeSpec(
    kind="nats",
    config=NatsBrokerConfig,
    syntax=NATS_SYNTAX,
    factory=NatsBridge,
    binding=lambda cfg: _BINDING,
    capabilities=_capabilities,
    check_ingress=_check_ingress,
    check_egress=_check_egress,
    summary="NATS core and JetStream (nats-py)",
    asyncapi=_asyncapi,
)
