"""The request path shared by MQTT, HTTP and the Aalto adapter.

Transports turn what they receive into a :class:`Job` and :meth:`Server.submit` it. A
bounded queue sits between them and the workers: when it is full the job is answered at
once with an ``overloaded`` error instead of waiting without bound. A worker drains up
to ``max_batch`` jobs at a time and runs the jobs for one model version as one runtime
call (dynamic batching), then hands each its own reply.

Each job holds the :class:`LoadedModel` it resolved, so a model swapped in meanwhile
does not affect it: in-flight requests finish on the model they started with.
"""

from __future__ import annotations

import enum
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from services.common.logs import RateLimitedLog
from services.contract.card import ModelCard
from services.contract.limits import MAX_INFER_BATCH, MAX_PAYLOAD_BYTES
from services.contract.models import (
    ErrorCode,
    InferenceError,
    InferenceRequest,
    InferenceResponse,
)
from services.inference import pipeline
from services.inference.metrics import InferenceMetrics
from services.inference.models import LoadedModel, ModelSet, UnknownModelError
from services.inference.runtimes import RuntimeError_, ShapeError

log = logging.getLogger(__name__)


class Transport(enum.StrEnum):
    MQTT = "mqtt"
    HTTP = "http"
    AALTO = "aalto"


class RequestError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Result:
    """A job's outcome: exactly one of ``response`` or ``error``."""

    response: InferenceResponse | None = None
    error: InferenceError | None = None
    model: LoadedModel | None = None
    rows: npt.NDArray[np.float64] | None = None
    #: Where a 3.1.1 client asked for the reply (from the payload).
    reply_to: str | None = None

    @property
    def outcome(self) -> str:
        return "ok" if self.error is None else self.error.code.value


#: Called once per job with its result, from a worker thread (or the submitter on overload).
Reply = Callable[[Result], None]
#: Raw input for a device's current window, or None if there is not enough of it yet.
WindowSource = Callable[[ModelCard, str, str | None], Any | None]


@dataclass(slots=True)
class Job:
    model: str
    transport: Transport
    reply: Reply
    #: Either a payload to decode (MQTT) or an already-built request (HTTP, adapters).
    payload: bytes | None = None
    request: InferenceRequest | None = None
    received: float = field(default_factory=time.perf_counter)
    # Filled by the worker.
    loaded: LoadedModel | None = None
    raws: list[Any] | None = None


def decode_request(payload: bytes) -> InferenceRequest:
    """Size limit, then pydantic's own JSON parser (3x faster than json.loads + validate)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RequestError(ErrorCode.TOO_LARGE,
                           f"{len(payload)} bytes > limit {MAX_PAYLOAD_BYTES}")
    try:
        return InferenceRequest.model_validate_json(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0] if errors else {"type": "", "loc": (), "msg": str(exc)}
        if first["type"] == "json_invalid":
            raise RequestError(ErrorCode.BAD_JSON, str(first.get("msg", ""))[:300]) from None
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise RequestError(ErrorCode.BAD_SCHEMA,
                           f"{loc or 'request'}: {first.get('msg', '')}"[:300]) from None


def _loose_ids(payload: bytes | None) -> tuple[str | None, str | None]:
    """``id`` and ``reply_to`` from a payload that failed validation, if it is JSON at all,
    so a 3.1.1 client still learns why its request was refused."""
    if not payload or len(payload) > MAX_PAYLOAD_BYTES:
        return None, None
    try:
        data = json.loads(payload)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    rid, reply_to = data.get("id"), data.get("reply_to")
    return (rid[:128] if isinstance(rid, str) else None,
            reply_to if isinstance(reply_to, str) else None)


def error_result(job: Job, code: ErrorCode, message: str) -> Result:
    if job.request is not None:
        req_id, reply_to = job.request.id, job.request.reply_to
    else:
        req_id, reply_to = _loose_ids(job.payload)
    return Result(error=InferenceError(id=req_id, model=job.model[:64], code=code,
                                       message=message[:1000]), reply_to=reply_to)


class Server:
    def __init__(
        self,
        models: ModelSet,
        metrics: InferenceMetrics,
        *,
        queue_max: int = 256,
        workers: int = 1,
        max_batch: int = 64,
        windows: WindowSource | None = None,
    ) -> None:
        self.models = models
        self.metrics = metrics
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_max)
        self._workers = workers
        self._max_batch = max_batch
        self._windows = windows
        self._threads: list[threading.Thread] = []
        self._rlog = RateLimitedLog(log)
        self._started = False
        self._stopped = False
        self._m_batch = metrics.batch_rows
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(...)`` memoised: the lookup costs more than the increment."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for i in range(self._workers):
            t = threading.Thread(target=self._run, name=f"infer-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Answer what is queued, then stop the workers."""
        self._stopped = True
        if not self._started:
            return
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        self._started = False
        # A job that slipped in behind the stop markers still gets an answer.
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job, error_result(job, ErrorCode.OVERLOADED,
                                               "service stopping; retry"))

    def set_window_source(self, windows: WindowSource | None) -> None:
        self._windows = windows

    # ------------------------------------------------------------------ intake
    def submit(self, job: Job) -> bool:
        """Queue a job; when the queue is full answer it ``overloaded`` and return False."""
        self.metrics.in_flight.inc()
        if self._stopped:
            self._finish(job, error_result(job, ErrorCode.OVERLOADED, "service stopping; retry"))
            return False
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._finish(job, error_result(
                job, ErrorCode.OVERLOADED,
                f"{self._queue.maxsize} requests already waiting; retry later"))
            return False
        self.metrics.queue_depth.set(self._queue.qsize())
        return True

    def idle(self) -> bool:
        """Nothing queued and no worker busy: a request run right now waits for nobody."""
        return self._busy == 0 and self._queue.empty()

    def run_inline(self, job: Job) -> None:
        """Run one job on the caller's thread (the MQTT network thread when idle), saving
        the hand-off to a worker (``inline_when_idle``)."""
        self.metrics.in_flight.inc()
        with self._busy_lock:
            self._busy += 1
        try:
            self._process([job])
        except Exception as exc:
            log.exception("inline request failed")
            self._finish(job, error_result(job, ErrorCode.INTERNAL, repr(exc)[:300]))
        finally:
            with self._busy_lock:
                self._busy -= 1

    def run_now(self, job: Job) -> Result:
        """Run one job synchronously on the caller's thread (through the same checks)."""
        out: list[Result] = []
        job.reply = out.append
        self.metrics.in_flight.inc()
        self._process([job])
        return out[0]

    # ------------------------------------------------------------------ workers
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            stop = False
            while len(jobs) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self.metrics.queue_depth.set(self._queue.qsize())
            with self._busy_lock:
                self._busy += 1
            try:
                self._process(jobs)
            except Exception as exc:  # a bug must not kill the worker or lose replies
                log.exception("worker failed on %d jobs", len(jobs))
                for j in jobs:
                    self._finish(j, error_result(j, ErrorCode.INTERNAL, repr(exc)[:300]))
            finally:
                with self._busy_lock:
                    self._busy -= 1
            if stop:
                return

    def _process(self, jobs: Sequence[Job]) -> None:
        groups: dict[int, list[Job]] = {}
        for job in jobs:
            try:
                self._resolve(job)
            except RequestError as exc:
                self._finish(job, error_result(job, exc.code, exc.message))
                continue
            if job.loaded is not None:
                groups.setdefault(id(job.loaded), []).append(job)
        for group in groups.values():
            self._run_group(group)

    def _resolve(self, job: Job) -> None:
        """Decode, find the model, and build the raw inputs; raise RequestError."""
        if job.request is None:
            job.request = decode_request(job.payload or b"")
        req = job.request
        try:
            job.loaded = self.models.get(job.model, req.version)
        except UnknownModelError as exc:
            raise RequestError(ErrorCode.UNKNOWN_MODEL, str(exc.args[0])) from None
        card = job.loaded.card
        if req.device is not None:
            if req.inputs is not None:
                raise RequestError(ErrorCode.BAD_SCHEMA, "give either inputs or device, not both")
            raw = self._windows(card, req.device, req.site) if self._windows else None
            if raw is None:
                raise RequestError(
                    ErrorCode.NO_WINDOW,
                    f"no full window of {card.input.window} readings of "
                    f"{','.join(card.input.fields)} for device {req.device!r} yet")
            job.raws = [raw]
        elif req.inputs is None:
            raise RequestError(ErrorCode.BAD_SCHEMA, "a request needs inputs or device")
        elif req.batch:
            if not req.inputs:
                raise RequestError(ErrorCode.BAD_SHAPE, "empty batch")
            if len(req.inputs) > MAX_INFER_BATCH:
                raise RequestError(ErrorCode.TOO_LARGE,
                                   f"{len(req.inputs)} rows > limit {MAX_INFER_BATCH}")
            job.raws = list(req.inputs)
        else:
            job.raws = [req.inputs]

    def _run_group(self, group: list[Job]) -> None:
        model = group[0].loaded
        if model is None:
            return
        card = model.card
        prepared: list[tuple[Job, npt.NDArray[np.float32]]] = []
        x: npt.NDArray[np.float32] | None = None
        if len(group) > 1:
            # One preprocessing call for the whole group; if any input is bad, fall back
            # to one call per job so only that job gets the error.
            raws = [raw for job in group for raw in (job.raws or [])]
            try:
                x = pipeline.prepare(card, raws)
            except pipeline.InputError:
                x = None
            else:
                start = 0
                for job in group:
                    n = len(job.raws or [])
                    prepared.append((job, x[start : start + n]))
                    start += n
        if x is None:
            for job in group:
                try:
                    prepared.append((job, pipeline.prepare(card, job.raws or [])))
                except pipeline.InputError as exc:
                    self._finish(job, error_result(job, ErrorCode.BAD_SHAPE, str(exc)))
            if not prepared:
                return
            x = prepared[0][1] if len(prepared) == 1 else np.concatenate(
                [p[1] for p in prepared])
        try:
            y = pipeline.finish(card, model.runtime.predict(x))
        except (ShapeError, ValueError) as exc:
            if len(prepared) == 1:
                self._finish(prepared[0][0], error_result(prepared[0][0], ErrorCode.BAD_SHAPE,
                                                          str(exc)))
                return
            # One bad job must not fail its neighbours: run them one by one.
            for job, xi in prepared:
                self._run_one(job, model, xi)
            return
        except RuntimeError_ as exc:
            for job, _ in prepared:
                self._finish(job, error_result(job, ErrorCode.INTERNAL, str(exc)))
            return
        self._m_batch.observe(int(x.shape[0]))
        start = 0
        for job, xi in prepared:
            n = int(xi.shape[0])
            self._answer(job, model, y[start : start + n])
            start += n

    def _run_one(self, job: Job, model: LoadedModel, x: npt.NDArray[np.float32]) -> None:
        try:
            y = pipeline.finish(model.card, model.runtime.predict(x))
        except (ShapeError, ValueError) as exc:
            self._finish(job, error_result(job, ErrorCode.BAD_SHAPE, str(exc)))
            return
        except RuntimeError_ as exc:
            self._finish(job, error_result(job, ErrorCode.INTERNAL, str(exc)))
            return
        self._answer(job, model, y)

    def _answer(self, job: Job, model: LoadedModel, y: npt.NDArray[np.float64]) -> None:
        req = job.request or InferenceRequest()
        rows = y.reshape(y.shape[0], -1)
        outputs: list[Any] = rows.tolist() if (req.batch and req.device is None) else \
            rows[0].tolist()
        # Built from values this service produced: no need to validate them again.
        resp = InferenceResponse.model_construct(
            id=req.id, model=model.name, version=model.version,
            runtime=model.runtime.kind.value, outputs=outputs,
            labels=list(model.card.labels) or None,
            latency_s=time.perf_counter() - job.received,
        )
        self._child(self.metrics.predictions, model.name).inc(rows.shape[0])
        self._finish(job, Result(response=resp, model=model, rows=rows, reply_to=req.reply_to))

    def _finish(self, job: Job, result: Result) -> None:
        try:
            job.reply(result)
        except Exception:
            self._rlog.error("reply", "reply for %s over %s failed", job.model,
                             job.transport.value)
        finally:
            # Client-chosen names that match no model share one label: no label explosion.
            label = job.loaded.name if job.loaded is not None else (
                job.model if self.models.has(job.model) else "unknown")
            self.metrics.in_flight.dec()
            self._child(self.metrics.requests, label, job.transport.value, result.outcome).inc()
            self._child(self.metrics.latency, label, job.transport.value).observe(
                time.perf_counter() - job.received)
            if result.error is not None and result.error.code is not ErrorCode.OVERLOADED:
                self._rlog.warning(f"req-{result.error.code.value}",
                                   "request for %s refused: %s: %s", job.model,
                                   result.error.code.value, result.error.message)
