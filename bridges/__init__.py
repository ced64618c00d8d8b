"""Bridges: thin adapters between a node and its local brokers.

Each module implements :class:`mesh.plugins.Bridge` for one protocol and is
registered under the ``mesh.bridges`` entry-point group in pyproject.toml.
``bridges`` imports ``mesh``; ``mesh`` never imports ``bridges``.
"""

__all__: list[str] = []
