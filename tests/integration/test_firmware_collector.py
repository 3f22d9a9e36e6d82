"""The whole edge path from the firmware: the firmware in QEMU (mps2-an385) → its UART as
``-serial tcp:...,server=on,wait=on`` → ``edgeloop collector --source serial --serial-port
socket://...`` → a real Mosquitto → ``edgeloop ingest`` → SQLite. Commands go the other
way (MQTT cmd topic → collector → UART). A FAULT fire injected in the firmware is flagged
by the device's own model (``anomaly:1`` on its lines, ``anomalies=`` in its INFO) and
arrives in storage as the reading's ``anomaly`` flag.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from services.common.mqtt import MqttClient, MqttSettings
from services.contract import topics
from services.contract.models import Command, CommandName
from services.device.emulator import REPO, QemuDevice, make
from tests.support.servers import which_or_skip

pytestmark = [pytest.mark.firmware, pytest.mark.integration]

SITE = "lab"
DEVICE = "fw1"


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait(pred: Callable[[], bool], timeout_s: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


class Statuses:
    """Device replies the collector publishes on the retained status topic."""

    def __init__(self, settings: MqttSettings) -> None:
        self.infos: list[dict[str, str]] = []
        self.client = MqttClient(settings, f"test-status-{uuid.uuid4().hex[:6]}",
                                 persistent=False)

    def __enter__(self) -> Statuses:
        self.client.subscribe(topics.status(SITE, DEVICE), self._on, qos=1)
        self.client.start()
        assert self.client.wait_connected(10)
        return self

    def _on(self, msg: paho.MQTTMessage) -> None:
        self.infos.append(json.loads(msg.payload).get("info", {}))

    def __exit__(self, *_: object) -> None:
        self.client.stop()

    def send(self, command: CommandName, cid: str, **args: str | int) -> None:
        cmd = Command(id=cid, device=DEVICE, site=SITE, command=command, args=args)
        self.client.publish(topics.cmd(SITE, DEVICE), cmd.to_json(), qos=1
                            ).wait_for_publish(5)

    def reply(self, cid: str) -> dict[str, str] | None:
        return next((i for i in self.infos if i.get("command_id") == cid), None)


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[QemuDevice]:
    which_or_skip("arm-none-eabi-gcc")
    which_or_skip("qemu-system-arm")
    make("mps2-an385")
    with QemuDevice("mps2-an385", log_path=tmp_path / "qemu.log") as device:
        yield device


def _rows(db: Path) -> list[tuple[int, str, str]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(
                "SELECT seq, vals, flags FROM readings WHERE device = ? ORDER BY seq", (DEVICE,)
            ).fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet


def test_firmware_to_storage_with_a_fire_flagged_on_both_sides(
        qemu: QemuDevice, mqtt_settings: MqttSettings, tmp_path: Path) -> None:
    which_or_skip("mosquitto")
    db = tmp_path / "readings.db"
    logs = [tmp_path / "ingest.log", tmp_path / "collector.log", tmp_path / "qemu.log"]
    mqtt = ["--mqtt-host", mqtt_settings.host, "--mqtt-port", str(mqtt_settings.port)]
    ingest = _spawn([sys.executable, "-m", "services.ingest", *mqtt, "--storage",
                     f"sqlite:///{db}", "--metrics-port", "0"], logs[0])
    collector = _spawn([sys.executable, "-m", "services.collector", "--source", "serial",
                        "--device", DEVICE, "--site", SITE, "--serial-port", qemu.url, *mqtt,
                        "--outbox", str(tmp_path / "outbox.db"), "--metrics-port", "0"],
                       logs[1])
    try:
        with Statuses(mqtt_settings) as st:
            # The first reading in storage proves the path, and that the collector is
            # subscribed to its cmd topic (commands are not retained).
            _wait(lambda: len(_rows(db)) >= 1, 60, "a first reading in storage", logs)
            st.send(CommandName.RATE, "r1", ms=100)
            _wait(lambda: st.reply("r1") is not None, 30, "RATE acknowledged", logs)
            _wait(lambda: len(_rows(db)) >= 30, 60, "30 readings in storage", logs)
            quiet = _rows(db)
            assert not any("anomaly" in flags for _, _, flags in quiet)
            values = json.loads(quiet[-1][1])
            assert set(values) == {"temp", "humidity", "pressure"}
            assert 20 < values["temp"] < 35 and 990 < values["pressure"] < 1020

            st.send(CommandName.FAULT, "f1", kind="fire")
            _wait(lambda: sum("anomaly" in f for _, _, f in _rows(db)) >= 10, 60,
                  "10 flagged readings in storage", logs)
            st.send(CommandName.INFO, "i1")
            _wait(lambda: st.reply("i1") is not None, 30, "INFO reply", logs)
            info = st.reply("i1")
            assert info is not None
            # Device side: its own model flagged the readings it sent.
            assert int(info["anomalies"]) >= 10 and info["slot"] == "a"
    finally:
        _stop(collector)
        _stop(ingest)
    rows = _rows(db)
    flagged = [json.loads(v)["temp"] for _, v, f in rows if "anomaly" in f]
    assert flagged[-1] > flagged[0] + 3.0  # the fire's ramp, flagged as it climbs
    seqs = [s for s, _, _ in rows]
    assert seqs == sorted(set(seqs))  # each reading stored once
