"""The shared MQTT client against a real Mosquitto: v5 and 3.1.1, resubscribe on restart."""

from __future__ import annotations

import queue

import paho.mqtt.client as paho
import pytest

from services.common.mqtt import MqttClient, MqttSettings, Protocol, Will
from tests.support.servers import Mosquitto

pytestmark = pytest.mark.integration


def deliver(pub: MqttClient, got: queue.Queue[bytes], topic: str, payload: bytes) -> None:
    """Publish until the subscriber has it (its subscription may still be landing)."""
    for _ in range(50):
        pub.publish(topic, payload).wait_for_publish(5)
        try:
            while got.get(timeout=0.2) != payload:
                pass
            return
        except queue.Empty:
            continue
    pytest.fail(f"{payload!r} was never delivered on {topic}")


@pytest.mark.parametrize("protocol", [Protocol.V5, Protocol.V311])
def test_publish_subscribe_survives_broker_restart(
    mosquitto: Mosquitto, protocol: Protocol
) -> None:
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, protocol=protocol)
    got: queue.Queue[bytes] = queue.Queue()
    sub = MqttClient(settings, f"sub-{protocol.value}")
    sub.subscribe("t/#", lambda m: got.put(m.payload))
    pub = MqttClient(settings, f"pub-{protocol.value}",
                     will=Will("status/pub", b"offline"))
    sub.start()
    pub.start()
    try:
        assert sub.wait_connected(10) and pub.wait_connected(10)
        # "Connected" is not "subscribed": the SUBACK may still be on its way.
        deliver(pub, got, "t/1", b"before")
        mosquitto.kill()
        mosquitto.start()
        assert sub.wait_connected(40) and pub.wait_connected(40)
        deliver(pub, got, "t/2", b"after")
        assert sub.connects >= 2
    finally:
        pub.stop()
        sub.stop()


def test_last_will_is_published_on_abrupt_loss(mosquitto: Mosquitto) -> None:
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, keepalive_s=5)
    got: queue.Queue[paho.MQTTMessage] = queue.Queue()
    watcher = MqttClient(settings, "watcher")
    watcher.subscribe("status/#", got.put)
    watcher.start()
    dev = MqttClient(settings, "dev", will=Will("status/dev", b"offline"))
    dev.start()
    try:
        assert watcher.wait_connected(10) and dev.wait_connected(10)
        # Close the socket without DISCONNECT: the broker must send the will.
        sock = dev.raw.socket()
        dev.raw.loop_stop()
        assert sock is not None
        sock.close()
        msg = got.get(timeout=20)
        assert msg.payload == b"offline"
    finally:
        watcher.stop()


def test_shared_subscription_handler_is_called(mosquitto: Mosquitto) -> None:
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port)
    got: queue.Queue[bytes] = queue.Queue()
    sub = MqttClient(settings, "shared-sub")
    sub.subscribe("$share/g/t/+/x", lambda m: got.put(m.payload))
    pub = MqttClient(settings, "shared-pub")
    sub.start()
    pub.start()
    try:
        assert sub.wait_connected(10) and pub.wait_connected(10)
        deliver(pub, got, "t/1/x", b"hello")
    finally:
        pub.stop()
        sub.stop()
