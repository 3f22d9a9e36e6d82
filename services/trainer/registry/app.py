"""The registry's HTTP API (Flask; served by waitress, see server.py).

Reads are open; writes (upload, promote, rollback, retire) need
``Authorization: Bearer <token>``. Every error is JSON: ``{"code": ..., "message": ...}``
with a code from :class:`ErrorCode`.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import os
import secrets
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, g, redirect, request, send_file
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from services.common.logs import RateLimitedLog
from services.modelkit.bundle import CARD
from services.trainer.registry.announce import Announcer, build_announcement
from services.trainer.registry.errors import (
    BadRequest,
    ErrorCode,
    ModelNotFound,
    RegistryAuthError,
    RegistryError,
)
from services.trainer.registry.metrics import AnnounceResult, PublishResult, RegistryMetrics
from services.trainer.registry.models import VersionMeta
from services.trainer.registry.store import RegistryStore

log = logging.getLogger(__name__)

REPORT_PREFIX = "report/"
#: Content types for what a report holds; anything else is served as a download.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".css": "text/css; charset=utf-8",
    ".pdf": "application/pdf",
}
#: Reports are trainer output: let them show their own images and styles, nothing else.
REPORT_CSP = "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
_STATUS_CODES = {
    400: ErrorCode.BAD_REQUEST, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.WRITES_DISABLED,
    404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.TOO_LARGE,
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(PurePosixPath(name).suffix.lower(), "application/octet-stream")


def error_response(code: ErrorCode, message: str, status: int) -> Response:
    resp = Response(
        json.dumps({"code": code.value, "message": message}), status=status,
        mimetype="application/json",
    )
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="edgeloop-registry"'
    return resp


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def _parse_version(value: str) -> int | None:
    """``current`` (None) or a positive integer; anything else is not a version we have."""
    if value == "current":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ModelNotFound(f"no version {value!r}")
    return int(value)


def _flag(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise BadRequest(f"{name} must be true or false, got {raw!r}")


def _body_version() -> int:
    data = request.get_json(silent=True)
    raw = data.get("version") if isinstance(data, dict) else request.args.get("version")
    if isinstance(raw, bool):
        raw = None
    try:
        version = int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        version = 0
    if version < 1:
        raise BadRequest('give the version as JSON {"version": N} or ?version=N')
    return version


def create_app(
    store: RegistryStore,
    announcer: Announcer,
    metrics: RegistryMetrics,
    *,
    token: str | None,
    max_upload_bytes: int,
) -> Flask:
    app = Flask("edgeloop-registry")
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes
    rlog = RateLimitedLog(log)
    expected = token.encode() if token else None

    def links(name: str, version: int) -> dict[str, str]:
        base = f"{announcer.base_url}/v1/models/{name}/versions/{version}"
        return {"bundle": f"{base}/bundle", "card": f"{base}/card", "report": f"{base}/report/"}

    def meta_json(meta: VersionMeta) -> dict[str, Any]:
        return {**meta.to_dict(), "links": links(meta.name, meta.version)}

    def authorize() -> None:
        if expected is None:
            raise RegistryAuthError(
                "writes are disabled: the registry has no token configured (EDGELOOP_TOKEN)",
                ErrorCode.WRITES_DISABLED,
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 expected):
            metrics.auth_failures.inc()
            rlog.warning("auth", "refused %s %s from %s: missing or wrong bearer token",
                         request.method, request.path, request.remote_addr)
            raise RegistryAuthError("missing or wrong bearer token")

    def announce(name: str) -> str:
        return announcer.announce(name).value

    # ------------------------------------------------------------------ plumbing
    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _count(resp: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(endpoint, request.method, str(resp.status_code)).inc()
        started = g.get("started")
        if started is not None:
            metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    @app.errorhandler(RegistryError)
    def _registry_error(exc: RegistryError) -> Response:
        if exc.http_status >= 500:
            rlog.error(exc.code.value, "%s %s: %s", request.method, request.path, exc.message)
        return error_response(exc.code, exc.message, exc.http_status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _STATUS_CODES.get(status, ErrorCode.BAD_REQUEST if status < 500
                                 else ErrorCode.INTERNAL)
        message = exc.description or exc.name
        if status == 413:
            message = f"request body exceeds the limit of {max_upload_bytes} bytes"
        return error_response(code, message, status)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}", 500)

    # ------------------------------------------------------------------ service
    @app.get("/healthz")
    def healthz() -> Response:
        mqtt = ("connected" if announcer.connected else "disconnected") if announcer.enabled \
            else "disabled"
        return _json({
            "status": "ok", "models": len(store.list_models()), "mqtt": mqtt,
            "signing_key_id": store.key_id, "writes": expected is not None,
        })

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ reads
    @app.get("/v1/models")
    def list_models() -> Response:
        return _json({"models": [m.to_dict() for m in store.list_models()]})

    @app.get("/v1/models/<name>")
    def model(name: str) -> Response:
        channel = store.channel(name)
        return _json({
            "name": name, "current": channel.current, "history": channel.history,
            "versions": [meta_json(m) for m in store.versions(name)],
        })

    @app.get("/v1/models/<name>/announcement")
    def announcement(name: str) -> Response:
        ann = build_announcement(store, name, announcer.base_url)
        if ann is None:
            raise ModelNotFound(f"model {name!r} has never had an approved version")
        return Response(ann.to_json(), mimetype="application/json")

    @app.get("/v1/models/<name>/versions/<version>")
    def version_meta(name: str, version: str) -> Response:
        v = store.resolve(name, _parse_version(version))
        return _json(meta_json(store.meta(name, v)))

    @app.get("/v1/models/<name>/versions/<version>/bundle")
    def bundle(name: str, version: str) -> Response:
        requested = _parse_version(version)
        v = store.resolve(name, requested)
        meta = store.meta(name, v)
        resp = send_file(
            store.bundle_path(name, v), mimetype="application/x-tar", as_attachment=True,
            download_name=f"{name}-v{v}.tar", etag=meta.sha256, conditional=True,
        )
        # A numbered version never changes; "current" does.
        resp.headers["Cache-Control"] = (
            "no-cache" if requested is None else "public, max-age=31536000, immutable"
        )
        resp.headers["X-Edgeloop-Model"] = name
        resp.headers["X-Edgeloop-Version"] = str(v)
        resp.headers["X-Edgeloop-Sha256"] = meta.sha256
        resp.headers["X-Edgeloop-Signature"] = meta.signature
        resp.headers["X-Edgeloop-Key-Id"] = meta.key_id
        resp.headers["X-Edgeloop-State"] = meta.state.value
        return resp

    @app.get("/v1/models/<name>/versions/<version>/card")
    def card(name: str, version: str) -> Response:
        v = store.resolve(name, _parse_version(version))
        return Response(store.read_member(name, v, CARD), mimetype="application/json")

    @app.get("/v1/models/<name>/versions/<version>/report")
    def report_redirect(name: str, version: str) -> Response:
        # Relative links in a report resolve against the directory, so add the slash.
        return redirect(f"{request.path}/", code=308)  # type: ignore[return-value]

    @app.get("/v1/models/<name>/versions/<version>/report/")
    def report_index(name: str, version: str) -> Response:
        v = store.resolve(name, _parse_version(version))
        members = store.members(name, v)
        if REPORT_PREFIX + "index.html" in members:
            return report_file(name, version, "index.html")
        files = sorted(m[len(REPORT_PREFIX):] for m in members if m.startswith(REPORT_PREFIX))
        items = "\n".join(
            f'<li><a href="{quote(f)}">{html.escape(f)}</a> '
            f"({members[REPORT_PREFIX + f][1]} bytes)</li>" for f in files
        ) or "<li>this bundle has no report files</li>"
        title = html.escape(f"{name} v{v}")
        body = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title} report</title>"
            f"</head><body><h1>{title}</h1><p><a href='../card'>model card (JSON)</a> · "
            f"<a href='../bundle'>bundle</a></p><ul>\n{items}\n</ul></body></html>"
        )
        resp = Response(body, mimetype="text/html")
        resp.headers["Content-Security-Policy"] = REPORT_CSP
        return resp

    @app.get("/v1/models/<name>/versions/<version>/report/<path:file>")
    def report_file(name: str, version: str, file: str) -> Response:
        v = store.resolve(name, _parse_version(version))
        data = store.read_member(name, v, REPORT_PREFIX + file)
        resp = Response(data, content_type=content_type(file))
        resp.headers["Content-Security-Policy"] = REPORT_CSP
        return resp

    # ------------------------------------------------------------------ writes
    @app.get("/v1/auth")
    def auth_check() -> Response:
        """Lets a job check its token before it spends time training."""
        authorize()
        return _json({"ok": True})

    @app.post("/v1/models")
    def upload() -> Response:
        authorize()
        approve = _flag("approve", True)
        tmp = store.upload_dir / f"upload-{os.getpid()}-{secrets.token_hex(6)}.tar"
        try:
            _save_upload(tmp, max_upload_bytes)
            try:
                published = store.publish(tmp, approve=approve)
            except RegistryError:
                metrics.publishes.labels(PublishResult.REFUSED.value).inc()
                raise
        finally:
            tmp.unlink(missing_ok=True)
        if published.duplicate:
            metrics.publishes.labels(PublishResult.DUPLICATE.value).inc()
        else:
            metrics.publishes.labels(PublishResult.PUBLISHED.value).inc()
            metrics.published_bytes.inc(published.size_bytes)
        result = announce(published.name) if approve else AnnounceResult.NOTHING.value
        return _json({"published": published.to_dict(), "announcement": result},
                     200 if published.duplicate else 201)

    def operation(op: str, name: str) -> Response:
        authorize()
        try:
            if op == "promote":
                current: VersionMeta | None = store.promote(name, _body_version())
                extra: dict[str, Any] = {}
            elif op == "rollback":
                current = store.rollback(name)
                extra = {}
            else:
                version = _body_version()
                current = store.retire(name, version)
                extra = {"retired": meta_json(store.meta(name, version))}
        except RegistryError as exc:
            metrics.operations.labels(op, exc.code.value).inc()
            raise
        metrics.operations.labels(op, "ok").inc()
        return _json({
            **extra, "current": None if current is None else meta_json(current),
            "announcement": announce(name),
        })

    @app.post("/v1/models/<name>/promote")
    def promote(name: str) -> Response:
        return operation("promote", name)

    @app.post("/v1/models/<name>/rollback")
    def rollback(name: str) -> Response:
        return operation("rollback", name)

    @app.post("/v1/models/<name>/retire")
    def retire(name: str) -> Response:
        return operation("retire", name)

    return app


def _save_upload(path: Path, limit: int) -> None:
    """Spool the request body (raw tar, or a multipart field ``bundle``) to ``path``."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("bundle")
        if upload is None:
            raise BadRequest("multipart upload needs a file field named 'bundle'")
        upload.save(path)
        return
    written = 0
    with path.open("wb") as f:
        while chunk := request.stream.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise RegistryError(f"upload exceeds the limit of {limit} bytes",
                                    ErrorCode.TOO_LARGE)
            f.write(chunk)
    if written == 0:
        raise BadRequest("empty body: POST the bundle tar as the request body")
