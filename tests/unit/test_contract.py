"""The wire contract: topics, models, limits and the checked-in JSON Schemas."""

from __future__ import annotations

import json
import time

import pytest

from services.contract import (
    Reading,
    ReadingBatch,
    Rejected,
    RejectReason,
    decode_telemetry,
    topics,
)
from services.contract.limits import MAX_PAYLOAD_BYTES, MAX_VALUES
from services.contract.schemas_io import drifted_schemas

NOW = time.time_ns()
TOPIC = topics.telemetry("lab", "board-1")


def reading(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "schema": "edgeloop.reading/1", "device": "board-1", "site": "lab",
        "ts": NOW, "seq": 7, "values": {"temp": 28.6875, "humidity": 45.2},
    }
    base.update(over)
    return base


def test_checked_in_schemas_match_models() -> None:
    assert drifted_schemas() == [], "run `edgeloop contract write-schemas`"


def test_topics_round_trip() -> None:
    parts = topics.parse_device_topic(TOPIC)
    assert (parts.site, parts.device) == ("lab", "board-1")
    assert parts.kind is topics.DeviceTopic.TELEMETRY
    assert topics.shared("ingest", topics.subscription(topics.DeviceTopic.TELEMETRY)) == (
        "$share/ingest/edgeloop/v1/+/+/telemetry"
    )
    assert topics.parse_model_topic(topics.infer_request("temp-forecast")) == (
        "temp-forecast", "request")


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "x" * 65, "-lead", "sp ace"])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(topics.ContractTopicError):
        topics.telemetry("lab", bad)


def test_single_and_batch_decode() -> None:
    one = decode_telemetry(TOPIC, json.dumps(reading()), now_ns=NOW)
    assert one == [Reading.model_validate(reading())]
    batch = ReadingBatch(
        device="board-1", site="lab",
        samples=[{"ts": NOW + i, "seq": i, "values": {"temp": 20.0 + i}} for i in range(3)],  # type: ignore[misc]
    )
    got = decode_telemetry(TOPIC, batch.to_json(), now_ns=NOW)
    assert [r.seq for r in got] == [0, 1, 2]
    assert got[2].values == {"temp": 22.0}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", RejectReason.NOT_JSON),
        (b"[1,2]", RejectReason.BAD_SCHEMA),
        (json.dumps(reading(schema="edgeloop.reading/9")).encode(), RejectReason.BAD_SCHEMA),
        (json.dumps(reading(seq=-1)).encode(), RejectReason.BAD_SCHEMA),
        (json.dumps(reading(extra=1)).encode(), RejectReason.BAD_SCHEMA),
        (json.dumps(reading(values={})).encode(), RejectReason.BAD_SCHEMA),
        (b'{"schema":"edgeloop.reading/1","device":"board-1","site":"lab","ts":1,"seq":1,'
         b'"values":{"temp":NaN}}', RejectReason.NON_FINITE),
        (b'{"schema":"edgeloop.reading/1","device":"board-1","site":"lab","ts":1,"seq":1,'
         b'"values":{"temp":Infinity}}', RejectReason.NON_FINITE),
        (json.dumps(reading(values={"temp": 1e309})).encode(), RejectReason.NON_FINITE),
        (json.dumps(reading(ts=NOW + 3600 * 10**9)).encode(), RejectReason.FUTURE_TIMESTAMP),
        (json.dumps(reading(device="board-2")).encode(), RejectReason.TOPIC_MISMATCH),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), RejectReason.TOO_LARGE),
        (json.dumps(reading(values={f"v{i}": 1.0 for i in range(MAX_VALUES + 1)})).encode(),
         RejectReason.BAD_SCHEMA),
    ],
)
def test_bad_telemetry_is_rejected_with_a_reason(payload: bytes, reason: RejectReason) -> None:
    with pytest.raises(Rejected) as info:
        decode_telemetry(TOPIC, payload, now_ns=NOW)
    assert info.value.reason is reason


def test_unknown_device_and_bad_topic() -> None:
    with pytest.raises(Rejected) as info:
        decode_telemetry(TOPIC, json.dumps(reading()), now_ns=NOW,
                         known_devices=frozenset({"other"}))
    assert info.value.reason is RejectReason.UNKNOWN_DEVICE
    with pytest.raises(Rejected) as info:
        decode_telemetry("edgeloop/v1/lab/board-1/status", json.dumps(reading()), now_ns=NOW)
    assert info.value.reason is RejectReason.BAD_TOPIC


def test_schema_field_is_serialised_by_alias() -> None:
    r = Reading.model_validate(reading())
    assert json.loads(r.to_json())["schema"] == "edgeloop.reading/1"
