"""The runtime: the store, outboxes, router, ingress and egress workers, peer
links and the node that supervises them, all on one asyncio event loop."""
