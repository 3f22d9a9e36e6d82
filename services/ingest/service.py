"""The ingest service: MQTT telemetry → validated batches → storage, acked after writing.

Threads: paho's network thread only queues what it receives; one writer thread decodes,
batches, writes and then acknowledges (manual ack), so a message is acknowledged to the
broker only once its readings are stored. After a crash the broker redelivers whatever
was not acknowledged and storage drops the (device, seq) it already holds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from prometheus_client import CollectorRegistry

from services.common.logs import RateLimitedLog
from services.common.metrics import MetricsServer
from services.common.mqtt import MqttClient, Protocol
from services.contract import topics
from services.contract.decode import Rejected, RejectReason
from services.contract.models import Command, CommandName, Reading
from services.ingest.config import IngestConfig
from services.ingest.decode import decode
from services.ingest.gaps import GapTracker, ResendRequest
from services.ingest.metrics import IngestMetrics
from services.ingest.storage import (
    RESERVED_FIELDS,
    Storage,
    StorageError,
    StorageUnavailable,
    open_storage,
)

log = logging.getLogger(__name__)

_GAP_CHECK_EVERY_S = 1.0


@dataclass(slots=True)
class _Inbound:
    mid: int
    qos: int
    topic: str
    payload: bytes
    #: Which connection delivered it: a packet id is only meaningful on its connection.
    generation: int


@dataclass(slots=True)
class _Batch:
    acks: list[_Inbound] = field(default_factory=list)
    #: Readings of each accepted message, kept apart so a refused batch can be split.
    groups: list[list[Reading]] = field(default_factory=list)
    readings: int = 0
    started: float = 0.0

    def clear(self) -> None:
        self.acks, self.groups, self.readings, self.started = [], [], 0, 0.0


_STOP = object()


class IngestService:
    def __init__(
        self,
        config: IngestConfig,
        registry: CollectorRegistry,
        *,
        storage: Storage | None = None,
    ) -> None:
        self.config = config
        self.metrics = IngestMetrics(registry)
        self._registry = registry
        self._storage = storage
        self._owns_storage = storage is None
        self._queue: queue.Queue[_Inbound | object] = queue.Queue(maxsize=config.queue_max)
        self.metrics.queue_depth.set_function(self._queue.qsize)
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        #: Set if the writer thread died: the process should exit non-zero.
        self.failed = threading.Event()
        self._gave_up = False
        self._writer: threading.Thread | None = None
        self._metrics_server: MetricsServer | None = None
        self._mqtt: MqttClient | None = None
        self._rl = RateLimitedLog(log)
        self._known = frozenset(config.devices) if config.devices else None
        self._skew_ns = int(config.max_future_skew_s * 1e9)
        self.gaps = GapTracker(
            grace_s=config.gap_grace_s, retry_s=config.resend_interval_s,
            max_attempts=config.resend_max_attempts, max_span=config.resend_max_span,
        )
        self.metrics_port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise RuntimeError("ingest not started")
        return self._storage

    @property
    def topic_filter(self) -> str:
        plain = topics.subscription(topics.DeviceTopic.TELEMETRY)
        if self.config.shared and self.config.mqtt.protocol is Protocol.V5:
            return topics.shared(self.config.group, plain)
        return plain

    def start(self) -> None:
        cfg = self.config
        if self._storage is None:
            s = cfg.storage
            self._storage = open_storage(
                s.url, state_dir=s.state_dir,
                token=s.token.get_secret_value() if s.token else None,
                username=s.username,
                password=s.password.get_secret_value() if s.password else None,
            )
        self.gaps.seed(self.storage.seq_ranges())
        if cfg.metrics_port:
            self._metrics_server = MetricsServer(self._registry, cfg.metrics_host,
                                                 cfg.metrics_port)
            self.metrics_port = self._metrics_server.start()
        self._writer = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._writer.start()
        mqtt = MqttClient(cfg.mqtt, cfg.client_id, manual_ack=True,
                          on_connection_change=self._on_connection)
        mqtt.raw.on_subscribe = self._on_subscribe
        mqtt.subscribe(self.topic_filter, self._handle, qos=1)
        self._mqtt = mqtt
        mqtt.start()
        log.info("ingest %s: %s -> %s (batch %d readings / %.2f s)", cfg.client_id,
                 self.topic_filter, self.storage.scheme, cfg.batch_max, cfg.batch_wait_s)

    def wait_subscribed(self, timeout_s: float | None = None) -> bool:
        return self._subscribed.wait(timeout_s)

    def stop(self) -> None:
        """Stop consuming, write and acknowledge what was received, disconnect, close."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join(timeout=self.config.stop_flush_timeout_s + 30)
        if self._mqtt is not None:
            self._mqtt.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        if self._owns_storage and self._storage is not None:
            self._storage.close()
        log.info("ingest stopped")

    # ------------------------------------------------------------------ mqtt thread
    def _on_connection(self, up: bool) -> None:
        self.metrics.connected.set(1 if up else 0)
        if not up:
            self._subscribed.clear()

    def _on_subscribe(self, *_args: Any) -> None:
        if not self._subscribed.is_set():
            log.info("ingest: subscribed to %s", self.topic_filter)
        self._subscribed.set()

    def _handle(self, msg: paho.MQTTMessage) -> None:
        if self._stopping.is_set():
            return  # not acknowledged: the broker keeps it for our next session
        generation = self._mqtt.connects if self._mqtt is not None else 0
        self.metrics.messages.inc()
        self._queue.put(_Inbound(msg.mid, msg.qos, msg.topic, bytes(msg.payload), generation))

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("ingest: writer failed; stopping")
            self.failed.set()

    def _loop(self) -> None:
        batch = _Batch()
        next_gap_check = time.monotonic() + _GAP_CHECK_EVERY_S
        cfg = self.config
        last_arrival = 0.0
        while True:
            now = time.monotonic()
            if batch.acks:
                deadline = min(batch.started + cfg.batch_wait_s, last_arrival + cfg.batch_idle_s)
            else:
                deadline = now + 1.0
            timeout = max(0.0, min(deadline, next_gap_check) - now)
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                # Whatever is still queued was received before the stop: store it too.
                while True:
                    try:
                        rest = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(rest, _Inbound):
                        self._accept(rest, batch)
                self._flush(batch, final=True)
                return
            now = time.monotonic()
            if isinstance(item, _Inbound):
                self._accept(item, batch)
                last_arrival = now
            if batch.acks and (
                batch.readings >= cfg.batch_max or now - batch.started >= cfg.batch_wait_s
                # Nothing more is coming for now; the broker may be holding messages back
                # until these are acknowledged (its max_inflight_messages window).
                or (item is None and now - last_arrival >= cfg.batch_idle_s)
                or (batch.readings == 0 and self._queue.empty())
            ):
                self._flush(batch)
            if now >= next_gap_check:
                next_gap_check = now + _GAP_CHECK_EVERY_S
                self._check_gaps()

    def _accept(self, item: _Inbound, batch: _Batch) -> None:
        if not batch.acks:
            batch.started = time.monotonic()
        batch.acks.append(item)
        try:
            readings = decode(
                item.topic, item.payload, now_ns=time.time_ns(), known_devices=self._known,
                max_future_skew_ns=self._skew_ns,
            )
            for r in readings:
                if not RESERVED_FIELDS.isdisjoint(r.values):
                    clash = sorted(RESERVED_FIELDS.intersection(r.values))
                    raise Rejected(RejectReason.BAD_SCHEMA,
                                   f"value names {clash} are reserved by storage")
        except Exception as exc:  # a decoder bug must not kill the writer
            if not isinstance(exc, Rejected):
                log.exception("ingest: decoding a message on %s failed", item.topic)
                exc = Rejected(RejectReason.BAD_SCHEMA, repr(exc)[:200])
            # Acknowledged with the batch (redelivering it would not make it valid), never
            # stored.
            self.metrics.rejected.labels(exc.reason.value).inc()
            self._rl.warning(f"reject:{exc.reason.value}", "ingest: rejected message on %s: %s",
                             item.topic, exc)
            return
        batch.groups.append(readings)
        batch.readings += len(readings)

    def _flush(self, batch: _Batch, *, final: bool = False) -> None:
        if batch.readings and not self._write(batch, final=final):
            # Left unacknowledged: the broker redelivers these on our next session.
            batch.clear()
            return
        self._ack(batch.acks)
        batch.clear()

    def _write(self, batch: _Batch, *, final: bool) -> bool:
        if self._gave_up:
            return False  # stopping with the backend down: leave the rest to the broker
        readings = [r for g in batch.groups for r in g]
        delay = 0.25
        give_up_at = time.monotonic() + self.config.stop_flush_timeout_s
        while True:
            t0 = time.perf_counter()
            try:
                result = self.storage.write(readings)
            except StorageUnavailable as exc:
                self.metrics.write_errors.labels("unavailable").inc()
                self._rl.error("storage-unavailable", "ingest: storage unavailable, retrying "
                               "%d readings: %s", len(readings), exc)
                stopping = final or self._stopping.is_set()
                if stopping and time.monotonic() >= give_up_at:
                    log.error("ingest: stopping with storage unavailable; %d readings and "
                              "what is still queued are left to the broker to redeliver",
                              len(readings))
                    self._gave_up = True
                    return False
                time.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            except StorageError as exc:
                self.metrics.write_errors.labels("refused").inc()
                self._rl.error("storage-refused", "ingest: storage refused a batch of %d "
                               "readings, writing its messages one by one: %s",
                               len(readings), exc)
                return self._write_apart(batch)
            self.metrics.batch_duration.observe(time.perf_counter() - t0)
            self._record(readings, result.written, result.duplicates)
            return True

    def _write_apart(self, batch: _Batch) -> bool:
        """Isolate the message(s) the backend refuses, so the rest are still stored."""
        for group in batch.groups:
            try:
                result = self.storage.write(group)
            except StorageUnavailable:
                return False
            except StorageError as exc:
                self.metrics.write_errors.labels("refused").inc()
                self._rl.error("storage-refused-one", "ingest: storage refused %d readings of "
                               "%s, dropped: %s", len(group), group[0].device, exc)
                # Dropped on purpose: not a gap to ask the collector about.
                for r in group:
                    self.gaps.observe(r.site, r.device, (r.seq,))
                continue
            self._record(group, result.written, result.duplicates)
        return True

    def _record(self, readings: list[Reading], written: int, duplicates: int) -> None:
        self.metrics.written.inc(written)
        self.metrics.duplicates.inc(duplicates)
        self.metrics.batch_readings.observe(len(readings))
        if not readings:
            return
        newest = max(r.ts for r in readings)
        self.metrics.lag.set((time.time_ns() - newest) / 1e9)
        by_device: dict[tuple[str, str], list[int]] = {}
        for r in readings:
            by_device.setdefault((r.site, r.device), []).append(r.seq)
        for (site, device), seqs in by_device.items():
            self.gaps.observe(site, device, seqs)

    def _ack(self, items: list[_Inbound]) -> None:
        mqtt = self._mqtt
        if mqtt is None:
            return
        generation = mqtt.connects
        for item in items:
            # A packet id from an earlier connection may now name another message: leave
            # it; the broker redelivers the original and storage drops the duplicate.
            if item.qos and item.generation == generation:
                mqtt.ack(item.mid, item.qos)

    def _check_gaps(self) -> None:
        check = self.gaps.check()
        self.metrics.missing.set(check.missing)
        if check.lost:
            self.metrics.lost.inc(check.lost)
            log.error("ingest: gave up on %d readings after %d resend requests", check.lost,
                      self.config.resend_max_attempts)
        for req in check.requests:
            self._request_resend(req)

    def _request_resend(self, req: ResendRequest) -> None:
        mqtt = self._mqtt
        if mqtt is None or not mqtt.connected:
            return
        cmd = Command(
            id=uuid.uuid4().hex, device=req.device, site=req.site, command=CommandName.RESEND,
            args={"from_seq": req.from_seq, "to_seq": req.to_seq},
        )
        mqtt.publish(topics.cmd(req.site, req.device), cmd.to_json(), qos=1)
        self.metrics.resend_requests.inc()
        self._rl.warning(f"resend:{req.device}", "ingest: %s/%s seqs %d..%d missing, asked "
                         "for a resend (attempt %d)", req.site, req.device, req.from_seq,
                         req.to_seq, req.attempt)
