"""Message models: the one place that says what goes over the wire.

Every message is a frozen pydantic model whose ``schema`` field names its kind and
version (``edgeloop.reading/1``). A receiver checks the schema field first, so a future
``/2`` can be rolled out beside ``/1``. The JSON Schemas in ``schemas/`` are generated
from these models (``edgeloop contract write-schemas``) and a test fails if they drift.
"""

from __future__ import annotations

import enum
import math
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.contract.limits import (
    MAX_BATCH,
    MAX_INFER_BATCH,
    MAX_NAME_LEN,
    MAX_SEQ,
    MAX_VALUES,
)
from services.contract.topics import ID_PATTERN

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=MAX_NAME_LEN)]
TimestampNs = Annotated[int, Field(ge=0, description="UTC time in nanoseconds since the epoch")]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ, description="per-device sequence number")]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class Message(BaseModel):
    """Base for every wire message: frozen, unknown keys rejected, ``schema`` by alias."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False
    )

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _check_values(values: dict[str, float]) -> dict[str, float]:
    if not values:
        raise ValueError("a reading needs at least one value")
    if len(values) > MAX_VALUES:
        raise ValueError(f"{len(values)} values exceed the limit of {MAX_VALUES}")
    for name, value in values.items():
        if len(name) > MAX_NAME_LEN or not name or not name[0].isalnum():
            raise ValueError(f"invalid value name {name!r}")
        if not math.isfinite(value):
            raise ValueError(f"value {name!r} is not finite")
    return values


# --------------------------------------------------------------------------- telemetry

READING: Final = "edgeloop.reading/1"
READINGS: Final = "edgeloop.readings/1"


class Reading(Message):
    """One sample from one device: named float values at one instant."""

    schema_: Literal["edgeloop.reading/1"] = Field(default=READING, alias="schema")
    device: Id
    site: Id
    ts: TimestampNs
    seq: Seq
    values: dict[str, FiniteFloat]
    #: Markers set at the source, e.g. ``anomaly`` when the firmware's own model flagged it.
    flags: tuple[Id, ...] = ()

    _v = field_validator("values")(_check_values)


class Sample(Message):
    """A reading without its device and site: the rows of a ReadingBatch."""

    ts: TimestampNs
    seq: Seq
    values: dict[str, FiniteFloat]
    flags: tuple[Id, ...] = ()

    _v = field_validator("values")(_check_values)


class ReadingBatch(Message):
    """Several samples of one device in one message, used when the rate is high."""

    schema_: Literal["edgeloop.readings/1"] = Field(default=READINGS, alias="schema")
    device: Id
    site: Id
    samples: list[Sample] = Field(min_length=1, max_length=MAX_BATCH)

    def readings(self) -> list[Reading]:
        return [
            Reading(
                device=self.device,
                site=self.site,
                ts=s.ts,
                seq=s.seq,
                values=s.values,
                flags=s.flags,
            )
            for s in self.samples
        ]


# --------------------------------------------------------------------------- status

class DeviceState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    DEGRADED = "degraded"  # connected, but the source (serial port) is failing


class DeviceStatus(Message):
    """Retained per-device status; the collector's last will sets ``offline``."""

    schema_: Literal["edgeloop.status/1"] = Field(default="edgeloop.status/1", alias="schema")
    device: Id
    site: Id
    state: DeviceState
    ts: TimestampNs
    detail: str = Field(default="", max_length=512)
    info: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- alerts/events

class AlertKind(enum.StrEnum):
    FORECAST_DEVIATION = "forecast_deviation"
    OUT_OF_RANGE = "out_of_range"
    STUCK_SENSOR = "stuck_sensor"
    GAP = "gap"
    DRIFT = "drift"
    DEVICE_ANOMALY = "device_anomaly"  # flagged by the firmware's own model


class AlertState(enum.StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(Message):
    schema_: Literal["edgeloop.alert/1"] = Field(default="edgeloop.alert/1", alias="schema")
    id: str = Field(max_length=128)
    device: Id
    site: Id
    kind: AlertKind
    state: AlertState
    severity: Severity = Severity.WARNING
    ts: TimestampNs
    field: Id | None = None
    value: FiniteFloat | None = None
    expected: FiniteFloat | None = None
    score: FiniteFloat | None = None
    model: Id | None = None
    model_version: int | None = None
    message: str = Field(default="", max_length=1024)


class Event(Message):
    """A classification result on a window of readings (e.g. ``freefall``)."""

    schema_: Literal["edgeloop.event/1"] = Field(default="edgeloop.event/1", alias="schema")
    device: Id
    site: Id
    ts: TimestampNs
    label: Id
    confidence: FiniteFloat = Field(ge=0.0, le=1.0)
    model: Id
    model_version: int
    window_start_seq: Seq | None = None
    window_end_seq: Seq | None = None


class FieldStats(Message):
    count: int = Field(ge=0)
    min: FiniteFloat
    max: FiniteFloat
    mean: FiniteFloat


class Summary(Message):
    """Periodic per-device summary forwarded upstream in place of raw readings."""

    schema_: Literal["edgeloop.summary/1"] = Field(default="edgeloop.summary/1", alias="schema")
    device: Id
    site: Id
    start_ts: TimestampNs
    end_ts: TimestampNs
    fields: dict[Id, FieldStats]
    anomalies: int = Field(default=0, ge=0)


# --------------------------------------------------------------------------- models

class ModelTask(enum.StrEnum):
    FORECAST = "forecast"
    REGRESS = "regress"
    CLASSIFY = "classify"


class InputSpec(Message):
    """What a model takes: which fields, how long a window, in what shape and dtype."""

    fields: list[Id] = Field(min_length=1)
    window: int = Field(ge=1, description="samples per input window")
    shape: list[int] = Field(min_length=1, description="input tensor shape, batch dim = 1")
    dtype: Literal["float32", "int8"] = "float32"
    #: Target field for forecasters (the value the model predicts).
    target: Id | None = None
    #: Seconds between samples the model was trained on.
    interval_s: FiniteFloat | None = None


class ModelAnnouncement(Message):
    """Retained on ``edgeloop/v1/models/<name>/announce``: the approved version to run."""

    schema_: Literal["edgeloop.model-announce/1"] = Field(
        default="edgeloop.model-announce/1", alias="schema"
    )
    name: Id
    version: int = Field(ge=1)
    task: ModelTask
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    url: str = Field(max_length=2048)
    signature: str = Field(max_length=256, description="base64 Ed25519 over the sha256 hex")
    key_id: str = Field(max_length=64)
    size_bytes: int = Field(ge=1)
    created: TimestampNs
    input: InputSpec
    labels: list[Id] = Field(default_factory=list)
    card_url: str | None = Field(default=None, max_length=2048)
    #: ``retired`` announcements tell the edge to unload the model.
    retired: bool = False


# --------------------------------------------------------------------------- inference

class InferenceRequest(Message):
    """A prediction request on ``edgeloop/v1/infer/<model>/request``.

    MQTT v5 clients use Response Topic and Correlation Data; 3.1.1 clients put
    ``reply_to`` and ``id`` in the payload. Exactly one of ``inputs`` or ``device`` is set:
    ``device`` asks a forecaster about that device's current window.
    """

    schema_: Literal["edgeloop.infer-request/1"] = Field(
        default="edgeloop.infer-request/1", alias="schema"
    )
    id: str | None = Field(default=None, max_length=128)
    reply_to: str | None = Field(default=None, max_length=512)
    model: Id | None = None
    version: int | None = Field(default=None, ge=1)
    #: One input (nested lists matching the model's input without the batch dim) or a
    #: batch of them when ``batch`` is true.
    inputs: list[Any] | None = Field(default=None, max_length=MAX_INFER_BATCH)
    batch: bool = False
    device: Id | None = None
    site: Id | None = None


class InferenceResponse(Message):
    schema_: Literal["edgeloop.infer-response/1"] = Field(
        default="edgeloop.infer-response/1", alias="schema"
    )
    id: str | None = None
    model: Id
    version: int
    runtime: str
    outputs: list[Any]
    labels: list[str] | None = None
    latency_s: FiniteFloat


class ErrorCode(enum.StrEnum):
    BAD_JSON = "bad_json"
    BAD_SCHEMA = "bad_schema"
    BAD_SHAPE = "bad_shape"
    UNKNOWN_MODEL = "unknown_model"
    TOO_LARGE = "too_large"
    OVERLOADED = "overloaded"
    NO_WINDOW = "no_window"
    INTERNAL = "internal"


class InferenceError(Message):
    schema_: Literal["edgeloop.infer-error/1"] = Field(
        default="edgeloop.infer-error/1", alias="schema"
    )
    id: str | None = None
    model: str | None = None
    code: ErrorCode
    message: str = Field(max_length=1024)


# --------------------------------------------------------------------------- commands

class CommandName(enum.StrEnum):
    PING = "ping"
    INFO = "info"
    RATE = "rate"
    MODE = "mode"
    FAULT = "fault"
    UPDATE_MODEL = "update_model"
    #: Ask a collector to publish again readings ``from_seq``..``to_seq`` it still holds
    #: (ingest sends it when it sees a gap that the broker lost, e.g. after a SIGKILL).
    RESEND = "resend"


class Command(Message):
    """Sent on ``.../<device>/cmd``; the collector relays it to the device's serial line."""

    schema_: Literal["edgeloop.command/1"] = Field(default="edgeloop.command/1", alias="schema")
    id: str = Field(max_length=128)
    device: Id
    site: Id
    command: CommandName
    args: dict[str, str | int | float] = Field(default_factory=dict)


#: Every message model, by its schema id: used to generate the JSON Schemas.
MESSAGES: Final[dict[str, type[Message]]] = {
    "edgeloop.reading/1": Reading,
    "edgeloop.readings/1": ReadingBatch,
    "edgeloop.status/1": DeviceStatus,
    "edgeloop.alert/1": Alert,
    "edgeloop.event/1": Event,
    "edgeloop.summary/1": Summary,
    "edgeloop.model-announce/1": ModelAnnouncement,
    "edgeloop.infer-request/1": InferenceRequest,
    "edgeloop.infer-response/1": InferenceResponse,
    "edgeloop.infer-error/1": InferenceError,
    "edgeloop.command/1": Command,
}
