"""Ingest metrics, on a registry the caller passes in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import PREFIX
from services.contract.decode import RejectReason

P = PREFIX + "ingest_"


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            P + "messages_total", "Telemetry messages received from the broker",
            registry=registry)
        self.written = Counter(
            P + "readings_written_total", "Readings newly stored", registry=registry)
        self.rejected = Counter(
            P + "rejected_total", "Telemetry messages refused, by reason (never stored)",
            ["reason"], registry=registry)
        for reason in RejectReason:
            self.rejected.labels(reason.value)
        self.duplicates = Counter(
            P + "duplicates_total",
            "Readings whose (device, seq) was already stored (redeliveries, resends)",
            registry=registry)
        self.batch_duration = Histogram(
            P + "batch_write_duration_seconds", "Time to write one batch to storage",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry)
        self.batch_readings = Histogram(
            P + "batch_readings", "Readings per storage write",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 50000),
            registry=registry)
        self.lag = Gauge(
            P + "lag_seconds",
            "Now minus the timestamp of the newest reading in the last written batch",
            registry=registry)
        self.resend_requests = Counter(
            P + "resend_requests_total", "RESEND commands sent for gaps in a device's seqs",
            registry=registry)
        self.missing = Gauge(
            P + "missing_readings", "Seqs in open gaps (lost by the broker, not yet resent)",
            registry=registry)
        self.lost = Counter(
            P + "lost_readings_total", "Seqs given up after every RESEND attempt",
            registry=registry)
        self.queue_depth = Gauge(
            P + "queue_depth", "Received messages waiting to be written and acknowledged",
            registry=registry)
        self.write_errors = Counter(
            P + "write_errors_total",
            "Failed storage writes: unavailable (retried) or refused (data dropped)",
            ["kind"], registry=registry)
        for kind in ("unavailable", "refused"):
            self.write_errors.labels(kind)
        self.connected = Gauge(
            P + "mqtt_connected", "1 while connected to the broker", registry=registry)
