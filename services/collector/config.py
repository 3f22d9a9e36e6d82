"""The collector's configuration: one typed object from a file, ``EDGELOOP_*`` and flags."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator

from services.common.config import Settings
from services.common.mqtt import MqttSettings
from services.contract.limits import MAX_BATCH, MAX_NAME_LEN
from services.contract.topics import ID_PATTERN


class SourceKind(enum.StrEnum):
    SERIAL = "serial"
    SIMULATE = "simulate"
    REPLAY = "replay"


class Profile(enum.StrEnum):
    CLIMATE = "climate"
    ACCEL = "accel"


class TimestampMode(enum.StrEnum):
    #: Keep the times written in the recording.
    RECORDED = "recorded"
    #: Re-time every row to the moment it is replayed, so the data looks live.
    NOW = "now"


class InjectionKind(enum.StrEnum):
    FIRE = "fire"
    STUCK = "stuck"


@dataclass(frozen=True, slots=True)
class Injection:
    kind: InjectionKind
    at_s: float


def parse_injection(text: str) -> Injection:
    """``fire@120`` -> Injection(FIRE, 120.0): seconds after the simulation starts."""
    kind, sep, at = text.partition("@")
    if not sep:
        raise ValueError(f"{text!r}: expected <kind>@<seconds>, e.g. fire@60")
    try:
        parsed_kind = InjectionKind(kind.strip().lower())
    except ValueError:
        kinds = ", ".join(k.value for k in InjectionKind)
        raise ValueError(f"{text!r}: unknown anomaly {kind!r} (one of {kinds})") from None
    try:
        at_s = float(at)
    except ValueError:
        raise ValueError(f"{text!r}: {at!r} is not a number of seconds") from None
    if not at_s >= 0:
        raise ValueError(f"{text!r}: seconds must be >= 0")
    return Injection(parsed_kind, at_s)


#: Sample spacing each simulator profile uses when ``interval`` is not set: one climate
#: reading a second; the accelerometer at 62.5 Hz like the Edge Impulse recordings.
DEFAULT_INTERVAL_S: dict[Profile, float] = {Profile.CLIMATE: 1.0, Profile.ACCEL: 0.016}


class CollectorConfig(Settings):
    source: SourceKind = SourceKind.SIMULATE
    device: str = Field(pattern=ID_PATTERN, max_length=MAX_NAME_LEN)
    site: str = Field(default="default", pattern=ID_PATTERN, max_length=MAX_NAME_LEN)

    # serial
    serial_port: str | None = Field(
        default=None, description="device path or pyserial URL (socket://host:port)"
    )
    baud: int = Field(default=115200, gt=0)
    #: Longest line accepted from a device; longer ones are counted as oversized.
    max_line_bytes: int = Field(default=4096, ge=64, le=1 << 20)
    #: Seconds between reopen attempts grow from the first to the second value.
    reopen_backoff_s: tuple[float, float] = (0.25, 10.0)

    # replay
    csv: Path | None = None
    speed: float = Field(default=1.0, ge=0, description="replay speed-up; 0 = as fast as possible")
    limit: int | None = Field(default=None, ge=1, description="stop after this many rows")
    timestamps: TimestampMode = TimestampMode.RECORDED

    # simulate
    profile: Profile = Profile.CLIMATE
    interval: float | None = Field(default=None, gt=0, le=3600)
    seed: int = 0
    inject: tuple[str, ...] = ()

    # publishing
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    outbox: Path | None = Field(default=None, description="SQLite store-and-forward file")
    outbox_max: int = Field(default=1_000_000, ge=10, description="unacknowledged readings kept")
    #: Acknowledged readings kept so ingest can ask for them again (RESEND).
    resend_retention: int = Field(default=100_000, ge=0)
    batch_max: int = Field(default=500, ge=1, le=MAX_BATCH)
    #: Messages handed to the MQTT client and not yet acknowledged.
    inflight_messages: int = Field(default=32, ge=1, le=1000)
    flush_timeout_s: float = Field(default=10.0, ge=0)

    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9310, ge=0, le=65535, description="0 = off")
    exit_when_done: bool = False
    log_level: str | None = None

    @field_validator("inject")
    @classmethod
    def _check_inject(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            parse_injection(item)
        return value

    @model_validator(mode="after")
    def _check_source(self) -> Self:
        if self.source is SourceKind.SERIAL and not self.serial_port:
            raise ValueError("serial_port is required for source=serial (--serial-port)")
        if self.source is SourceKind.REPLAY and self.csv is None:
            raise ValueError("csv is required for source=replay (--csv)")
        if self.profile is Profile.ACCEL and any(
            i.kind is InjectionKind.FIRE for i in self.injections
        ):
            raise ValueError("inject: fire needs profile=climate (an accelerometer has no "
                             "temperature)")
        lo, hi = self.reopen_backoff_s
        if not 0 < lo <= hi:
            raise ValueError("reopen_backoff_s must be (first, max) with 0 < first <= max")
        if self.mqtt.max_inflight < self.inflight_messages:
            raise ValueError(
                "inflight_messages must not exceed mqtt.max_inflight, or the MQTT client "
                "would hold messages back"
            )
        return self

    @property
    def injections(self) -> tuple[Injection, ...]:
        return tuple(parse_injection(i) for i in self.inject)

    @property
    def interval_s(self) -> float:
        return self.interval if self.interval is not None else DEFAULT_INTERVAL_S[self.profile]

    @property
    def outbox_path(self) -> Path:
        return self.outbox or Path(f"collector-{self.site}-{self.device}.db")

    @property
    def client_id(self) -> str:
        return f"collector-{self.site}-{self.device}"
