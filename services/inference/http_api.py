"""HTTP API (Flask behind waitress), shaped like TensorFlow Serving's REST API.

``POST /v1/models/<name>:predict`` (or ``/v1/models/<name>/versions/<v>:predict``) with
``{"instances": [...]}`` answers ``{"predictions": [...]}`` plus the model, version,
runtime and labels. Requests go through the same queue, batching and checks as MQTT, so
the two give the same numbers. ``/healthz`` says the process is alive; ``/readyz`` says
models are loaded and the broker is connected; ``/metrics`` is Prometheus text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from services.contract.limits import MAX_PAYLOAD_BYTES
from services.contract.models import ErrorCode, InferenceRequest
from services.inference.models import ModelSet, UnknownModelError
from services.inference.serving import Job, Result, Server, Transport

log = logging.getLogger(__name__)

STATUS = {
    ErrorCode.BAD_JSON: 400,
    ErrorCode.BAD_SCHEMA: 400,
    ErrorCode.BAD_SHAPE: 400,
    ErrorCode.UNKNOWN_MODEL: 404,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.NO_WINDOW: 409,
    ErrorCode.INTERNAL: 500,
}
#: How long an HTTP request waits for its queued job before giving up.
WAIT_S = 30.0


def _error(code: ErrorCode, message: str, model: str | None = None) -> tuple[Response, int]:
    resp = jsonify({"error": message, "code": code.value, "model": model})
    if code is ErrorCode.OVERLOADED:
        resp.headers["Retry-After"] = "1"
    return resp, STATUS[code]


def create_app(
    server: Server,
    models: ModelSet,
    registry: CollectorRegistry,
    readiness: Callable[[], list[str]],
) -> Flask:
    """``readiness`` returns what is not ready yet (empty = ready)."""
    app = Flask("edgeloop-serve")
    app.config["MAX_CONTENT_LENGTH"] = MAX_PAYLOAD_BYTES

    @app.errorhandler(413)
    def _too_large(_e: Any) -> tuple[Response, int]:
        return _error(ErrorCode.TOO_LARGE, f"body larger than {MAX_PAYLOAD_BYTES} bytes")

    def _predict(name: str, version: int | None) -> tuple[Response, int]:
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict):
            return _error(ErrorCode.BAD_JSON, "body must be a JSON object", name)
        try:
            if "instances" in body:
                req = InferenceRequest(id=body.get("id"), inputs=body["instances"], batch=True,
                                       version=version)
            elif "device" in body:
                req = InferenceRequest(id=body.get("id"), device=body["device"],
                                       site=body.get("site"), version=version)
            else:
                return _error(ErrorCode.BAD_SCHEMA, 'body needs "instances" (or "device")', name)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            return _error(ErrorCode.BAD_SCHEMA, f"{loc}: {first.get('msg')}", name)
        done = threading.Event()
        out: list[Result] = []

        def reply(result: Result) -> None:
            out.append(result)
            done.set()

        server.submit(Job(model=name, transport=Transport.HTTP, reply=reply, request=req))
        if not done.wait(WAIT_S):
            return _error(ErrorCode.OVERLOADED, f"no answer within {WAIT_S:.0f} s", name)
        result = out[0]
        if result.error is not None:
            return _error(result.error.code, result.error.message, name)
        r = result.response
        if r is None:
            return _error(ErrorCode.INTERNAL, "no response", name)
        predictions = r.outputs if req.device is None else [r.outputs]
        return jsonify({"predictions": predictions, "model": r.model, "version": r.version,
                        "runtime": r.runtime, "labels": r.labels,
                        "latency_s": r.latency_s}), 200

    @app.post("/v1/models/<name>:predict")
    def predict(name: str) -> tuple[Response, int]:
        return _predict(name, None)

    @app.post("/v1/models/<name>/versions/<int:version>:predict")
    def predict_version(name: str, version: int) -> tuple[Response, int]:
        return _predict(name, version)

    @app.get("/v1/models")
    def list_models() -> tuple[Response, int]:
        return jsonify({"models": [m.describe() for m in models.active()]}), 200

    @app.get("/v1/models/<name>")
    def get_model(name: str) -> tuple[Response, int]:
        try:
            model = models.get(name)
        except UnknownModelError as exc:
            return _error(ErrorCode.UNKNOWN_MODEL, str(exc.args[0]), name)
        info = model.describe()
        info["versions_loaded"] = models.versions(name)
        info["model_version_status"] = [
            {"version": str(v), "state": "AVAILABLE"} for v in models.versions(name)
        ]
        return jsonify(info), 200

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({"status": "ok"}), 200

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        missing = readiness()
        if missing:
            return jsonify({"status": "not ready", "waiting_for": missing}), 503
        return jsonify({"status": "ready", "models": len(models)}), 200

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    return app


class HttpServer:
    """waitress in a thread; ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(self, app: Flask, host: str, port: int, threads: int = 4) -> None:
        from waitress.server import create_server

        self._server = create_server(app, host=host, port=port, threads=threads,
                                     ident="edgeloop-serve", clear_untrusted_proxy_headers=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._server.run()
        except OSError:
            pass  # closed while stopping

    def stop(self, timeout_s: float = 5.0) -> None:
        """Let running requests finish, then close every socket from the loop's own thread
        (a close from here would race the loop)."""
        from waitress import wasyncore

        server = self._server
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=timeout_s)
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("HTTP loop did not stop within %.0f s", timeout_s)
