"""Firmware on the host: the C unit tests under ASan/UBSan, and the device as a process.

The C tests (firmware/tests/*.c) cover CRC-32, COBS, the fixed-point requantization, the
int8 kernels, the model image parser, the line protocol and commands, filtering and the
anomaly decision, the whole update protocol (ACK/NAK, resume, reset mid-update, refused
images) and the HTS221/LPS22HH drivers against register-level fakes. The same binary's
sources run under QEMU in tests/integration/test_firmware_qemu.py.
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.collector.parsers import LineKind, LineParser
from services.device.devmodels import train
from services.device.emulator import BUILD, make
from services.device.link import DeviceLink
from services.device.protocol import ReplyKind, image_hash
from services.device.update import ModelUpdater, update_device_model
from tests.support.servers import which_or_skip

pytestmark = pytest.mark.firmware

GROUPS = ("primitives", "model", "device", "update", "drivers", "flash")


@pytest.fixture(scope="module")
def host_build() -> Path:
    which_or_skip("gcc")
    which_or_skip("make")
    make("host")
    return BUILD / "host"


def test_unit_tests_pass_under_address_and_undefined_sanitizers(host_build: Path) -> None:
    binary = host_build / "test_firmware"
    needed = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True,
                            check=True).stdout
    assert "libasan" in needed and "libubsan" in needed, needed
    proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    for group in GROUPS:
        assert f"ok   {group}" in proc.stderr
    m = re.search(r"(\d+) checks, (\d+) failures", proc.stderr)
    assert m is not None and int(m.group(1)) > 500 and m.group(2) == "0"


def test_a_failing_check_fails_the_run(tmp_path: Path) -> None:
    which_or_skip("gcc")
    make(f"{tmp_path}/host/test_firmware",
         extra={"BUILD": str(tmp_path), "EXTRA_CFLAGS": "-DEDGELOOP_FORCE_FAILURE"})
    proc = subprocess.run([str(tmp_path / "host" / "test_firmware")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "FAIL tests/test_main.c" in proc.stderr and " 1 failures" in proc.stderr


def _start(host_build: Path, flash: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([str(host_build / "edgeloop-device"), "--pty", "--seed", "3",
                             "--flash", str(flash)], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("pty "), line
    return proc, line.split()[1]


@pytest.fixture
def pty_device(host_build: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    flash = tmp_path / "flash.bin"
    proc, port = _start(host_build, flash)
    try:
        yield port, flash
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_slots_persist_in_the_flash_file_across_kill_9(host_build: Path, tmp_path: Path
                                                       ) -> None:
    """The host HAL's flash is a mapped file: a kill -9 mid-update is a power cut."""
    flash = tmp_path / "flash.bin"
    blob = train("fc-b", seed=11, units=(16, 8)).export(tmp_path / "c").blob
    proc, port = _start(host_build, flash)
    try:
        with DeviceLink(port) as link:
            old = link.info()
            updater = ModelUpdater(link, blob)
            updater.begin()
            half = updater.send(until=len(blob) // 2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
    proc, port = _start(host_build, flash)
    try:
        with DeviceLink(port) as link:
            assert (link.info().hash, link.info().slot) == (old.hash, "a")
            result = update_device_model(link, blob)
            assert result.resumed_from == half > 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
    proc, port = _start(host_build, flash)
    try:
        with DeviceLink(port) as link:
            info = link.info()
            assert info.hash == image_hash(blob) and info.slot == "b"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def _readings(link: DeviceLink, n: int, timeout_s: float = 10.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(lines) < n:
        line = link.read_line(deadline)
        assert line is not None, f"only {len(lines)} readings before the deadline"
        if line.startswith("temp:"):
            lines.append(line)
    return lines


def test_host_device_lines_parse_as_workshop_readings(pty_device: tuple[str, Path]) -> None:
    port, flash = pty_device
    parser = LineParser()
    with DeviceLink(port) as link:
        assert link.ping()
        assert link.command("RATE 20", ReplyKind.OK).text == "@OK RATE"
        info = link.info()
        assert info.slot == "a" and info.rate_ms == 20 and info.mode == "all"
        parsed = [parser.parse(line) for line in _readings(link, 30)]
        assert all(p.kind is LineKind.READING for p in parsed)
        assert all(p.values is not None and set(p.values) == {"temp", "humidity", "pressure"}
                   for p in parsed)
        seqs = [p.device_seq or 0 for p in parsed]
        assert all(b == a + 1 for a, b in itertools.pairwise(seqs))
        assert not any(p.flags for p in parsed), "a quiet room raised an anomaly"

        assert link.command("FAULT fire", ReplyKind.OK).kind is ReplyKind.OK
        fire = [parser.parse(line) for line in _readings(link, 25)]
        flagged = [p for p in fire if "anomaly" in p.flags]
        assert len(flagged) >= 15
        temps = [p.values["temp"] for p in flagged if p.values]
        assert temps[-1] > temps[0] + 5.0  # a ramp, flagged all the way up
        assert int(link.info().extra["anomalies"]) >= len(flagged)
    # The model slots persist in the flash file, like flash on a board.
    assert flash.stat().st_size > 32 * 1024
