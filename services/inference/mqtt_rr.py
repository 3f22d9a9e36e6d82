"""MQTT request/response on ``edgeloop/v1/infer/<model>/request``.

MQTT v5 clients name their reply topic in the Response Topic property and get their
Correlation Data echoed back; MQTT 3.1.1 clients put ``reply_to`` and ``id`` in the JSON
payload. The reply is published with the request's QoS, so a client that asked for
at-least-once gets it back the same way. The paho callback only queues the request:
decoding and inference run on the workers, so the network thread keeps reading.
"""

from __future__ import annotations

import logging
import socket
import ssl

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient, Protocol
from services.contract.topics import INFER_REQUEST_ALL, ContractTopicError, parse_model_topic
from services.inference.metrics import InferenceMetrics
from services.inference.serving import Job, Result, Server, Transport

log = logging.getLogger(__name__)


def _valid_reply_topic(topic: str | None) -> bool:
    return topic is not None and 0 < len(topic) <= 512 and "+" not in topic and "#" not in topic


class MqttRequestHandler:
    def __init__(
        self, client: MqttClient, server: Server, metrics: InferenceMetrics,
        topic_filter: str = INFER_REQUEST_ALL, *, inline_when_idle: bool = False,
    ) -> None:
        self._client = client
        self._server = server
        self._metrics = metrics
        self._filter = topic_filter
        self._rlog = RateLimitedLog(log)
        self._v5 = client.protocol is Protocol.V5
        self._inline = inline_when_idle
        self._closing = False
        self._last: paho.MQTTMessageInfo | None = None
        self._template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]

    def start(self) -> None:
        self._client.subscribe(self._filter, self._on_request, qos=1)

    def _props(self, correlation: bytes) -> Properties:
        """PUBLISH properties carrying ``correlation``, built from a template: paho's
        Properties() and its attribute checks cost ~20x the copy, on every reply."""
        props: Properties = Properties.__new__(Properties)
        props.__dict__.update(self._template.__dict__)
        props.__dict__["CorrelationData"] = correlation
        return props

    def _on_request(self, msg: paho.MQTTMessage) -> None:
        """Queue the request. It is acknowledged to the broker (PUBACK) only once its reply
        is published, so a request this process took but never answered (a crash, a stop)
        is redelivered by the broker from the persistent session, not lost."""
        mid, msg_qos = msg.mid, int(msg.qos)
        try:
            model, last = parse_model_topic(msg.topic)
        except ContractTopicError:
            self._rlog.warning("bad-topic", "ignoring request on %s", msg.topic)
            self._client.ack(mid, msg_qos)
            return
        if last != "request":
            self._client.ack(mid, msg_qos)
            return
        if self._closing:
            # Not acknowledged: the broker keeps it for the next start of this service.
            return
        response_topic: str | None = None
        correlation: bytes | None = None
        if self._v5 and msg.properties is not None:
            response_topic = getattr(msg.properties, "ResponseTopic", None)
            correlation = getattr(msg.properties, "CorrelationData", None)
        qos = min(msg_qos, 1)

        def reply(result: Result) -> None:
            try:
                self._reply(result, response_topic, correlation, qos)
            finally:
                self._client.ack(mid, msg_qos)

        job = Job(model=model, transport=Transport.MQTT, reply=reply, payload=bytes(msg.payload))
        if self._inline and self._server.idle() and not self._more_waiting():
            self._server.run_inline(job)
        else:
            self._server.submit(job)

    def _more_waiting(self) -> bool:
        """Whether more bytes (further requests) already wait on the broker socket.

        If so, the request goes to the queue, where the workers batch it with the ones
        behind it; if not, running it inline on the network thread is the fastest answer.
        Unknown (TLS, closed) counts as waiting.
        """
        sock = self._client.raw.socket()
        if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
            return True
        try:
            return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _reply(
        self, result: Result, response_topic: str | None, correlation: bytes | None, qos: int
    ) -> None:
        message = result.response if result.response is not None else result.error
        if message is None:
            return
        topic = response_topic
        if not _valid_reply_topic(topic):
            # 3.1.1 clients (and v5 clients that prefer it) name the topic in the payload.
            topic = result.reply_to
        if topic is None or not _valid_reply_topic(topic):
            self._metrics.replies_failed.inc()
            self._rlog.warning("no-reply-topic", "request for %s has no usable reply topic; "
                               "dropped its %s", message.model, type(message).__name__)
            return
        props = None
        if self._v5 and correlation is not None:
            props = self._props(correlation)
        info = self._client.publish(topic, message.to_json(), qos=qos, properties=props)
        self._last = info
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            # NO_CONN: paho keeps QoS 1 replies and sends them after reconnecting.
            self._metrics.replies_failed.inc()

    def close(self) -> None:
        """Stop taking work: requests that still arrive stay unacknowledged at the broker,
        which delivers them again when this service (same client id) comes back."""
        self._closing = True

    def flush(self, timeout_s: float) -> None:
        """Wait (bounded) until the last reply has left, before disconnecting."""
        last = self._last
        if last is not None and self._client.connected:
            try:
                last.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                pass  # not sent: the session keeps QoS 1 replies for the next connect
