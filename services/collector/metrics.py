"""The collector's Prometheus metrics, built on the registry it is given."""

from __future__ import annotations

import enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from services.collector.parsers import LineKind, ParseError


class SerialEvent(enum.StrEnum):
    OPENED = "opened"  # first successful open
    UNPLUG = "unplug"  # an open port failed while reading or writing
    RECONNECT = "reconnect"  # reopened after a failure
    OPEN_FAILED = "open_failed"  # the port is absent or busy; retried with backoff


class MessageKind(enum.StrEnum):
    SINGLE = "single"
    BATCH = "batch"


class CommandResult(enum.StrEnum):
    RELAYED = "relayed"
    HANDLED = "handled"
    REJECTED = "rejected"


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "edgeloop_collector_"
        self.lines = Counter(
            p + "lines_total", "Lines (or rows) read from the source, by what they were",
            ["kind"], registry=registry,
        )
        self.parse_errors = Counter(
            p + "parse_errors_total", "Lines that were not readings, by reason",
            ["reason"], registry=registry,
        )
        self.accepted = Counter(
            p + "readings_accepted_total", "Readings written to the outbox", registry=registry
        )
        self.published = Counter(
            p + "readings_published_total", "Readings acknowledged by the broker",
            registry=registry,
        )
        self.messages = Counter(
            p + "messages_published_total", "Telemetry messages acknowledged by the broker",
            ["kind"], registry=registry,
        )
        self.rejected = Counter(
            p + "readings_rejected_total",
            "Readings the broker refused with a failure reason code (not retried)",
            registry=registry,
        )
        self.buffered = Gauge(
            p + "buffered_readings", "Readings in the outbox not yet acknowledged",
            registry=registry,
        )
        self.dropped = Counter(
            p + "dropped_readings_total", "Oldest unacknowledged readings dropped, outbox full",
            registry=registry,
        )
        self.reconnects = Counter(
            p + "mqtt_reconnects_total", "Connections to the broker after the first",
            registry=registry,
        )
        self.mqtt_connected = Gauge(
            p + "mqtt_connected", "1 while connected to the broker", registry=registry
        )
        self.serial_events = Counter(
            p + "serial_events_total", "Serial port events", ["event"], registry=registry
        )
        self.source_up = Gauge(
            p + "source_up", "1 while the source (serial port) is readable", registry=registry
        )
        self.device_seq_gaps = Counter(
            p + "device_seq_gaps_total",
            "Readings the device numbered but the collector never received (seq: key)",
            registry=registry,
        )
        self.device_resets = Counter(
            p + "device_resets_total", "Device uptime (ms: key) went backwards",
            registry=registry,
        )
        self.resend_requests = Counter(
            p + "resend_requests_total", "RESEND commands received", registry=registry
        )
        self.resent = Counter(
            p + "resent_readings_total", "Readings published again for RESEND",
            registry=registry,
        )
        self.resend_missing = Counter(
            p + "resend_missing_readings_total",
            "Readings asked for by RESEND that the outbox no longer holds", registry=registry,
        )
        self.commands = Counter(
            p + "commands_total", "Commands received on the device's cmd topic",
            ["result"], registry=registry,
        )
        self.info = Info(p + "source", "What this collector reads", registry=registry)
        # Every label value exists from the start, so rate() works on the first error.
        for kind in LineKind:
            self.lines.labels(kind.value)
        for reason in ParseError:
            self.parse_errors.labels(reason.value)
        for event in SerialEvent:
            self.serial_events.labels(event.value)
        for mkind in MessageKind:
            self.messages.labels(mkind.value)
        for result in CommandResult:
            self.commands.labels(result.value)
