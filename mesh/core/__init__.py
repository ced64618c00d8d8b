"""The pure core: events and codecs, topics, templates, filters and CESQL, the
routing table, envelopes, and the pure halves of ingress, egress and link frames.

Nothing here does I/O or imports asyncio, aiohttp, sqlite3 or a bridge
(``tests/unit/test_layout.py`` checks it): every function is synchronous,
tested without sockets, and fast enough for the hot path.
"""
