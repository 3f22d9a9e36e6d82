"""The registry's HTTP API through Flask's test client (no sockets): auth, errors, report,
content types, metrics. The served-by-waitress tests are in tests/integration."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.modelkit.bundle import read_bundle, write_bundle
from services.modelkit.signing import generate_keypair
from services.trainer.registry.config import HttpSettings, RegistrySettings
from services.trainer.registry.server import RegistryServer
from tests.unit.test_registry_store import make_bundle

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def server(tmp_path: Path, registry: CollectorRegistry, *, token: str | None = TOKEN,
           key: bool = True, max_upload: int | None = None) -> RegistryServer:
    pair = generate_keypair(tmp_path / "keys")
    http = HttpSettings() if max_upload is None else HttpSettings(max_upload_bytes=max_upload)
    settings = RegistrySettings(
        root=tmp_path / "registry", signing_key=pair.private_path if key else None,
        token=SecretStr(token) if token else None, public_url="http://reg.example:8700",
        http=http,
    )
    return RegistryServer(settings, registry)


@pytest.fixture
def srv(tmp_path: Path, registry: CollectorRegistry) -> RegistryServer:
    return server(tmp_path, registry)


@pytest.fixture
def client(srv: RegistryServer) -> FlaskClient:
    return srv.app.test_client()


def upload(client: FlaskClient, path: Path, headers: dict[str, str] | None = None,
           query: str = "") -> tuple[int, dict[str, object]]:
    resp = client.post(f"/v1/models{query}", data=path.read_bytes(),
                       headers={**(headers if headers is not None else AUTH),
                                "Content-Type": "application/x-tar"})
    return resp.status_code, json.loads(resp.data)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_writes_need_the_token(client: FlaskClient, tmp_path: Path,
                               registry: CollectorRegistry) -> None:
    b = make_bundle(tmp_path / "b.tar")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        status, body = upload(client, b, headers)
        assert (status, body["code"]) == (401, "unauthorized")
    resp = client.post("/v1/models/temp-forecast/rollback")
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert sample(registry, "edgeloop_registry_auth_failures_total") == 4
    assert client.get("/v1/models").json == {"models": []}

    status, body = upload(client, b)
    assert status == 201
    published = body["published"]
    assert isinstance(published, dict) and published["version"] == 1
    assert body["announcement"] == "disabled"  # no MQTT configured
    status, body = upload(client, b)
    assert status == 200 and body["published"]["duplicate"] is True  # type: ignore[index]
    assert sample(registry, "edgeloop_registry_publishes_total", result="published") == 1
    assert sample(registry, "edgeloop_registry_publishes_total", result="duplicate") == 1


def test_without_mqtt_http_still_works_and_says_so_once(
    tmp_path: Path, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        client = server(tmp_path, registry).app.test_client()
        for i in range(2):
            status, body = upload(client, make_bundle(tmp_path / f"{i}.tar",
                                                      payload=str(i).encode()))
            assert (status, body["announcement"]) == (201, "disabled")
        assert client.post("/v1/models/temp-forecast/rollback", headers=AUTH).status_code == 200
    said = [r for r in caplog.records if "MQTT is not configured" in r.getMessage()]
    assert len(said) == 1


def test_no_token_means_read_only(tmp_path: Path, registry: CollectorRegistry) -> None:
    client = server(tmp_path, registry, token=None).app.test_client()
    status, body = upload(client, make_bundle(tmp_path / "b.tar"))
    assert (status, body["code"]) == (403, "writes_disabled")
    assert client.get("/healthz").json["writes"] is False  # type: ignore[index]


def test_no_signing_key_refuses_uploads(tmp_path: Path, registry: CollectorRegistry) -> None:
    client = server(tmp_path, registry, key=False).app.test_client()
    status, body = upload(client, make_bundle(tmp_path / "b.tar"))
    assert (status, body["code"]) == (503, "signing_unavailable")
    assert "keygen" in str(body["message"])


def test_errors_are_json_with_a_code(client: FlaskClient, tmp_path: Path) -> None:
    garbage = tmp_path / "g.tar"
    garbage.write_bytes(b"\0garbage" * 200)
    status, body = upload(client, garbage)
    assert (status, body["code"]) == (422, "bad_bundle")
    cases = [
        ("get", "/v1/models/nope", 404, "not_found"),
        ("get", "/v1/models/..%2Fetc", 404, "not_found"),
        ("get", "/nowhere", 404, "not_found"),
        ("delete", "/v1/models", 405, "method_not_allowed"),
        ("post", "/v1/models?approve=maybe", 400, "bad_request"),
    ]
    upload(client, make_bundle(tmp_path / "b.tar"))
    cases += [
        ("get", "/v1/models/temp-forecast/versions/9/bundle", 404, "not_found"),
        ("get", "/v1/models/temp-forecast/versions/x/card", 404, "not_found"),
        ("get", "/v1/models/temp-forecast/versions/1/report/nope.md", 404, "not_found"),
        ("post", "/v1/models/temp-forecast/promote", 400, "bad_request"),
        ("post", "/v1/models/temp-forecast/rollback", 409, "conflict"),
    ]
    for method, path, status_, code in cases:
        resp = getattr(client, method)(path, headers=AUTH)
        assert (resp.status_code, resp.json["code"]) == (status_, code), (path, resp.data)
        assert resp.mimetype == "application/json"


def test_upload_size_limit(tmp_path: Path, registry: CollectorRegistry) -> None:
    client = server(tmp_path, registry, max_upload=4096).app.test_client()
    big = make_bundle(tmp_path / "big.tar", payload=b"x" * 10_000)
    status, body = upload(client, big)
    assert (status, body["code"]) == (413, "too_large")
    assert client.get("/v1/models").json == {"models": []}


def test_listing_card_bundle_and_report(client: FlaskClient, tmp_path: Path) -> None:
    upload(client, make_bundle(tmp_path / "a.tar", payload=b"one"))
    upload(client, make_bundle(tmp_path / "b.tar", payload=b"two"), query="?approve=false")
    models = client.get("/v1/models").json["models"]  # type: ignore[index]
    assert models == [{"name": "temp-forecast", "current": 1, "latest": 2, "versions": 2,
                       "task": "forecast"}]
    detail = client.get("/v1/models/temp-forecast").json
    assert detail is not None
    assert [v["state"] for v in detail["versions"]] == ["approved", "candidate"]
    assert detail["versions"][0]["links"]["bundle"] == (
        "http://reg.example:8700/v1/models/temp-forecast/versions/1/bundle")

    resp = client.get("/v1/models/temp-forecast/versions/current/bundle")
    assert resp.mimetype == "application/x-tar" and resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Edgeloop-Version"] == "1"
    meta = client.get("/v1/models/temp-forecast/versions/1").json
    assert meta is not None and resp.headers["X-Edgeloop-Sha256"] == meta["sha256"]
    assert len(resp.data) == meta["size_bytes"]
    cached = client.get("/v1/models/temp-forecast/versions/1/bundle",
                        headers={"If-None-Match": f'"{meta["sha256"]}"'})
    assert cached.status_code == 304

    card = client.get("/v1/models/temp-forecast/versions/2/card")
    assert card.mimetype == "application/json" and card.json["version"] == 2  # type: ignore[index]

    assert client.get("/v1/models/temp-forecast/versions/1/report").status_code == 308
    index = client.get("/v1/models/temp-forecast/versions/1/report/")
    assert index.mimetype == "text/html"
    text = index.data.decode()
    assert 'href="index.md"' in text and 'href="loss.png"' in text and "../card" in text
    md = client.get("/v1/models/temp-forecast/versions/1/report/index.md")
    assert md.headers["Content-Type"] == "text/markdown; charset=utf-8"
    png = client.get("/v1/models/temp-forecast/versions/1/report/loss.png")
    assert png.mimetype == "image/png" and png.data.startswith(b"\x89PNG")
    assert "default-src 'none'" in png.headers["Content-Security-Policy"]

    ann = client.get("/v1/models/temp-forecast/announcement").json
    assert ann is not None and ann["version"] == 1 and ann["sha256"] == meta["sha256"]


def test_a_report_with_its_own_index_html_is_served_as_is(client: FlaskClient,
                                                           tmp_path: Path) -> None:
    card = read_bundle(make_bundle(tmp_path / "tmp.tar", report=False).read_bytes()).card
    b = write_bundle(tmp_path / "h.tar", card, {
        "model.tflite": b"m", "report/index.html": b"<h1>trained</h1>",
        "report/data/confusion.svg": b"<svg/>",
    })
    upload(client, b)
    resp = client.get("/v1/models/temp-forecast/versions/1/report/")
    assert resp.data == b"<h1>trained</h1>" and resp.mimetype == "text/html"
    svg = client.get("/v1/models/temp-forecast/versions/1/report/data/confusion.svg")
    assert svg.mimetype == "image/svg+xml"


def test_operations_and_metrics(client: FlaskClient, tmp_path: Path,
                                registry: CollectorRegistry) -> None:
    for i in range(3):
        upload(client, make_bundle(tmp_path / f"{i}.tar", payload=str(i).encode()))
    r = client.post("/v1/models/temp-forecast/rollback", headers=AUTH)
    assert r.status_code == 200 and r.json["current"]["version"] == 2  # type: ignore[index]
    r = client.post("/v1/models/temp-forecast/promote", json={"version": 3}, headers=AUTH)
    assert r.json["current"]["version"] == 3  # type: ignore[index]
    r = client.post("/v1/models/temp-forecast/retire", json={"version": 3}, headers=AUTH)
    body = r.json
    assert body is not None
    assert body["retired"]["state"] == "retired" and body["current"]["version"] == 2
    r = client.post("/v1/models/temp-forecast/promote", json={"version": 3}, headers=AUTH)
    assert (r.status_code, r.json["code"]) == (409, "conflict")  # type: ignore[index]

    text = client.get("/metrics").data.decode()
    assert "edgeloop_registry_models 1.0" in text
    assert sample(registry, "edgeloop_registry_versions", state="retired") == 1
    assert sample(registry, "edgeloop_registry_versions", state="approved") == 2
    assert sample(registry, "edgeloop_registry_operations_total",
                  operation="promote", result="conflict") == 1
    assert sample(registry, "edgeloop_registry_http_requests_total", endpoint="/v1/models",
                  method="POST", status="201") == 3
    assert sample(registry, "edgeloop_registry_announcements_total", result="disabled") == 6
    health = client.get("/healthz").json
    assert health is not None and health["mqtt"] == "disabled" and health["models"] == 1
