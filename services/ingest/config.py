"""Ingest configuration: one typed object from a file, ``EDGELOOP_...`` env vars and flags."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from services.common.config import Settings
from services.common.mqtt import MqttSettings
from services.contract.topics import is_valid_id


def _default_client_id() -> str:
    # Stable across restarts of the same host/pod, so the broker keeps our session (and
    # the messages queued for it) while ingest is down.
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"edgeloop-ingest-{host or 'local'}"[:64]


class StorageSettings(Settings):
    #: sqlite:///path.db | influxdb://host:port?org=O&bucket=B | influxdb1://host:port/db
    url: str = "sqlite:///edgeloop.db"
    #: InfluxDB 2.x/3.x API token (EDGELOOP_STORAGE__TOKEN or ..._FILE, /run/secrets).
    token: SecretStr | None = None
    #: InfluxDB 1.x basic auth.
    username: str | None = None
    password: SecretStr | None = None
    #: Where the InfluxDB backends keep their seq ledger (default ~/.local/state/edgeloop).
    state_dir: Path | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].lower()
        if scheme not in {"sqlite", "influxdb", "influxdb1"}:
            raise ValueError("use a sqlite:, influxdb: or influxdb1: URL")
        return value


class IngestConfig(Settings):
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    #: Stable MQTT client id: the broker's persistent session is keyed by it.
    client_id: str = Field(default_factory=_default_client_id, min_length=1, max_length=64)
    #: Shared subscription group (MQTT v5): replicas in one group split the telemetry.
    group: str = "ingest"
    #: Use ``$share/<group>/...`` (v5 only; 3.1.1 brokers such as amqtt get a plain filter).
    shared: bool = True
    storage: StorageSettings = Field(default_factory=StorageSettings)
    #: Readings per storage write: a batch is written when it has this many ...
    batch_max: int = Field(default=5000, ge=1, le=200_000)
    #: ... or when its first message has waited this long (seconds) ...
    batch_wait_s: float = Field(default=0.25, gt=0, le=60)
    #: ... or when no message has arrived for this long (seconds). Messages are
    #: acknowledged only after their batch is written, and a broker sends at most its
    #: in-flight window (Mosquitto's max_inflight_messages, 20 by default) unacknowledged:
    #: a quiet pause means "write now", not "wait for more".
    batch_idle_s: float = Field(default=0.05, gt=0, le=60)
    #: Received messages waiting for the writer (a 500-reading message is ~55 kB). A full
    #: queue holds back the MQTT network thread: backpressure instead of unbounded memory.
    queue_max: int = Field(default=1000, ge=10)
    #: Allow-list of device ids; empty = accept every device.
    devices: list[str] = Field(default_factory=list)
    #: How far ahead of our clock a reading's timestamp may be (seconds).
    max_future_skew_s: float = Field(default=300.0, gt=0)
    #: A gap in a device's seqs older than this is asked for again (RESEND command).
    gap_grace_s: float = Field(default=5.0, gt=0)
    #: Seconds between repeated RESEND requests for a gap that is still open ...
    resend_interval_s: float = Field(default=15.0, gt=0)
    #: ... and how many requests before the gap is given up as lost.
    resend_max_attempts: int = Field(default=5, ge=1)
    #: Largest seq range asked for in one RESEND command.
    resend_max_span: int = Field(default=50_000, ge=1)
    #: Longest wait between storage retries while the backend is down (seconds).
    retry_max_s: float = Field(default=10.0, gt=0)
    #: On stop, how long to keep retrying an unreachable backend before leaving the batch
    #: unacknowledged for the broker to redeliver (seconds).
    stop_flush_timeout_s: float = Field(default=10.0, ge=0)
    metrics_host: str = "127.0.0.1"
    #: /metrics port; 0 = off.
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    log_level: str = "INFO"

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError("use letters, digits, '_', '.', '-'")
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: list[str]) -> list[str]:
        bad = [d for d in value if not is_valid_id(d)]
        if bad:
            raise ValueError(f"invalid device ids: {', '.join(bad)}")
        return value
