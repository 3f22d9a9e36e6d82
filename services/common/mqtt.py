"""The one MQTT client every edgeloop service uses (paho-mqtt 2.x underneath).

What it does for you:

* ``connect_async`` + ``loop_start``: paho's network thread reconnects by itself with
  backoff, so a broker restart is an event, not a crash.
* A stable client id and a persistent session (MQTT v5 ``clean_start=False`` with a
  session expiry; 3.1.1 ``clean_session=False``), so QoS 1 messages queued while a
  subscriber was away are delivered when it returns.
* Subscriptions are re-sent on every connect (the broker may have lost the session).
* TCP_NODELAY on the socket after connect: QoS 1 request/response on loopback otherwise
  waits ~88 ms on Nagle's algorithm.
* An optional last will (retained ``offline`` status).
* MQTT 3.1.1 as well as v5, because the embedded broker (amqtt) speaks only 3.1.1.
"""

from __future__ import annotations

import enum
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import Field, SecretStr

from services.common.config import Settings

log = logging.getLogger(__name__)

MessageHandler = Callable[[paho.MQTTMessage], None]


class Protocol(enum.StrEnum):
    V5 = "5"
    V311 = "3.1.1"


class TlsSettings(Settings):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: Never disable hostname verification in production; tests use real certs.
    verify_hostname: bool = True


class MqttSettings(Settings):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    protocol: Protocol = Protocol.V5
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    #: Seconds the broker keeps our session (and queued QoS 1 messages) while we are away.
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    #: QoS 1 messages in flight before paho queues locally.
    max_inflight: int = Field(default=200, ge=1, le=65535)


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(slots=True)
class _Subscription:
    topic_filter: str
    qos: int
    handler: MessageHandler
    no_local: bool = False


def plain_filter(topic_filter: str) -> str:
    """``$share/<group>/a/+/b`` -> ``a/+/b``; other filters unchanged."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic_filter


class MqttClient:
    """A reconnecting MQTT client with subscriptions that survive reconnects."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        will: Will | None = None,
        persistent: bool = True,
        manual_ack: bool = False,
        on_connection_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.protocol = settings.protocol
        self._subs: dict[str, _Subscription] = {}
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._on_change = on_connection_change
        self._persistent = persistent
        self._stopping = False
        self.connects = 0
        version = (
            MQTTProtocolVersion.MQTTv5 if self.protocol is Protocol.V5
            else MQTTProtocolVersion.MQTTv311
        )
        kwargs: dict[str, Any] = {}
        if self.protocol is Protocol.V311:
            kwargs["clean_session"] = not persistent
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **kwargs
        )
        # paho's own logger is left off: it reports every retry while the broker is
        # down as an ERROR; connection changes are logged here, once each.
        if manual_ack:
            self._client.manual_ack_set(True)
        if settings.username:
            pw = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, pw)
        if settings.tls.ca_file is not None:
            self._client.tls_set(
                ca_certs=str(settings.tls.ca_file),
                certfile=str(settings.tls.cert_file) if settings.tls.cert_file else None,
                keyfile=str(settings.tls.key_file) if settings.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            self._client.tls_insecure_set(not settings.tls.verify_hostname)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.max_inflight_messages_set(settings.max_inflight)
        self._client.max_queued_messages_set(0)  # unlimited: callers bound their own queues
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        props = None
        clean_start: bool = True
        if self.protocol is Protocol.V5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self._persistent:
                props.SessionExpiryInterval = self.settings.session_expiry_s
                clean_start = False
            else:
                clean_start = True
        log.info(
            "mqtt %s connecting to %s:%d (MQTT %s%s)",
            self.client_id, self.settings.host, self.settings.port, self.protocol.value,
            ", TLS" if self.settings.tls.ca_file else "",
        )
        if self.protocol is Protocol.V5:
            self._client.connect_async(
                self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s,
                clean_start=clean_start, properties=props,
            )
        else:
            self._client.connect_async(
                self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
            )
        self._client.loop_start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect cleanly (no last will) and stop the network thread."""
        self._stopping = True
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
        self._connected.clear()

    def wait_connected(self, timeout_s: float | None = None) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def raw(self) -> paho.Client:
        """The underlying paho client, for what this wrapper does not cover."""
        return self._client

    # ------------------------------------------------------------------ messaging
    def subscribe(
        self, topic_filter: str, handler: MessageHandler, qos: int = 1, *, no_local: bool = False
    ) -> None:
        """Subscribe now (if connected) and again after every reconnect."""
        sub = _Subscription(topic_filter, qos, handler, no_local)
        with self._lock:
            self._subs[topic_filter] = sub
        # paho matches callbacks against a message's topic, which never carries a shared
        # subscription's "$share/<group>/" prefix: register the plain filter.
        self._client.message_callback_add(plain_filter(topic_filter), self._wrap(handler))
        if self.connected:
            self._send_subscribe([sub])

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> paho.MQTTMessageInfo:
        if self.protocol is not Protocol.V5:
            properties = None
        return self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a message received with manual_ack (after it is safely stored)."""
        self._client.ack(mid, qos)

    # ------------------------------------------------------------------ callbacks
    def _wrap(
        self, handler: MessageHandler
    ) -> Callable[[paho.Client, Any, paho.MQTTMessage], None]:
        def _call(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
            try:
                handler(msg)
            except Exception:
                # A handler bug must not kill paho's network thread.
                log.exception("handler for %s failed", msg.topic)

        return _call

    def _send_subscribe(self, subs: list[_Subscription]) -> None:
        for sub in subs:
            if self.protocol is Protocol.V5:
                from paho.mqtt.subscribeoptions import SubscribeOptions

                opts = SubscribeOptions(qos=sub.qos, noLocal=sub.no_local)
                self._client.subscribe(sub.topic_filter, options=opts)
            else:
                self._client.subscribe(sub.topic_filter, qos=sub.qos)

    def _on_connect(
        self, client: paho.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            log.error("mqtt %s: broker refused connection: %s", self.client_id, reason)
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                log.debug("TCP_NODELAY not set", exc_info=True)
        self.connects += 1
        with self._lock:
            subs = list(self._subs.values())
        self._send_subscribe(subs)
        log.info(
            "mqtt %s connected (session present: %s, %d subscriptions)",
            self.client_id, getattr(flags, "session_present", "?"), len(subs),
        )
        self._connected.set()
        if self._on_change:
            self._on_change(True)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stopping:
            log.warning("mqtt %s disconnected: %s; reconnecting", self.client_id, reason)
        if self._on_change:
            self._on_change(False)
