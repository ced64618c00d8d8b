"""Node configuration: the models, loading and validation.

Loading order: the YAML file, ``${VAR}`` / ``${VAR:-default}`` interpolation
of string values (``$${`` is a literal ``${``), then environment overrides
with the ``MESH_`` prefix and ``__`` between nested keys
(``MESH_NODE__LISTEN=0.0.0.0:7401``, ``MESH_BROKERS__PLANT__URL=...``).

:func:`load_config` reports *every* problem of a file at once as
:class:`~mesh.core.errors.ConfigErrors`, each with its path (``egress[0].to``)
and a hint. The JSON Schema of the file is :func:`json_schema`, generated from
the same models.
"""

from mesh.config.loader import (
    config_model,
    json_schema,
    load_config,
    load_node_settings,
    parse_config,
)
from mesh.config.models import (
    AcceptPeer,
    ApiSettings,
    ApiToken,
    Backoff,
    BrokerModel,
    ClientTls,
    DeadLetters,
    EgressRule,
    EventTemplate,
    IngressRule,
    Limits,
    Logging,
    MeshConfig,
    NodeSettings,
    NodeTls,
    OnError,
    OutboxSettings,
    Peer,
    RetryPolicy,
    SchemaEntry,
    Storage,
    Tracing,
    TransformSettings,
)

__all__ = [
    "AcceptPeer",
    "ApiSettings",
    "ApiToken",
    "Backoff",
    "BrokerModel",
    "ClientTls",
    "DeadLetters",
    "EgressRule",
    "EventTemplate",
    "IngressRule",
    "Limits",
    "Logging",
    "MeshConfig",
    "NodeSettings",
    "NodeTls",
    "OnError",
    "OutboxSettings",
    "Peer",
    "RetryPolicy",
    "SchemaEntry",
    "Storage",
    "Tracing",
    "TransformSettings",
    "config_model",
    "json_schema",
    "load_config",
    "load_node_settings",
    "parse_config",
]
