"""A device on a serial port (pyserial: a device path or a URL like ``socket://h:p``).

Unplugging, a port that vanishes or never appears, garbage and torn lines are normal
events: each is counted, the status goes ``degraded`` while the port is gone, and the
port is reopened with exponential backoff. Nothing here lets an exception escape.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Any

import serial

from services.collector.commands import CommandError, serial_line
from services.collector.config import CollectorConfig
from services.collector.metrics import CommandResult, SerialEvent
from services.collector.outbox import Row
from services.collector.parsers import LineKind, LineParser, ParsedLine, ParseError, parse_reply
from services.collector.source import Source, SourceContext, SourceState
from services.common.logs import RateLimitedLog
from services.contract.models import Command

log = logging.getLogger(__name__)
#: Commands waiting for the device's reply, so a reply can name the command it answers.
_MAX_OUTSTANDING = 32
READ_TIMEOUT_S = 0.1


class SerialSource(Source):
    def __init__(self, config: CollectorConfig) -> None:
        if config.serial_port is None:
            raise ValueError("serial source needs serial_port")
        self.url = config.serial_port
        self.baud = config.baud
        self.max_line = config.max_line_bytes
        self.backoff_first, self.backoff_max = config.reopen_backoff_s
        self.parser = LineParser(max_line_bytes=config.max_line_bytes)
        self._rl = RateLimitedLog(log)
        self._outgoing: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._awaiting: collections.deque[str] = collections.deque(maxlen=_MAX_OUTSTANDING)
        self._lock = threading.Lock()
        self._open = False
        self._last_device_seq: int | None = None
        self._last_device_ms: int | None = None

    # ------------------------------------------------------------------ commands
    def handle_command(self, command: Command) -> tuple[CommandResult, str]:
        try:
            line = serial_line(command)
        except CommandError as exc:
            return CommandResult.REJECTED, str(exc)
        with self._lock:
            if not self._open:
                return CommandResult.REJECTED, f"{self.url} is not open"
            self._outgoing.put((command.id, line))
        return CommandResult.RELAYED, line

    # ------------------------------------------------------------------ main loop
    def run(self, ctx: SourceContext) -> None:
        backoff = self.backoff_first
        opened_before = False
        while not ctx.stop.is_set():
            port = self._open_port(ctx)
            if port is None:
                ctx.stop.wait(backoff)
                backoff = min(self.backoff_max, backoff * 2)
                continue
            event = SerialEvent.RECONNECT if opened_before else SerialEvent.OPENED
            ctx.metrics.serial_events.labels(event.value).inc()
            log.info("serial %s %s at %d baud", self.url, event.value, self.baud)
            opened_before = True
            backoff = self.backoff_first
            ctx.metrics.source_up.set(1)
            ctx.on_state(SourceState.UP, f"reading {self.url}")
            self._set_open(True)
            try:
                self._read_loop(port, ctx)
            except (serial.SerialException, OSError) as exc:
                ctx.metrics.serial_events.labels(SerialEvent.UNPLUG.value).inc()
                ctx.metrics.source_up.set(0)
                log.warning("serial %s lost: %s; reopening with backoff", self.url, exc)
                ctx.on_state(SourceState.DOWN, f"{self.url} lost: {exc}"[:500])
            finally:
                self._set_open(False)
                self._close(port)
            # The lines the device printed before the failure are gone with the port;
            # a device that reboots prints its header again.
            self._last_device_seq = None
            ctx.stop.wait(self.backoff_first)
        ctx.metrics.source_up.set(0)

    def _set_open(self, value: bool) -> None:
        with self._lock:
            self._open = value
            if not value:
                self._awaiting.clear()
                while not self._outgoing.empty():
                    self._outgoing.get_nowait()

    def _open_port(self, ctx: SourceContext) -> Any:
        try:
            port = serial.serial_for_url(
                self.url, baudrate=self.baud, timeout=READ_TIMEOUT_S, write_timeout=1.0,
                do_not_open=True,
            )
            if self.url.startswith("socket://"):
                # pyserial flushes input when it opens a port. On a fresh TCP connection
                # there is nothing stale to flush: it would throw away the device's first
                # lines (QEMU starts the guest the moment we connect).
                port.reset_input_buffer = lambda: None
            port.open()
            return port
        except (serial.SerialException, OSError, ValueError) as exc:
            ctx.metrics.serial_events.labels(SerialEvent.OPEN_FAILED.value).inc()
            ctx.metrics.source_up.set(0)
            self._rl.warning("open", "serial %s cannot be opened: %s", self.url, exc)
            ctx.on_state(SourceState.DOWN, f"cannot open {self.url}: {exc}"[:500])
            return None

    @staticmethod
    def _close(port: Any) -> None:
        try:
            port.close()
        except Exception:  # a vanished device can fail even to close; nothing to do
            log.debug("closing the port failed", exc_info=True)

    def _read_loop(self, port: Any, ctx: SourceContext) -> None:
        buf = bytearray()
        discarding = False  # inside an oversized line: drop bytes until its end
        try:
            while not ctx.stop.is_set():
                self._write_pending(port)
                waiting = port.in_waiting
                data = port.read(waiting if waiting > 0 else 1)
                if not data:
                    continue
                buf += data
                start = 0
                while True:
                    end = buf.find(b"\n", start)
                    if end < 0:
                        break
                    if discarding:
                        discarding = False
                    else:
                        self._handle(bytes(buf[start:end]), ctx)
                    start = end + 1
                if start:
                    del buf[:start]
                if len(buf) > self.max_line:
                    if not discarding:
                        self._count_error(ParseError.OVERSIZED, bytes(buf[:80]), ctx)
                    discarding = True
                    buf.clear()
        finally:
            if buf and not discarding:
                self._count_error(ParseError.PARTIAL, bytes(buf[:80]), ctx)

    def _write_pending(self, port: Any) -> None:
        while True:
            try:
                command_id, line = self._outgoing.get_nowait()
            except queue.Empty:
                return
            port.write(line.encode() + b"\n")
            self._awaiting.append(command_id)
            log.info("serial %s <- %s (command %s)", self.url, line, command_id)

    # ------------------------------------------------------------------ lines
    def _count_error(self, reason: ParseError, excerpt: bytes, ctx: SourceContext) -> None:
        ctx.metrics.lines.labels(LineKind.ERROR.value).inc()
        ctx.metrics.parse_errors.labels(reason.value).inc()
        self._rl.warning(
            f"parse-{reason.value}", "serial %s: %s line: %r", self.url, reason.value, excerpt
        )

    def _handle(self, raw: bytes, ctx: SourceContext) -> None:
        parsed = self.parser.parse(raw)
        kind = parsed.kind
        ctx.metrics.lines.labels(kind.value).inc()
        if kind is LineKind.READING and parsed.values is not None:
            self._track_device_counters(parsed, ctx)
            ctx.emit([Row(time.time_ns(), parsed.values, parsed.flags)])
        elif kind is LineKind.ERROR and parsed.error is not None:
            ctx.metrics.parse_errors.labels(parsed.error.value).inc()
            self._rl.warning(
                f"parse-{parsed.error.value}", "serial %s: %s line: %r",
                self.url, parsed.error.value, parsed.text,
            )
        elif kind is LineKind.REPLY:
            info = parse_reply(parsed.text)
            with self._lock:
                if self._awaiting:
                    info["command_id"] = self._awaiting.popleft()
            log.info("serial %s -> @%s", self.url, parsed.text[:200])
            ctx.on_reply(info)
        elif kind is LineKind.COMMENT:
            self._rl.log(logging.INFO, "comment", "serial %s: # %s", self.url, parsed.text[:200])
        elif kind is LineKind.HEADER:
            log.info("serial %s: CSV header %s", self.url, parsed.text[:200])

    def _track_device_counters(self, parsed: ParsedLine, ctx: SourceContext) -> None:
        if parsed.device_ms is not None:
            if self._last_device_ms is not None and parsed.device_ms < self._last_device_ms:
                ctx.metrics.device_resets.inc()
                self._last_device_seq = None
                log.warning("serial %s: device uptime went backwards: reset", self.url)
            self._last_device_ms = parsed.device_ms
        if parsed.device_seq is not None:
            last = self._last_device_seq
            if last is not None and parsed.device_seq > last + 1:
                ctx.metrics.device_seq_gaps.inc(parsed.device_seq - last - 1)
            self._last_device_seq = parsed.device_seq
