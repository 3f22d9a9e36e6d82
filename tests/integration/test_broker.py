"""The production broker config against a real Mosquitto: auth, per-role ACL, TLS.

Mosquitto grants a forbidden SUBSCRIBE and acknowledges a forbidden PUBLISH; the ACL bites
at delivery. So every "cannot" below is shown at delivery: a subscriber that is allowed to
see the topic gets the legitimate message and never the forged one. Messages from one
publisher reach one subscriber in order, so once a legitimate message sent *after* the
forged one has arrived, the forged one can no longer arrive: no timed waits.
"""

from __future__ import annotations

import queue
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from services.broker import certs
from services.common.mqtt import MqttClient, MqttSettings, Protocol
from services.contract import topics
from tests.support.broker import SecureBroker

pytestmark = pytest.mark.integration

WAIT_S = 10.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[SecureBroker]:
    server = SecureBroker(tmp_path / "broker")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def connack(settings: MqttSettings, client_id: str) -> ReasonCode:
    """Connect once (no reconnect) and return the broker's CONNACK reason."""
    version = (MQTTProtocolVersion.MQTTv5 if settings.protocol is Protocol.V5
               else MQTTProtocolVersion.MQTTv311)
    got: queue.Queue[ReasonCode] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
    if settings.username is not None:
        pw = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, pw)
    if settings.tls.ca_file is not None:
        client.tls_set(ca_certs=str(settings.tls.ca_file))
    client.on_connect = lambda _c, _u, _f, rc, _p: got.put(rc)
    client.connect(settings.host, settings.port, keepalive=10)
    client.loop_start()
    try:
        return got.get(timeout=WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()


class Inbox:
    """A connected client that records what it receives on one filter."""

    def __init__(self, settings: MqttSettings, client_id: str, topic_filter: str) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = MqttClient(settings, client_id, persistent=False)
        self.client.subscribe(topic_filter, self.messages.put)
        self.client.start()
        assert self.client.wait_connected(WAIT_S), f"{client_id} did not connect"

    def get(self) -> paho.MQTTMessage:
        return self.messages.get(timeout=WAIT_S)

    def drain(self) -> list[paho.MQTTMessage]:
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out

    def stop(self) -> None:
        self.client.stop()


def publisher(settings: MqttSettings, client_id: str) -> MqttClient:
    client = MqttClient(settings, client_id, persistent=False)
    client.start()
    assert client.wait_connected(WAIT_S), f"{client_id} did not connect"
    return client


def until_delivered(pub: MqttClient, topic: str, inbox: Inbox) -> None:
    """Publish a marker until the subscriber gets one: its SUBACK has then landed."""
    for _ in range(50):
        pub.publish(topic, b"marker").wait_for_publish(WAIT_S)
        try:
            inbox.messages.get(timeout=0.2)
        except queue.Empty:
            continue
        inbox.drain()
        return
    pytest.fail(f"subscription never delivered {topic}")


# ------------------------------------------------------------------ authentication
@pytest.mark.parametrize("protocol", [Protocol.V5, Protocol.V311])
def test_anonymous_and_wrong_password_are_refused(
    broker: SecureBroker, protocol: Protocol
) -> None:
    anonymous = connack(broker.settings(None, protocol=protocol), "anon")
    wrong = connack(broker.settings("dev-a", password="not-it", protocol=protocol), "wrong")
    unknown = connack(broker.settings("nobody", password="x", protocol=protocol), "nobody")
    right = connack(broker.settings("dev-a", protocol=protocol), "right")
    print(f"MQTT {protocol.value}: anonymous={anonymous}, wrong password={wrong}, "
          f"unknown user={unknown}, right password={right}")
    assert anonymous.is_failure and wrong.is_failure and unknown.is_failure
    assert not right.is_failure
    assert "not authorised" in broker.broker_log()


def test_tls_listener_also_requires_a_password(broker: SecureBroker) -> None:
    assert connack(broker.settings(None, tls=True, host="localhost"), "anon-tls").is_failure
    assert not connack(broker.settings("dev-a", tls=True, host="localhost"), "tls").is_failure


# ------------------------------------------------------------------ devices
def test_device_cannot_publish_as_another_device(broker: SecureBroker) -> None:
    ingest = Inbox(broker.settings("ingest"), "ingest-1",
                   topics.subscription(topics.DeviceTopic.TELEMETRY))
    dev_a = publisher(broker.settings("dev-a"), "dev-a")
    own, forged = topics.telemetry("site1", "dev-a"), topics.telemetry("site1", "dev-b")
    acks: queue.Queue[tuple[int, ReasonCode]] = queue.Queue()
    dev_a.raw.on_publish = lambda _c, _u, mid, rc, _p: acks.put((mid, rc))
    try:
        until_delivered(dev_a, own, ingest)
        forged_info = dev_a.publish(forged, b"forged")
        forged_info.wait_for_publish(WAIT_S)
        dev_a.publish(own, b"legit").wait_for_publish(WAIT_S)
        first = ingest.get()
        assert (first.topic, first.payload) == (own, b"legit")
        assert ingest.drain() == []
        # MQTT v5 also tells the publisher: its PUBACK carries "Not authorized".
        reasons = dict(acks.get(timeout=WAIT_S) for _ in range(acks.qsize()))
        print(f"forged publish acknowledged with: {reasons.get(forged_info.mid)}")
        assert reasons[forged_info.mid].is_failure
    finally:
        dev_a.stop()
        ingest.stop()


def test_device_publishes_only_telemetry_status_alert_event_of_its_own(
    broker: SecureBroker,
) -> None:
    observer = Inbox(broker.settings("ops"), "ops", "edgeloop/#")
    dev_a = publisher(broker.settings("dev-a"), "dev-a")
    try:
        until_delivered(dev_a, topics.status("s", "dev-a"), observer)
        forbidden = [
            topics.model_announce("m1"),  # only the registry announces models
            topics.infer_reply("m1", "alice"),  # only inference answers
            topics.cmd("s", "dev-b"),  # commands come from ingest/operators
            topics.summary("s", "dev-a"),  # summaries come from inference
        ]
        for topic in forbidden:
            dev_a.publish(topic, b"forged").wait_for_publish(WAIT_S)
        allowed = [topics.alert("s", "dev-a"), topics.event("s", "dev-a")]
        for topic in allowed:
            dev_a.publish(topic, b"ok").wait_for_publish(WAIT_S)
        got = [observer.get().topic for _ in allowed]
        assert got == allowed
        assert observer.drain() == []
    finally:
        dev_a.stop()
        observer.stop()


def test_commands_reach_only_the_addressed_device(broker: SecureBroker) -> None:
    inbox_a = Inbox(broker.settings("dev-a"), "dev-a", "edgeloop/v1/+/+/cmd")
    inbox_b = Inbox(broker.settings("dev-b"), "dev-b", "edgeloop/v1/+/+/cmd")
    ingest = publisher(broker.settings("ingest"), "ingest-1")
    try:
        until_delivered(ingest, topics.cmd("s", "dev-a"), inbox_a)
        until_delivered(ingest, topics.cmd("s", "dev-b"), inbox_b)
        ingest.publish(topics.cmd("s", "dev-a"), b"resend a").wait_for_publish(WAIT_S)
        ingest.publish(topics.cmd("s", "dev-b"), b"resend b").wait_for_publish(WAIT_S)
        assert inbox_a.get().payload == b"resend a"
        assert inbox_b.get().payload == b"resend b"
        # dev-a subscribed to every device's cmd, but b's command never reached it; it
        # was sent before b's own, which b has received.
        assert inbox_a.drain() == []
    finally:
        ingest.stop()
        inbox_a.stop()
        inbox_b.stop()


# ------------------------------------------------------------------ request/response roles
def test_clients_send_requests_and_read_only_their_own_replies(broker: SecureBroker) -> None:
    request = topics.infer_request("m1")
    inference = Inbox(broker.settings("inference"), "inference-1", topics.INFER_REQUEST_ALL)
    alice = Inbox(broker.settings("alice"), "alice", "edgeloop/v1/infer/+/reply/#")
    bob = Inbox(broker.settings("bob"), "bob", "edgeloop/v1/infer/+/reply/#")
    dev_a = publisher(broker.settings("dev-a"), "dev-a")
    alice_pub = publisher(broker.settings("alice"), "alice-pub")
    try:
        until_delivered(alice_pub, request, inference)
        dev_a.publish(request, b"from a device").wait_for_publish(WAIT_S)
        alice_pub.publish(request, b"from alice").wait_for_publish(WAIT_S)
        assert inference.get().payload == b"from alice"
        assert inference.drain() == []  # a device is not a client
        until_delivered(inference.client, topics.infer_reply("m1", "alice"), alice)
        until_delivered(inference.client, topics.infer_reply("m1", "bob"), bob)
        inference.client.publish(topics.infer_reply("m1", "alice"), b"for alice").wait_for_publish(
            WAIT_S
        )
        inference.client.publish(topics.infer_reply("m1", "bob"), b"for bob").wait_for_publish(
            WAIT_S
        )
        assert alice.get().payload == b"for alice"
        assert bob.get().payload == b"for bob"
        assert alice.drain() == [] and bob.drain() == []
    finally:
        for c in (dev_a, alice_pub):
            c.stop()
        for i in (inference, alice, bob):
            i.stop()


# ------------------------------------------------------------------ persistence
def test_retained_announcement_and_queued_readings_survive_a_restart(
    broker: SecureBroker,
) -> None:
    announce = topics.model_announce("m1")
    registry = publisher(broker.settings("registry"), "registry")
    registry.publish(announce, b"v1", retain=True).wait_for_publish(WAIT_S)
    registry.stop()
    # ingest with a persistent session goes away; a reading is queued for it.
    ingest = MqttClient(broker.settings("ingest"), "ingest-durable", persistent=True)
    got: queue.Queue[paho.MQTTMessage] = queue.Queue()
    ingest.subscribe(topics.subscription(topics.DeviceTopic.TELEMETRY), got.put)
    ingest.start()
    dev_a = publisher(broker.settings("dev-a"), "dev-a")
    try:
        assert ingest.wait_connected(WAIT_S)
        until_delivered_q(dev_a, topics.telemetry("s", "dev-a"), got)
        ingest.stop()
        dev_a.publish(topics.telemetry("s", "dev-a"), b"while away").wait_for_publish(WAIT_S)
    finally:
        dev_a.stop()
    try:
        broker.restart()  # SIGTERM: Mosquitto saves its state on the way out
        ingest.start()
        assert got.get(timeout=WAIT_S).payload == b"while away"
        watcher = Inbox(broker.settings("inference"), "inference-1", topics.MODEL_ANNOUNCE_ALL)
        try:
            msg = watcher.get()
            assert (msg.topic, msg.payload, msg.retain) == (announce, b"v1", True)
        finally:
            watcher.stop()
    finally:
        ingest.stop()


def until_delivered_q(
    pub: MqttClient, topic: str, inbox: queue.Queue[paho.MQTTMessage]
) -> None:
    for _ in range(50):
        pub.publish(topic, b"marker").wait_for_publish(WAIT_S)
        try:
            inbox.get(timeout=0.2)
            while not inbox.empty():
                inbox.get_nowait()
            return
        except queue.Empty:
            continue
    pytest.fail(f"subscription never delivered {topic}")


# ------------------------------------------------------------------ TLS
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_tls_with_hostname_verification(broker: SecureBroker, host: str) -> None:
    ingest = Inbox(broker.settings("ingest"), "ingest-1",
                   topics.subscription(topics.DeviceTopic.TELEMETRY))
    # The device talks TLS, verifying the broker's name; ingest reads on the plain listener.
    dev_a = publisher(broker.settings("dev-a", tls=True, host=host), "dev-a")
    try:
        assert dev_a.settings.tls.verify_hostname
        until_delivered(dev_a, topics.telemetry("s", "dev-a"), ingest)
        dev_a.publish(topics.telemetry("s", "dev-a"), b"over tls").wait_for_publish(WAIT_S)
        assert ingest.get().payload == b"over tls"
    finally:
        dev_a.stop()
        ingest.stop()


def _handshake(broker: SecureBroker, ctx: ssl.SSLContext, server_hostname: str) -> str:
    with socket.create_connection((broker.host, broker.tls_port), timeout=WAIT_S) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return str(tls.version())


def test_tls_refuses_a_wrong_hostname(broker: SecureBroker) -> None:
    ctx = broker.client_tls_context()
    assert _handshake(broker, ctx, "localhost").startswith("TLS")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"[Hh]ostname mismatch"):
        _handshake(broker, ctx, "mqtt.wrong.example")


def test_tls_refuses_an_untrusted_ca(broker: SecureBroker, tmp_path: Path) -> None:
    other_ca, _ = certs.ensure_ca(tmp_path / "other-ca")
    ctx = broker.client_tls_context(other_ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(broker, ctx, "localhost")
    settings = broker.settings("dev-a", tls=True, host="localhost")
    untrusted = settings.model_copy(
        update={"tls": settings.tls.model_copy(update={"ca_file": other_ca})}
    )
    with pytest.raises(ssl.SSLError):
        connack(untrusted, "dev-a-untrusted")


def test_extra_names_go_into_the_server_certificate(tmp_path: Path) -> None:
    server = SecureBroker(tmp_path / "named", cert_names=["mqtt.edgeloop.test"])
    server.start()
    try:
        ctx = server.client_tls_context()
        # The name does not resolve here: verify it over a socket to 127.0.0.1.
        assert _handshake(server, ctx, "mqtt.edgeloop.test").startswith("TLS")
        assert _handshake(server, ctx, "localhost").startswith("TLS")
    finally:
        server.stop()


# ------------------------------------------------------------------ the image's scripts
ENTRYPOINT = Path(__file__).resolve().parents[2] / "services" / "broker" / "docker-entrypoint"


def test_rendered_config_loads_without_warnings(broker: SecureBroker) -> None:
    assert connack(broker.settings("ops"), "ops").value == 0
    log = broker.broker_log()
    assert "running" in log
    assert "Warning" not in log and "Error" not in log, log


def test_entrypoint_healthcheck_is_healthy_only_while_the_broker_answers(
    broker: SecureBroker,
) -> None:
    # The port comes from the config's first listener, as in the image.
    env = {"PATH": "/usr/bin:/bin:/usr/sbin", "EDGELOOP_BROKER_CONFIG": str(broker.config_path)}
    alive = subprocess.run([str(ENTRYPOINT), "healthcheck"], env=env, check=False, timeout=30)
    broker.stop()
    dead = subprocess.run([str(ENTRYPOINT), "healthcheck"], env=env, check=False, timeout=30)
    assert (alive.returncode, dead.returncode != 0) == (0, True)


def test_entrypoint_names_every_missing_file(tmp_path: Path) -> None:
    from services.broker.cli import main

    assert main(["render", "--out", str(tmp_path), "--password-file", str(tmp_path / "pw"),
                 "--acl-file", str(tmp_path / "acl")]) == 0
    result = subprocess.run([str(ENTRYPOINT), "mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
                            capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 78
    assert f"password_file {tmp_path / 'pw'}" in result.stderr
    assert "acl_file" not in result.stderr  # rendered, so present
    assert "cafile /mosquitto/certs/ca.crt" in result.stderr
