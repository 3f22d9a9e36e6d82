"""Prometheus metrics for device model updates (on a registry passed in)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class UpdateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.updates = Counter(
            "edgeloop_device_updates_total", "Model updates by result", ["result"],
            registry=registry,
        )
        self.chunks = Counter(
            "edgeloop_device_update_chunks_total", "Chunks acknowledged by the device",
            registry=registry,
        )
        self.bytes = Counter(
            "edgeloop_device_update_bytes_total", "Model bytes acknowledged by the device",
            registry=registry,
        )
        self.naks = Counter(
            "edgeloop_device_update_naks_total", "Frames or images the device refused",
            ["reason"], registry=registry,
        )
        self.timeouts = Counter(
            "edgeloop_device_update_timeouts_total", "Frames resent after no answer",
            registry=registry,
        )
