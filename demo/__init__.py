"""The three-site demo: a shop on MQTT, a core on NATS, a warehouse on webhooks.

Run it with ``./scripts/demo`` (or ``python -m demo`` in the virtualenv).
"""
