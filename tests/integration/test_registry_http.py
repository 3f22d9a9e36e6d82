"""The registry served by waitress on a loopback port, announcing through a real Mosquitto:
publish over HTTP with a token, fetch, verify, and the retained announcements the edge
acts on (late subscribers, rollback, retire, broker down at start)."""

from __future__ import annotations

import os
import queue
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import requests
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.common.mqtt import MqttClient, MqttSettings, Protocol
from services.contract.models import ModelAnnouncement
from services.contract.topics import model_announce
from services.modelkit.signing import generate_keypair, load_public_key
from services.modelkit.verify import VerificationError, verify_bundle
from services.trainer.registry.client import RegistryClient
from services.trainer.registry.config import HttpSettings, RegistrySettings
from services.trainer.registry.errors import (
    ModelNotFound,
    RegistryAuthError,
    RegistryConflict,
    RegistryUnreachable,
)
from services.trainer.registry.publisher import open_publisher
from services.trainer.registry.server import RegistryServer
from tests.support.servers import Mosquitto, ServerProcess, free_port
from tests.unit.test_registry_store import make_bundle

pytestmark = pytest.mark.integration

TOKEN = "integration-token"
NAME = "temp-forecast"
TOPIC = model_announce(NAME)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    pair = generate_keypair(tmp_path / "keys")
    return pair.private_path, pair.public_path


def start_registry(tmp_path: Path, key: Path, mqtt: MqttSettings | None,
                   registry: CollectorRegistry) -> RegistryServer:
    settings = RegistrySettings(
        root=tmp_path / "registry", signing_key=key, token=SecretStr(TOKEN),
        http=HttpSettings(host="127.0.0.1", port=0), mqtt=mqtt,
        mqtt_client_id=f"registry-{uuid.uuid4().hex[:6]}",
    )
    server = RegistryServer(settings, registry)
    server.start()
    return server


@pytest.fixture
def served(tmp_path: Path, keys: tuple[Path, Path], mqtt_settings: MqttSettings,
           registry: CollectorRegistry) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path, keys[0], mqtt_settings, registry)
    try:
        assert server.announcer.wait_connected(10)
        yield server
    finally:
        server.stop()


class Watcher:
    """A subscriber to one model's announcements (a late one gets the retained message)."""

    def __init__(self, settings: MqttSettings, topic: str = TOPIC) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = MqttClient(settings, f"watch-{uuid.uuid4().hex[:8]}", persistent=False)
        self.client.subscribe(topic, self.messages.put)
        self.client.start()
        assert self.client.wait_connected(10)

    def next(self, timeout_s: float = 10.0) -> tuple[ModelAnnouncement, bool]:
        msg = self.messages.get(timeout=timeout_s)
        return ModelAnnouncement.model_validate_json(msg.payload), bool(msg.retain)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.stop()


def late_announcement(settings: MqttSettings) -> ModelAnnouncement:
    with Watcher(settings) as late:
        ann, retained = late.next()
        assert retained, "a late subscriber must get the retained announcement"
        return ann


@pytest.mark.parametrize("protocol", [Protocol.V5, Protocol.V311])
def test_publish_fetch_verify_and_late_subscriber(
    tmp_path: Path, keys: tuple[Path, Path], mosquitto: Mosquitto,
    registry: CollectorRegistry, protocol: Protocol,
) -> None:
    mqtt = MqttSettings(host=mosquitto.host, port=mosquitto.port, protocol=protocol)
    server = start_registry(tmp_path, keys[0], mqtt, registry)
    try:
        assert server.announcer.wait_connected(10)
        bundle_path = make_bundle(tmp_path / "b.tar")
        with pytest.raises(RegistryAuthError):
            RegistryClient(server.base_url, None).publish(bundle_path)
        with pytest.raises(RegistryAuthError, match="401"):
            RegistryClient(server.base_url, "wrong").publish(bundle_path)

        client = RegistryClient(server.base_url, TOKEN)
        published = client.publish(bundle_path)
        assert (published.name, published.version, published.duplicate) == (NAME, 1, False)
        (summary,) = client.list_models()
        assert (summary.name, summary.current) == (NAME, 1)

        # The edge: retained announcement -> download its url -> verify -> parse.
        ann = late_announcement(mqtt)
        assert (ann.version, ann.sha256, ann.signature) == (
            1, published.sha256, published.signature)
        assert ann == client.announcement(NAME)
        assert ann.url.startswith(server.base_url)
        data = client.fetch_url(ann.url)
        bundle = verify_bundle(data, ann, load_public_key(keys[1]))
        assert bundle.card.version == 1 and bundle.model_bytes == b"TFL3 fake model"
        assert client.fetch_bundle(NAME) == data == client.fetch_bundle(NAME, 1)
        assert client.fetch_verified(NAME, load_public_key(keys[1])).card.name == NAME
        other = load_public_key(generate_keypair(tmp_path / "other").public_path)
        with pytest.raises(VerificationError, match="key_id"):
            verify_bundle(data, ann, other)
        assert client.card(NAME).version == 1

        resp = requests.get(f"{server.base_url}/healthz", timeout=5)
        assert resp.headers["Server"] == "edgeloop-registry"  # waitress's ident
        assert resp.json()["mqtt"] == "connected"
        assert registry.get_sample_value(
            "edgeloop_registry_announcements_total", {"result": "sent"}) == 1
    finally:
        server.stop()


def test_rollback_and_retire_announce_what_the_edge_should_run(
    served: RegistryServer, mqtt_settings: MqttSettings, tmp_path: Path
) -> None:
    client = RegistryClient(served.base_url, TOKEN)
    with Watcher(mqtt_settings) as watch:
        shas = {}
        for i in range(1, 4):
            p = client.publish(make_bundle(tmp_path / f"{i}.tar", payload=f"m{i}".encode()))
            shas[p.version] = p.sha256
            ann, _ = watch.next()
            assert (ann.version, ann.sha256, ann.retired) == (i, p.sha256, False)
        # A candidate is stored but not announced: the edge keeps running v3.
        cand = client.publish(make_bundle(tmp_path / "c.tar", payload=b"cand"), approve=False)
        assert cand.version == 4
        with pytest.raises(queue.Empty):
            watch.messages.get(timeout=0.5)

        assert client.rollback(NAME).version == 2
        ann, _ = watch.next()
        assert (ann.version, ann.sha256) == (2, shas[2])

        current = client.retire(NAME, 2)
        assert current is not None and current.version == 1
        ann, _ = watch.next()
        assert (ann.version, ann.retired) == (1, False)

        assert client.retire(NAME, 1) is None
        ann, _ = watch.next()
        assert (ann.version, ann.retired) == (1, True)
        with pytest.raises(RegistryConflict):
            client.rollback(NAME)

        assert client.promote(NAME, 4).version == 4
        ann, _ = watch.next()
        assert (ann.version, ann.retired) == (4, False)
    assert late_announcement(mqtt_settings).version == 4


def test_announcements_converge_when_the_broker_comes_up_later(
    tmp_path: Path, keys: tuple[Path, Path], registry: CollectorRegistry
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")  # port reserved, not started yet
    mqtt = MqttSettings(host=broker.host, port=broker.port)
    server = start_registry(tmp_path, keys[0], mqtt, registry)
    try:
        client = RegistryClient(server.base_url, TOKEN)
        published = client.publish(make_bundle(tmp_path / "b.tar"))
        assert server.announcer.connected is False
        assert registry.get_sample_value(
            "edgeloop_registry_announcements_total", {"result": "pending"}) == 1
        broker.start()
        try:
            # paho reconnects with backoff; the registry re-announces on connect, on its own
            # thread: wait for the broker's PUBACK before a late subscriber looks.
            assert server.announcer.wait_connected(30)
            deadline = time.monotonic() + 30
            while not registry.get_sample_value(
                    "edgeloop_registry_announcements_total", {"result": "sent"}):
                assert time.monotonic() < deadline, "no announcement after the broker came up"
                time.sleep(0.05)
            ann = late_announcement(mqtt)
            assert (ann.version, ann.sha256) == (1, published.sha256)
        finally:
            broker.stop()
    finally:
        server.stop()


def test_client_errors_are_specific(served: RegistryServer, tmp_path: Path) -> None:
    client = RegistryClient(served.base_url, TOKEN)
    with pytest.raises(ModelNotFound):
        client.fetch_bundle("nothing-here")
    with pytest.raises(ModelNotFound):
        client.announcement("nothing-here")
    dead = RegistryClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=5)
    with pytest.raises(RegistryUnreachable, match="connection refused"):
        dead.publish(make_bundle(tmp_path / "b.tar"))


def test_a_training_job_can_check_the_registry_before_it_trains(
    served: RegistryServer, tmp_path: Path
) -> None:
    open_publisher(served.base_url, token=TOKEN).check()
    with pytest.raises(RegistryAuthError):
        open_publisher(served.base_url, token="wrong").check()
    with pytest.raises(RegistryUnreachable):
        open_publisher(f"http://127.0.0.1:{free_port()}", token=TOKEN).check()
    publisher = open_publisher(served.base_url, token=TOKEN)
    assert publisher.publish(make_bundle(tmp_path / "b.tar")).version == 1


def test_cli_serve_under_waitress_with_cli_promote_and_sigterm(
    tmp_path: Path, keys: tuple[Path, Path], mosquitto: Mosquitto,
    mqtt_settings: MqttSettings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    root = tmp_path / "registry"
    monkeypatch.setenv("EDGELOOP_TOKEN", TOKEN)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    mqtt_flags = ["--mqtt-host", mosquitto.host, "--mqtt-port", str(mosquitto.port)]
    proc = ServerProcess(
        "registry",
        [sys.executable, "-m", "services.trainer.registry", "serve", "--root", str(root),
         "--signing-key", str(keys[0]), "--http-port", str(port), *mqtt_flags],
        tmp_path, port,
    )
    proc.start()
    try:
        base = f"http://127.0.0.1:{port}"
        client = RegistryClient(base, TOKEN)
        for i in range(2):
            client.publish(make_bundle(tmp_path / f"{i}.tar", payload=str(i).encode()))
        assert requests.get(f"{base}/healthz", timeout=5).headers["Server"] == \
            "edgeloop-registry"
        # A store command run next to the server announces through the same broker.
        from services.trainer.registry.cli import main

        assert main(["rollback", NAME, "--root", str(root), *mqtt_flags,
                     "--public-url", base]) == 0
        ann = late_announcement(mqtt_settings)
        assert ann.version == 1 and ann.url == f"{base}/v1/models/{NAME}/versions/1/bundle"
        assert client.announcement(NAME) == ann
        assert proc.proc is not None
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.proc.wait(timeout=15) == 0, proc.tail()
        assert "registry stopped" in proc.tail()
        # With the server gone, the retained state can still be re-published from the store.
        assert main(["announce", "--root", str(root), *mqtt_flags]) == 0
        with pytest.raises(RegistryUnreachable):
            client.list_models()
    finally:
        proc.stop()
