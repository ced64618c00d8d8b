"""What the HTTP API may ask of a node: a small protocol, not the node's attributes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from mesh.api.auth import Grant

__all__ = ["NodeApi", "TailFeed"]


class TailFeed(Protocol):
    """One ``/api/tail`` client's feed of JSON text frames."""

    async def next_frame(self) -> str: ...

    def close(self) -> None:
        """Unsubscribe: no more events are kept for it."""
        ...


class NodeApi(Protocol):
    """The node as the admin API sees it (implemented by :class:`mesh.runtime.admin.NodeAdmin`).

    Every method returns plain JSON-ready data.
    """

    def api_grants(self) -> Sequence[Grant]:
        """The bearer tokens of the running configuration (empty: loopback clients only)."""
        ...

    def api_refused(self, remote: str, status: int, where: str, detail: str) -> None:
        """Count and log (repeats rate-limited) a request the middleware refused."""
        ...

    def health(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def readiness(self) -> dict[str, Any]:
        """``ready``, ``node`` and ``reasons``, from memory only (``/readyz`` is open)."""
        ...

    async def status(self) -> dict[str, Any]:
        """Readiness (``ready``, ``reasons``) and the state behind it."""
        ...

    def routes(self) -> dict[str, Any]: ...

    def peers(self) -> dict[str, Any]: ...

    async def asyncapi(self) -> dict[str, Any]:
        """The AsyncAPI 3.0.0 document of the node (:mod:`mesh.core.asyncapi`)."""
        ...

    async def catalog(self) -> dict[str, Any]:
        """The event catalog: every type this node saw or its peers reported."""
        ...

    def egress(self) -> dict[str, Any]: ...

    def resume_egress(self, index: int) -> bool | None:
        """True if it was paused, False if not, None if there is no such rule."""
        ...

    def tail(self, pattern: str, filter_spec: Any) -> TailFeed:
        """A live feed of the events entering the node that match.

        Raises TopicError or FilterError for an invalid pattern or filter,
        TooManyClients when the node has its limit of tail clients.
        """
        ...

    async def publish(self, body: Any) -> dict[str, Any]:
        """Route a test CloudEvent built from ``body`` (topic, data, type, source, id).

        Raises InvalidRequest, InvalidEvent or EventTooLarge for a wrong body,
        Overloaded when the node cannot take it now.
        """
        ...

    def metrics_text(self) -> str: ...

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration file; raises ConfigErrors or MeshError."""
        ...

    async def dead_letters(self, limit: int, after: int) -> dict[str, Any]: ...

    async def dead_letter(self, entry_id: int) -> dict[str, Any] | None: ...

    async def redrive(self, ids: list[int] | None) -> tuple[list[int], list[dict[str, Any]]]: ...

    async def purge_dead_letters(self) -> int: ...
