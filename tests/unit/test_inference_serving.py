"""The request path without a broker: batching, error codes, overload, versions."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.contract.models import ErrorCode, InferenceRequest
from services.inference.loader import load
from services.inference.metrics import InferenceMetrics
from services.inference.models import ModelSet
from services.inference.runtimes import RuntimeKind
from services.inference.serving import Job, Result, Server, Transport
from services.modelkit.bundle import Bundle
from tests.support import tiny_models as tm


@pytest.fixture(scope="module")
def tiny() -> tm.TinyModels:
    return tm.build()


def make(tiny: tm.TinyModels, registry: CollectorRegistry, **kw: int) -> Server:
    models = ModelSet()
    for v, kind in ((1, RuntimeKind.NUMPY), (2, RuntimeKind.LITERT)):
        card = tiny.card(tm.FORECAST).model_copy(update={"version": v})
        models.swap(load(Bundle(card, tiny.files(tm.FORECAST)), "sha", v, [kind]))
    return Server(models, InferenceMetrics(registry), **kw)


def job(payload: dict[str, object] | bytes, out: list[Result], model: str = tm.FORECAST,
        done: threading.Event | None = None) -> Job:
    def reply(r: Result) -> None:
        out.append(r)
        if done is not None and len(out) >= 1:
            done.set()

    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Job(model=model, transport=Transport.MQTT, reply=reply, payload=raw)


def test_versions_and_error_codes(tiny: tm.TinyModels, registry: CollectorRegistry) -> None:
    server = make(tiny, registry)
    tv = tiny.card(tm.FORECAST).test_vectors[0]
    out: list[Result] = []
    for body in ({"inputs": tv.input}, {"inputs": tv.input, "version": 1}):
        server.run_inline(job(body, out))
    assert [r.response.version for r in out if r.response] == [2, 1]
    assert [r.response.runtime for r in out if r.response] == ["litert", "numpy"]
    for r in out:
        assert r.response is not None
        assert r.response.outputs == pytest.approx(tv.output, abs=1e-3)
    cases = [
        (b"[1, 2", ErrorCode.BAD_JSON),
        (b'{"inputs": [1], "bogus": true}', ErrorCode.BAD_SCHEMA),
        ({"inputs": [1.0] * 7}, ErrorCode.BAD_SHAPE),
        ({"inputs": tv.input, "version": 9}, ErrorCode.UNKNOWN_MODEL),
        ({"inputs": [tv.input] * 3, "batch": True, "device": "d"}, ErrorCode.BAD_SCHEMA),
        ({"device": "d"}, ErrorCode.NO_WINDOW),
        ({}, ErrorCode.BAD_SCHEMA),
        (b"x" * (300 * 1024), ErrorCode.TOO_LARGE),
    ]
    for body, code in cases:
        got: list[Result] = []
        server.run_inline(job(body, got))
        assert got[0].error is not None and got[0].error.code is code, (body, got)
    assert registry.get_sample_value("edgeloop_inference_requests_in_flight") == 0


def test_dynamic_batching_merges_queued_requests_and_isolates_bad_ones(
    tiny: tm.TinyModels, registry: CollectorRegistry
) -> None:
    server = make(tiny, registry, max_batch=64, queue_max=100)
    card = tiny.card(tm.FORECAST)
    out: list[Result] = []
    rng = np.random.default_rng(0)
    bodies: list[dict[str, object]] = [
        {"inputs": (22 + rng.standard_normal(8)).tolist(), "id": str(i)} for i in range(30)]
    bodies[7] = {"inputs": [1.0, 2.0], "id": "7"}  # one bad request among them
    for b in bodies:  # queued before the workers start: they see one batch
        assert server.submit(job(b, out))
    server.start()
    server.stop()
    by_id = {(r.response or r.error).id: r for r in out}  # type: ignore[union-attr]
    assert len(by_id) == 30
    assert by_id["7"].error is not None and by_id["7"].error.code is ErrorCode.BAD_SHAPE
    single = Server(server.models, InferenceMetrics(CollectorRegistry()))
    for b in bodies[:5]:
        ref: list[Result] = []
        single.run_inline(job(b, ref))
        got = by_id[str(b["id"])].response
        assert got is not None and ref[0].response is not None
        assert got.outputs == pytest.approx(ref[0].response.outputs, abs=1e-6)
    assert card.name == tm.FORECAST
    # 29 good rows ran as one runtime call.
    assert registry.get_sample_value("edgeloop_inference_batch_rows_count") == 1
    assert registry.get_sample_value("edgeloop_inference_batch_rows_sum") == 29


def test_full_queue_answers_overloaded_at_once(
    tiny: tm.TinyModels, registry: CollectorRegistry
) -> None:
    server = make(tiny, registry, queue_max=3)
    out: list[Result] = []
    body = {"inputs": tiny.card(tm.FORECAST).test_vectors[0].input}
    accepted = [server.submit(job(body, out)) for _ in range(5)]
    assert accepted == [True, True, True, False, False]
    assert [r.error.code for r in out if r.error] == [ErrorCode.OVERLOADED] * 2
    server.start()
    server.stop()
    assert sum(1 for r in out if r.response) == 3
    assert registry.get_sample_value(
        "edgeloop_inference_requests_total",
        {"model": tm.FORECAST, "transport": "mqtt", "outcome": "overloaded"}) == 2
    req = InferenceRequest(inputs=body["inputs"])  # type: ignore[arg-type]
    assert server.run_now(Job(model=tm.FORECAST, transport=Transport.HTTP,
                              reply=lambda _r: None, request=req)).response is not None


def test_jobs_after_stop_are_answered_not_dropped(
    tiny: tm.TinyModels, registry: CollectorRegistry
) -> None:
    server = make(tiny, registry)
    server.start()
    server.stop()
    out: list[Result] = []
    assert not server.submit(job({"inputs": [1.0] * 8}, out))
    assert out and out[0].error is not None and out[0].error.code is ErrorCode.OVERLOADED
    assert "stopping" in out[0].error.message
