"""The collector: a source thread feeds readings to a publisher thread that owns the outbox.

::

    source thread ──Chunk──▶ inbox (bounded) ──▶ publisher thread ──▶ outbox (SQLite)
                                                     │  ▲                  │ pending, in order
                                                     │  └── PUBACK ◀──┐    ▼
                                                     └──── MQTT QoS 1 ─┴─ broker

The publisher commits new readings (with their seqs) and the acknowledgements that came
in since the last round in one transaction, then hands pending readings to the MQTT
client in seq order, as one Reading or as a ReadingBatch when several are waiting. The
MQTT client keeps unacknowledged messages and resends them after a reconnect; the
outbox covers everything else (a restart, a crash). The collector never publishes what
is not committed, and marks nothing done before the broker's PUBACK.
"""

from __future__ import annotations

import collections
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry

from services.collector.config import CollectorConfig, SourceKind
from services.collector.metrics import CollectorMetrics, CommandResult, MessageKind
from services.collector.outbox import Outbox, Row, Stored
from services.collector.source import Chunk, Source, SourceContext, SourceState
from services.common.logs import RateLimitedLog
from services.common.metrics import MetricsServer
from services.common.mqtt import MqttClient, Will
from services.contract import topics
from services.contract.decode import Rejected, decode_as
from services.contract.limits import MAX_PAYLOAD_BYTES, MAX_SEQ
from services.contract.models import (
    READING,
    READINGS,
    Command,
    CommandName,
    DeviceState,
    DeviceStatus,
)

log = logging.getLogger(__name__)
#: Largest RESEND range served at once; ingest asks again for what is left.
MAX_RESEND = 100_000
_INBOX_CHUNKS = 64
#: Acknowledgements wait at most this long (or for this many readings) to be committed.
ACK_COMMIT_S = 0.25
ACK_COMMIT_READINGS = 20_000
_MAX_INFO = 32


@dataclass(frozen=True, slots=True)
class _Flight:
    first: int
    last: int
    count: int
    kind: MessageKind
    resend: bool


@dataclass(frozen=True, slots=True)
class _Ack:
    mid: int
    failed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class _Resend:
    id: str
    from_seq: int
    to_seq: int


def _as_seq(value: object) -> int | None:
    """A seq from command args: an int, or a float/str holding one (JSON is loose)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= MAX_SEQ else None


def make_source(config: CollectorConfig) -> Source:
    if config.source is SourceKind.SERIAL:
        from services.collector.serial_source import SerialSource

        return SerialSource(config)
    if config.source is SourceKind.REPLAY:
        from services.collector.replay import ReplaySource

        return ReplaySource(config)
    from services.collector.sim_source import SimulatorSource

    return SimulatorSource(config)


class Collector:
    def __init__(
        self, config: CollectorConfig, registry: CollectorRegistry, *, source: Source | None = None
    ) -> None:
        self.config = config
        self.metrics = CollectorMetrics(registry)
        self._registry = registry
        self.source = source or make_source(config)
        self._rl = RateLimitedLog(log)
        self._topic = topics.telemetry(config.site, config.device)
        self._status_topic = topics.status(config.site, config.device)
        self._cmd_topic = topics.cmd(config.site, config.device)
        ident = f'"device":"{config.device}","site":"{config.site}"'
        self._single_prefix = f'{{"schema":"{READING}",{ident},'
        self._batch_prefix = f'{{"schema":"{READINGS}",{ident},"samples":['

        self._source_stop = threading.Event()
        self._pump_stop = threading.Event()
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._done = threading.Event()
        self._source_finished = threading.Event()
        self._inbox: queue.Queue[Chunk] = queue.Queue(maxsize=_INBOX_CHUNKS)
        self._events: queue.SimpleQueue[_Ack | _Resend] = queue.SimpleQueue()
        self._inflight: dict[int, _Flight] = {}
        self._resends: collections.deque[_Resend] = collections.deque()
        self._cursor = -1
        self._positions: dict[str, int] = {}

        self._status_lock = threading.Lock()
        self._state = DeviceState.ONLINE
        self._detail = ""
        self._info: dict[str, str] = {"source": config.source.value, "collector": config.client_id}

        self._outbox: Outbox | None = None
        self._mqtt: MqttClient | None = None
        self._metrics_server: MetricsServer | None = None
        self._pump_thread: threading.Thread | None = None
        self._source_thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self.metrics_port: int | None = None
        self.failed: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        cfg = self.config
        self._started = True
        self._outbox = Outbox(
            cfg.outbox_path, device=cfg.device, site=cfg.site,
            max_pending=cfg.outbox_max, retain_acked=cfg.resend_retention,
        )
        self._positions = self._outbox.positions()
        self.metrics.buffered.set(self._outbox.pending_count)
        self.metrics.info.info({"device": cfg.device, "site": cfg.site, "source": cfg.source})
        log.info(
            "collector %s: outbox %s holds %d unacknowledged readings, next seq %d",
            cfg.client_id, cfg.outbox_path, self._outbox.pending_count, self._outbox.next_seq,
        )
        if cfg.metrics_port:
            server = MetricsServer(self._registry, cfg.metrics_host, cfg.metrics_port)
            try:
                self.metrics_port = server.start()
                self._metrics_server = server
                log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, self.metrics_port)
            except OSError as exc:
                # Readings matter more than their metrics: keep collecting, say so loudly.
                log.error(
                    "metrics port %s:%d unavailable (%s); running without /metrics",
                    cfg.metrics_host, cfg.metrics_port, exc,
                )
        will = Will(
            self._status_topic, self._status_payload(DeviceState.OFFLINE, "connection lost")
        )
        self._mqtt = MqttClient(
            cfg.mqtt, cfg.client_id, will=will, persistent=True,
            on_connection_change=self._on_connection_change,
        )
        self._mqtt.raw.on_publish = self._on_publish
        self._mqtt.subscribe(self._cmd_topic, self._on_command, qos=1)
        self._mqtt.start()
        self._pump_thread = threading.Thread(
            target=self._pump, name="collector-publisher", daemon=True
        )
        self._pump_thread.start()
        self._source_thread = threading.Thread(
            target=self._run_source, name="collector-source", daemon=True
        )
        self._source_thread.start()

    def wait_done(self, timeout_s: float | None = None) -> bool:
        """True once a finite source has finished and the broker acknowledged everything."""
        return self._done.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._mqtt is not None and self._mqtt.connected

    @property
    def pending(self) -> int:
        return self._outbox.pending_count if self._outbox else 0

    def stop(self) -> None:
        """Stop reading, flush to the broker within ``flush_timeout_s``, close the outbox."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        self._source_stop.set()
        if self._source_thread is not None:
            self._source_thread.join(timeout=10)
        self._pump_stop.set()
        self._wake.set()
        pump_alive = False
        if self._pump_thread is not None:
            self._pump_thread.join(timeout=self.config.flush_timeout_s + 30)
            pump_alive = self._pump_thread.is_alive()
            if pump_alive:
                log.error("publisher did not stop; unsent readings stay in the outbox")
        self._closed.set()
        mqtt = self._mqtt
        if mqtt is not None:
            if mqtt.connected:
                info = mqtt.publish(
                    self._status_topic, self._status_payload(DeviceState.OFFLINE, "stopped"),
                    qos=1, retain=True,
                )
                try:
                    info.wait_for_publish(2.0)
                except (RuntimeError, ValueError):
                    log.debug("offline status not confirmed", exc_info=True)
            mqtt.stop()
        if self._outbox is not None and not pump_alive:
            pending = self._outbox.pending_count
            self._outbox.close()
            log.info(
                "collector stopped: %d readings left in the outbox for the next start", pending
            )
        if self._metrics_server is not None:
            self._metrics_server.stop()

    # ------------------------------------------------------------------ source side
    def _run_source(self) -> None:
        ctx = SourceContext(
            metrics=self.metrics, stop=self._source_stop, inbox=self._inbox, wake=self._wake,
            on_state=self._on_source_state, on_reply=self._on_reply,
            resume=self._positions.get, closed=self._closed,
        )
        try:
            self.source.run(ctx)
            error = getattr(self.source, "error", None)
            if error:
                self.failed = str(error)
        except Exception as exc:
            log.exception("source failed")
            self.failed = f"source failed: {exc}"
        finally:
            self._source_finished.set()
            self._wake.set()

    def _on_source_state(self, state: SourceState, detail: str) -> None:
        device_state = DeviceState.ONLINE if state is SourceState.UP else DeviceState.DEGRADED
        with self._status_lock:
            changed = device_state is not self._state or detail != self._detail
            self._state, self._detail = device_state, detail
        if changed:
            self._publish_status()

    def _on_reply(self, info: dict[str, str]) -> None:
        with self._status_lock:
            if info.get("reply") == "INFO":
                # The device's own description (fw, model, hash, slot...) stays in the status.
                for key in list(self._info):
                    if key not in ("source", "collector"):
                        del self._info[key]
            for key, value in info.items():
                if len(self._info) < _MAX_INFO or key in self._info:
                    self._info[key] = value
        self._publish_status()

    # ------------------------------------------------------------------ status
    def _status_payload(self, state: DeviceState, detail: str) -> bytes:
        with self._status_lock:
            info = dict(self._info)
        return DeviceStatus(
            device=self.config.device, site=self.config.site, state=state,
            ts=time.time_ns(), detail=detail[:512], info=info,
        ).to_json()

    def _publish_status(self) -> None:
        mqtt = self._mqtt
        if mqtt is None or not mqtt.connected or self._stopped:
            return
        with self._status_lock:
            state, detail = self._state, self._detail
        mqtt.publish(self._status_topic, self._status_payload(state, detail), qos=1, retain=True)

    # ------------------------------------------------------------------ MQTT callbacks
    def _on_connection_change(self, up: bool) -> None:
        self.metrics.mqtt_connected.set(1 if up else 0)
        if up:
            if self._mqtt is not None and self._mqtt.connects > 1:
                self.metrics.reconnects.inc()
            # The last will may have said offline while we were away.
            self._publish_status()
        self._wake.set()

    def _on_publish(
        self, _c: paho.Client, _u: object, mid: int, reason: ReasonCode, _p: object
    ) -> None:
        failed = bool(reason.is_failure) if isinstance(reason, ReasonCode) else False
        self._events.put(_Ack(mid, failed, str(reason)))
        self._wake.set()

    def _on_command(self, msg: paho.MQTTMessage) -> None:
        if msg.retain:
            # A retained command would run again on every reconnect.
            self.metrics.commands.labels(CommandResult.REJECTED.value).inc()
            self._rl.warning("cmd-retained", "ignoring a retained command on %s", msg.topic)
            return
        try:
            command = decode_as(Command, bytes(msg.payload))
        except Rejected as exc:
            self.metrics.commands.labels(CommandResult.REJECTED.value).inc()
            self._rl.warning("cmd-bad", "bad command on %s: %s", msg.topic, exc)
            return
        if command.device != self.config.device or command.site != self.config.site:
            self.metrics.commands.labels(CommandResult.REJECTED.value).inc()
            self._rl.warning("cmd-other", "command %s is for another device", command.id)
            return
        if command.command is CommandName.RESEND:
            self._accept_resend(command)
            return
        result, detail = self.source.handle_command(command)
        self.metrics.commands.labels(result.value).inc()
        log.info("command %s %s: %s (%s)", command.id, command.command.value, result.value, detail)
        if result is CommandResult.REJECTED:
            self._on_reply({"reply": "ERR", "detail": detail[:256], "command_id": command.id})

    def _accept_resend(self, command: Command) -> None:
        lo = _as_seq(command.args.get("from_seq"))
        hi = _as_seq(command.args.get("to_seq"))
        if lo is None or hi is None or hi < lo:
            self.metrics.commands.labels(CommandResult.REJECTED.value).inc()
            self._rl.warning("resend-bad", "resend %s needs 0 <= from_seq <= to_seq", command.id)
            return
        self.metrics.commands.labels(CommandResult.HANDLED.value).inc()
        self.metrics.resend_requests.inc()
        log.info("resend %s: seqs %d..%d", command.id, lo, hi)
        self._events.put(_Resend(command.id, lo, hi))
        self._wake.set()

    # ------------------------------------------------------------------ publisher thread
    def _pump(self) -> None:
        try:
            self._pump_loop()
        except Exception:
            log.exception("publisher failed; unsent readings stay in the outbox")
            self.failed = "publisher failed"
        finally:
            self._closed.set()

    def _pump_loop(self) -> None:
        outbox = self._outbox
        if outbox is None:
            raise RuntimeError("start() opens the outbox first")
        deadline: float | None = None
        carry: list[Chunk] = []  # chunks a failed commit left behind, retried first
        # Acks are committed lazily: with synchronous=FULL every commit is an fsync, and
        # an ack lost in a crash only means the reading is sent once more (ingest keeps
        # the first copy). New readings are never deferred.
        acks: list[tuple[int, int]] = []
        acked_readings = 0
        acks_since = 0.0
        while True:
            stopping = self._pump_stop.is_set()
            self._wake.wait(0.05 if stopping or acks else 0.5)
            self._wake.clear()
            chunks = carry
            while True:
                try:
                    chunks.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            new_acks, new_acked = self._take_events()
            if new_acks:
                if not acks:
                    acks_since = time.monotonic()
                acks += new_acks
                acked_readings += new_acked
            commit_acks = bool(acks) and (
                stopping
                or not self._inflight
                or time.monotonic() - acks_since >= ACK_COMMIT_S
                or acked_readings >= ACK_COMMIT_READINGS
            )
            if chunks or commit_acks:
                rows: list[Row] = [r for c in chunks for r in c.rows]
                position = next((c.position for c in reversed(chunks) if c.position), None)
                try:
                    result = outbox.cycle(rows, acks, position)
                except sqlite3.Error as exc:
                    # Disk full, I/O error: keep everything in memory and try again.
                    self._rl.error("outbox", "outbox write failed: %s; retrying", exc)
                    carry = chunks
                    time.sleep(1.0)
                    continue
                carry, acks, acked_readings = [], [], 0
                self.metrics.accepted.inc(result.appended)
                if result.dropped:
                    self.metrics.dropped.inc(result.dropped)
                    self._rl.warning(
                        "dropped", "outbox full (%d): dropped the %d oldest readings",
                        outbox.max_pending, result.dropped,
                    )
            self.metrics.buffered.set(max(0, outbox.pending_count - acked_readings))
            if self.connected:
                self._serve_resends(outbox)
                self._send_pending(outbox)
            idle = (
                self._inbox.empty() and outbox.pending_count == 0 and not self._inflight
                and not acks
            )
            if self._source_finished.is_set() and idle and self.failed is None:
                self._done.set()
            if stopping:
                if deadline is None:
                    deadline = time.monotonic() + self.config.flush_timeout_s
                    if self.connected:
                        log.info("flushing %d readings to the broker", outbox.pending_count)
                if self._inbox.empty() and not acks and (
                    idle or not self.connected or time.monotonic() > deadline
                ):
                    return

    def _take_events(self) -> tuple[list[tuple[int, int]], int]:
        """Acks as seq ranges plus how many readings they cover; queue RESEND commands."""
        ranges: list[tuple[int, int]] = []
        count = 0
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return ranges, count
            if isinstance(event, _Resend):
                self._resends.append(event)
                continue
            flight = self._inflight.pop(event.mid, None)
            if flight is None:
                continue  # a status message
            ranges.append((flight.first, flight.last))
            if not flight.resend:
                count += flight.count
            if event.failed:
                # Retrying a refused message (not authorized, quota) would only loop.
                self.metrics.rejected.inc(flight.count)
                self._rl.error(
                    "refused", "broker refused seqs %d..%d: %s",
                    flight.first, flight.last, event.reason,
                )
            elif not flight.resend:
                self.metrics.published.inc(flight.count)
                self.metrics.messages.labels(flight.kind.value).inc()

    def _send_pending(self, outbox: Outbox) -> None:
        room = self.config.inflight_messages - len(self._inflight)
        if room <= 0:
            return
        rows = outbox.pending(after_seq=self._cursor, limit=room * self.config.batch_max)
        if rows:
            self._cursor = self._publish_rows(rows, resend=False)

    def _serve_resends(self, outbox: Outbox) -> None:
        while self._resends:
            request = self._resends.popleft()
            lo = request.from_seq
            hi = min(request.to_seq, outbox.next_seq - 1, lo + MAX_RESEND - 1)
            rows = outbox.range(lo, hi) if hi >= lo else []
            missing = max(0, hi - lo + 1) - len(rows)
            self.metrics.resent.inc(len(rows))
            if missing:
                self.metrics.resend_missing.inc(missing)
            log.info(
                "resend %s: republishing %d readings (%d no longer held)",
                request.id, len(rows), missing,
            )
            if rows:
                self._publish_rows(rows, resend=True)

    def _publish_rows(self, rows: list[Stored], *, resend: bool) -> int:
        """Publish rows in order; returns the last seq the MQTT client took."""
        mqtt = self._mqtt
        if mqtt is None:
            raise RuntimeError("start() creates the MQTT client first")
        batch_max = self.config.batch_max
        last = self._cursor
        i = 0
        while i < len(rows):
            size = len(self._batch_prefix) + 2
            j = i
            while j < len(rows) and j - i < batch_max:
                size += len(rows[j].body) + 1
                if j > i and size > MAX_PAYLOAD_BYTES:
                    break
                j += 1
            group = rows[i:j]
            if len(group) == 1:
                payload = self._single_prefix + group[0].body[1:]
                kind = MessageKind.SINGLE
            else:
                payload = self._batch_prefix + ",".join(r.body for r in group) + "]}"
                kind = MessageKind.BATCH
            info = mqtt.publish(self._topic, payload.encode(), qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                # Not queued by the client: leave the rows pending for the next round.
                self._rl.error("publish", "publish failed: %s", paho.error_string(info.rc))
                return last
            # NO_CONN: the client keeps the message and sends it after reconnecting.
            self._inflight[info.mid] = _Flight(
                group[0].seq, group[-1].seq, len(group), kind, resend
            )
            last = group[-1].seq
            i = j
        return last
