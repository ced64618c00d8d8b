"""Cross-field checks of a configuration that pydantic cannot express.

Everything that depends on a broker's kind is asked of its bridge's spec
(:class:`mesh.plugins.BridgeSpec`): its topic syntax, its capabilities (egress
modes, queue groups, whether it can receive or publish) and its own checks of
ingress and egress rules, so that what a broker library would refuse at run
time is refused by ``mesh validate`` first.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from mesh.config.models import ClientTls, EgressRule, IngressRule, NodeTls, SchemaEntry
from mesh.core.errors import ConfigError, FilterError, MeshError, TemplateError
from mesh.core.filters import compile_filter
from mesh.core.schemas import CompiledSchema
from mesh.core.templates import Template
from mesh.core.topics import Pattern, TopicError
from mesh.core.transform import Transform

if TYPE_CHECKING:
    from mesh.plugins import BridgeSpec, Capabilities

__all__ = ["semantic_errors", "tolerant"]

BROKER_NAME = re.compile(r"[A-Za-z0-9_-]+")


def tolerant(model: type[BaseModel], raw: Any) -> Any:
    """Validate ``raw``, dropping keys that fail, so later checks still see the rest."""
    if not isinstance(raw, dict):
        return None
    for _ in range(3):
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
            fields = {f.alias or n for n, f in model.model_fields.items() if f.is_required()}
            if not bad or bad & fields:
                return None
            raw = {k: v for k, v in raw.items() if k not in bad}
    return None


class _Broker:
    """A broker entry as far as it validated: its spec and, if valid, its model."""

    def __init__(self, name: str, spec: BridgeSpec | None, cfg: Any) -> None:
        self.name = name
        self.spec = spec
        self.cfg = cfg

    @property
    def capabilities(self) -> Capabilities | None:
        if self.spec is None or self.cfg is None:
            return None
        return self.spec.capabilities(self.cfg)

    def describe(self) -> str:
        spec = self.spec
        if spec is None:
            return f"broker {self.name!r}"
        what = spec.describe(self.cfg) if spec.describe and self.cfg is not None else spec.kind
        return f"broker {self.name!r} ({what})"


def semantic_errors(data: dict[str, Any], specs: Mapping[str, BridgeSpec]) -> list[ConfigError]:
    """Checks pydantic cannot express; run on every rule that is valid on its own."""
    errors: list[ConfigError] = []
    brokers = _brokers(data, specs, errors)
    known = ", ".join(brokers) or "(none defined)"
    node = data.get("node") if isinstance(data.get("node"), dict) else {}
    node_id = node.get("id") if isinstance(node, dict) else None

    node_tls = tolerant(NodeTls, node.get("tls")) if isinstance(node, dict) else None
    if node_tls is not None:
        _check_node_tls(errors, node_tls)

    ingress = data.get("ingress")
    for i, raw in enumerate(ingress if isinstance(ingress, list) else []):
        rule = tolerant(IngressRule, raw)
        if rule is not None:
            _check_ingress(errors, f"ingress[{i}]", rule, brokers, known)

    egress = data.get("egress")
    names: dict[str, int] = {}
    for i, raw in enumerate(egress if isinstance(egress, list) else []):
        rule_e = tolerant(EgressRule, raw)
        if rule_e is not None:
            _check_egress(errors, f"egress[{i}]", rule_e, brokers, known)
            name = rule_e.rule_name(i)
            if name in names:
                errors.append(
                    ConfigError(
                        f"egress[{i}].name",
                        f"duplicate egress name {name!r}",
                        f"already the name of egress[{names[name]}]; names label metrics "
                        "and outboxes, so each rule needs its own",
                    )
                )
            names.setdefault(name, i)

    schemas = data.get("schemas")
    entries = [tolerant(SchemaEntry, raw) for raw in (schemas if isinstance(schemas, list) else [])]
    # Each file is read and compiled, as the node will: an unreadable file or an invalid
    # schema is found here, naming schemas[i].schema (or .inline).
    for i, entry in enumerate(entries):
        if entry is not None:
            try:
                CompiledSchema.compile(i, entry)
            except ConfigError as exc:
                errors.append(exc)

    seen: dict[str, int] = {}
    peers = data.get("peers")
    for i, raw in enumerate(peers if isinstance(peers, list) else []):
        pid = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(pid, str):
            continue
        if pid == node_id:
            errors.append(ConfigError(f"peers[{i}].id", "a node cannot peer with itself"))
        _check_peer_tls(errors, f"peers[{i}]", raw)
        if pid in seen:
            errors.append(
                ConfigError(
                    f"peers[{i}].id", f"duplicate peer {pid!r}", f"already at peers[{seen[pid]}]"
                )
            )
        seen[pid] = i
    return errors


def _unreadable(path: Any) -> str | None:
    """Why the file at ``path`` cannot be read, or None."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        return f"cannot read {os.fspath(path)}: {exc.strerror or exc}"
    return None


def _check_files(errors: list[ConfigError], path: str, files: dict[str, Any]) -> bool:
    """Report the files that cannot be read, each under its key; True if all can."""
    ok = True
    for key, file in files.items():
        if file is not None and (problem := _unreadable(file)) is not None:
            errors.append(ConfigError(f"{path}.{key}", problem))
            ok = False
    return ok


def _check_loads(errors: list[ConfigError], path: str, tls: NodeTls | ClientTls) -> None:
    """Load the files as the node will, so a bad PEM or a key of another cert is found now."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.cert is not None and tls.key is not None:
        try:
            ctx.load_cert_chain(tls.cert, tls.key)
        except (ssl.SSLError, OSError, ValueError) as exc:
            errors.append(
                ConfigError(
                    f"{path}.cert",
                    f"certificate and key do not load: {exc}",
                    "PEM files; the key must belong to the first certificate",
                )
            )
    if tls.ca is not None:
        try:
            ctx.load_verify_locations(cafile=tls.ca)
        except (ssl.SSLError, OSError, ValueError) as exc:
            errors.append(ConfigError(f"{path}.ca", f"CA certificates do not load: {exc}"))


def _check_node_tls(errors: list[ConfigError], tls: NodeTls) -> None:
    files = {"cert": tls.cert, "key": tls.key, "ca": tls.ca}
    if _check_files(errors, "node.tls", files):
        _check_loads(errors, "node.tls", tls)
    if tls.client_auth != "none" and tls.ca is None:
        errors.append(
            ConfigError(
                "node.tls.ca",
                f"client_auth {tls.client_auth} needs the CA that client certificates chain to",
                "set node.tls.ca, or client_auth: none",
            )
        )


def _check_peer_tls(errors: list[ConfigError], path: str, raw: dict[str, Any]) -> None:
    tls = tolerant(ClientTls, raw.get("tls"))
    if tls is None:
        return
    url = raw.get("url")
    if isinstance(url, str) and not url.startswith("wss://"):
        errors.append(
            ConfigError(
                f"{path}.tls",
                "a tls block needs a wss:// url",
                f"url is {url.split('://')[0]}://; use wss://, or remove tls",
            )
        )
    files = {"ca": tls.ca, "cert": tls.cert, "key": tls.key}
    if _check_files(errors, f"{path}.tls", files):
        _check_loads(errors, f"{path}.tls", tls)


def _brokers(
    data: dict[str, Any], specs: Mapping[str, BridgeSpec], errors: list[ConfigError]
) -> dict[str, _Broker]:
    raw_brokers = data.get("brokers") or {}
    out: dict[str, _Broker] = {}
    if not isinstance(raw_brokers, dict):
        return out
    for name, b in raw_brokers.items():
        name = str(name)
        if not BROKER_NAME.fullmatch(name):
            errors.append(ConfigError(f"brokers.{name}", "broker names use A-Z a-z 0-9 _ -"))
        kind = b.get("kind") if isinstance(b, dict) else None
        spec = specs.get(kind) if isinstance(kind, str) else None
        cfg = None
        if spec is not None:
            try:
                cfg = spec.config.model_validate(b)
            except ValidationError:
                cfg = None  # pydantic's own errors report it
        out[name] = _Broker(name, spec, cfg)
    return out


def _check_ingress(
    errors: list[ConfigError],
    path: str,
    rule: IngressRule,
    brokers: dict[str, _Broker],
    known: str,
) -> None:
    broker = brokers.get(rule.from_)
    if broker is None:
        errors.append(ConfigError(f"{path}.from", f"unknown broker {rule.from_!r}; known: {known}"))
        return
    if broker.spec is None:
        return
    syntax = broker.spec.syntax
    try:
        pattern = Pattern.compile(syntax.to_mesh(rule.topic))
    except TopicError as exc:
        errors.append(
            ConfigError(
                f"{path}.topic",
                exc.reason,
                f"{syntax.name} patterns separate levels with {syntax.separator!r} and use "
                f"{syntax.one} for one level, {syntax.rest} for the rest",
            )
        )
        return
    if rule.mesh_topic is not None:
        _check_template(
            errors, f"{path}.mesh_topic", rule.mesh_topic, pattern.wildcards, attributes=False
        )
    if rule.event is not None:
        for key in ("type", "source", "subject", "id", "dataschema", "datacontenttype"):
            value = getattr(rule.event, key)
            if value is not None:
                _check_template(
                    errors, f"{path}.event.{key}", value, pattern.wildcards, attributes=False
                )
        for ext, value in rule.event.extensions.items():
            if not re.fullmatch(r"[a-z0-9]+", ext) or ext == "data":
                errors.append(
                    ConfigError(
                        f"{path}.event.extensions.{ext}", "attribute names use only a-z and 0-9"
                    )
                )
            _check_template(
                errors,
                f"{path}.event.extensions.{ext}",
                value,
                pattern.wildcards,
                attributes=False,
            )
    caps = broker.capabilities
    if caps is None:
        return
    if not caps.receive:
        errors.append(ConfigError(f"{path}.from", f"{broker.describe()} cannot receive messages"))
        return
    if rule.queue_group is not None and not caps.queue_groups:
        errors.append(
            ConfigError(f"{path}.queue_group", f"{broker.describe()} has no queue groups")
        )
    for key, problem in broker.spec.check_ingress(broker.cfg, rule):
        errors.append(ConfigError(f"{path}.{key}", problem))


def _check_egress(
    errors: list[ConfigError],
    path: str,
    rule: EgressRule,
    brokers: dict[str, _Broker],
    known: str,
) -> None:
    broker = brokers.get(rule.to)
    if broker is None:
        errors.append(ConfigError(f"{path}.to", f"unknown broker {rule.to!r}; known: {known}"))
        return
    try:
        pattern = Pattern.compile(rule.topic)
    except TopicError as exc:
        errors.append(
            ConfigError(f"{path}.topic", exc.reason, "mesh topics use '/' levels with + and #")
        )
        return
    if rule.filter is not None:
        try:
            compile_filter(rule.filter)
        except FilterError as exc:
            errors.append(
                ConfigError(
                    f"{path}.filter", str(exc).removeprefix("filter").lstrip(".: ") or str(exc)
                )
            )
    _check_template(errors, f"{path}.target", rule.target, pattern.wildcards, attributes=True)
    if rule.transform is not None:
        try:
            Transform(rule.rule_name(0), rule.transform, max_capture=pattern.wildcards)
        except ConfigError as exc:
            errors.append(ConfigError(f"{path}.{exc.path}", exc.message))
    caps = broker.capabilities
    if caps is None or broker.spec is None:
        return
    if not caps.publish:
        errors.append(ConfigError(f"{path}.to", f"{broker.describe()} cannot publish"))
        return
    if rule.mode not in caps.modes:
        choices = " or ".join(sorted(m.value for m in caps.modes))
        errors.append(
            ConfigError(
                f"{path}.mode",
                f"{rule.mode} mode is not available on {broker.describe()}",
                f"use {choices}",
            )
        )
    for key, problem in broker.spec.check_egress(broker.cfg, rule):
        errors.append(ConfigError(f"{path}.{key}", problem))


def _check_template(
    errors: list[ConfigError], path: str, source: str, wildcards: int, *, attributes: bool
) -> None:
    try:
        Template(source, max_capture=wildcards, attributes=attributes)
    except TemplateError as exc:
        errors.append(ConfigError(path, exc.reason))
    except MeshError as exc:  # pragma: no cover - defensive
        errors.append(ConfigError(path, str(exc)))
