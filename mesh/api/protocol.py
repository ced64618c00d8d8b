"""What the HTTP API may ask of a node: a small protocol, not the node's attributes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from mesh.api.auth import Grant

__all__ = ["NodeApi"]


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

    async def status(self) -> dict[str, Any]:
        """Readiness (``ready``, ``reasons``) and the state behind it."""
        ...

    def routes(self) -> dict[str, Any]: ...

    def peers(self) -> dict[str, Any]: ...

    async def catalog(self) -> dict[str, Any]:
        """The event catalog: every type this node saw or its peers reported."""
        ...

    def egress(self) -> dict[str, Any]: ...

    def resume_egress(self, index: int) -> bool | None:
        """True if it was paused, False if not, None if there is no such rule."""
        ...

    def metrics_text(self) -> str: ...

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration file; raises ConfigErrors or MeshError."""
        ...

    async def dead_letters(self, limit: int, after: int) -> dict[str, Any]: ...

    async def dead_letter(self, entry_id: int) -> dict[str, Any] | None: ...

    async def redrive(self, ids: list[int] | None) -> tuple[list[int], list[dict[str, Any]]]: ...

    async def purge_dead_letters(self) -> int: ...
