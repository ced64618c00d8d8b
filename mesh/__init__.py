"""The event mesh gateway core: events and codecs, config, routing, links,
outboxes and delivery, the node and its lifecycle, the CLI."""

__version__ = "0.1.0"

__all__ = ["__version__"]
