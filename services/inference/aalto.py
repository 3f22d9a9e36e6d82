"""Adapter for the Aalto edge-ML tutorial's unchanged clients.

Its ``send_request.py`` publishes ``index,value,threshold`` as plain text on
``request/<station>/<datapoint>/<alarm>`` and prints whatever plain text arrives on
``predict/<station>/<datapoint>/<alarm>``. This adapter subscribes to the request
filter, turns each line into an edgeloop request for the configured model and answers
in plain text on the reply topic:

* ``columns`` mode: the chosen comma-separated fields are the model's columns;
* ``window`` mode: each topic keeps its last ``window`` values of ``value_column`` and
  the forecaster predicts the next one (until the window is full the reply says so).

The tutorial client connects with MQTT 3.1.1 and QoS 0, so replies use QoS 0 by default.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

import paho.mqtt.client as paho

from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient
from services.contract.models import InferenceRequest
from services.inference.config import AaltoMode, AaltoSettings
from services.inference.models import ModelSet, UnknownModelError
from services.inference.serving import Job, Result, Server, Transport

log = logging.getLogger(__name__)

MAX_LINE = 1024


class AaltoAdapter:
    def __init__(
        self, settings: AaltoSettings, client: MqttClient, server: Server, models: ModelSet
    ) -> None:
        if not settings.model:
            raise ValueError("aalto.model is required")
        self.settings = settings
        self.model = settings.model
        self._client = client
        self._server = server
        self._models = models
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._rlog = RateLimitedLog(log)

    def start(self) -> None:
        self._client.subscribe(self.settings.request_filter, self._on_request, qos=0)

    def reply_topic(self, request_topic: str) -> str:
        suffix = request_topic.split("/", 1)[1] if "/" in request_topic else request_topic
        return self.settings.reply_topic.format(suffix)

    def _send(self, topic: str, text: str) -> None:
        self._client.publish(topic, text.encode(), qos=self.settings.qos)

    def _on_request(self, msg: paho.MQTTMessage) -> None:
        try:
            self._take(msg)
        finally:
            self._client.ack(msg.mid, int(msg.qos))  # the tutorial publishes with QoS 0

    def _take(self, msg: paho.MQTTMessage) -> None:
        reply_topic = self.reply_topic(msg.topic)
        if "+" in reply_topic or "#" in reply_topic:
            return
        try:
            line = bytes(msg.payload[:MAX_LINE]).decode().strip()
            fields = [float(x) for x in line.split(",")]
        except (UnicodeDecodeError, ValueError):
            self._rlog.warning("aalto-bad", "aalto request on %s is not comma-separated numbers",
                               msg.topic)
            self._send(reply_topic, "error: expected index,value,threshold")
            return
        index = fields[0] if fields else 0.0
        s = self.settings
        try:
            if s.mode is AaltoMode.COLUMNS:
                raw: list[float] = [fields[i] for i in s.columns]
            else:
                card = self._models.get(self.model).card
                with self._lock:
                    win = self._windows.get(msg.topic)
                    if win is None or win.maxlen != card.input.window:
                        win = self._windows[msg.topic] = deque(win or (),
                                                               maxlen=card.input.window)
                    win.append(fields[s.value_column])
                    values = list(win)
                if len(values) < card.input.window:
                    self._send(reply_topic, f"{self.model}: warming up "
                               f"({len(values)}/{card.input.window} values)")
                    return
                raw = values
        except IndexError:
            self._send(reply_topic, f"error: expected at least {max(s.columns) + 1} fields")
            return
        except UnknownModelError:
            self._send(reply_topic, f"error: model {self.model} is not loaded")
            return

        def reply(result: Result) -> None:
            if result.error is not None or result.response is None:
                err = result.error
                self._send(reply_topic, f"error: {err.code.value}: {err.message}" if err
                           else "error")
                return
            r = result.response
            flat = result.rows[0].tolist() if result.rows is not None else r.outputs
            if r.labels and len(r.labels) == len(flat):
                best = max(range(len(flat)), key=lambda i: flat[i])
                prediction = f"{r.labels[best]} ({flat[best]:.3f})"
            else:
                prediction = ", ".join(f"{v:.4f}" for v in flat)
            self._send(reply_topic, s.reply_format.format(
                model=r.model, version=r.version, prediction=prediction, outputs=flat,
                index=index))

        self._server.submit(Job(model=self.model, transport=Transport.AALTO, reply=reply,
                                request=InferenceRequest(inputs=list(raw))))
