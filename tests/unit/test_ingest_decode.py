"""Ingest's batch-speed decoder gives exactly the contract decoder's answers."""

from __future__ import annotations

import json
import time

import pytest

from services.contract.decode import Rejected, decode_telemetry
from services.contract.limits import MAX_FUTURE_SKEW_NS
from services.contract.models import Reading, ReadingBatch, Sample
from services.ingest import decode as fast

NOW = time.time_ns()
TOPIC = "edgeloop/v1/lab/dev-1/telemetry"


def batch_dict(n: int = 3, **over: object) -> dict[str, object]:
    b = ReadingBatch(device="dev-1", site="lab", samples=[
        Sample(ts=NOW - 10**9 + i, seq=i, values={"temp": 20.0 + i}, flags=("anomaly",) if i
               else ()) for i in range(n)]).to_dict()
    b.update(over)
    return b


def sample_with(**over: object) -> dict[str, object]:
    s: dict[str, object] = {"ts": NOW, "seq": 9, "values": {"temp": 1.0}}
    s.update(over)
    return s


CASES: list[tuple[str, str, bytes]] = [
    ("batch", TOPIC, json.dumps(batch_dict()).encode()),
    ("single", TOPIC, Reading(device="dev-1", site="lab", ts=NOW, seq=1,
                              values={"t": 2.0}).to_json()),
    ("not json", TOPIC, b'{"schema": "edgeloop.readings/1", '),
    ("nan literal", TOPIC, json.dumps(batch_dict(samples=[sample_with(values={"t": float("nan")})]
                                                 )).encode()),
    ("string value", TOPIC, json.dumps(batch_dict(samples=[sample_with(values={"t": "x"})])
                                       ).encode()),
    ("extra key", TOPIC, json.dumps(batch_dict(extra=1)).encode()),
    ("empty batch", TOPIC, json.dumps(batch_dict(samples=[])).encode()),
    ("future in the middle", TOPIC, json.dumps(batch_dict(samples=[
        sample_with(seq=1), sample_with(seq=2, ts=NOW + 2 * MAX_FUTURE_SKEW_NS)])).encode()),
    ("topic mismatch", "edgeloop/v1/lab/dev-2/telemetry", json.dumps(batch_dict()).encode()),
    ("site mismatch", "edgeloop/v1/other/dev-1/telemetry", json.dumps(batch_dict()).encode()),
    ("unknown device", "edgeloop/v1/lab/dev-1/telemetry",
     json.dumps(batch_dict(device="dev-1")).encode()),
    ("status topic", "edgeloop/v1/lab/dev-1/status", json.dumps(batch_dict()).encode()),
    ("bad topic", "nope/dev-1", json.dumps(batch_dict()).encode()),
    ("oversized", TOPIC, json.dumps(batch_dict(n=2000)).encode() + b" " * 200_000),
]


@pytest.mark.parametrize(("name", "topic", "payload"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("known", [None, frozenset({"dev-1", "dev-2"}), frozenset({"x"})])
def test_same_answer_as_the_contract_decoder(
    name: str, topic: str, payload: bytes, known: frozenset[str] | None
) -> None:
    def run(fn: object) -> object:
        try:
            if fn is decode_telemetry:
                return decode_telemetry(topic, payload, now_ns=NOW, known_devices=known)
            return fast.decode(topic, payload, now_ns=NOW, known_devices=known,
                               max_future_skew_ns=MAX_FUTURE_SKEW_NS)
        except Rejected as exc:
            return exc.reason

    expected, got = run(decode_telemetry), run(fast.decode)
    assert got == expected
    if isinstance(expected, list):
        assert [r.to_json() for r in got] == [r.to_json() for r in expected]  # type: ignore[union-attr]


def test_the_fast_constructor_is_in_use() -> None:
    # If a pydantic upgrade changed model internals, the safe constructor takes over and
    # this test says so (ingest stays correct, just slower).
    assert fast._construct is fast._construct_fast
