"""A serial device through a socat pty pair: the workshop format with garbage mixed in,
unplugged (socat killed) and replugged (restarted with the same link names) part way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.collector.config import CollectorConfig, SourceKind
from services.collector.service import Collector
from services.common.mqtt import MqttSettings
from services.contract.models import Command, CommandName, DeviceState
from tests.integration.test_collector_mqtt import SITE, Received, _metric, _send_command
from tests.support.servers import which_or_skip

pytestmark = pytest.mark.integration

#: Garbage a real board prints, with what the collector must count it as.
GARBAGE: list[tuple[bytes, str | None]] = [
    (b"\xff\xfe\xfd\x00\x81", "decode"),
    (b"Mbed OS boot fault: hard fault at 0x0800", "malformed"),
    (b"temp:28.6875,humid", "partial"),
    (b"temp:nan,humidity:45.2000,pressure:993.3853", "non_finite"),
    (b"x" * 5000, "oversized"),
    (b"# aiot workshop board v1", None),  # a comment: routed, not an error
    (b"", None),
]
READINGS_PER_PHASE = 120


class PtyPair:
    """socat joining two ptys: the collector opens ``dev``, the test plays the board on
    ``board``. Killing socat is pulling the USB cable: the device path disappears."""

    def __init__(self, workdir: Path) -> None:
        self.dev = workdir / "ttyACM0"
        self.board = workdir / "board"
        self.proc: subprocess.Popen[bytes] | None = None
        self.fd: int | None = None
        self.socat = which_or_skip("socat")

    def plug(self) -> None:
        self.proc = subprocess.Popen(
            [self.socat, "-d", "-d", f"pty,raw,echo=0,link={self.dev}",
             f"pty,raw,echo=0,link={self.board}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not (self.dev.exists() and self.board.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty links")
            time.sleep(0.02)
        self.fd = os.open(self.board, os.O_RDWR | os.O_NOCTTY)

    def unplug(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # socat removes its links on SIGTERM
            self.proc.wait(timeout=10)

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        os.write(self.fd, data)

    def read_line(self, timeout_s: float) -> bytes:
        assert self.fd is not None
        os.set_blocking(self.fd, False)
        buf = b""
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                try:
                    buf += os.read(self.fd, 256)
                except BlockingIOError:
                    time.sleep(0.02)
                if b"\n" in buf:
                    return buf.split(b"\n", 1)[0]
        finally:
            os.set_blocking(self.fd, True)
        raise AssertionError(f"no line from the collector, got {buf!r}")


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyPair]:
    pair = PtyPair(tmp_path)
    try:
        yield pair
    finally:
        pair.unplug()


def _line(i: int) -> bytes:
    # temp encodes i so every received reading can be matched to the line that made it.
    return f"seq:{i},ms:{1000 + i * 100},temp:{20 + i / 1000:.4f},humidity:45.2000," \
           f"pressure:993.3853".encode()


def _feed(pty: PtyPair, start: int, expected: dict[str, int]) -> None:
    for k in range(READINGS_PER_PHASE):
        i = start + k
        pty.write(_line(i) + b"\r\n")
        if k % 10 == 5:
            garbage, reason = GARBAGE[(k // 10) % len(GARBAGE)]
            pty.write(garbage + b"\n")
            if reason:
                expected[reason] = expected.get(reason, 0) + 1
        if k % 20 == 0:
            time.sleep(0.01)  # a board at ~115200 baud does not burst forever


def test_serial_garbage_unplug_replug(
    tmp_path: Path, mqtt_settings: MqttSettings, registry: CollectorRegistry, pty: PtyPair
) -> None:
    rx = Received(mqtt_settings, "board1")
    rx.client.start()
    assert rx.client.wait_connected(10)
    pty.plug()
    cfg = CollectorConfig(
        source=SourceKind.SERIAL, device="board1", site=SITE, serial_port=str(pty.dev),
        mqtt=mqtt_settings, outbox=tmp_path / "outbox.db", metrics_port=0,
        reopen_backoff_s=(0.1, 0.5),
    )
    collector = Collector(cfg, registry)
    collector.start()
    expected: dict[str, int] = {}

    def serial_events(event: str) -> float:
        return _metric(registry, "edgeloop_collector_serial_events_total", event=event)

    def accepted() -> float:
        return _metric(registry, "edgeloop_collector_readings_accepted_total")

    try:
        rx.wait_for(lambda: serial_events("opened") == 1, 10, "port opened")
        _feed(pty, 0, expected)
        rx.wait_for(lambda: accepted() >= READINGS_PER_PHASE, 20, "phase 1 readings")

        # A command relayed to the board, and its reply.
        _send_command(mqtt_settings, Command(
            id="ping-1", device="board1", site=SITE, command=CommandName.PING,
        ))
        assert pty.read_line(10) == b"PING"
        pty.write(b"@PONG\n")
        rx.wait_for(
            lambda: any(s.info.get("command_id") == "ping-1" for s in rx.statuses), 10, "PONG"
        )

        # Unplug half way through a line.
        pty.write(b"temp:21.5000,humidity:4")
        time.sleep(0.5)  # the collector polls every 0.1 s: let it take the torn line
        expected["partial"] = expected.get("partial", 0) + 1
        pty.unplug()
        rx.wait_for(lambda: serial_events("unplug") == 1, 10, "unplug counted")
        rx.wait_for(
            lambda: any(s.state is DeviceState.DEGRADED for s in rx.statuses), 10, "degraded"
        )
        rx.wait_for(lambda: serial_events("open_failed") >= 1, 10, "reopen attempts")

        pty.plug()
        rx.wait_for(lambda: serial_events("reconnect") == 1, 10, "replug")
        _feed(pty, READINGS_PER_PHASE, expected)
        total = 2 * READINGS_PER_PHASE
        rx.wait_for(lambda: len(rx.seqs()) >= total, 20, f"{total} readings over MQTT")
        rx.wait_for(lambda: rx.statuses[-1].state is DeviceState.ONLINE, 10, "online again")
    finally:
        collector.stop()
        rx.client.stop()

    assert rx.seqs() == set(range(total))
    temps = [round((rx.readings[s].values["temp"] - 20) * 1000) for s in range(total)]
    assert temps == list(range(total))  # in order, each line exactly once
    errors = {
        reason: _metric(registry, "edgeloop_collector_parse_errors_total", reason=reason)
        for reason in ("decode", "malformed", "partial", "non_finite", "oversized")
    }
    assert errors == {k: float(v) for k, v in expected.items()}
    assert _metric(registry, "edgeloop_collector_lines_total", kind="reading") == total
    assert _metric(registry, "edgeloop_collector_readings_published_total") == total
    assert _metric(registry, "edgeloop_collector_lines_total", kind="comment") > 0
    assert _metric(registry, "edgeloop_collector_lines_total", kind="reply") == 1
    assert _metric(registry, "edgeloop_collector_device_seq_gaps_total") == 0
    assert _metric(registry, "edgeloop_collector_commands_total", result="relayed") == 1
    print(
        f"\nserial: {total} readings parsed and received, errors {errors}, "
        f"unplug {serial_events('unplug'):.0f}, reopen failures "
        f"{serial_events('open_failed'):.0f}, reconnects {serial_events('reconnect'):.0f}"
    )


def test_pyserial_socket_url_reconnects(
    tmp_path: Path, mqtt_settings: MqttSettings, registry: CollectorRegistry
) -> None:
    """``socket://`` (QEMU's UART, ser2net): the device side closes and comes back."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    port = server.getsockname()[1]
    rx = Received(mqtt_settings, "tcp1")
    rx.client.start()
    assert rx.client.wait_connected(10)
    cfg = CollectorConfig(
        source=SourceKind.SERIAL, device="tcp1", site=SITE,
        serial_port=f"socket://127.0.0.1:{port}", mqtt=mqtt_settings,
        outbox=tmp_path / "outbox.db", metrics_port=0, reopen_backoff_s=(0.1, 0.5),
    )
    collector = Collector(cfg, registry)
    collector.start()
    try:
        for phase in range(2):
            conn, _ = server.accept()
            want = 50 * (phase + 1)
            with conn:
                # Sent the moment the collector connects, like a QEMU guest's first
                # output: none of it may be flushed away by the port's open().
                conn.sendall(b"".join(_line(phase * 50 + k) + b"\n" for k in range(50)))
                rx.wait_for(lambda: len(rx.seqs()) >= want, 20, f"{want} readings")  # noqa: B023
            # Closing the connection is the device going away.
        rx.wait_for(
            lambda: _metric(registry, "edgeloop_collector_serial_events_total",
                            event="unplug") >= 1, 10, "unplug",
        )
    finally:
        collector.stop()
        rx.client.stop()
        server.close()
    assert rx.seqs() == set(range(100))
    assert _metric(registry, "edgeloop_collector_serial_events_total", event="reconnect") == 1
