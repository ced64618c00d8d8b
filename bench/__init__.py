"""Benchmarks of the gateway beside the native bridges; run ``python -m bench``."""
