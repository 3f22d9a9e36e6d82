"""Decoding untrusted payloads into contract messages, with a reason for every refusal.

A service that receives a message calls one of these and either gets validated models
or a :class:`Rejected` carrying a :class:`RejectReason` it can count in a metric.
"""

from __future__ import annotations

import enum
import json
from typing import Any, TypeVar

from pydantic import ValidationError

from services.contract.limits import MAX_FUTURE_SKEW_NS, MAX_PAYLOAD_BYTES
from services.contract.models import READING, READINGS, Message, Reading, ReadingBatch
from services.contract.topics import ContractTopicError, DeviceTopic, parse_device_topic

M = TypeVar("M", bound=Message)


class RejectReason(enum.StrEnum):
    """Why a message was not accepted. Used as a metric label: keep the set small."""

    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    BAD_SCHEMA = "bad_schema"
    NON_FINITE = "non_finite"
    FUTURE_TIMESTAMP = "future_timestamp"
    UNKNOWN_DEVICE = "unknown_device"
    TOPIC_MISMATCH = "topic_mismatch"
    BAD_TOPIC = "bad_topic"
    MALFORMED_LINE = "malformed_line"


class Rejected(ValueError):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def _reject_constant(token: str) -> float:
    # json.loads accepts NaN/Infinity by default; the contract does not.
    raise Rejected(RejectReason.NON_FINITE, f"{token} is not a valid value")


def load_json(payload: bytes | str) -> Any:
    """Parse JSON with the size limit and without NaN/Infinity."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected(
            RejectReason.TOO_LARGE, f"{len(payload)} bytes > limit {MAX_PAYLOAD_BYTES}"
        )
    try:
        return json.loads(payload, parse_constant=_reject_constant)
    except Rejected:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(RejectReason.NOT_JSON, str(exc)[:200]) from None


def _validation_reason(exc: ValidationError) -> Rejected:
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    loc = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", ""))
    reason = RejectReason.NON_FINITE if "finite" in msg else RejectReason.BAD_SCHEMA
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return Rejected(reason, f"{loc}: {msg}{more}")


def decode_as(model: type[M], payload: bytes | str | dict[str, Any]) -> M:
    """Validate a payload (bytes or an already-parsed dict) as one message model."""
    data = payload if isinstance(payload, dict) else load_json(payload)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_reason(exc) from None


def decode_telemetry(
    topic: str,
    payload: bytes | str,
    *,
    now_ns: int,
    known_devices: frozenset[str] | None = None,
    max_future_skew_ns: int = MAX_FUTURE_SKEW_NS,
) -> list[Reading]:
    """Decode a telemetry message (one Reading or a ReadingBatch) published on ``topic``.

    Checks, in order: the topic's shape, size, JSON, schema, finite values, that the
    payload's device and site match the topic's, the device allow-list, and timestamps.
    """
    try:
        parts = parse_device_topic(topic)
    except ContractTopicError as exc:
        raise Rejected(RejectReason.BAD_TOPIC, str(exc)) from None
    if parts.kind is not DeviceTopic.TELEMETRY:
        raise Rejected(RejectReason.BAD_TOPIC, f"{topic!r} is not a telemetry topic")
    data = load_json(payload)
    if not isinstance(data, dict):
        raise Rejected(RejectReason.BAD_SCHEMA, "payload is not a JSON object")
    schema = data.get("schema")
    readings: list[Reading]
    if schema == READING:
        readings = [decode_as(Reading, data)]
    elif schema == READINGS:
        readings = decode_as(ReadingBatch, data).readings()
    else:
        raise Rejected(RejectReason.BAD_SCHEMA, f"unexpected schema {schema!r} for telemetry")
    first = readings[0]
    if first.device != parts.device or first.site != parts.site:
        raise Rejected(
            RejectReason.TOPIC_MISMATCH,
            f"payload says {first.site}/{first.device}, topic says {parts.site}/{parts.device}",
        )
    if known_devices is not None and first.device not in known_devices:
        raise Rejected(RejectReason.UNKNOWN_DEVICE, f"device {first.device!r} is not registered")
    limit = now_ns + max_future_skew_ns
    for r in readings:
        if r.ts > limit:
            raise Rejected(
                RejectReason.FUTURE_TIMESTAMP,
                f"seq {r.seq} ts {r.ts} is {(r.ts - now_ns) / 1e9:.0f} s in the future",
            )
    return readings
